import Foundation
import Testing
@testable import VireoQCOW2

func vireoMapJSON(_ image: any BlockImage) throws -> String {
    "[" + (try allocationMap(image)).map(\.json).joined(separator: ",\n") + "]"
}

@Suite struct DiscardAndMapTests {
    /// Zeroing and discarding whole and partial clusters: reads, qemu-img map and check agree.
    @Test(arguments: ["1.1", "0.10"])
    func zeroDiscardMap(compat: String) throws {
        let dir = Scratch()
        let image = dir.file("z.qcow2")
        let size = 4 << 20
        #expect(try qemuImg("create", "-q", "-f", "qcow2", "-o", "compat=\(compat)", image, "\(size)").status == 0)
        try qemuIO(image, "write -P 0x11 0 1M", "write -P 0x22 2M 512k")
        var model = DiskModel(size: size)
        model.write([UInt8](repeating: 0x11, count: 1 << 20), at: 0)
        model.write([UInt8](repeating: 0x22, count: 512 << 10), at: 2 << 20)

        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        #expect(try vireoMapJSON(disk) == (try qemuImg("map", "--output", "json", image)).output.trimmingCharacters(in: .whitespacesAndNewlines))
        try disk.writeZeroes(at: 100_000, length: 300_000)            // partial + whole clusters, allocation kept (v3)
        model.write([UInt8](repeating: 0, count: 300_000), at: 100_000)
        try disk.writeZeroes(at: 600_000, length: 200_000, unmap: true)
        model.write([UInt8](repeating: 0, count: 200_000), at: 600_000)
        try disk.discard(at: 2 << 20, length: 256 << 10)                // whole clusters only
        model.write([UInt8](repeating: 0, count: 256 << 10), at: 2 << 20)
        try disk.discard(at: 3 << 20, length: 1000)                     // nothing: partial cluster
        try disk.write(pattern(70_000, seed: 5), at: 150_000)          // reuse of preallocated zero clusters
        model.write(pattern(70_000, seed: 5), at: 150_000)
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)
        #expect(try disk.check().isClean)
        try disk.flush()
        #expect(try vireoMapJSON(disk) == (try qemuImg("map", "--output", "json", image)).output.trimmingCharacters(in: .whitespacesAndNewlines))
        try disk.close()
        try expectQemuCheckClean(image)
        let reference = dir.file("ref.raw")
        writeFile(reference, model.bytes)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", image, reference).status == 0)
    }

    /// Over a backing file, discarded clusters must not show the backing data again (v3: zero flag).
    @Test func discardOverBacking() throws {
        let dir = Scratch()
        let base = dir.file("b.qcow2")
        let top = dir.file("t.qcow2")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", base, "1M").status == 0)
        try qemuIO(base, "write -P 0x33 0 1M")
        #expect(try qemuImg("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", top).status == 0)
        let disk = try QCOW2Image.open(top, options: ImageOptions(writable: true))
        try disk.write(pattern(65536, seed: 1), at: 0)
        try disk.discard(at: 0, length: 131072)
        #expect(try disk.read(at: 0, count: 131072) == [UInt8](repeating: 0, count: 131072))
        #expect(try disk.read(at: 131072, count: 10) == [UInt8](repeating: 0x33, count: 10))
        #expect(try vireoMapJSON(disk) == (try qemuImg("map", "--output", "json", top)).output.trimmingCharacters(in: .whitespacesAndNewlines))
        try disk.close()
        try expectQemuCheckClean(top)
    }
}

@Suite struct SnapshotTests {
    /// Vireo's snapshots are seen by qemu and vice versa; copy-on-write keeps every snapshot's data;
    /// apply and delete keep refcounts exact.
    @Test(arguments: [(65536, "1.1"), (4096, "1.1"), (65536, "0.10")])
    func snapshotLifecycle(clusterSize: Int, compat: String) throws {
        let dir = Scratch()
        let image = dir.file("s.qcow2")
        let size = 2 << 20
        #expect(try qemuImg("create", "-q", "-f", "qcow2", "-o", "cluster_size=\(clusterSize),compat=\(compat)", image, "\(size)").status == 0)
        try qemuIO(image, "write -P 0x44 0 512k")
        var model = DiskModel(size: size)
        model.write([UInt8](repeating: 0x44, count: 512 << 10), at: 0)

        var disk = try QCOW2Image.open(image, options: ImageOptions(writable: true, l2CacheBytes: 2 * clusterSize))
        let first = try disk.createSnapshot(name: "first", vmStateSize: 0)
        #expect(first.id == "1")
        let atFirst = model.bytes
        var rng = SplitMix64(seed: 3)
        for i in 0..<20 {
            let length = Int.random(in: 1...100_000, using: &rng)
            let offset = Int.random(in: 0...(size - length), using: &rng)
            try disk.write(pattern(length, seed: UInt64(i)), at: UInt64(offset))
            model.write(pattern(length, seed: UInt64(i)), at: offset)
        }
        try disk.writeZeroes(at: 0, length: 65536 * 2)
        model.write([UInt8](repeating: 0, count: 65536 * 2), at: 0)
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)
        let report = try disk.check()
        #expect(report.isClean, "\(report.summary)")
        try disk.close()
        try expectQemuCheckClean(image)
        let list = try qemuImg("snapshot", "-l", image)
        #expect(list.output.contains("first"), "\(list.output)")
        // qemu reads the snapshot's data as it was.
        let extracted = dir.file("first.raw")
        #expect(try qemuImg("convert", "-f", "qcow2", "-O", "raw", "-l", "snapshot.name=first", image, extracted).status == 0)
        #expect(firstDifference(readFile(extracted), atFirst) == nil)

        // qemu's snapshot, seen by Vireo.
        #expect(try qemuImg("snapshot", "-c", "second", image).status == 0)
        let atSecond = model.bytes
        disk = try QCOW2Image.open(image, options: ImageOptions(writable: true, l2CacheBytes: 2 * clusterSize))
        #expect(try disk.snapshots().map(\.name) == ["first", "second"])
        try disk.write(pattern(300_000, seed: 77), at: 1000)
        try disk.applySnapshot("first")
        #expect(firstDifference(try disk.read(at: 0, count: size), atFirst) == nil)
        #expect(try disk.check().isClean)
        try disk.write(pattern(5000, seed: 78), at: 70_000)   // COW again after apply
        try disk.deleteSnapshot("first")
        let afterDelete = try disk.check()
        #expect(afterDelete.isClean, "\(afterDelete.summary)")
        try disk.applySnapshot("2")
        #expect(firstDifference(try disk.read(at: 0, count: size), atSecond) == nil)
        try disk.deleteSnapshot("second")
        #expect(try disk.snapshots().isEmpty)
        let final = try disk.check()
        #expect(final.isClean, "\(final.summary)")
        try disk.close()
        try expectQemuCheckClean(image)
        let reference = dir.file("ref.raw")
        writeFile(reference, atSecond)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", image, reference).status == 0)
    }
}
