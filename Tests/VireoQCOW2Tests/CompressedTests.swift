import Foundation
import Testing
@testable import VireoQCOW2

@Suite struct CompressedTests {
    /// qemu's compressed images read identically; writes over compressed clusters copy them out and
    /// free the compressed space; snapshots of compressed images stay clean.
    @Test(arguments: [4096, 65536])
    func readAndOverwriteCompressed(clusterSize: Int) throws {
        let dir = Scratch()
        let source = dir.file("src.raw")
        let image = dir.file("c.qcow2")
        let size = 2 << 20
        var data = [UInt8](repeating: 0, count: size)
        // Compressible text-like data, plus an incompressible stretch (stored uncompressed by qemu).
        for i in 0..<size { data[i] = UInt8(truncatingIfNeeded: (i / 7) % 26 + 65) }
        data.replaceSubrange(300_000..<400_000, with: pattern(100_000, seed: 4))
        writeFile(source, data)
        #expect(try qemuImg("convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=\(clusterSize)", source, image).status == 0)
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        let report = try disk.check()
        #expect(report.compressedClusters > 0)
        #expect(firstDifference(try disk.read(at: 0, count: size), data) == nil)
        var model = DiskModel(size: size, initial: data)
        try disk.createSnapshot(name: "s")
        for (offset, length) in [(5, 10), (clusterSize * 3 + 100, clusterSize), (1 << 20, 70_000)] {
            try disk.write(pattern(length, seed: UInt64(offset)), at: UInt64(offset))
            model.write(pattern(length, seed: UInt64(offset)), at: offset)
        }
        try disk.discard(at: UInt64(clusterSize * 10), length: UInt64(clusterSize * 2))
        model.write([UInt8](repeating: 0, count: clusterSize * 2), at: clusterSize * 10)
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)
        try disk.deleteSnapshot("s")
        let after = try disk.check()
        #expect(after.isClean, "\(after.summary)")
        try disk.close()
        try expectQemuCheckClean(image)
        let reference = dir.file("ref.raw")
        writeFile(reference, model.bytes)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", image, reference).status == 0)
    }

    /// Vireo's compressed clusters: qemu reads them and finds the image clean.
    @Test func writeCompressedClusters() throws {
        let dir = Scratch()
        let image = dir.file("w.qcow2")
        let size = 1 << 20
        try QCOW2Image.create(image, size: UInt64(size), clusterSize: 4096)
        let disk = try QCOW2Image.open(image, options: ImageOptions(writable: true))
        var model = DiskModel(size: size)
        for cluster in 0..<200 {
            var data = [UInt8](repeating: UInt8(cluster % 251), count: 4096)
            if cluster % 5 == 0 { data = pattern(4096, seed: UInt64(cluster)) }  // incompressible: stored plainly
            data[cluster % 4096] = 0xEE
            try disk.writeCompressed(data, cluster: UInt64(cluster))
            model.write(data, at: cluster * 4096)
        }
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)
        let report = try disk.check()
        #expect(report.isClean && report.compressedClusters > 100, "\(report.summary)")
        try disk.close()
        try expectQemuCheckClean(image)
        let reference = dir.file("ref.raw")
        writeFile(reference, model.bytes)
        #expect(try qemuImg("compare", "-f", "qcow2", "-F", "raw", image, reference).status == 0)
    }
}
