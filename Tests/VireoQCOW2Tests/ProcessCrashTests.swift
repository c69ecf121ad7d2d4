import Foundation
import Testing
@testable import VireoQCOW2

#if canImport(Glibc)
import Glibc
#endif

/// A writer process (`vireo img io-script`) killed with SIGKILL while it writes: afterwards
/// `qemu-img check` finds no corruption (leaks are allowed) and every write acknowledged by a
/// completed flush reads back. The kill lands after a seeded number of acknowledged flushes, while
/// the writer is busy with the following phases; no sleeps, the test waits on the acknowledgement pipe.
@Suite(.serialized) struct ProcessCrashTests {
    /// One write command of the script.
    struct Write {
        var offset: Int
        var length: Int
        var byte: UInt8
        var phase: Int
    }

    static let phases = 40
    static let writesPerPhase = 8

    static func script(size: Int, seed: UInt64) -> [Write] {
        var rng = SplitMix64(seed: seed)
        var writes: [Write] = []
        for phase in 0..<phases {
            for _ in 0..<writesPerPhase {
                let length = Int(rng.next() % 20000) + 1
                let offset = Int(rng.next() % UInt64(size - length))
                writes.append(Write(offset: offset, length: length, byte: UInt8(rng.next() % 255) + 1, phase: phase))
            }
        }
        return writes
    }

    /// Runs the writer on `image` until `killAfter` flushes are acknowledged, kills it, and returns the
    /// number of flushes it acknowledged before it died.
    static func runAndKill(_ image: String, writes: [Write], killAfter: Int) throws -> Int {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: vireoBinary)
        process.arguments = ["img", "io-script", image]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        var text = ""
        for phase in 0..<phases {
            for w in writes where w.phase == phase { text += "write \(w.offset) \(w.length) \(w.byte)\n" }
            text += "flush\n"
        }
        // The whole script fits in the pipe buffer, so this never blocks on the writer.
        precondition(text.utf8.count < 60_000)
        input.fileHandleForWriting.write(Data(text.utf8))
        // stdin stays open: after the script the writer waits for more, so it never ends on its own and
        // the kill always lands on a live writer (possibly after its last flush, on a loaded host).
        defer { try? input.fileHandleForWriting.close() }

        let reader = output.fileHandleForReading
        var received = ""
        var acknowledged = 0
        var killed = false
        while true {
            let chunk = reader.availableData
            if chunk.isEmpty { break }  // writer gone (killed or finished)
            received += String(decoding: chunk, as: UTF8.self)
            acknowledged = received.split(separator: "\n").filter { $0.hasPrefix("flushed ") }.count
            if !killed && acknowledged >= killAfter {
                kill(process.processIdentifier, SIGKILL)
                killed = true
            }
        }
        process.waitUntilExit()
        #expect(process.terminationReason == .uncaughtSignal, "the writer ended before it was killed")
        return acknowledged
    }

    /// Checks the image after a kill: no corruption, acknowledged data present, untouched data intact.
    static func verify(_ image: String, writes: [Write], acknowledged: Int, initial: UInt8, size: Int, label: String) throws {
        let qemu = try qemuImg("check", image)
        #expect(qemu.status == 0 || qemu.status == 3, "\(label): qemu-img check: \(qemu.output)")
        let opened = try QCOW2Image.open(image)
        let report = try opened.check()
        #expect(report.corruptions == 0, "\(label): \(report.summary)")
        let seen = try opened.read(at: 0, count: size)
        try opened.close()

        // Per byte: the last write in the whole script, and whether any write touches it at all.
        var last = [Int32](repeating: -1, count: size)
        for (index, w) in writes.enumerated() {
            for i in w.offset..<(w.offset + w.length) { last[i] = Int32(index) }
        }
        var lost: Int? = nil
        var clobbered: Int? = nil
        for i in 0..<size {
            let index = Int(last[i])
            if index < 0 {
                if seen[i] != initial && clobbered == nil { clobbered = i }
            } else if writes[index].phase < acknowledged && seen[i] != writes[index].byte && lost == nil {
                lost = i
            }
        }
        #expect(lost == nil, "\(label): flushed byte \(lost ?? 0) lost (acknowledged \(acknowledged) flushes)")
        #expect(clobbered == nil, "\(label): never-written byte \(clobbered ?? 0) changed")
    }

    @Test(arguments: [(512, UInt64(1)), (512, 2), (4096, 3), (65536, 4)])
    func killedWriterOnFreshImage(clusterSize: Int, seed: UInt64) throws {
        let dir = Scratch()
        let size = 4 << 20
        let image = dir.file("fresh.qcow2")
        try QCOW2Image.create(image, size: UInt64(size), clusterSize: clusterSize, refcountBits: 16)
        let writes = Self.script(size: size, seed: seed)
        let killAfter = Int(seed * 7 % UInt64(Self.phases / 2)) + 1
        let acknowledged = try Self.runAndKill(image, writes: writes, killAfter: killAfter)
        #expect(acknowledged >= killAfter)
        try Self.verify(image, writes: writes, acknowledged: acknowledged, initial: 0, size: size,
                        label: "cluster \(clusterSize) seed \(seed)")
    }

    @Test(arguments: [(4096, UInt64(11)), (65536, 12)])
    func killedWriterOnOverlay(clusterSize: Int, seed: UInt64) throws {
        let dir = Scratch()
        let size = 4 << 20
        let base = dir.file("base.qcow2")
        let overlay = dir.file("overlay.qcow2")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", base, String(size)).status == 0)
        try qemuIO(base, "write -P 0x11 0 \(size)")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)",
                            "-b", "base.qcow2", "-F", "qcow2", overlay).status == 0)
        let writes = Self.script(size: size, seed: seed)
        let killAfter = Int(seed * 5 % UInt64(Self.phases / 2)) + 1
        let acknowledged = try Self.runAndKill(overlay, writes: writes, killAfter: killAfter)
        #expect(acknowledged >= killAfter)
        try Self.verify(overlay, writes: writes, acknowledged: acknowledged, initial: 0x11, size: size,
                        label: "overlay cluster \(clusterSize) seed \(seed)")
        try expectQemuCheckClean(base)
    }
}
