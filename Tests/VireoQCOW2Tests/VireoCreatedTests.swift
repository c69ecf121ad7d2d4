import Foundation
import Testing
@testable import VireoQCOW2

@Suite struct VireoCreatedTests {
    @Test(arguments: [(512, 16, UInt32(3)), (4096, 1, 3), (65536, 16, 3), (65536, 64, 3), (2 << 20, 8, 3), (65536, 16, 2)])
    func createdImagesPassQemu(clusterSize: Int, refcountBits: Int, version: UInt32) throws {
        let dir = Scratch()
        let image = dir.file("v.qcow2")
        let size = 5 << 20 + 1536
        try QCOW2Image.create(image, size: UInt64(size), clusterSize: clusterSize, refcountBits: refcountBits, version: version)
        try expectQemuCheckClean(image)
        let info = try qemuImg("info", image)
        #expect(info.output.contains("(\(size) bytes)"), "\(info.output)")

        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        var model = DiskModel(size: size)
        var rng = SplitMix64(seed: 99)
        for i in 0..<30 {
            let length = Int.random(in: 1...200_000, using: &rng)
            let offset = Int.random(in: 0...(size - length), using: &rng)
            let data = pattern(length, seed: UInt64(i))
            try disk.write(data, at: UInt64(offset))
            model.write(data, at: offset)
        }
        try disk.write([1, 2, 3], at: UInt64(size - 3))
        model.write([1, 2, 3], at: size - 3)
        try disk.close()
        try expectQemuCheckClean(image)
        let raw = dir.file("out.raw")
        #expect(try qemuImg("convert", "-f", "qcow2", "-O", "raw", image, raw).status == 0)
        #expect(firstDifference(readFile(raw), model.bytes) == nil)
    }

    /// raw base ← qcow2 middle ← qcow2 top, all made by Vireo; qemu sees the same disk through the chain.
    @Test func backingChain() throws {
        let dir = Scratch()
        let size = 2 << 20
        let base = dir.file("base.raw")
        try createImage(base, format: .raw, size: UInt64(size))
        let baseData = pattern(size, seed: 1)
        let raw = try RawImage.open(base, writable: true)
        try raw.write(baseData, at: 0)
        try raw.close()
        var model = DiskModel(size: size, initial: baseData)

        try QCOW2Image.create(dir.file("mid.qcow2"), size: nil, clusterSize: 4096, backing: "base.raw", backingFormat: .raw)
        let mid = try QCOW2Image.open(dir.file("mid.qcow2"), options: ImageOptions(writable: true))
        #expect(mid.size == UInt64(size))
        try mid.write(pattern(10_000, seed: 2), at: 5000)
        model.write(pattern(10_000, seed: 2), at: 5000)
        try mid.close()

        try QCOW2Image.create(dir.file("top.qcow2"), size: nil, clusterSize: 65536, backing: "mid.qcow2")
        let top = try openImage(dir.file("top.qcow2"), options: ImageOptions(writable: true))
        #expect(firstDifference(try top.read(at: 0, count: size), model.bytes) == nil)
        try top.write(pattern(70_000, seed: 3), at: 1000)
        model.write(pattern(70_000, seed: 3), at: 1000)
        #expect(firstDifference(try top.read(at: 0, count: size), model.bytes) == nil)
        try top.close()

        try expectQemuCheckClean(dir.file("mid.qcow2"))
        try expectQemuCheckClean(dir.file("top.qcow2"))
        let out = dir.file("out.raw")
        #expect(try qemuImg("convert", "-O", "raw", dir.file("top.qcow2"), out).status == 0)
        #expect(firstDifference(readFile(out), model.bytes) == nil)
        let info = try qemuImg("info", dir.file("top.qcow2"))
        #expect(info.output.contains("backing file: mid.qcow2"))
        #expect(info.output.contains("backing file format: qcow2"))
    }

    @Test func backingCycleIsRefused() throws {
        let dir = Scratch()
        try QCOW2Image.create(dir.file("a.qcow2"), size: 1 << 20)
        try QCOW2Image.create(dir.file("b.qcow2"), size: nil, backing: "a.qcow2")
        // Re-point a at b behind our back: a -> b -> a.
        #expect(try qemuImg("rebase", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", dir.file("a.qcow2")).status == 0)
        do {
            _ = try openImage(dir.file("a.qcow2"))
            Issue.record("a cycle was accepted")
        } catch {
            #expect(error.kind == .backingChain)
            #expect(error.description.contains("cycle"))
            #expect(error.description.contains("a.qcow2 -> ") && error.description.contains("b.qcow2"), "\(error)")
        }
    }

    @Test func outOfRangeAndReadOnly() throws {
        let dir = Scratch()
        try QCOW2Image.create(dir.file("x.qcow2"), size: 1 << 20)
        let ro = try QCOW2Image.open(dir.file("x.qcow2"))
        #expect(throws: ImageError.self) { try ro.write([1], at: 0) }
        #expect(throws: ImageError.self) { try ro.read(at: (1 << 20) - 1, count: 2) }
        #expect(try ro.read(at: (1 << 20) - 1, count: 1) == [0])
    }

    /// check() agrees with qemu-img about leaks and corruptions that we plant.
    @Test func checkFindsLeaksAndCorruption() throws {
        let dir = Scratch()
        let image = dir.file("c.qcow2")
        try QCOW2Image.create(image, size: 1 << 20, clusterSize: 4096)
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        try disk.write(pattern(8192, seed: 5), at: 0)
        #expect(try disk.check().isClean)
        // Leak: bump the refcount of a cluster past the end of the data.
        let spare = try disk.allocateCluster()
        try disk.writeHost([UInt8](repeating: 0, count: 4096), at: spare * 4096)  // inside the file, as qemu-img counts
        let leaky = try disk.check()
        #expect(leaky.leaks == 1 && leaky.corruptions == 0, "\(leaky.summary)")
        #expect(leaky.exitCode == 3)
        // Corruption: drop the refcount of a data cluster.
        try disk.setRefcount(spare, 0)
        let dataHost = try disk.l2Entry(guestCluster: 0) & QCOW2Image.l2OffsetMask
        try disk.setRefcount(dataHost / 4096, 0)
        let broken = try disk.check()
        #expect(broken.corruptions >= 1, "\(broken.summary)")
        #expect(broken.exitCode == 2)
        try disk.close()
        #expect(try qemuImg("check", image).status == 2)
    }
}
