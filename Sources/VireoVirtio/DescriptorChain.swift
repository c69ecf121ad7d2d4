import VireoMemory

/// Why a virtqueue (or one of its chains) was refused. Every case is the guest's fault: the
/// transport reacts by setting DEVICE_NEEDS_RESET (virtio 1.2 §2.1.2) and never touches the queue
/// again until the driver resets the device.
public enum VirtqueueError: Error, Equatable, Sendable, CustomStringConvertible {
    /// §2.7: queue size zero, above the maximum, or not a power of two.
    case invalidSize(UInt16)
    /// §2.7 (alignment table): a ring area is misaligned or not inside guest RAM.
    case invalidRingArea(String)
    /// §2.7.6: the available index moved more than the queue size ahead of what the device consumed.
    case availIndexJump(avail: UInt16, consumed: UInt16, size: UInt16)
    /// A descriptor index at or beyond the table's size.
    case descriptorIndexOutOfRange(UInt32, tableSize: UInt32)
    /// §2.7.5.2: a chain visits more descriptors than the table holds, so it loops.
    case chainLoop(head: UInt16)
    /// §2.7.5.3.1: an indirect descriptor inside an indirect table.
    case nestedIndirect(head: UInt16)
    /// §2.7.5.3.1: INDIRECT together with NEXT.
    case indirectWithNext(head: UInt16)
    /// §2.7.5.3.1: an indirect table whose length is zero or not a multiple of 16.
    case invalidIndirectLength(UInt32)
    /// §2.7.5.3: INDIRECT used although VIRTIO_F_RING_INDIRECT_DESC was not negotiated.
    case indirectNotNegotiated(head: UInt16)
    /// §2.7.4.2: a device-readable buffer after a device-writable one.
    case readableAfterWritable(head: UInt16)
    /// The buffers of one chain add up to more than 4 GiB - 1 (the used ring's 32-bit length).
    case chainTooLarge(head: UInt16)
    /// A buffer (or ring field) outside guest RAM.
    case memory(GuestMemoryError)
    /// A request a device cannot even answer (for example no room for its status byte).
    case malformedRequest(String)

    public var description: String {
        switch self {
        case .invalidSize(let size): "queue size \(size) is zero, too large or not a power of two"
        case .invalidRingArea(let why): "invalid ring area: \(why)"
        case let .availIndexJump(avail, consumed, size): "available index \(avail) is more than \(size) ahead of \(consumed)"
        case let .descriptorIndexOutOfRange(index, size): "descriptor index \(index) outside a table of \(size)"
        case .chainLoop(let head): "descriptor chain at \(head) loops"
        case .nestedIndirect(let head): "chain at \(head) nests an indirect table inside an indirect table"
        case .indirectWithNext(let head): "chain at \(head) has a descriptor with both INDIRECT and NEXT"
        case .invalidIndirectLength(let length): "indirect table of \(length) bytes (zero or not a multiple of 16)"
        case .indirectNotNegotiated(let head): "chain at \(head) uses INDIRECT without VIRTIO_F_RING_INDIRECT_DESC"
        case .readableAfterWritable(let head): "chain at \(head) has a device-readable buffer after a device-writable one"
        case .chainTooLarge(let head): "chain at \(head) is larger than 4 GiB"
        case .memory(let error): error.description
        case .malformedRequest(let why): "malformed request: \(why)"
        }
    }
}

/// One guest buffer of a chain.
public struct VirtioBuffer: Equatable, Sendable {
    public var address: GuestAddress
    public var length: UInt32
    public init(address: GuestAddress, length: UInt32) {
        self.address = address
        self.length = length
    }
}

/// A validated descriptor chain (virtio 1.2 §2.7.5): the device-readable buffers, then the
/// device-writable ones. This is the ONE place chains are validated; devices only see the result.
///
/// Checks, each against hostile input: every index is inside its table; the walk is bounded by the
/// table size (a TTL, so loops end); an indirect table (§2.7.5.3) is only followed when negotiated,
/// never together with NEXT, never inside another indirect table, and must have a non-zero length
/// that is a multiple of 16 and lie in guest RAM; readable buffers come before writable ones
/// (§2.7.4.2); the total length fits 32 bits; every non-empty buffer lies inside guest RAM.
/// Zero-length buffers are accepted and dropped.
public struct DescriptorChain: Sendable {
    public let head: UInt16
    public let readable: [VirtioBuffer]
    public let writable: [VirtioBuffer]

    static let flagNext: UInt16 = 1
    static let flagWrite: UInt16 = 2
    static let flagIndirect: UInt16 = 4
    static let descriptorSize: UInt64 = 16

    public var readableLength: UInt64 { readable.totalLength }
    public var writableLength: UInt64 { writable.totalLength }

    /// Walks the chain at `head` of the descriptor table at `table` (`queueSize` entries).
    public static func parse(
        head: UInt16, table: GuestAddress, queueSize: UInt16, indirectAllowed: Bool, memory: GuestMemory
    ) throws(VirtqueueError) -> DescriptorChain {
        var readable: [VirtioBuffer] = []
        var writable: [VirtioBuffer] = []
        var total: UInt64 = 0

        var currentTable = table
        var tableSize = UInt32(queueSize)
        var index = UInt32(head)
        var inIndirect = false
        // TTL: a chain may hold at most as many descriptors as its table (§2.7.5.2; indirect: §2.7.5.3.1).
        var remaining = tableSize

        while true {
            guard index < tableSize else { throw .descriptorIndexOutOfRange(index, tableSize: tableSize) }
            guard remaining > 0 else { throw .chainLoop(head: head) }
            remaining -= 1
            guard let entry = currentTable.checkedAdding(UInt64(index) * descriptorSize) else {
                throw .memory(.invalidAddress(currentTable))
            }
            // struct virtq_desc (§2.7.5): le64 addr, le32 len, le16 flags, le16 next. The table was
            // checked to lie in guest RAM, so the entry does; read in two words, without a buffer.
            let address: UInt64, word: UInt64
            do {
                address = try memory.readInteger(UInt64.self, at: entry)
                word = try memory.readInteger(UInt64.self, at: GuestAddress(entry.raw &+ 8))
            } catch { throw .memory(error) }
            let length = UInt32(truncatingIfNeeded: word)
            let flags = UInt16(truncatingIfNeeded: word >> 32)
            let next = UInt16(truncatingIfNeeded: word >> 48)

            if flags & flagIndirect != 0 {
                guard indirectAllowed else { throw .indirectNotNegotiated(head: head) }
                guard !inIndirect else { throw .nestedIndirect(head: head) }
                guard flags & flagNext == 0 else { throw .indirectWithNext(head: head) }
                guard length > 0, length % 16 == 0 else { throw .invalidIndirectLength(length) }
                guard memory.isValid(GuestAddress(address), length: UInt64(length)) else {
                    throw .memory(.outOfBounds(GuestAddress(address), length: UInt64(length)))
                }
                inIndirect = true
                currentTable = GuestAddress(address)
                tableSize = length / 16
                remaining = tableSize
                index = 0
                continue
            }

            if length > 0 {
                guard memory.isValid(GuestAddress(address), length: UInt64(length)) else {
                    throw .memory(.outOfBounds(GuestAddress(address), length: UInt64(length)))
                }
                total += UInt64(length)
                guard total <= UInt64(UInt32.max) else { throw .chainTooLarge(head: head) }
                let buffer = VirtioBuffer(address: GuestAddress(address), length: length)
                if flags & flagWrite != 0 {
                    writable.append(buffer)
                } else {
                    guard writable.isEmpty else { throw .readableAfterWritable(head: head) }
                    readable.append(buffer)
                }
            } else if flags & flagWrite == 0, !writable.isEmpty {
                throw .readableAfterWritable(head: head)
            }

            guard flags & flagNext != 0 else { break }
            index = UInt32(next)
        }
        return DescriptorChain(head: head, readable: readable, writable: writable)
    }

    /// The readable buffers from byte `offset` of the readable stream on (a request's data after its header).
    public func readable(from offset: UInt64) -> [VirtioBuffer] {
        Self.slice(readable, offset..<max(offset, readableLength))
    }

    /// The writable buffers holding the first `count` bytes of the writable stream (a request's data
    /// before its status byte).
    public func writable(prefix count: UInt64) -> [VirtioBuffer] {
        Self.slice(writable, 0..<min(count, writableLength))
    }

    /// The parts of `buffers` that hold bytes `range` of the stream they form.
    static func slice(_ buffers: [VirtioBuffer], _ range: Range<UInt64>) -> [VirtioBuffer] {
        var result: [VirtioBuffer] = []
        var start: UInt64 = 0
        for buffer in buffers {
            let end = start + UInt64(buffer.length)
            defer { start = end }
            if end <= range.lowerBound { continue }
            if start >= range.upperBound { break }
            let from = max(range.lowerBound, start) - start
            let to = min(range.upperBound, end) - start
            // In range: `from` < `to` <= the buffer's length, and the buffer was checked to lie in guest RAM.
            result.append(VirtioBuffer(address: GuestAddress(buffer.address.raw + from), length: UInt32(to - from)))
        }
        return result
    }

    /// A cursor over the readable buffers.
    public func reader(_ memory: GuestMemory) -> ChainReader { ChainReader(buffers: readable, memory: memory) }
    /// A cursor over the writable buffers.
    public func writer(_ memory: GuestMemory) -> ChainWriter { ChainWriter(buffers: writable, memory: memory) }
}

/// Reads the device-readable part of a chain as one byte stream.
public struct ChainReader: Sendable {
    @usableFromInline let buffers: [VirtioBuffer]
    @usableFromInline let memory: GuestMemory
    @usableFromInline var bufferIndex = 0
    @usableFromInline var offsetInBuffer: UInt32 = 0

    /// Bytes not yet read.
    public var remaining: UInt64 {
        var total: UInt64 = 0
        for (index, buffer) in buffers.enumerated() where index >= bufferIndex {
            total += UInt64(buffer.length) - (index == bufferIndex ? UInt64(offsetInBuffer) : 0)
        }
        return total
    }

    /// Reads exactly `count` bytes, or throws when the chain has fewer left.
    public mutating func read(_ count: Int) throws(VirtqueueError) -> [UInt8] {
        guard count >= 0, UInt64(count) <= remaining else {
            throw .memory(.outOfBounds(buffers.first?.address ?? GuestAddress(0), length: UInt64(max(count, 0))))
        }
        var result: [UInt8] = []
        result.reserveCapacity(count)
        while result.count < count {
            let buffer = buffers[bufferIndex]
            let take = min(Int(buffer.length - offsetInBuffer), count - result.count)
            do {
                try memory.read(count: take, at: GuestAddress(buffer.address.raw + UInt64(offsetInBuffer)), appendingTo: &result)
            } catch { throw .memory(error) }
            offsetInBuffer += UInt32(take)
            if offsetInBuffer == buffer.length {
                bufferIndex += 1
                offsetInBuffer = 0
            }
        }
        return result
    }

    /// Reads a little-endian integer (inlinable: devices read their request headers through it).
    @inlinable
    public mutating func readInteger<T: FixedWidthInteger>(_: T.Type = T.self) throws(VirtqueueError) -> T {
        let size = MemoryLayout<T>.size
        // Within the current buffer (the usual case: a request header), straight from guest memory.
        if bufferIndex < buffers.count, buffers[bufferIndex].length - offsetInBuffer >= UInt32(size) {
            let buffer = buffers[bufferIndex]
            let value: T
            do { value = try memory.readInteger(T.self, at: GuestAddress(buffer.address.raw + UInt64(offsetInBuffer))) } catch { throw .memory(error) }
            offsetInBuffer += UInt32(size)
            if offsetInBuffer == buffer.length {
                bufferIndex += 1
                offsetInBuffer = 0
            }
            return value
        }
        let bytes = try read(size)
        return bytes.littleEndianInteger(T.self, at: 0) ?? 0
    }
}

/// Writes the device-writable part of a chain as one byte stream; `written` goes into the used ring.
public struct ChainWriter: Sendable {
    let buffers: [VirtioBuffer]
    let memory: GuestMemory
    var bufferIndex = 0
    var offsetInBuffer: UInt32 = 0
    public private(set) var written: UInt32 = 0

    public var remaining: UInt64 {
        var total: UInt64 = 0
        for (index, buffer) in buffers.enumerated() where index >= bufferIndex {
            total += UInt64(buffer.length) - (index == bufferIndex ? UInt64(offsetInBuffer) : 0)
        }
        return total
    }

    /// Writes all of `bytes`, or throws (having written nothing) when they do not fit.
    public mutating func write(_ bytes: [UInt8]) throws(VirtqueueError) { try write(bytes[...]) }

    /// Writes all of `bytes` straight from their storage (no intermediate array), or throws
    /// (having written nothing) when they do not fit.
    public mutating func write(_ bytes: ArraySlice<UInt8>) throws(VirtqueueError) {
        guard UInt64(bytes.count) <= remaining else {
            throw .memory(.outOfBounds(buffers.first?.address ?? GuestAddress(0), length: UInt64(bytes.count)))
        }
        var done = 0
        while done < bytes.count {
            let buffer = buffers[bufferIndex]
            let take = min(Int(buffer.length - offsetInBuffer), bytes.count - done)
            let from = bytes.startIndex + done
            do {
                try memory.write(bytes[from..<(from + take)], at: GuestAddress(buffer.address.raw + UInt64(offsetInBuffer)))
            } catch { throw .memory(error) }
            done += take
            offsetInBuffer += UInt32(take)
            written += UInt32(take)
            if offsetInBuffer == buffer.length {
                bufferIndex += 1
                offsetInBuffer = 0
            }
        }
    }

    /// Skips `count` bytes, leaving them as they are, and counts them as written.
    public mutating func skip(_ count: UInt64) {
        var left = count
        while left > 0, bufferIndex < buffers.count {
            let buffer = buffers[bufferIndex]
            let take = min(UInt64(buffer.length - offsetInBuffer), left)
            offsetInBuffer += UInt32(take)
            written += UInt32(take)
            left -= take
            if offsetInBuffer == buffer.length {
                bufferIndex += 1
                offsetInBuffer = 0
            }
        }
    }
}

extension [VirtioBuffer] {
    /// Bytes in all the buffers.
    public var totalLength: UInt64 { reduce(0) { $0 + UInt64($1.length) } }
}
