import Logging
import Synchronization
import VireoQCOW2
import VireoVirtio

/// virtio-blk (virtio 1.2 §5.2) over a `BlockImage` (raw or qcow2): read, write, flush, get-id,
/// discard and write-zeroes, optionally read-only. One request queue.
///
/// A request (§5.2.6) is a 16-byte readable header {type u32, reserved u32, sector u64}, then data
/// (readable for writes, writable for reads), then one writable status byte. Every request is checked
/// before any I/O, as firecracker's `Request::parse` does: header present, status byte present, data in
/// whole 512-byte sectors, sector range inside the disk. A bad request gets VIRTIO_BLK_S_IOERR (or
/// UNSUPP) in its status byte; only a request without room for a status byte fails the device.
public final class VirtioBlock: VirtioDevice {
    public static let sectorSize: UInt64 = 512
    /// Largest data transfer handled in one piece; longer requests are split.
    static let chunk = 1 << 20

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

    final class Disk: @unchecked Sendable {
        // SAFETY: only touched while holding `VirtioBlock.disk`'s lock.
        let image: any BlockImage
        init(_ image: any BlockImage) { self.image = image }
    }

    public let readOnly: Bool
    public let capacitySectors: UInt64
    public let serial: String
    let logger: Logger
    private let disk: Mutex<Disk>
    private let queues = Mutex<ActiveQueues?>(nil)
    private let configBytes: [UInt8]

    /// - Parameters:
    ///   - image: the opened image; writes fail with IOERR when it is not writable.
    ///   - serial: what VIRTIO_BLK_T_GET_ID returns (at most 20 bytes).
    public init(image: any BlockImage, readOnly: Bool, serial: String, logger: Logger) {
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
        put(UInt32(Self.chunk), 8)  // size_max
        put(UInt32(128), 12)  // seg_max
        put(UInt32(Self.sectorSize), 20)  // blk_size
        put(UInt16(1), 34)  // num_queues
        put(Self.maxDiscardSectors, 36)
        put(Self.maxSegments, 40)
        put(UInt32(1), 44)  // discard_sector_alignment
        put(Self.maxDiscardSectors, 48)  // max_write_zeroes_sectors
        put(Self.maxSegments, 52)
        config[56] = 0  // write_zeroes_may_unmap
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

    public func activate(_ activation: VirtioActivation) { queues.withLock { $0 = ActiveQueues(activation) } }

    public func reset() { queues.withLock { $0 = nil } }

    public func queueNotified(_ index: Int) {
        guard let active = queues.withLock({ $0 }) else { return }
        active.drain(index) { chain throws(VirtqueueError) in try handle(chain, active) }
    }

    /// Flushes and closes the image (VMM shutdown).
    public func close() {
        disk.withLock { disk in
            do { try disk.image.close() } catch { logger.error("virtio-blk \(disk.image.path): close: \(error)") }
        }
    }

    // MARK: Requests

    private func handle(_ chain: DescriptorChain, _ active: ActiveQueues) throws(VirtqueueError) -> UInt32 {
        let memory = active.memory
        // §5.2.6.1: the status byte is the last writable byte; without it nothing can be reported.
        guard let lastWritable = chain.writable.last else { throw .malformedRequest("block request \(chain.head) has no status byte") }
        let statusAddress = lastWritable.address.checkedAdding(UInt64(lastWritable.length) - 1) ?? lastWritable.address
        var reader = chain.reader(memory)
        var writer = chain.writer(memory)
        let dataIn = chain.writableLength - 1  // bytes the device may write before the status byte

        let status: Status
        if reader.remaining < 16 {
            status = .ioError
        } else {
            let type = try reader.readInteger(UInt32.self)
            _ = try reader.readInteger(UInt32.self)
            let sector = try reader.readInteger(UInt64.self)
            switch RequestType(rawValue: type) {
            case .read:
                status = try read(sector: sector, length: dataIn, into: &writer)
            case .write:
                status = try write(sector: sector, from: &reader)
            case .flush:
                status = flush()
            case .getID:
                let id = Array(serial.utf8.prefix(20))
                let bytes = id + [UInt8](repeating: 0, count: 20 - id.count)
                try writer.write(Array(bytes.prefix(Int(min(dataIn, 20)))))
                status = .ok
            case .discard, .writeZeroes:
                status = try zeroRanges(from: &reader)
            case nil:
                status = .unsupported
            }
        }
        do { try memory.writeInteger(status.rawValue, at: statusAddress) } catch { throw .memory(error) }
        return min(writer.written, UInt32(truncatingIfNeeded: dataIn)) + 1
    }

    /// The byte range of `sectors` sectors at `sector`, or nil when it leaves the disk.
    private func range(sector: UInt64, bytes: UInt64) -> UInt64? {
        let (offset, overflow) = sector.multipliedReportingOverflow(by: Self.sectorSize)
        guard !overflow, bytes % Self.sectorSize == 0, offset <= capacitySectors * Self.sectorSize,
              bytes <= capacitySectors * Self.sectorSize - offset else { return nil }
        return offset
    }

    private func read(sector: UInt64, length: UInt64, into writer: inout ChainWriter) throws(VirtqueueError) -> Status {
        guard let offset = range(sector: sector, bytes: length) else { return .ioError }
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(UInt64(Self.chunk), length - done))
            let bytes: [UInt8]
            do {
                bytes = try disk.withLock { disk throws(ImageError) in try disk.image.read(at: offset + done, count: count) }
            } catch {
                logger.error("virtio-blk read: \(error)")
                return .ioError
            }
            try writer.write(bytes)
            done += UInt64(count)
        }
        return .ok
    }

    private func write(sector: UInt64, from reader: inout ChainReader) throws(VirtqueueError) -> Status {
        guard !readOnly else { return .ioError }
        let length = reader.remaining
        guard let offset = range(sector: sector, bytes: length) else { return .ioError }
        var done: UInt64 = 0
        while done < length {
            let bytes = try reader.read(Int(min(UInt64(Self.chunk), length - done)))
            do {
                try disk.withLock { disk throws(ImageError) in try disk.image.write(bytes, at: offset + done) }
            } catch {
                logger.error("virtio-blk write: \(error)")
                return .ioError
            }
            done += UInt64(bytes.count)
        }
        return .ok
    }

    private func flush() -> Status {
        do {
            try disk.withLock { disk throws(ImageError) in try disk.image.flush() }
            return .ok
        } catch {
            logger.error("virtio-blk flush: \(error)")
            return .ioError
        }
    }

    /// DISCARD and WRITE_ZEROES (§5.2.6): segments of {sector u64, num_sectors u32, flags u32}. Both
    /// write zeros (the `BlockImage` protocol has no deallocation yet), which is what a discard that
    /// reads back as zeros (and WRITE_ZEROES) promises.
    private func zeroRanges(from reader: inout ChainReader) throws(VirtqueueError) -> Status {
        guard !readOnly else { return .ioError }
        guard reader.remaining % 16 == 0, reader.remaining / 16 <= UInt64(Self.maxSegments) else { return .unsupported }
        while reader.remaining >= 16 {
            let sector = try reader.readInteger(UInt64.self)
            let count = try reader.readInteger(UInt32.self)
            let flags = try reader.readInteger(UInt32.self)
            guard flags & ~1 == 0, count <= Self.maxDiscardSectors else { return .unsupported }
            let bytes = UInt64(count) * Self.sectorSize
            guard let offset = range(sector: sector, bytes: bytes) else { return .ioError }
            var done: UInt64 = 0
            while done < bytes {
                let piece = min(UInt64(Self.chunk), bytes - done)
                do {
                    try disk.withLock { disk throws(ImageError) in
                        try disk.image.write([UInt8](repeating: 0, count: Int(piece)), at: offset + done)
                    }
                } catch {
                    logger.error("virtio-blk write-zeroes: \(error)")
                    return .ioError
                }
                done += piece
            }
        }
        return .ok
    }
}
