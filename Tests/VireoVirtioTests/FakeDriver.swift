import VireoMemory
@testable import VireoVirtio

/// An in-process virtio driver: lays out a split queue in `GuestMemory` the way a guest would
/// (virtio 1.2 §2.7) and lets tests make chains available, including malformed ones.
final class FakeDriver {
    let memory: GuestMemory
    let size: UInt16
    let table = GuestAddress(0x1000)
    let avail: GuestAddress
    let used: GuestAddress
    /// Where data buffers start.
    var heap: UInt64 = 0x10_0000
    var availIndex: UInt16 = 0

    /// - Parameter regions: guest RAM; by default one region of `memorySize` bytes at 0 (the rings and
    ///   the buffer heap live in the first 4 MiB).
    init(size: UInt16 = 16, memorySize: UInt64 = 4 << 20, regions: [(start: GuestAddress, size: UInt64)]? = nil) throws {
        memory = try GuestMemory(ranges: regions ?? [(GuestAddress(0), memorySize)])
        self.size = size
        avail = GuestAddress(table.raw + 16 * UInt64(size))
        used = GuestAddress((avail.raw + 6 + 2 * UInt64(size) + 4095) & ~4095)
    }

    /// The queue as the transport would configure it.
    func queue(maxSize: UInt16 = 256, features: UInt64 = VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx) throws -> SplitQueue {
        var queue = SplitQueue(maxSize: maxSize)
        queue.size = size
        queue.descriptorTable = table
        queue.availRing = avail
        queue.usedRing = used
        queue.ready = true
        try queue.activate(features: features, memory: memory)
        return queue
    }

    func setDescriptor(_ index: UInt16, address: UInt64, length: UInt32, flags: UInt16 = 0, next: UInt16 = 0, in base: GuestAddress? = nil) throws {
        let entry = GuestAddress((base ?? table).raw + 16 * UInt64(index))
        try memory.writeInteger(address, at: entry)
        try memory.writeInteger(length, at: GuestAddress(entry.raw + 8))
        try memory.writeInteger(flags, at: GuestAddress(entry.raw + 12))
        try memory.writeInteger(next, at: GuestAddress(entry.raw + 14))
    }

    /// Puts `head` in the available ring and bumps the index.
    func makeAvailable(_ head: UInt16) throws {
        try memory.writeInteger(head, at: GuestAddress(avail.raw + 4 + 2 * UInt64(availIndex % size)))
        availIndex &+= 1
        try memory.writeInteger(availIndex, at: GuestAddress(avail.raw + 2))
    }

    /// Allocates `length` bytes of buffer space holding `bytes` (zero-padded).
    func buffer(_ bytes: [UInt8] = [], length: Int? = nil) throws -> UInt64 {
        let address = heap
        let count = length ?? bytes.count
        try memory.write(bytes + [UInt8](repeating: 0, count: max(0, count - bytes.count)), at: GuestAddress(address))
        heap += UInt64((count + 15) & ~15) + 16
        return address
    }

    /// A chain of descriptors starting at `first`: each (bytes-or-length, writable).
    @discardableResult
    func chain(at first: UInt16, _ parts: [(data: [UInt8], length: Int, writable: Bool)]) throws -> [UInt64] {
        var addresses: [UInt64] = []
        for (offset, part) in parts.enumerated() {
            let index = first + UInt16(offset)
            let address = try buffer(part.data, length: part.length)
            addresses.append(address)
            let last = offset == parts.count - 1
            try setDescriptor(index, address: address, length: UInt32(part.length),
                              flags: (part.writable ? 2 : 0) | (last ? 0 : 1), next: index + 1)
        }
        return addresses
    }

    var usedIndex: UInt16 { (try? memory.readInteger(UInt16.self, at: GuestAddress(used.raw + 2))) ?? 0 }

    func usedElement(_ slot: UInt16) throws -> (id: UInt32, length: UInt32) {
        let element = GuestAddress(used.raw + 4 + 8 * UInt64(slot % size))
        return (try memory.readInteger(UInt32.self, at: element), try memory.readInteger(UInt32.self, at: GuestAddress(element.raw + 4)))
    }

    func setUsedEvent(_ value: UInt16) throws {
        try memory.writeInteger(value, at: GuestAddress(avail.raw + 4 + 2 * UInt64(size)))
    }

    var availEvent: UInt16 { (try? memory.readInteger(UInt16.self, at: GuestAddress(used.raw + 4 + 8 * UInt64(size)))) ?? 0 }
}
