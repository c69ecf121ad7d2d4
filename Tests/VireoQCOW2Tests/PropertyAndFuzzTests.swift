import Foundation
import Testing
@testable import VireoQCOW2

@Suite struct PropertyAndFuzzTests {
    /// Random writes (unaligned, cluster-crossing), reads and reopenings against a byte-array model,
    /// over a backing file, with a tiny L2 cache so eviction and writeback run constantly.
    @Test(arguments: [(UInt64(1), 512), (2, 4096), (3, 65536)])
    func randomOperationsMatchModel(seed: UInt64, clusterSize: Int) throws {
        let dir = Scratch()
        let size = 3 << 20
        let base = dir.file("base.raw")
        let baseData = pattern(size - 100_000, seed: seed &+ 100)  // shorter than the overlay: the tail reads as zeros
        writeFile(base, baseData)
        let image = dir.file("p.qcow2")
        try QCOW2Image.create(image, size: UInt64(size), clusterSize: clusterSize, backing: "base.raw", backingFormat: .raw,
                              refcountBits: [1, 4, 16, 64][Int(seed % 4)])
        var model = DiskModel(size: size, initial: baseData)
        var rng = SplitMix64(seed: seed)
        let options = ImageOptions(writable: true, l2CacheBytes: 2 * clusterSize)
        var disk = try QCOW2Image.open(image, options: options)
        for step in 0..<300 {
            switch rng.next() % 10 {
            case 0:
                try disk.close()
                disk = try QCOW2Image.open(image, options: options)
            case 1, 2:
                let length = Int(rng.next() % UInt64(3 * clusterSize)) + 1
                let offset = Int(rng.next() % UInt64(size - length))
                #expect(firstDifference(try disk.read(at: UInt64(offset), count: length), Array(model.bytes[offset..<(offset + length)])) == nil,
                        "seed \(seed) step \(step)")
            case 3:
                try disk.flush()
            default:
                let length = Int(rng.next() % UInt64(2 * clusterSize + 700)) + 1
                let offset = Int(rng.next() % UInt64(size - length))
                let data = pattern(length, seed: rng.next())
                try disk.write(data, at: UInt64(offset))
                model.write(data, at: offset)
            }
        }
        #expect(firstDifference(try disk.read(at: 0, count: size), model.bytes) == nil)
        let report = try disk.check()
        #expect(report.isClean, "\(report.summary)")
        try disk.close()
        try expectQemuCheckClean(image)
        let out = dir.file("out.raw")
        #expect(try qemuImg("convert", "-O", "raw", image, out).status == 0)
        #expect(firstDifference(readFile(out), model.bytes) == nil)
    }

    /// Targeted hostile headers give clear errors naming the image and the problem.
    @Test func hostileHeadersHaveClearErrors() throws {
        let dir = Scratch()
        let good = dir.file("good.qcow2")
        #expect(try qemuImg("create", "-f", "qcow2", good, "64M").status == 0)
        let original = readFile(good)

        func expectError(_ name: String, _ mutate: (inout [UInt8]) -> Void, _ fragments: String...) {
            var bytes = original
            mutate(&bytes)
            let path = dir.file(name)
            writeFile(path, bytes)
            do {
                _ = try QCOW2Image.open(path, options: ImageOptions(writable: true))
                Issue.record("\(name) opened")
            } catch {
                #expect(error.description.hasPrefix(path + ": "), "\(error)")
                for fragment in fragments { #expect(error.message.contains(fragment), "\(error)") }
            }
        }
        expectError("magic.qcow2", { $0[0] = 0 }, "not a qcow2 image")
        expectError("truncated.qcow2", { $0.removeLast($0.count - 50) }, "too small")
        expectError("version.qcow2", { $0.setBE32(4, at: 4) }, "version 4")
        expectError("cluster.qcow2", { $0.setBE32(22, at: 20) }, "cluster_bits 22")
        expectError("l1.qcow2", { $0.setBE64(0x10_0000, at: 40) }, "L1 table offset 0x100000", "lies beyond the end of the file (196616 bytes)")
        expectError("l1align.qcow2", { $0.setBE64(0x30001, at: 40) }, "L1 table offset 0x30001")
        expectError("l1size.qcow2", { $0.setBE32(0, at: 36) }, "too small for the virtual size")
        expectError("l1huge.qcow2", { $0.setBE32(0x7FFF_FFFF, at: 36) }, "exceeds the 32 MiB limit")
        expectError("reftable.qcow2", { $0.setBE32(0x10_0000, at: 56) }, "refcount table")
        expectError("order.qcow2", { $0.setBE32(7, at: 96) }, "refcount_order 7")
        expectError("feature.qcow2", { $0.setBE64(1 << 9, at: 72) }, "incompatible feature bit 9")
        expectError("corrupt.qcow2", { $0.setBE64(2, at: 72) }, "marked corrupt")
        expectError("extl2.qcow2", { $0.setBE64(1 << 4, at: 72) }, "extended L2")
        expectError("hdrlen.qcow2", { $0.setBE32(100, at: 100) }, "header_length 100")
        expectError("ext.qcow2", { $0.setBE32(0xFFFF_0000, at: 116) }, "overruns the header area")
        expectError("crypt.qcow2", { $0.setBE32(1, at: 32) }, "encrypted")
        expectError("backing.qcow2", { $0.setBE64(0x40000, at: 8); $0.setBE32(10, at: 16) }, "backing file name")

        // A corrupt image still opens read-only.
        var corrupt = original
        corrupt.setBE64(2, at: 72)
        writeFile(dir.file("ro.qcow2"), corrupt)
        #expect(try QCOW2Image.open(dir.file("ro.qcow2")).read(at: 0, count: 512) == [UInt8](repeating: 0, count: 512))
    }

    /// Mutates real images (header, L1, L2, refcount structures) at random: every outcome is an error or
    /// successful I/O; never a crash, a hang or a huge allocation.
    @Test func fuzzMutatedImages() throws {
        let dir = Scratch()
        let seedImage = dir.file("seed.qcow2")
        #expect(try qemuImg("create", "-f", "qcow2", "-o", "cluster_size=4096", seedImage, "8M").status == 0)
        try qemuIO(seedImage, "write -P 0x33 0 20k", "write -P 0x44 4M 8k")
        let original = readFile(seedImage)
        var rng = SplitMix64(seed: 0xF022)
        let path = dir.file("fuzz.qcow2")
        var opened = 0
        for _ in 0..<400 {
            var bytes = original
            for _ in 0..<Int(rng.next() % 4 + 1) {
                // Bias toward metadata: the header cluster and the first few clusters.
                let limit = rng.next() % 3 == 0 ? bytes.count : min(bytes.count, 6 * 4096)
                let at = Int(rng.next() % UInt64(limit))
                switch rng.next() % 4 {
                case 0: bytes[at] ^= UInt8(1 << (rng.next() % 8))
                case 1: bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                case 2: if at + 8 <= bytes.count { bytes.setBE64(rng.next() >> (rng.next() % 64), at: at & ~7) }
                default: bytes.removeLast(bytes.count - at)
                }
            }
            writeFile(path, bytes)
            do {
                let image = try openImage(path, options: ImageOptions(writable: rng.next() % 2 == 0, format: .qcow2))
                opened += 1
                let size = image.size
                for _ in 0..<4 where size > 0 {
                    let offset = rng.next() % size
                    let length = Int(min(size - offset, rng.next() % 70_000 + 1))
                    _ = try? image.read(at: offset, count: length)
                    if image.isWritable { try? image.write([1, 2, 3], at: offset) }
                }
                if let qcow = image as? QCOW2Image { _ = try? qcow.check() }
                try? image.close()
            } catch {
                #expect(error.path == path)
            }
        }
        #expect(opened > 0)
    }
}
