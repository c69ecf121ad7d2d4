import Foundation
import Testing
@testable import VireoQCOW2

@Suite struct QemuInteropTests {
    /// Images made and written by qemu are read identically by Vireo; Vireo's writes keep them clean
    /// and identical to a raw reference.
    @Test(arguments: [512, 4096, 65536, 2 << 20])
    func qemuImagesRoundTrip(clusterSize: Int) throws {
        let dir = Scratch()
        let image = dir.file("q.qcow2")
        let size = clusterSize == 2 << 20 ? 16 << 20 : 4 << 20
        #expect(try qemuImg("create", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", image, "\(size)").status == 0)
        try qemuIO(image, "write -P 0xab 0 64k", "write -P 0xcd 100000 5000", "write -z 200000 70000")
        var model = DiskModel(size: size)
        model.write([UInt8](repeating: 0xAB, count: 65536), at: 0)
        model.write([UInt8](repeating: 0xCD, count: 5000), at: 100000)

        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true, l2CacheBytes: 4 * clusterSize))
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)

        var rng = SplitMix64(seed: UInt64(clusterSize))
        for i in 0..<40 {
            let length = Int.random(in: 1...(3 * clusterSize / 2 + 100), using: &rng)
            let offset = Int.random(in: 0...(size - length), using: &rng)
            let data = pattern(length, seed: UInt64(i))
            try disk.write(data, at: UInt64(offset))
            model.write(data, at: offset)
        }
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)
        #expect(try disk.check().isClean)
        try disk.close()

        try expectQemuCheckClean(image)
        let reference = dir.file("ref.raw")
        writeFile(reference, model.bytes)
        let compare = try qemuImg("compare", "-f", "qcow2", "-F", "raw", image, reference)
        #expect(compare.status == 0, "\(compare.output)")
        let reopened = try QCOW2Image.open(image)
        #expect(firstDifference(try reopened.read(at: 0, count: size), model.bytes) == nil)
    }

    /// qemu's overlays over a qcow2 base: reads fall through, partial writes copy the rest of the cluster.
    @Test(arguments: [512, 65536])
    func qemuOverlayCopyOnWrite(clusterSize: Int) throws {
        let dir = Scratch()
        let base = dir.file("base.qcow2")
        let overlay = dir.file("overlay.qcow2")
        let size = 1 << 20
        #expect(try qemuImg("create", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", base, "\(size)").status == 0)
        try qemuIO(base, "write -P 0x11 0 1M")
        // A relative backing name: resolved against the overlay's directory.
        #expect(try qemuImg("create", "-f", "qcow2", "-o", "cluster_size=\(clusterSize)", "-b", "base.qcow2", "-F", "qcow2", overlay).status == 0)
        try qemuIO(overlay, "write -P 0x22 4096 4096")
        var model = DiskModel(size: size, initial: [UInt8](repeating: 0x11, count: size))
        model.write([UInt8](repeating: 0x22, count: 4096), at: 4096)

        let disk = try QCOW2Image.open(overlay, options: ImageOptions(writable: true))
        #expect(disk.backingPath == dir.file("base.qcow2"))
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)
        for (offset, length) in [(10, 3), (clusterSize - 7, 20), (300_000, 70_000), (size - 5, 5)] {
            let data = pattern(length, seed: UInt64(offset))
            try disk.write(data, at: UInt64(offset))
            model.write(data, at: offset)
        }
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)
        try disk.close()
        try expectQemuCheckClean(overlay)
        let reference = dir.file("ref.raw")
        writeFile(reference, model.bytes)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", overlay, reference).status == 0)
        // The base is untouched.
        #expect(firstDifference(try QCOW2Image.open(base).read(at: 0, count: size), [UInt8](repeating: 0x11, count: size)) == nil)
    }

    /// Every refcount width, small clusters: refcount blocks get allocated and the refcount table grows.
    @Test(arguments: [1, 2, 4, 8, 16, 32, 64])
    func refcountWidths(bits: Int) throws {
        let dir = Scratch()
        let image = dir.file("r.qcow2")
        let size = 3 << 20
        #expect(try qemuImg("create", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=\(bits)", image, "\(size)").status == 0)
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true, l2CacheBytes: 8192))
        let data = pattern(size, seed: UInt64(bits))
        // Write in scattered order so allocation interleaves data, L2 tables and refcount blocks.
        var chunks = Array(stride(from: 0, to: size, by: 40_000))
        var rng = SplitMix64(seed: 7)
        chunks.shuffle(using: &rng)
        for start in chunks {
            let end = min(size, start + 40_000)
            try disk.write(Array(data[start..<end]), at: UInt64(start))
        }
        #expect(firstDifference(try disk.read(at: 0, count: size), data) == nil)
        let report = try disk.check()
        #expect(report.isClean, "\(report.summary)")
        try disk.close()
        try expectQemuCheckClean(image)
        let reference = dir.file("ref.raw")
        writeFile(reference, data)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", image, reference).status == 0)
    }

    /// Version 2 images (compat=0.10).
    @Test func version2() throws {
        let dir = Scratch()
        let image = dir.file("v2.qcow2")
        #expect(try qemuImg("create", "-f", "qcow2", "-o", "compat=0.10,cluster_size=4096", image, "1M").status == 0)
        try qemuIO(image, "write -P 0x5a 8192 8192")
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        #expect(disk.header.version == 2)
        #expect(firstDifference(try disk.read(at: 8192, count: 8192), [UInt8](repeating: 0x5A, count: 8192)) == nil)
        try disk.write(pattern(10_000, seed: 1), at: 50_000)
        try disk.close()
        try expectQemuCheckClean(image)
    }
}
