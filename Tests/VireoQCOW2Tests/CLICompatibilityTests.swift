import Foundation
import VireoTestSupport
import Testing
@testable import VireoQCOW2

/// A script written for `qemu-img` runs unchanged with `vireo img`: the same command lines run in
/// twin directories, one with each program, give the same exit codes and images with the same
/// contents (`qemu-img compare`), backing links and sizes.
@Suite struct CLICompatibilityTests {
    /// One program under test, run in its own directory.
    struct Runner {
        let program: [String]
        let directory: String

        @discardableResult
        func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
            try ChildCommand.run(program[0], Array(program.dropFirst()) + arguments, in: directory)
        }

    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    @Test func sameScriptSameResults() throws {
        let qemuDir = Scratch()
        let vireoDir = Scratch()
        let qemu = Runner(program: ["/usr/bin/qemu-img"], directory: qemuDir.path)
        let vireo = Runner(program: [vireoBinary, "img"], directory: vireoDir.path)
        var step = 0

        /// Runs one command line with both programs and compares the exit codes.
        @discardableResult
        func both(_ arguments: String...) throws -> (qemu: String, vireo: String) {
            step += 1
            let q = try qemu.run(arguments)
            let v = try vireo.run(arguments)
            #expect(q.status == v.status, "step \(step) \(arguments): qemu-img \(q.status) \(q.output)\nvireo img \(v.status) \(v.output)")
            return (q.output, v.output)
        }
        func io(_ image: String, _ commands: String...) throws {
            for runner in [qemu, vireo] {
                var arguments = ["-f", "qcow2"]
                for command in commands { arguments += ["-c", command] }
                let result = try Runner(program: ["/usr/bin/qemu-io"], directory: runner.directory).run(arguments + [image])
                #expect(result.status == 0, "qemu-io: \(result.output)")
            }
        }
        /// The same image in both directories has the same guest contents.
        func sameContents(_ image: String, format: String = "qcow2", sourceLocation: SourceLocation = #_sourceLocation) throws {
            let result = try qemuImg("compare", "-U", "-f", format, "-F", format, qemuDir.file(image), vireoDir.file(image))
            #expect(result.status == 0, "step \(step): \(image) differs: \(result.output)", sourceLocation: sourceLocation)
        }

        try both("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536", "base.qcow2", "8M")
        try io("base.qcow2", "write -P 0x10 0 3M", "write -P 0x11 5M 64k")
        try both("create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
        let info = try both("info", "--output", "json", "top.qcow2")
        for key in ["virtual-size", "cluster-size", "format", "backing-filename", "backing-filename-format"] {
            #expect("\(Self.json(info.qemu)[key] ?? "-")" == "\(Self.json(info.vireo)[key] ?? "-")", "info \(key)")
        }
        try both("info", "--output=json", "-U", "base.qcow2")
        try both("check", "top.qcow2")
        try io("top.qcow2", "write -P 0x20 1M 100k")

        // Internal snapshots.
        try both("snapshot", "-c", "first", "top.qcow2")
        let list = try both("snapshot", "-l", "top.qcow2")
        #expect(list.qemu.contains("first") && list.vireo.contains("first"))
        try io("top.qcow2", "write -P 0x21 1M 8k", "write -P 0x22 6M 4k")
        try both("snapshot", "-c", "second", "top.qcow2")
        try both("snapshot", "-a", "first", "top.qcow2")
        try sameContents("top.qcow2")
        try both("snapshot", "-d", "second", "top.qcow2")
        try both("snapshot", "-a", "no-such-snapshot", "top.qcow2")
        try both("snapshot", "-d", "first", "top.qcow2")
        try both("check", "top.qcow2")
        try sameContents("top.qcow2")

        // Conversions (the compressed output is compared by contents, not layout).
        try both("convert", "-f", "qcow2", "-O", "raw", "top.qcow2", "flat.raw")
        try sameContents("flat.raw", format: "raw")
        try both("convert", "-p", "-f", "qcow2", "-O", "qcow2", "-c", "-o", "cluster_size=65536", "top.qcow2", "packed.qcow2")
        try sameContents("packed.qcow2")
        try both("convert", "-f", "raw", "-O", "qcow2", "flat.raw", "back.qcow2")
        try sameContents("back.qcow2")
        let map = try both("map", "--output", "json", "back.qcow2")
        #expect(map.qemu.filter { !$0.isWhitespace } == map.vireo.filter { !$0.isWhitespace })
        try both("check", "packed.qcow2")

        // Chain operations: rebase (unsafe and safe), commit, resize.
        try both("create", "-q", "-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", "upper.qcow2")
        try io("upper.qcow2", "write -P 0x30 2M 64k")
        try both("rebase", "-u", "-b", "base.qcow2", "-F", "qcow2", "upper.qcow2")   // unsafe: contents change
        try sameContents("upper.qcow2")
        try both("rebase", "-p", "-b", "", "upper.qcow2")                             // safe: pulls data up
        try sameContents("upper.qcow2")
        try both("commit", "-p", "top.qcow2")
        try sameContents("base.qcow2")
        try both("resize", "base.qcow2", "+1M")
        try both("resize", "-f", "qcow2", "base.qcow2", "12M")
        try both("resize", "base.qcow2", "4M")                                        // shrink needs --shrink
        try sameContents("base.qcow2")
        for image in ["base.qcow2", "top.qcow2", "upper.qcow2", "back.qcow2"] { try both("check", image) }

        // Failures scripts rely on.
        try both("info", "missing.qcow2")
        try both("check", "flat.raw")
        try both("commit", "base.qcow2")
        try both("create", "-q", "-f", "qcow2", "bad.qcow2", "12Q")
    }
}
