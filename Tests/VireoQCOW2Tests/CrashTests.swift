import Foundation
import Testing
@testable import VireoQCOW2

/// An in-memory host file that logs every write and barrier, so a power cut can be replayed at any point.
final class RecordingFile: HostFile {
    enum Operation {
        case write(UInt64, [UInt8])
        case sync
    }
    let path: String
    var bytes: [UInt8]
    var log: [Operation] = []

    init(path: String, bytes: [UInt8]) {
        self.path = path
        self.bytes = bytes
    }

    static func apply(_ data: [UInt8], at offset: UInt64, to bytes: inout [UInt8]) {
        let end = Int(offset) + data.count
        if bytes.count < end { bytes += [UInt8](repeating: 0, count: end - bytes.count) }
        bytes.replaceSubrange(Int(offset)..<end, with: data)
    }

    func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        let start = Int(min(offset, UInt64(bytes.count)))
        let available = min(count, bytes.count - start)
        if available > 0 { out.replaceSubrange(0..<available, with: bytes[start..<(start + available)]) }
        return out
    }
    func write(_ data: ArraySlice<UInt8>, at offset: UInt64) throws(ImageError) {
        log.append(.write(offset, Array(data)))
        Self.apply(Array(data), at: offset, to: &bytes)
    }
    func sync() throws(ImageError) { log.append(.sync) }
    func size() throws(ImageError) -> UInt64 { UInt64(bytes.count) }
    func truncate(to size: UInt64) throws(ImageError) { bytes = Array(bytes.prefix(Int(size))) }
}

@Suite struct CrashTests {
    /// Power cut after any logged operation: writes since the last barrier land in any subset (the disk
    /// may reorder them). The image must never be corrupt (leaks are fine), and every write acknowledged
    /// by a completed flush must read back.
    @Test func powerCutsLeaveOnlyLeaks() throws {
        let dir = Scratch()
        let seedPath = dir.file("seed.qcow2")
        try QCOW2Image.create(seedPath, size: 1 << 20, clusterSize: 512, refcountBits: 16)
        let initial = readFile(seedPath)
        let size = 1 << 20
        let file = RecordingFile(path: seedPath, bytes: initial)
        let disk = try QCOW2Image(file: file, options: ImageOptions(writable: true, l2CacheBytes: 1024))
        var model = [UInt8](repeating: 0, count: size)
        var lastPhase = [Int](repeating: -1, count: size)
        var flushAt: [Int] = []  // log length when each phase's flush completed
        var rng = SplitMix64(seed: 42)
        for phase in 0..<12 {
            for _ in 0..<6 {
                let length = Int(rng.next() % 3000) + 1
                let offset = Int(rng.next() % UInt64(size - length))
                let data = pattern(length, seed: rng.next())
                try disk.write(data, at: UInt64(offset))
                model.replaceSubrange(offset..<(offset + length), with: data)
                for i in offset..<(offset + length) { lastPhase[i] = phase }
            }
            try disk.flush()
            flushAt.append(file.log.count)
        }

        let crashPath = dir.file("crash.qcow2")
        var checked = 0
        for cut in stride(from: 0, through: file.log.count, by: max(1, file.log.count / 24)) {
            var bytes = initial
            let lastSync = file.log[..<cut].lastIndex { if case .sync = $0 { return true } else { return false } } ?? -1
            for (i, operation) in file.log[..<cut].enumerated() {
                guard case .write(let offset, let data) = operation else { continue }
                if i < lastSync || rng.next() % 2 == 0 { RecordingFile.apply(data, at: offset, to: &bytes) }
            }
            writeFile(crashPath, bytes)
            let image = try QCOW2Image.open(crashPath)
            let report = try image.check()
            #expect(report.corruptions == 0, "cut \(cut): \(report.summary)")
            let qemu = try qemuImg("check", crashPath)
            #expect(qemu.status == 0 || qemu.status == 3, "cut \(cut): \(qemu.output)")
            let durable = flushAt.lastIndex { $0 <= cut } ?? -1
            if durable >= 0 {
                let seen = try image.read(at: 0, count: size)
                var bad = -1
                for i in 0..<size where lastPhase[i] >= 0 && lastPhase[i] <= durable && seen[i] != model[i] {
                    bad = i
                    break
                }
                #expect(bad == -1, "cut \(cut): flushed byte \(bad) lost")
            }
            checked += 1
        }
        #expect(checked > 15)
    }
}
