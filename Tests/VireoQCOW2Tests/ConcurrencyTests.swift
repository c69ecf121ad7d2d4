import Foundation
import Testing
@testable import VireoQCOW2

@Suite struct ConcurrencyTests {
    /// Several threads write disjoint stripes (allocating, overwriting, partial clusters), read them back
    /// and flush, all at once; the result matches a model and passes qemu-img check.
    @Test(arguments: [ImageFormat.qcow2, .raw])
    func concurrentWritersAndReaders(format: ImageFormat) throws {
        let dir = Scratch()
        let image = dir.file("c.img")
        let size = 8 << 20
        let threads = 8
        try createImage(image, format: format, size: UInt64(size), clusterSize: 4096)
        let disk = try openImage(image, options: ImageOptions(writable: true, format: format, l2CacheBytes: 16384))
        let stripe = size / threads
        let failures = Failures()
        onThreads(threads) { t in
            var rng = SplitMix64(seed: UInt64(t) + 1)
            var model = [UInt8](repeating: 0, count: stripe)
            let base = t * stripe
            do {
                for i in 0..<150 {
                    let length = Int.random(in: 1...20_000, using: &rng)
                    let offset = Int.random(in: 0...(stripe - length), using: &rng)
                    let data = pattern(length, seed: UInt64(t * 1000 + i))
                    try disk.write(data, at: UInt64(base + offset))
                    model.replaceSubrange(offset..<(offset + length), with: data)
                    let check = Int.random(in: 0...(stripe - 8192), using: &rng)
                    let got = try disk.read(at: UInt64(base + check), count: 8192)
                    if got != Array(model[check..<(check + 8192)]) { failures.add("thread \(t) read mismatch at \(base + check)") }
                    if i % 37 == 0 { try disk.flush() }
                }
                if try disk.read(at: UInt64(base), count: stripe) != model { failures.add("thread \(t) final mismatch") }
            } catch {
                failures.add("thread \(t): \(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
        if let qcow = disk as? QCOW2Image { #expect(try qcow.check().isClean) }
        try disk.close()
        if format == .qcow2 { try expectQemuCheckClean(image) }
    }

    /// Threads race to allocate the same fresh clusters: thread t writes 4 KiB block t of every 64 KiB
    /// cluster, so each cluster is allocated by whichever writer gets there first and the others must
    /// land in it (or redo their write) without losing data; also with cache=none (`O_DIRECT`).
    @Test(arguments: [false, true])
    func racingAllocationsOfTheSameClusters(directIO: Bool) throws {
        let dir = directIO ? try directIOScratch() : Scratch()
        let image = dir.file("race.qcow2")
        let clusters = 64
        let blocks = 16
        try QCOW2Image.create(image, size: UInt64(clusters * blocks * 4096), clusterSize: 65536)
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true, directIO: directIO))
        let failures = Failures()
        onThreads(blocks) { t in
            do {
                for c in 0..<clusters {
                    try disk.write([UInt8](repeating: UInt8(t + 1), count: 4096), at: UInt64((c * blocks + t) * 4096))
                }
            } catch {
                failures.add("thread \(t): \(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
        let seen = try disk.read(at: 0, count: clusters * blocks * 4096)
        let wrong = (0..<(clusters * blocks)).first { i in seen[i * 4096] != UInt8(i % blocks + 1) || seen[i * 4096 + 4095] != UInt8(i % blocks + 1) }
        #expect(wrong == nil, "block \(wrong ?? 0) lost its data")
        #expect(try disk.check().isClean)
        try disk.close()
        try expectQemuCheckClean(image)
    }

    /// Threads race to allocate the same clusters of an overlay, each copying the rest of the cluster
    /// from the backing file: thread t writes 1 KiB in the middle of 2 KiB slot t of every 32 KiB
    /// cluster, so two threads share each 4 KiB block (with cache=none, both read-modify-write it).
    /// Every write must survive, and every byte nobody wrote must still read as the backing file's.
    @Test(arguments: [false, true])
    func racingCopyOnWriteFromBacking(directIO: Bool) throws {
        let dir = directIO ? try directIOScratch() : Scratch()
        let clusters = 32
        let blocks = 16
        let size = clusters * blocks * 2048
        let base = pattern(size, seed: 11)
        writeFile(dir.file("base.raw"), base)
        let image = dir.file("overlay.qcow2")
        try QCOW2Image.create(image, size: UInt64(size), clusterSize: 32768, backing: "base.raw", backingFormat: .raw)
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true, directIO: directIO))
        let failures = Failures()
        onThreads(blocks) { t in
            do {
                for c in 0..<clusters {
                    try disk.write([UInt8](repeating: UInt8(t + 1), count: 1024), at: UInt64((c * blocks + t) * 2048 + 512))
                }
            } catch {
                failures.add("thread \(t): \(error)")
            }
        }
        #expect(failures.all.isEmpty, "\(failures.all)")
        var model = DiskModel(size: size, initial: base)
        for i in 0..<(clusters * blocks) { model.write([UInt8](repeating: UInt8(i % blocks + 1), count: 1024), at: i * 2048 + 512) }
        let seen = try disk.read(at: 0, count: size)
        #expect(firstDifference(seen, model.bytes) == nil, "\(firstDifference(seen, model.bytes) ?? "")")
        #expect(try disk.check().isClean)
        try disk.close()
        try expectQemuCheckClean(image)
    }
}

final class Failures: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [String] = []
    func add(_ item: String) { lock.withLock { items.append(item) } }
    var all: [String] { lock.withLock { items } }
}
