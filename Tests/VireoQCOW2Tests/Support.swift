import Foundation
import VireoTestSupport
import Testing
@testable import VireoQCOW2

/// Runs a tool (qemu-img, qemu-io) and returns its exit status and combined output.
@discardableResult
func tool(_ name: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    try ChildCommand.run(name.hasPrefix("/") ? name : "/usr/bin/" + name, arguments)
}

/// qemu-img with `-U` where it reads, so a lock held elsewhere never matters.
func qemuImg(_ arguments: String...) throws -> (status: Int32, output: String) {
    try tool("qemu-img", arguments)
}

/// The `vireo` binary SwiftPM builds beside this test bundle (or `$VIREO`).
let vireoBinary: String = {
    if let path = ProcessInfo.processInfo.environment["VIREO"] { return path }
    let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    return URL(fileURLWithPath: me).deletingLastPathComponent().path + "/vireo"
}()

/// Runs `vireo img ARGUMENTS...` and returns its exit status and combined output.
func vireoImg(_ arguments: [String]) throws -> (status: Int32, output: String) {
    try tool(vireoBinary, ["img"] + arguments)
}

func qemuIO(_ image: String, format: String = "qcow2", _ commands: String...) throws {
    var arguments = ["-f", format]
    for command in commands { arguments += ["-c", command] }
    arguments.append(image)
    let result = try tool("qemu-io", arguments)
    #expect(result.status == 0, "qemu-io failed: \(result.output)")
}

/// Asserts `qemu-img check` finds no errors and no leaks.
func expectQemuCheckClean(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let result = try qemuImg("check", path)
    #expect(result.status == 0, "qemu-img check \(path): \(result.output)", sourceLocation: sourceLocation)
}

/// A scratch directory removed at deinit.
final class Scratch {
    let path: String
    init(base: String = NSTemporaryDirectory()) {
        path = base + "vireo-qcow2-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func file(_ name: String) -> String { path + "/" + name }
    deinit { try? FileManager.default.removeItem(atPath: path) }
}

/// A scratch directory on a file system that accepts `O_DIRECT` (tmpfs does not): the temporary
/// directory if it does, else the build directory this test bundle lives in.
func directIOScratch() throws -> Scratch {
    let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    let bundleDirectory = URL(fileURLWithPath: me).deletingLastPathComponent().path + "/"
    for base in [NSTemporaryDirectory(), bundleDirectory] {
        let dir = Scratch(base: base)
        if (try? PosixHostFile(path: dir.file("probe"), writable: true, create: true, direct: true)) != nil { return dir }
    }
    throw ImageError(bundleDirectory, .unsupported, "no scratch directory accepts O_DIRECT")
}

/// Runs `body(0..<count)` on `count` threads at once (unlike `DispatchQueue.concurrentPerform`, which
/// runs no more at a time than there are CPUs) and returns when all have finished.
func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for t in 0..<count {
        group.enter()
        Thread {
            body(t)
            group.leave()
        }.start()
    }
    group.wait()
}

func readFile(_ path: String) -> [UInt8] { Array(FileManager.default.contents(atPath: path) ?? Data()) }
func writeFile(_ path: String, _ bytes: [UInt8]) { FileManager.default.createFile(atPath: path, contents: Data(bytes)) }

/// SplitMix64: a tiny deterministic generator so failures reproduce from the seed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

func pattern(_ count: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix64(seed: seed)
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        let word = rng.next()
        for b in 0..<min(8, count - i) { out[i + b] = UInt8(truncatingIfNeeded: word >> (8 * UInt64(b))) }
        i += 8
    }
    return out
}

/// A plain byte array that mirrors what the guest should see.
struct DiskModel {
    var bytes: [UInt8]
    init(size: Int, initial: [UInt8]? = nil) {
        bytes = initial ?? [UInt8](repeating: 0, count: size)
        if bytes.count < size { bytes += [UInt8](repeating: 0, count: size - bytes.count) }
    }
    mutating func write(_ data: [UInt8], at offset: Int) { bytes.replaceSubrange(offset..<(offset + data.count), with: data) }
}

/// Where two byte arrays first differ (nil when equal), so failures print an offset, not megabytes.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String? {
    if a == b { return nil }
    if a.count != b.count { return "sizes differ: \(a.count) vs \(b.count)" }
    let i = a.indices.first { a[$0] != b[$0] }!
    return "first difference at byte \(i): \(a[i]) vs \(b[i])"
}
