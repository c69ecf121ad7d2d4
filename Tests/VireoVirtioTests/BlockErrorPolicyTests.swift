#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import Testing
import VireoDevices
import VireoMemory
import VireoQCOW2
import VireoSystem
@testable import VireoVirtio

/// A raw image whose writes and flushes fail with a chosen errno while `failure` is set: the host
/// file system running full (ENOSPC) or a failing disk (EIO), on demand.
final class FailingImage: BlockImage, @unchecked Sendable {
    let inner: RawImage
    let failure = Mutex<Int32?>(nil)
    let failedCalls = Atomic<Int>(0)

    init(_ inner: RawImage) { self.inner = inner }

    var path: String { inner.path }
    var format: ImageFormat { .raw }
    var size: UInt64 { inner.size }
    var isWritable: Bool { true }

    func fail() throws(ImageError) {
        if let errno = failure.withLock({ $0 }) {
            failedCalls.add(1, ordering: .relaxed)
            throw ImageError(path, .io, "pwrite: \(SystemError.message(for: errno))", errno: errno)
        }
    }

    func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] { try inner.read(at: offset, count: count) }
    func write(_ bytes: [UInt8], at offset: UInt64) throws(ImageError) {
        try fail()
        try inner.write(bytes, at: offset)
    }
    func flush() throws(ImageError) {
        try fail()
        try inner.flush()
    }
    func discard(at offset: UInt64, length: UInt64) throws(ImageError) {
        try fail()
        try inner.discard(at: offset, length: length)
    }
    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws(ImageError) {
        try fail()
        try inner.writeZeroes(at: offset, length: length, unmap: unmap)
    }
    func close() throws(ImageError) { try inner.close() }
}

@Suite struct BlockErrorPolicyTests {
    static func makeRaw(bytes: UInt64) throws -> (String, RawImage) {
        let path = "/tmp/vireo-blk-policy-\(UInt32.random(in: 0...UInt32.max)).img"
        try RawImage.create(path, size: bytes)
        return (path, try RawImage.open(path, writable: true))
    }

    /// Makes a write of `data` at `sector` available and notifies; returns the status byte's address.
    @discardableResult
    static func submit(_ pci: PCIDriver, type: UInt32, sector: UInt64, out: [UInt8] = [], head: UInt16) throws -> UInt64 {
        var header = ByteWriter()
        header.append(type); header.append(UInt32(0)); header.append(sector)
        var parts: [(data: [UInt8], length: Int, writable: Bool)] = [(header.bytes, 16, false)]
        if !out.isEmpty { parts.append((out, out.count, false)) }
        parts.append(([0xFF], 1, true))
        let addresses = try pci.driver.chain(at: head, parts)
        try pci.driver.makeAvailable(head)
        pci.notify()
        return addresses.last!
    }

    static func segment(sector: UInt64, count: UInt32, flags: UInt32 = 0) -> [UInt8] {
        var bytes = ByteWriter()
        bytes.append(sector); bytes.append(count); bytes.append(flags)
        return bytes.bytes
    }

    @Test func outOfSpaceHoldsTheRequestUntilResumed() throws {
        let (path, raw) = try Self.makeRaw(bytes: 64 * 512)
        defer { unlink(path) }
        let image = FailingImage(raw)
        let block = VirtioBlock(image: image, readOnly: false, serial: "full", logger: Logger(label: "t"))
        let reports = Mutex<[ImageError]>([])
        block.onOutOfSpace { error in reports.withLock { $0.append(error) } }
        let pci = try PCIDriver(block)
        pci.initialise()

        image.failure.withLock { $0 = ENOSPC }
        let data = [UInt8](repeating: 0xA5, count: 1024)
        let status = try Self.submit(pci, type: 1, sector: 2, out: data, head: 0)
        // Held: not used, status untouched, reported once.
        #expect(pci.driver.usedIndex == 0)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 0xFF)
        #expect(reports.withLock { $0.count } == 1)
        #expect(reports.withLock { $0.first?.isOutOfSpace } == true)
        #expect(block.heldError?.errno == ENOSPC)

        // Later requests queue behind it; notifications while stalled do not retry (one failed call so far).
        let flushStatus = try Self.submit(pci, type: 4, sector: 0, head: 4)
        #expect(pci.driver.usedIndex == 0)
        #expect(image.failedCalls.load(ordering: .relaxed) == 1)

        // Space freed: resume and notify, as the VMM does; both complete in order.
        image.failure.withLock { $0 = nil }
        #expect(block.resumeHeld())
        pci.notify()
        #expect(pci.driver.usedIndex == 2)
        #expect(try pci.driver.usedElement(0).id == 0)
        #expect(try pci.driver.usedElement(1).id == 4)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 0)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(flushStatus)) == 0)
        #expect(try raw.read(at: 1024, count: 1024) == data)
        #expect(!block.resumeHeld())
        #expect(pci.status & 0x40 == 0)
    }

    @Test func stillFullAfterResumeHoldsAgain() throws {
        let (path, raw) = try Self.makeRaw(bytes: 64 * 512)
        defer { unlink(path) }
        let image = FailingImage(raw)
        let block = VirtioBlock(image: image, readOnly: false, serial: "full", logger: Logger(label: "t"))
        let reports = Atomic<Int>(0)
        block.onOutOfSpace { _ in reports.add(1, ordering: .relaxed) }
        let pci = try PCIDriver(block)
        pci.initialise()
        image.failure.withLock { $0 = EDQUOT }
        try Self.submit(pci, type: 13, sector: 0, out: Self.segment(sector: 0, count: 8, flags: 1), head: 0)
        #expect(block.resumeHeld())
        pci.notify()
        #expect(pci.driver.usedIndex == 0)
        #expect(reports.load(ordering: .relaxed) == 2)
        #expect(block.heldError?.errno == EDQUOT)
    }

    @Test func otherErrorsAndReportPolicyReachTheGuest() throws {
        for (errno, hold) in [(EIO, true), (ENOSPC, false)] {
            let (path, raw) = try Self.makeRaw(bytes: 64 * 512)
            defer { unlink(path) }
            let image = FailingImage(raw)
            let block = VirtioBlock(image: image, readOnly: false, serial: "eio", holdOnOutOfSpace: hold, logger: Logger(label: "t"))
            block.onOutOfSpace { _ in Issue.record("no stall expected for errno \(errno)") }
            let pci = try PCIDriver(block)
            pci.initialise()
            image.failure.withLock { $0 = errno }
            let status = try Self.submit(pci, type: 1, sector: 0, out: [UInt8](repeating: 1, count: 512), head: 0)
            #expect(pci.driver.usedIndex == 1)
            #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 1)  // VIRTIO_BLK_S_IOERR
            #expect(block.heldError == nil)
        }
    }

    @Test func discardAndUnmappingWriteZeroesPunchHoles() throws {
        let size: UInt64 = 4 << 20
        let (path, raw) = try Self.makeRaw(bytes: size)
        defer { unlink(path) }
        let fd = try FileDescriptor.open(path, flags: O_RDONLY)
        let block = VirtioBlock(image: raw, readOnly: false, serial: "trim", logger: Logger(label: "t"))
        #expect(block.features & VirtioBlock.Feature.discard != 0)
        let pci = try PCIDriver(block, queueSize: 64)
        pci.initialise()
        #expect(pci.transport.readBar(0, offset: 0x2000 + 56, size: 1) == 1)  // write_zeroes_may_unmap
        #expect(pci.transport.readBar(0, offset: 0x2000 + 44, size: 4) == 8)  // discard_sector_alignment
        try raw.write([UInt8](repeating: 0x5A, count: Int(size)), at: 0)
        try raw.flush()
        let full = try fd.status().allocatedBytes
        #expect(full >= size)

        // DISCARD of the first MiB.
        var status = try Self.submit(pci, type: 11, sector: 0, out: Self.segment(sector: 0, count: 2048), head: 0)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 0)
        let afterDiscard = try fd.status().allocatedBytes
        #expect(afterDiscard <= full - (1 << 20))
        #expect(try raw.read(at: 0, count: 1 << 20) == [UInt8](repeating: 0, count: 1 << 20))

        // WRITE_ZEROES without UNMAP keeps the space; with UNMAP it is freed.
        status = try Self.submit(pci, type: 13, sector: 0, out: Self.segment(sector: 2048, count: 2048), head: 4)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 0)
        #expect(try fd.status().allocatedBytes == afterDiscard)
        #expect(try raw.read(at: 1 << 20, count: 1 << 20) == [UInt8](repeating: 0, count: 1 << 20))
        status = try Self.submit(pci, type: 13, sector: 0, out: Self.segment(sector: 2048, count: 2048, flags: 1), head: 8)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 0)
        #expect(try fd.status().allocatedBytes <= afterDiscard - (1 << 20))
        #expect(try raw.read(at: 2 << 20, count: 4096) == [UInt8](repeating: 0x5A, count: 4096))

        // §5.2.6.2: DISCARD with the UNMAP flag, and unknown flags, are unsupported.
        status = try Self.submit(pci, type: 11, sector: 0, out: Self.segment(sector: 0, count: 8, flags: 1), head: 12)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 2)
        status = try Self.submit(pci, type: 13, sector: 0, out: Self.segment(sector: 0, count: 8, flags: 4), head: 16)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 2)
        // Past the end of the disk.
        status = try Self.submit(pci, type: 11, sector: 0, out: Self.segment(sector: 8190, count: 8), head: 20)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 1)
        #expect(pci.status & 0x40 == 0)
    }

    @Test func qcow2DiscardReleasesClusters() throws {
        let path = "/tmp/vireo-blk-discard-\(UInt32.random(in: 0...UInt32.max)).qcow2"
        defer { unlink(path) }
        try QCOW2Image.create(path, size: 4 << 20)
        let image = try openImage(path, options: ImageOptions(writable: true))
        try image.write([UInt8](repeating: 0x77, count: 2 << 20), at: 0)
        let pci = try PCIDriver(VirtioBlock(image: image, readOnly: false, serial: "q", logger: Logger(label: "t")))
        pci.initialise()
        let status = try Self.submit(pci, type: 11, sector: 0, out: Self.segment(sector: 0, count: 2048), head: 0)
        #expect(try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(status)) == 0)
        let map = try allocationMap(image)
        // The first MiB holds no data any more; the second still does.
        #expect(map.filter { $0.data && $0.start < 1 << 20 }.isEmpty)
        #expect(map.contains { $0.data && $0.start <= 1 << 20 && $0.start + $0.length >= 2 << 20 })
        #expect(try image.read(at: 0, count: 4096) == [UInt8](repeating: 0, count: 4096))
        try image.close()
    }
}
