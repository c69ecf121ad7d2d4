#if canImport(Glibc)
import Glibc
#endif
import CVireoLinux

/// A sealed memfd holding two shared-memory frame rings and their control page, mapped
/// (`CVireoFrameRing.h` has the layout). A VMM creates one per switch port and hands its
/// descriptor to `vireo-switchd`, which maps it after checking its seals and size.
@safe
public final class FrameRingRegion: @unchecked Sendable {
    // SAFETY: `@safe` because this class owns the mapping: `base` comes from a successful
    // vireo_ring_map of the region size for `capacity` and is unmapped only in deinit. Rings made
    // from it keep the region alive; every access through them is bounds-checked in C.
    let base: UnsafeMutableRawPointer
    public let capacity: UInt32
    /// The memfd (kept so it can be sent to the peer).
    public let descriptor: FileDescriptor

    /// The ring size a VMM offers: 1 MiB each way holds ~15 super-frames or ~12,000 small frames.
    public static let defaultCapacity: UInt32 = 1 << 20

    /// Whether `capacity` is acceptable (a power of two between 128 KiB and 16 MiB).
    public static func isValid(capacity: UInt32) -> Bool { vireo_ring_capacity_valid(capacity) != 0 }

    /// A new region, initialised.
    public convenience init(capacity: UInt32 = FrameRingRegion.defaultCapacity) throws(SystemError) {
        let fd = vireo_ring_region_create(capacity)
        guard fd >= 0 else { throw SystemError("memfd for frame rings", errno: errno) }
        try self.init(mapping: FileDescriptor(adopting: fd), capacity: capacity)
        unsafe vireo_ring_region_init(base)
    }

    /// Maps a region received from a peer: refused unless sealed against shrinking and big enough.
    public init(mapping descriptor: consuming FileDescriptor, capacity: UInt32) throws(SystemError) {
        guard let mapped = unsafe vireo_ring_map(descriptor.rawValue, capacity) else {
            throw SystemError("mapping the peer's frame rings (capacity \(capacity))", errno: errno)
        }
        unsafe base = mapped
        self.capacity = capacity
        self.descriptor = descriptor
    }

    /// Whether the control page carries the magic and version.
    public var hasValidHeader: Bool { unsafe vireo_ring_region_check(base) != 0 }

    /// Ring `index` (0: VMM to switch, 1: switch to VMM) as seen by its producer or its consumer.
    public func ring(_ index: Int, producer: Bool) -> FrameRing {
        precondition(index == 0 || index == 1, "a region has rings 0 and 1")
        return FrameRing(region: self, index: index, producer: producer)
    }

    deinit { unsafe vireo_ring_unmap(base, capacity) }
}

/// One direction of a ``FrameRingRegion``, from one side. Not thread-safe: one producer and one
/// consumer, each owning its ``FrameRing``.
@safe
public struct FrameRing: @unchecked Sendable {
    // SAFETY: `raw` points into `region`'s mapping, which this value keeps alive.
    private var raw = unsafe vireo_ring()
    private let region: FrameRingRegion
    /// The record ``peek()`` found, left in the ring until ``release()``.
    private var peeked: UnsafeRawBufferPointer?

    public enum PushResult: Equatable, Sendable {
        case pushed
        /// No room now (the consumer is behind): the frame is not written.
        case full
        /// The consumer published an impossible position, or the record is empty or too large.
        case broken
    }

    public enum PopResult: Equatable, Sendable {
        case record(Int)
        case empty
        /// The producer published an impossible position or record: stop using the ring.
        case broken
    }

    /// The largest record (a virtio-net header, then 64 KiB plus an Ethernet header and a tag).
    public static let maxRecord = Int(VIREO_RING_MAX_RECORD)

    /// Grows `buffer` to hold the largest record.
    private static func makeRoomForARecord(_ buffer: inout [UInt8]) {
        if buffer.count < maxRecord { buffer += [UInt8](repeating: 0, count: maxRecord - buffer.count) }
    }

    init(region: FrameRingRegion, index: Int, producer: Bool) {
        self.region = region
        unsafe vireo_ring_attach(&raw, region.base, region.capacity, Int32(index), producer ? 1 : 0)
    }

    /// Appends one record: `first` followed by `second`.
    public mutating func push(_ first: ArraySlice<UInt8>, _ second: ArraySlice<UInt8> = []) -> PushResult {
        let result = unsafe first.withUnsafeBufferPointer { first in
            unsafe second.withUnsafeBufferPointer { second in
                unsafe vireo_ring_push(&raw, first.baseAddress, first.count, second.baseAddress, second.count)
            }
        }
        switch result {
        case 1: return .pushed
        case 0: return .full
        default: return .broken
        }
    }

    /// Appends one record: `first` followed by the bytes of `vectors` (a frame in guest memory),
    /// copied into the ring once.
    public mutating func push(_ first: ArraySlice<UInt8>, vectors: borrowing IOVectors) -> PushResult {
        let pushed = unsafe vectors.withIOVecs(after: first) { list in
            unsafe list.withUnsafeBufferPointer { unsafe vireo_ring_pushv(&raw, $0.baseAddress, Int32($0.count)) }
        }
        guard let result = pushed else { return push(first, vectors.bytes[...]) }
        switch result {
        case 1: return .pushed
        case 0: return .full
        default: return .broken
        }
    }

    /// Copies the next record to the start of `buffer` (grown to ``maxRecord`` if smaller).
    public mutating func pop(into buffer: inout [UInt8]) -> PopResult {
        unsafe peeked = nil
        Self.makeRoomForARecord(&buffer)
        let result = unsafe buffer.withUnsafeMutableBufferPointer { buffer in
            unsafe vireo_ring_pop(&raw, buffer.baseAddress!, buffer.count)
        }
        if result > 0 { return .record(result) }
        return result == 0 ? .empty : .broken
    }

    /// Consumer: copies the next record straight into `vectors` from byte `offset` on (a VMM's
    /// guest receive buffers: the only copy between the switch's ring and the guest) and takes it.
    /// A record that does not fit is taken too, and reported as ``VectorPopResult/tooLong(_:)``.
    public mutating func pop(into vectors: borrowing IOVectors, at offset: Int = 0) -> VectorPopResult {
        switch peek() {
        case .record(let length):
            defer { release() }
            guard length <= vectors.count - offset, let record = unsafe peeked else { return .tooLong(length) }
            unsafe vectors.copy(from: record, at: offset)
            return .record(length)
        case .empty: return .empty
        case .broken: return .broken
        }
    }

    /// What ``pop(into:at:)`` found.
    public enum VectorPopResult: Equatable, Sendable {
        case record(Int)
        /// A record longer than the vectors: taken and lost.
        case tooLong(Int)
        case empty
        case broken
    }

    /// Consumer: finds the next record and leaves it in the ring until ``release()`` (another
    /// ``peek()`` or ``pop(into:)`` finds it again). A switch forwarding it copies only what it
    /// decides on (``copyPeeked(_:into:)``), then sends the rest straight from the ring
    /// (``withPeeked(_:_:)``): one copy from one ring to the next instead of two.
    public mutating func peek() -> PopResult {
        var record: UnsafePointer<UInt8>?
        let length = unsafe vireo_ring_peek(&raw, &record)
        guard length > 0, let record = unsafe record else {
            unsafe peeked = nil
            return length == 0 ? .empty : .broken
        }
        unsafe peeked = UnsafeRawBufferPointer(start: record, count: length)
        return .record(length)
    }

    /// Copies bytes `range` of the peeked record to the same offsets of `buffer` (grown to
    /// ``maxRecord`` if smaller). The peer may rewrite the record meanwhile: decide on the copy.
    public func copyPeeked(_ range: Range<Int>, into buffer: inout [UInt8]) {
        guard let record = unsafe peeked else { preconditionFailure("copyPeeked without a peeked record") }
        precondition(range.lowerBound >= 0 && range.upperBound <= record.count, "bytes \(range) of a \(record.count)-byte record")
        Self.makeRoomForARecord(&buffer)
        unsafe buffer.withUnsafeMutableBytes { destination in
            unsafe UnsafeMutableRawBufferPointer(rebasing: destination[range]).copyMemory(from: UnsafeRawBufferPointer(rebasing: record[range]))
        }
    }

    /// Runs `body` with read-only vectors over bytes `range` of the peeked record, to be copied on
    /// (a ring push, a tap's `writev`); nothing may decide on them (the peer can rewrite them).
    public func withPeeked<R>(_ range: Range<Int>, _ body: (borrowing IOVectors) -> R) -> R {
        guard let record = unsafe peeked else { preconditionFailure("withPeeked without a peeked record") }
        precondition(range.lowerBound >= 0 && range.upperBound <= record.count, "bytes \(range) of a \(record.count)-byte record")
        // SAFETY: read-only, inside the mapping `region` keeps alive; the record stays the
        // consumer's until release().
        return body(unsafe IOVectors(unsafeSegments: [UnsafeMutableRawBufferPointer(mutating: UnsafeRawBufferPointer(rebasing: record[range]))],
                                     readOnly: true))
    }

    /// Consumer: takes the peeked record.
    public mutating func release() {
        unsafe peeked = nil
        unsafe vireo_ring_release(&raw)
    }

    /// What ``popRecord()`` found.
    public enum PoppedRecord: Equatable, Sendable {
        case record([UInt8])
        case empty
        case broken
    }

    /// The next record in an array of its own, copied once out of the ring (a VMM's received
    /// packet, which may wait in the device before the guest has buffers).
    public mutating func popRecord() -> PoppedRecord {
        var result = 0
        let bytes = unsafe [UInt8](unsafeUninitializedCapacity: Self.maxRecord) { buffer, initialized in
            result = unsafe vireo_ring_pop(&raw, buffer.baseAddress!, buffer.count)
            initialized = max(result, 0)
        }
        if result > 0 { return .record(bytes) }
        return result == 0 ? .empty : .broken
    }

    /// Producer, after pushing: whether the consumer sleeps and must be woken (its eventfd written).
    public mutating func kickNeeded() -> Bool { unsafe vireo_ring_kick_needed(&raw) != 0 }

    /// Producer, after ``push(_:_:)`` found the ring full for a record of `length` bytes:
    /// announces that it waits for room, then looks again. True when the record fits now (push
    /// it); false when the consumer will kick once it has taken records.
    public mutating func waitForRoom(length: Int) -> Bool { unsafe vireo_ring_wait_for_room(&raw, length) != 0 }

    /// Consumer, after taking records: whether the producer waits for room and must be kicked.
    public mutating func roomKickNeeded() -> Bool { unsafe vireo_ring_room_kick_needed(&raw) != 0 }

    /// Consumer, about to sleep: announces it, then looks again; true when records arrived meanwhile.
    public mutating func arm() -> Bool { unsafe vireo_ring_arm(&raw) != 0 }

    /// Consumer: whether a record is waiting.
    public var hasRecords: Bool { unsafe withUnsafePointer(to: raw) { unsafe vireo_ring_has_records($0) != 0 } }
}

extension FrameChannel {
    /// Sends one message with up to four descriptors (SCM_RIGHTS), never blocking.
    public static func sendMessage(_ fd: Int32, _ message: [UInt8], descriptors: [Int32]) throws(SystemError) {
        let result = unsafe message.withUnsafeBufferPointer { message in
            unsafe descriptors.withUnsafeBufferPointer { fds in
                unsafe vireo_send_with_fds(fd, message.baseAddress, message.count, fds.baseAddress, Int32(fds.count))
            }
        }
        if result != 0 { throw SystemError("sendmsg with descriptors", errno: errno) }
    }

    /// Receives one message and the descriptors it carries (at most four; owned by the caller),
    /// never blocking: nil when nothing is queued, an empty message at the end of the stream.
    public static func receiveMessage(_ fd: Int32, capacity: Int) throws(SystemError) -> (message: [UInt8], descriptors: ReceivedDescriptors)? {
        var buffer = [UInt8](repeating: 0, count: max(capacity, 1))
        var fds = [Int32](repeating: -1, count: 4)
        var count: Int32 = 0
        let got = unsafe buffer.withUnsafeMutableBufferPointer { buffer in
            unsafe fds.withUnsafeMutableBufferPointer { fds in
                unsafe vireo_recv_with_fds(fd, buffer.baseAddress!, buffer.count, fds.baseAddress!, 4, &count)
            }
        }
        if got < 0 {
            if errno == EAGAIN { return nil }
            throw SystemError("recvmsg", errno: errno)
        }
        return (Array(buffer[0..<Int(got)]), ReceivedDescriptors(Array(fds.prefix(Int(count)))))
    }
}

/// Descriptors received with a message: each one is either taken (owned from then on by a
/// ``FileDescriptor``) or closed when this goes away, so none leaks whatever a peer sends.
public final class ReceivedDescriptors {
    private var descriptors: [Int32?]

    init(_ descriptors: [Int32]) { self.descriptors = descriptors.map { $0 } }

    public var count: Int { descriptors.count }

    /// Takes descriptor `index`; nil if out of range or already taken.
    public func take(_ index: Int) -> FileDescriptor? {
        guard descriptors.indices.contains(index), let fd = descriptors[index] else { return nil }
        descriptors[index] = nil
        return FileDescriptor(adopting: fd)
    }

    deinit {
        for case let fd? in descriptors { _ = Glibc.close(fd) }
    }
}
