import Foundation
import Testing
@testable import VireoQCOW2

/// With `O_DIRECT` (cache=none) a write that covers part of a 4 KiB block is a read-modify-write of
/// the block; concurrent writes to other bytes of the same block must not be undone by it.
@Suite struct DirectIOTests {
    static let block = 4096
    static let sector = 512

    /// Threads 1…7 each write their own 512-byte sector of every 4 KiB block, all walking the blocks in
    /// the same order so they meet on each one; with `alignedWriter` thread 0 writes whole blocks
    /// (0xAA) meanwhile. Each sector must end up with its thread's bytes (or, with the aligned writer,
    /// 0xAA), and sector 0 must hold the aligned writer's bytes.
    @Test(arguments: [false, true])
    func adjacentSectorsOfOneBlockFromManyThreads(alignedWriter: Bool) throws {
        let dir = try directIOScratch()
        let path = dir.file("disk.raw")
        let blocks = 512
        try RawImage.create(path, size: UInt64(blocks * Self.block))
        let disk = try openImage(path, options: ImageOptions(writable: true, format: .raw, directIO: true))
        let threads = Self.block / Self.sector
        let failures = Failures()
        onThreads(threads) { t in
            do {
                for b in 0..<blocks {
                    if t == 0 {
                        if alignedWriter { try disk.write([UInt8](repeating: 0xAA, count: Self.block), at: UInt64(b * Self.block)) }
                    } else {
                        try disk.write([UInt8](repeating: UInt8(t), count: Self.sector), at: UInt64(b * Self.block + t * Self.sector))
                    }
                }
            } catch {
                failures.add("thread \(t): \(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
        try disk.close()
        let bytes = readFile(path)
        var lost: [String] = []
        for b in 0..<blocks {
            for s in 0..<threads {
                let sector = bytes[(b * Self.block + s * Self.sector)..<(b * Self.block + (s + 1) * Self.sector)]
                let allowed: Set<UInt8> = s == 0 ? [alignedWriter ? 0xAA : 0] : (alignedWriter ? [UInt8(s), 0xAA] : [UInt8(s)])
                if !(allowed.contains(sector.first!) && sector.allSatisfy({ $0 == sector.first! })) { lost.append("block \(b) sector \(s)") }
            }
        }
        #expect(lost.count == 0, "sectors lost their write, first: \(lost.prefix(5))")
    }

    /// A qcow2 image with 512-byte clusters opened cache=none: eight clusters share each host block,
    /// together with L2 tables and refcount blocks written under the metadata lock while cluster
    /// overwrites run outside it. Thread t writes guest cluster t of every 4 KiB, allocating in the first
    /// round (with a backing file: copying the rest of the cluster from it) and overwriting afterwards.
    @Test(arguments: [false, true])
    func smallClustersWrittenConcurrently(withBacking: Bool) throws {
        let dir = try directIOScratch()
        let path = dir.file("small.qcow2")
        let size = 512 << 10
        let base = pattern(size, seed: 7)
        if withBacking {
            writeFile(dir.file("base.raw"), base)
            try QCOW2Image.create(path, size: UInt64(size), clusterSize: 512, backing: "base.raw", backingFormat: .raw)
        } else {
            try QCOW2Image.create(path, size: UInt64(size), clusterSize: 512)
        }
        let disk = try QCOW2Image.open(path, options: ImageOptions(writable: true, directIO: true))
        let threads = Self.block / Self.sector
        let rounds = 3
        // Partial-cluster writes (256 bytes at 128) copy the rest from the backing file on allocation.
        let within = withBacking ? 128 : 0, length = withBacking ? 256 : Self.sector
        let failures = Failures()
        onThreads(threads) { t in
            do {
                for round in 0..<rounds {
                    for b in 0..<(size / Self.block) {
                        let value = UInt8(truncatingIfNeeded: round * 16 + t + 1)
                        try disk.write([UInt8](repeating: value, count: length), at: UInt64(b * Self.block + t * Self.sector + within))
                    }
                    if t == 0 { try disk.flush() }
                }
            } catch {
                failures.add("thread \(t): \(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
        var model = DiskModel(size: size, initial: withBacking ? base : nil)
        for b in 0..<(size / Self.block) {
            for t in 0..<threads {
                let value = UInt8(truncatingIfNeeded: (rounds - 1) * 16 + t + 1)
                model.write([UInt8](repeating: value, count: length), at: b * Self.block + t * Self.sector + within)
            }
        }
        let seen = try disk.read(at: 0, count: size)
        #expect(firstDifference(seen, model.bytes) == nil, "\(firstDifference(seen, model.bytes) ?? "")")
        #expect(try disk.check().isClean)
        try disk.close()
        try expectQemuCheckClean(path)
        let reopened = try QCOW2Image.open(path)
        #expect(try reopened.read(at: 0, count: size) == model.bytes)
    }
}
