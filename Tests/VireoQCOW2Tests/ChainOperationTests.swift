import Foundation
import Testing
@testable import VireoQCOW2

@Suite struct ChainOperationTests {
    /// Growing past the L1 table's capacity moves it; shrinking works only over an unused tail.
    @Test func resizeGrowAndShrink() throws {
        let dir = Scratch()
        let image = dir.file("r.qcow2")
        try QCOW2Image.create(image, size: 1 << 20, clusterSize: 512)
        var disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        try disk.write(pattern(100_000, seed: 1), at: 500_000)
        try disk.resize(to: 64 << 20)
        #expect(disk.size == 64 << 20)
        try disk.write(pattern(5000, seed: 2), at: (64 << 20) - 5000)
        #expect(try disk.read(at: 500_000, count: 100_000) == pattern(100_000, seed: 1))
        #expect(try disk.check().isClean)
        #expect(throws: ImageError.self) { try disk.resize(to: 32 << 20) }
        try disk.close()
        try expectQemuCheckClean(image)
        #expect(try qemuImg("info", image).output.contains("(67108864 bytes)"))
        #expect(throws: ImageError.self) { try resizeImage(image, to: 1 << 20) }
        disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        try disk.discard(at: (63 << 20), length: 1 << 20)
        try disk.close()
        try resizeImage(image, to: 63 << 20, shrink: true)
        try expectQemuCheckClean(image)
        #expect(try qemuImg("info", image).output.contains("(66060288 bytes)"))
        #expect(try QCOW2Image.open(image).read(at: 500_000, count: 100_000) == pattern(100_000, seed: 1))
    }

    /// commit: the overlay's data lands in the base, the overlay is emptied; both stay clean.
    @Test func commitIntoBase() throws {
        let dir = Scratch()
        let base = dir.file("base.qcow2")
        let top = dir.file("top.qcow2")
        let size = 2 << 20
        #expect(try qemuImg("create", "-q", "-f", "qcow2", base, "\(size)").status == 0)
        try qemuIO(base, "write -P 0x11 0 2M")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top).status == 0)
        var model = DiskModel(size: size, initial: [UInt8](repeating: 0x11, count: size))
        let disk = try QCOW2Image.open(top, options: ImageOptions(writable: true))
        try disk.write(pattern(200_000, seed: 9), at: 12_345)
        model.write(pattern(200_000, seed: 9), at: 12_345)
        try disk.writeZeroes(at: 1 << 20, length: 128 << 10)
        model.write([UInt8](repeating: 0, count: 128 << 10), at: 1 << 20)
        try disk.close()
        #expect(try commitImage(top) == base)
        try expectQemuCheckClean(base)
        try expectQemuCheckClean(top)
        let reference = dir.file("ref.raw")
        writeFile(reference, model.bytes)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", base, reference).status == 0)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", top, reference).status == 0)
        #expect(try allocationMap(try QCOW2Image.open(top)).allSatisfy { $0.depth == 1 })
    }

    /// Safe rebase keeps the guest view; unsafe rebase only renames.
    @Test func rebaseSafeAndUnsafe() throws {
        let dir = Scratch()
        let old = dir.file("old.qcow2")
        let new = dir.file("new.qcow2")
        let top = dir.file("top.qcow2")
        let size = 1 << 20
        #expect(try qemuImg("create", "-q", "-f", "qcow2", old, "\(size)").status == 0)
        try qemuIO(old, "write -P 0x11 0 1M")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", new, "\(size)").status == 0)
        try qemuIO(new, "write -P 0x11 0 256k", "write -P 0x22 512k 256k")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", "-b", "old.qcow2", "-F", "qcow2", top).status == 0)
        try qemuIO(top, "write -P 0x33 100k 10k")
        let before = try QCOW2Image.open(top).read(at: 0, count: size)
        try rebaseImage(top, backing: "new.qcow2", backingFormat: .qcow2)
        let after = try QCOW2Image.open(top)
        #expect(after.header.backingFile == "new.qcow2")
        #expect(firstDifference(try after.read(at: 0, count: size), before) == nil)
        try expectQemuCheckClean(top)
        let reference = dir.file("ref.raw")
        writeFile(reference, before)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", top, reference).status == 0)
        // Unsafe: back to old.qcow2 by name only (the view now differs where new == old was relied on).
        try rebaseImage(top, backing: "old.qcow2", backingFormat: .qcow2, unsafe: true)
        #expect(try qemuImg("info", top).output.contains("backing file: old.qcow2"))
        try expectQemuCheckClean(top)
        // Removing the backing file (safe): everything is pulled in.
        try rebaseImage(top, backing: nil, backingFormat: nil)
        #expect(try QCOW2Image.open(top).header.backingFile == nil)
        try expectQemuCheckClean(top)
    }

    @Test(arguments: [Preallocation.metadata, .full])
    func preallocation(_ mode: Preallocation) throws {
        let dir = Scratch()
        let image = dir.file("p.qcow2")
        try QCOW2Image.create(image, size: 3 << 20, clusterSize: 65536, preallocation: mode)
        try expectQemuCheckClean(image)
        let map = try qemuImg("map", "--output", "json", image).output
        #expect(!map.contains("\"data\": false"), "\(map)")
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        #expect(try disk.read(at: 0, count: 3 << 20) == [UInt8](repeating: 0, count: 3 << 20))
        try disk.write(pattern(1000, seed: 1), at: 70_000)
        try disk.close()
        try expectQemuCheckClean(image)
    }
}
