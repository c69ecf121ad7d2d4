import Logging
import Synchronization
import VireoMemory
import VireoQCOW2
import VireoSystem
import VireoVirtio

/// virtio-blk (virtio 1.2 §5.2) over a `BlockImage` (raw or qcow2): read, write, flush, get-id,
/// discard and write-zeroes, optionally read-only. One request queue.
///
/// A request (§5.2.6) is a 16-byte readable header {type u32, reserved u32, sector u64}, then data
/// (readable for writes, writable for reads), then one writable status byte. Every request is checked
/// before any I/O, as firecracker's `Request::parse` does: header present, status byte present, data in
/// whole 512-byte sectors, sector range inside the disk. A bad request gets VIRTIO_BLK_S_IOERR (or
/// UNSUPP) in its status byte; only a request without room for a status byte fails the device.
///
/// Error policy (QEMU's `werror=enospc`): a write, flush, discard or write-zeroes that fails because
/// the host file system is full (ENOSPC, EDQUOT) is not answered. The request stays in the ring, the
/// device stops taking requests and reports the stall through `onOutOfSpace` (the VMM pauses the VM);
/// after `resumeHeld()` the next notification retries it. Other errors reach the guest as IOERR.
public final class VirtioBlock: VirtioDevice {
    public static let sectorSize: UInt64 = 512
    /// Largest data buffer a request may have (`size_max`, §5.2.4).
    static let maxSegmentSize: UInt32 = 1 << 20

    /// Feature bits (§5.2.3).
    public enum Feature {
        public static let sizeMax: UInt64 = 1 << 1
        public static let segMax: UInt64 = 1 << 2
        public static let readOnly: UInt64 = 1 << 5
        public static let blockSize: UInt64 = 1 << 6
        public static let flush: UInt64 = 1 << 9
        public static let discard: UInt64 = 1 << 13
        public static let writeZeroes: UInt64 = 1 << 14
    }

    /// Request types (§5.2.6).
    enum RequestType: UInt32 {
        case read = 0, write = 1, flush = 4, getID = 8, discard = 11, writeZeroes = 13
    }

    /// Status byte values (§5.2.6).
    enum Status: UInt8 { case ok = 0, ioError = 1, unsupported = 2 }

    static let maxDiscardSectors: UInt32 = 1 << 22
    static let maxSegments: UInt32 = 1
    /// 4 KiB: the host file system block, the smallest range a punched hole frees.
    static let discardAlignmentSectors: UInt32 = 8

    final class Disk: @unchecked Sendable {
        // SAFETY: only touched while holding `VirtioBlock.disk`'s lock.
        let image: any BlockImage
        init(_ image: any BlockImage) { self.image = image }
    }

    public let readOnly: Bool
    public let capacitySectors: UInt64
    public let serial: String
    /// The `werror=enospc` policy; without it an out-of-space error is an IOERR like any other.
    public let holdOnOutOfSpace: Bool
    let logger: Logger
    private let disk: Mutex<Disk>
    private let queues = Mutex<ActiveQueues?>(nil)
    /// The out-of-space error a request is held for, until `resumeHeld()`.
    private let stall = Mutex<ImageError?>(nil)
    private let outOfSpaceHandler = Mutex<(@Sendable (ImageError) -> Void)?>(nil)
    private let configBytes: [UInt8]

    /// - Parameters:
    ///   - image: the opened image; writes fail with IOERR when it is not writable.
    ///   - serial: what VIRTIO_BLK_T_GET_ID returns (at most 20 bytes).
    ///   - holdOnOutOfSpace: hold requests that fail with ENOSPC/EDQUOT instead of failing them.
    public init(image: any BlockImage, readOnly: Bool, serial: String, holdOnOutOfSpace: Bool = true, logger: Logger) {
        self.holdOnOutOfSpace = holdOnOutOfSpace
        self.readOnly = readOnly || !image.isWritable
        capacitySectors = image.size / Self.sectorSize
        self.serial = serial
        self.logger = logger
        disk = Mutex(Disk(image))
        // Configuration layout, §5.2.4.
        var config = [UInt8](repeating: 0, count: 60)
        func put<T: FixedWidthInteger>(_ value: T, _ offset: Int) {
            for index in 0..<MemoryLayout<T>.size { config[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
        put(capacitySectors, 0)
        put(Self.maxSegmentSize, 8)  // size_max
        put(UInt32(128), 12)  // seg_max
        put(UInt32(Self.sectorSize), 20)  // blk_size
        put(UInt16(1), 34)  // num_queues
        put(Self.maxDiscardSectors, 36)
        put(Self.maxSegments, 40)
        put(Self.discardAlignmentSectors, 44)  // discard_sector_alignment
        put(Self.maxDiscardSectors, 48)  // max_write_zeroes_sectors
        put(Self.maxSegments, 52)
        config[56] = 1  // write_zeroes_may_unmap: VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP deallocates
        configBytes = config
    }

    public var deviceType: VirtioDeviceType { .block }
    public var features: UInt64 {
        var features = VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx | Feature.sizeMax | Feature.segMax
            | Feature.blockSize | Feature.flush
        features |= readOnly ? Feature.readOnly : Feature.discard | Feature.writeZeroes
        return features
    }
    public var queueMaxSizes: [UInt16] { [256] }

    public func readConfig(offset: Int, size: Int) -> UInt64 { VirtioConfigBytes.read(configBytes, offset: offset, size: size) }

    public func activate(_ active: ActiveQueues) {
        stall.withLock { $0 = nil }
        queues.withLock { $0 = active }
    }

    public func reset() {
        queues.withLock { $0 = nil }
        stall.withLock { $0 = nil }
    }

    public func queueNotified(_ index: Int) {
        guard let active = queues.withLock({ $0 }) else { return }
        var stalled: ImageError?
        active.process(index, while: { stall.withLock { $0 == nil } }, { chain throws(VirtqueueError) in
            switch try handle(chain, active) {
            case .completed(let length):
                return .used(length)
            case .outOfSpace(let error):
                stall.withLock { $0 = error }
                stalled = error
                return .putBack
            }
        })
        if let stalled {
            logger.warning("virtio-blk \(serial): host out of space, request held until resume: \(stalled)")
            outOfSpaceHandler.withLock { $0 }?(stalled)
        }
    }

    /// Called (on the I/O thread) when a request is held because the host disk is full.
    public func onOutOfSpace(_ handler: @escaping @Sendable (ImageError) -> Void) {
        outOfSpaceHandler.withLock { $0 = handler }
    }

    /// The error a request is held for, nil when none is.
    public var heldError: ImageError? { stall.withLock { $0 } }

    /// Lets the device take requests again after a stall; the caller then notifies queue 0 so the
    /// held request is retried. Returns whether a request was held.
    @discardableResult
    public func resumeHeld() -> Bool {
        stall.withLock { held in
            defer { held = nil }
            return held != nil
        }
    }

    /// Flushes and closes the image (VMM shutdown).
    public func close() {
        disk.withLock { disk in
            do { try disk.image.close() } catch { logger.error("virtio-blk \(disk.image.path): close: \(error)") }
        }
    }

    // MARK: Requests

    /// What became of a request: answered (with the used length), or held for lack of host space.
    enum Outcome {
        case completed(UInt32)
        case outOfSpace(ImageError)
    }

    /// A status, or the out-of-space error that holds the request.
    enum Result {
        case status(Status)
        case outOfSpace(ImageError)

        init(_ error: ImageError, hold: Bool) { self = hold && error.isOutOfSpace ? .outOfSpace(error) : .status(.ioError) }
    }

    private func handle(_ chain: DescriptorChain, _ active: ActiveQueues) throws(VirtqueueError) -> Outcome {
        let memory = active.memory
        // §5.2.6.1: the status byte is the last writable byte; without it nothing can be reported.
        guard let lastWritable = chain.writable.last else { throw .malformedRequest("block request \(chain.head) has no status byte") }
        let statusAddress = lastWritable.address.checkedAdding(UInt64(lastWritable.length) - 1) ?? lastWritable.address
        var reader = chain.reader(memory)
        var writer = chain.writer(memory)
        let dataIn = chain.writableLength - 1  // bytes the device may write before the status byte

        let result: Result
        if reader.remaining < 16 {
            result = .status(.ioError)
        } else {
            let type = try reader.readInteger(UInt32.self)
            _ = try reader.readInteger(UInt32.self)
            let sector = try reader.readInteger(UInt64.self)
            switch RequestType(rawValue: type) {
            case .read:
                result = .status(try read(sector: sector, into: chain.writable(prefix: dataIn), memory))
                if case .status(.ok) = result { writer.skip(dataIn) }
            case .write:
                result = try write(sector: sector, from: chain.readable(from: 16), memory)
            case .flush:
                result = flush()
            case .getID:
                let id = Array(serial.utf8.prefix(20))
                let bytes = id + [UInt8](repeating: 0, count: 20 - id.count)
                try writer.write(Array(bytes.prefix(Int(min(dataIn, 20)))))
                result = .status(.ok)
            case .discard:
                result = try zeroRanges(from: &reader, discard: true)
            case .writeZeroes:
                result = try zeroRanges(from: &reader, discard: false)
            case nil:
                result = .status(.unsupported)
            }
        }
        let status: Status
        switch result {
        case .status(let value): status = value
        case .outOfSpace(let error): return .outOfSpace(error)
        }
        do { try memory.writeInteger(status.rawValue, at: statusAddress) } catch { throw .memory(error) }
        return .completed(min(writer.written, UInt32(truncatingIfNeeded: dataIn)) + 1)
    }

    /// The byte range of `sectors` sectors at `sector`, or nil when it leaves the disk.
    private func range(sector: UInt64, bytes: UInt64) -> UInt64? {
        let (offset, overflow) = sector.multipliedReportingOverflow(by: Self.sectorSize)
        guard !overflow, bytes % Self.sectorSize == 0, offset <= capacitySectors * Self.sectorSize,
              bytes <= capacitySectors * Self.sectorSize - offset else { return nil }
        return offset
    }

    /// A read: the image reads straight into the request's data buffers (zero-copy, `preadv`).
    private func read(sector: UInt64, into buffers: [VirtioBuffer], _ memory: GuestMemory) throws(VirtqueueError) -> Status {
        guard let offset = range(sector: sector, bytes: buffers.totalLength) else { return .ioError }
        let failure = try transfer(buffers, memory) { (image, data) throws(ImageError) in try image.read(at: offset, into: data) }
        guard let failure else { return .ok }
        logger.error("virtio-blk read: \(failure)")
        return .ioError
    }

    /// A write: the image writes straight from the request's data buffers (zero-copy, `pwritev`).
    private func write(sector: UInt64, from buffers: [VirtioBuffer], _ memory: GuestMemory) throws(VirtqueueError) -> Result {
        guard !readOnly else { return .status(.ioError) }
        guard let offset = range(sector: sector, bytes: buffers.totalLength) else { return .status(.ioError) }
        let failure = try transfer(buffers, memory) { (image, data) throws(ImageError) in try image.write(from: data, at: offset) }
        guard let failure else { return .status(.ok) }
        if !(holdOnOutOfSpace && failure.isOutOfSpace) { logger.error("virtio-blk write: \(failure)") }
        return Result(failure, hold: holdOnOutOfSpace)
    }

    /// Runs `operation` on the image with the guest `buffers` as host I/O vectors; returns its error, if
    /// any. The buffers of a parsed chain were each checked to lie in guest RAM, so the memory check
    /// cannot fail; should it, the queue fails as for any bad chain.
    private func transfer(
        _ buffers: [VirtioBuffer], _ memory: GuestMemory,
        _ operation: (any BlockImage, borrowing IOVectors) throws(ImageError) -> Void
    ) throws(VirtqueueError) -> ImageError? {
        do throws(GuestMemoryError) {
            return try memory.withIOVectors(buffers.map { (address: $0.address, length: UInt64($0.length)) }) { (data: borrowing IOVectors) -> ImageError? in
                do throws(ImageError) {
                    try disk.withLock { disk throws(ImageError) in try operation(disk.image, data) }
                    return nil
                } catch {
                    return error
                }
            }
        } catch {
            throw .memory(error)
        }
    }

    private func flush() -> Result {
        do {
            try disk.withLock { disk throws(ImageError) in try disk.image.flush() }
            return .status(.ok)
        } catch {
            if !(holdOnOutOfSpace && error.isOutOfSpace) { logger.error("virtio-blk flush: \(error)") }
            return Result(error, hold: holdOnOutOfSpace)
        }
    }

    /// DISCARD and WRITE_ZEROES (§5.2.6): segments of {sector u64, num_sectors u32, flags u32}. A
    /// discard releases the range's host space (a raw file gets a hole punched, a qcow2 image frees or
    /// zero-flags its clusters); WRITE_ZEROES does too when the driver sets the UNMAP flag (bit 0,
    /// allowed by `write_zeroes_may_unmap`), else it writes zeros and keeps the space. Both read back as zeros.
    private func zeroRanges(from reader: inout ChainReader, discard: Bool) throws(VirtqueueError) -> Result {
        guard !readOnly else { return .status(.ioError) }
        guard reader.remaining % 16 == 0, reader.remaining / 16 <= UInt64(Self.maxSegments) else { return .status(.unsupported) }
        while reader.remaining >= 16 {
            let sector = try reader.readInteger(UInt64.self)
            let count = try reader.readInteger(UInt32.self)
            let flags = try reader.readInteger(UInt32.self)
            // §5.2.6.2: a discard with UNMAP set, or any unknown flag, is unsupported.
            guard flags & ~1 == 0, !(discard && flags != 0), count <= Self.maxDiscardSectors else { return .status(.unsupported) }
            let bytes = UInt64(count) * Self.sectorSize
            guard let offset = range(sector: sector, bytes: bytes) else { return .status(.ioError) }
            do {
                try disk.withLock { disk throws(ImageError) in
                    if discard {
                        try disk.image.discard(at: offset, length: bytes)
                    } else {
                        try disk.image.writeZeroes(at: offset, length: bytes, unmap: flags & 1 != 0)
                    }
                }
            } catch {
                if !(holdOnOutOfSpace && error.isOutOfSpace) { logger.error("virtio-blk \(discard ? "discard" : "write-zeroes"): \(error)") }
                return Result(error, hold: holdOnOutOfSpace)
            }
        }
        return .status(.ok)
    }
}
