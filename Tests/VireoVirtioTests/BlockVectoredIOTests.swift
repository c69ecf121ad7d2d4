#if canImport(Glibc)
import Glibc
#endif
import Logging
import Testing
import VireoDevices
import VireoMemory
import VireoQCOW2
import VireoTestSupport
@testable import VireoVirtio

/// virtio-blk's zero-copy data path: the image reads and writes straight between the file and the
/// guest buffers of a chain (`preadv`/`pwritev`), whatever the buffers' split, alignment or region.
@Suite struct BlockVectoredIOTests {
    /// Two RAM regions with a hole between them, as below and above a PCI hole.
    static let twoRegions: [(start: GuestAddress, size: UInt64)] = [(GuestAddress(0), 4 << 20), (GuestAddress(8 << 20), 2 << 20)]

    /// Bytes that differ from position to position and from one `seed` to another.
    static func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9 &+ Int(seed) &* 101) }
    }

    /// One request as a chain at descriptor 0: a 16-byte header at `header`, `data` buffers (device-
    /// readable for writes, device-writable for reads) and a status byte at `status`. Returns the
    /// status byte and the used length.
    static func request(
        _ pci: PCIDriver, type: UInt32, sector: UInt64, data: [(address: UInt64, length: UInt32)],
        header: UInt64 = 0x30_0000, status: UInt64 = 0x30_0100
    ) throws -> (status: UInt8, used: UInt32) {
        let memory = pci.driver.memory
        try memory.writeInteger(type, at: GuestAddress(header))
        try memory.writeInteger(UInt32(0), at: GuestAddress(header + 4))
        try memory.writeInteger(sector, at: GuestAddress(header + 8))
        try memory.writeInteger(UInt8(0xFF), at: GuestAddress(status))
        let dataFlags: UInt16 = type == 0 ? 2 : 0
        try pci.driver.setDescriptor(0, address: header, length: 16, flags: 1, next: 1)
        for (index, buffer) in data.enumerated() {
            try pci.driver.setDescriptor(UInt16(index + 1), address: buffer.address, length: buffer.length, flags: dataFlags | 1,
                                         next: UInt16(index + 2))
        }
        try pci.driver.setDescriptor(UInt16(data.count + 1), address: status, length: 1, flags: 2)
        try pci.driver.makeAvailable(0)
        pci.notify()
        let used = try pci.driver.usedElement(pci.driver.usedIndex &- 1)
        return (try memory.readInteger(UInt8.self, at: GuestAddress(status)), used.length)
    }

    /// Writes `bytes` across `buffers` in guest memory (the stream they form, in order).
    static func scatter(_ bytes: [UInt8], _ buffers: [(address: UInt64, length: UInt32)], _ memory: GuestMemory) throws {
        var done = 0
        for buffer in buffers {
            try memory.write(bytes[done..<(done + Int(buffer.length))], at: GuestAddress(buffer.address))
            done += Int(buffer.length)
        }
    }

    /// The stream `buffers` form in guest memory.
    static func gather(_ buffers: [(address: UInt64, length: UInt32)], _ memory: GuestMemory) throws -> [UInt8] {
        try buffers.flatMap { try memory.read(count: Int($0.length), at: GuestAddress($0.address)) }
    }

    static func rawDisk(sectors: Int, directIO: Bool = false) throws -> (String, any BlockImage) {
        let path = "/tmp/vireo-blk-vectored-\(UInt32.random(in: 0...UInt32.max)).img"
        try RawImage.create(path, size: UInt64(sectors * 512))
        return (path, try openImage(path, options: ImageOptions(writable: true, format: .raw, directIO: directIO)))
    }

    @Test func buffersScatteredOverPagesAndRegions() throws {
        let (path, image) = try Self.rawDisk(sectors: 2048)
        defer { unlink(path) }
        let pci = try PCIDriver(VirtioBlock(image: image, readOnly: false, serial: "v", logger: Logger(label: "t")),
                                memoryRegions: Self.twoRegions)
        pci.initialise()
        // 4 KiB in three odd pieces: across a page boundary, in the second region, unaligned over two pages.
        let writeBuffers: [(address: UInt64, length: UInt32)] = [(0x10_0FFD, 7), (0x80_0003, 1533), (0x18_0801, 2556)]
        let data = Self.pattern(4096, seed: 1)
        try Self.scatter(data, writeBuffers, pci.driver.memory)
        let write = try Self.request(pci, type: 1, sector: 5, data: writeBuffers)
        #expect(write.status == 0 && write.used == 1)
        #expect(try image.read(at: 5 * 512, count: 4096) == data)

        // Read it back (and a sector on either side) through a different split.
        let readBuffers: [(address: UInt64, length: UInt32)] = [(0x81_0001, 100), (0x1C_0FF0, 4000), (0x9F_FE00, 500), (0x20_0000, 520)]
        let read = try Self.request(pci, type: 0, sector: 4, data: readBuffers)
        #expect(read.status == 0 && read.used == 5121)
        let zeros = [UInt8](repeating: 0, count: 512)
        #expect(try Self.gather(readBuffers, pci.driver.memory) == zeros + data + zeros)
        #expect(pci.status & 0x40 == 0)
    }

    @Test func headerDataAndStatusShareBuffers() throws {
        let (path, image) = try Self.rawDisk(sectors: 64)
        defer { unlink(path) }
        let pci = try PCIDriver(VirtioBlock(image: image, readOnly: false, serial: "v", logger: Logger(label: "t")))
        pci.initialise()
        let memory = pci.driver.memory
        let data = Self.pattern(1024, seed: 2)
        // Write: header and data in one readable buffer.
        let writeBuffer: UInt64 = 0x20_0003
        try memory.writeInteger(UInt32(1), at: GuestAddress(writeBuffer))
        try memory.writeInteger(UInt64(7), at: GuestAddress(writeBuffer + 8))
        try memory.write(data, at: GuestAddress(writeBuffer + 16))
        try pci.driver.setDescriptor(0, address: writeBuffer, length: 16 + 1024, flags: 1, next: 1)
        try pci.driver.setDescriptor(1, address: 0x21_0000, length: 1, flags: 2)
        try pci.driver.makeAvailable(0)
        pci.notify()
        #expect(try memory.readInteger(UInt8.self, at: GuestAddress(0x21_0000)) == 0)
        #expect(try image.read(at: 7 * 512, count: 1024) == data)

        // Read: data and status byte in one writable buffer.
        let readBuffer: UInt64 = 0x22_0FF1
        try memory.writeInteger(UInt32(0), at: GuestAddress(0x23_0000))
        try memory.writeInteger(UInt64(7), at: GuestAddress(0x23_0008))
        try pci.driver.setDescriptor(0, address: 0x23_0000, length: 16, flags: 1, next: 1)
        try pci.driver.setDescriptor(1, address: readBuffer, length: 1024 + 1, flags: 2)
        try pci.driver.makeAvailable(0)
        pci.notify()
        #expect(try memory.readInteger(UInt8.self, at: GuestAddress(readBuffer + 1024)) == 0)
        #expect(try memory.read(count: 1024, at: GuestAddress(readBuffer)) == data)
        #expect(try pci.driver.usedElement(pci.driver.usedIndex &- 1).length == 1025)
    }

    @Test func badRequestsGetIOErrorAndLeaveTheDiskAlone() throws {
        let (path, image) = try Self.rawDisk(sectors: 64)
        defer { unlink(path) }
        let pci = try PCIDriver(VirtioBlock(image: image, readOnly: false, serial: "v", logger: Logger(label: "t")))
        pci.initialise()
        let buffers: [(address: UInt64, length: UInt32)] = [(0x20_0001, 1000), (0x21_0000, 24)]
        try Self.scatter(Self.pattern(1024, seed: 3), buffers, pci.driver.memory)
        // Runs past the last sector; not whole sectors; sector number overflowing the byte offset.
        #expect(try Self.request(pci, type: 1, sector: 63, data: buffers).status == 1)
        #expect(try Self.request(pci, type: 0, sector: 0, data: [(0x20_0001, 1000)]).status == 1)
        #expect(try Self.request(pci, type: 1, sector: UInt64.max / 256, data: buffers).status == 1)
        #expect(try image.read(at: 0, count: 64 * 512) == [UInt8](repeating: 0, count: 64 * 512))
        #expect(pci.status & 0x40 == 0)
    }

    @Test func directIOTakesAlignedBuffersStraightAndBouncesTheRest() throws {
        let directPath = "/tmp/vireo-blk-direct-probe-\(UInt32.random(in: 0...UInt32.max))"
        defer { unlink(directPath) }
        // O_DIRECT needs a file system that supports it (tmpfs does not); nothing to test without one.
        guard (try? PosixHostFile(path: directPath, writable: true, create: true, direct: true)) != nil else { return }
        let (path, image) = try Self.rawDisk(sectors: 256, directIO: true)
        defer { unlink(path) }
        let pci = try PCIDriver(VirtioBlock(image: image, readOnly: false, serial: "d", logger: Logger(label: "t")))
        pci.initialise()
        // Page-aligned buffers at a 4 KiB-aligned offset: straight to the file.
        let aligned: [(address: UInt64, length: UInt32)] = [(0x20_0000, 4096), (0x22_3000, 8192)]
        let alignedData = Self.pattern(12288, seed: 4)
        try Self.scatter(alignedData, aligned, pci.driver.memory)
        #expect(try Self.request(pci, type: 1, sector: 8, data: aligned).status == 0)
        // A 512-byte buffer inside one of those blocks: read-modify-write through bounce buffers.
        let small: [(address: UInt64, length: UInt32)] = [(0x25_0200, 512)]
        let smallData = Self.pattern(512, seed: 5)
        try Self.scatter(smallData, small, pci.driver.memory)
        #expect(try Self.request(pci, type: 1, sector: 9, data: small).status == 0)
        var expected = alignedData
        expected.replaceSubrange(512..<1024, with: smallData)
        #expect(try image.read(at: 8 * 512, count: 12288) == expected)
        // And back, aligned and not.
        let readAligned: [(address: UInt64, length: UInt32)] = [(0x28_0000, 12288)]
        #expect(try Self.request(pci, type: 0, sector: 8, data: readAligned).status == 0)
        #expect(try Self.gather(readAligned, pci.driver.memory) == expected)
        let readUnaligned: [(address: UInt64, length: UInt32)] = [(0x2C_0011, 3000), (0x2D_0000, 1096)]
        #expect(try Self.request(pci, type: 0, sector: 9, data: readUnaligned).status == 0)
        #expect(try Self.gather(readUnaligned, pci.driver.memory) == Array(expected[512..<4608]))
    }

    @Test func qcow2AcrossClustersOverBackingAndHoles() throws {
        let base = "/tmp/vireo-blk-vectored-\(UInt32.random(in: 0...UInt32.max))"
        let backingPath = base + "-backing.raw", overlayPath = base + "-overlay.qcow2"
        defer { unlink(backingPath); unlink(overlayPath) }
        // A 24 KiB backing file under a 64 KiB overlay of 4 KiB clusters: beyond 24 KiB it reads as zeros.
        let backingData = Self.pattern(24 << 10, seed: 6)
        try RawImage.create(backingPath, size: 24 << 10)
        let backing = try RawImage.open(backingPath, writable: true)
        try backing.write(backingData, at: 0)
        try backing.close()
        try QCOW2Image.create(overlayPath, size: 64 << 10, clusterSize: 4096, backing: backingPath, backingFormat: .raw)
        let image = try openImage(overlayPath, options: ImageOptions(writable: true))
        let pci = try PCIDriver(VirtioBlock(image: image, readOnly: false, serial: "q", logger: Logger(label: "t")),
                                memoryRegions: Self.twoRegions)
        pci.initialise()

        var model = backingData + [UInt8](repeating: 0, count: 40 << 10)
        // Partial clusters at both ends (their rest from the backing file), crossing four cluster
        // boundaries, from buffers in both regions.
        let first: [(address: UInt64, length: UInt32)] = [(0x20_0FFF, 5000), (0x80_0001, 3192), (0x21_0000, 4096)]
        let firstData = Self.pattern(12288, seed: 7)
        try Self.scatter(firstData, first, pci.driver.memory)
        #expect(try Self.request(pci, type: 1, sector: 5, data: first).status == 0)
        model.replaceSubrange(2560..<(2560 + 12288), with: firstData)
        // Past the end of the backing file: clusters allocated over zeros.
        let second: [(address: UInt64, length: UInt32)] = [(0x22_0003, 1024), (0x81_0000, 6144)]
        let secondData = Self.pattern(7168, seed: 8)
        try Self.scatter(secondData, second, pci.driver.memory)
        #expect(try Self.request(pci, type: 1, sector: 70, data: second).status == 0)
        model.replaceSubrange((70 * 512)..<(70 * 512 + 7168), with: secondData)
        // Overwrite in place across an allocated boundary.
        let third: [(address: UInt64, length: UInt32)] = [(0x23_0005, 2048)]
        let thirdData = Self.pattern(2048, seed: 9)
        try Self.scatter(thirdData, third, pci.driver.memory)
        #expect(try Self.request(pci, type: 1, sector: 15, data: third).status == 0)
        model.replaceSubrange((15 * 512)..<(15 * 512 + 2048), with: thirdData)

        // The whole disk back: allocated clusters, backing data, the hole past the backing file.
        let whole: [(address: UInt64, length: UInt32)] = [(0x24_0001, 30000), (0x82_0000, 35536)]
        try Self.scatter([UInt8](repeating: 0xEE, count: 65536), whole, pci.driver.memory)
        let read = try Self.request(pci, type: 0, sector: 0, data: whole)
        #expect(read.status == 0 && read.used == 65537)
        #expect(try Self.gather(whole, pci.driver.memory) == model)
        #expect(pci.status & 0x40 == 0)
        try image.close()

        let check = try ChildCommand.run("/usr/bin/qemu-img", ["check", overlayPath])
        #expect(check.status == 0, "qemu-img check: \(check.output)")
        let reopened = try openImage(overlayPath, options: ImageOptions(writable: false))
        #expect(try reopened.read(at: 0, count: 65536) == model)
    }
}
