import Synchronization
import VireoMemory

/// A split virtqueue (virtio 1.2 §2.7) as the device side sees it: the driver-programmed
/// configuration (size and ring addresses, §4.1.4.3) and the device's progress through the rings.
///
/// Layout in guest memory for a queue of `size` entries:
/// - descriptor table: `size` × 16 bytes, 16-byte aligned (§2.7.5);
/// - available ring: flags, idx, ring[size] (u16), used_event — 2-byte aligned (§2.7.6);
/// - used ring: flags, idx, ring[size] of {id u32, len u32}, avail_event — 4-byte aligned (§2.7.8).
/// All fields are little-endian (§2.7.1 for VIRTIO_F_VERSION_1 devices).
public struct SplitQueue: Sendable {
    /// Largest size the device accepts (`queue_size` as reset value, §4.1.4.3).
    public let maxSize: UInt16
    public var size: UInt16
    public var ready = false
    public var descriptorTable = GuestAddress(0)
    public var availRing = GuestAddress(0)
    public var usedRing = GuestAddress(0)
    /// MSI-X vector for this queue's used-buffer notifications (`queue_msix_vector`), 0xFFFF = none.
    public var msixVector: UInt16 = 0xFFFF

    /// Negotiated VIRTIO_F_RING_EVENT_IDX / VIRTIO_F_RING_INDIRECT_DESC.
    public private(set) var eventIndex = false
    public private(set) var indirect = false

    /// Next available-ring slot the device will consume (free-running 16-bit, §2.7.6).
    public private(set) var nextAvail: UInt16 = 0
    /// Next used-ring slot the device will fill.
    public private(set) var nextUsed: UInt16 = 0
    /// `nextUsed` when the driver was last notified (for event-index suppression, §2.7.10).
    private var signalledUsed: UInt16 = 0

    static let availFlagNoInterrupt: UInt16 = 1

    public init(maxSize: UInt16) {
        self.maxSize = maxSize
        size = maxSize
    }

    /// Back to the reset state (§2.4): not ready, addresses cleared, indexes zero.
    public mutating func reset() { self = SplitQueue(maxSize: maxSize) }

    /// Checks the driver's configuration when it enables the device (DRIVER_OK) and fixes the
    /// negotiated ring features. Size: non-zero, ≤ max, a power of two (§2.7). Each ring area must
    /// be aligned and lie wholly inside guest RAM.
    public mutating func activate(features: UInt64, memory: GuestMemory) throws(VirtqueueError) {
        guard size > 0, size <= maxSize, size & (size - 1) == 0 else { throw .invalidSize(size) }
        eventIndex = features & VirtioFeature.ringEventIdx != 0
        indirect = features & VirtioFeature.ringIndirectDesc != 0
        let n = UInt64(size)
        let areas: [(String, GuestAddress, UInt64, UInt64)] = [
            ("descriptor table", descriptorTable, 16 * n, 16),
            ("available ring", availRing, 6 + 2 * n, 2),
            ("used ring", usedRing, 6 + 8 * n, 4),
        ]
        for (name, address, length, alignment) in areas {
            guard address.raw % alignment == 0 else { throw .invalidRingArea("\(name) at \(address) is not \(alignment)-byte aligned") }
            guard memory.isValid(address, length: length) else {
                throw .invalidRingArea("\(name) at \(address) (\(length) bytes) is not in guest RAM")
            }
        }
        nextAvail = 0
        nextUsed = 0
        signalledUsed = 0
    }

    // MARK: Device side

    /// The next available chain, validated, or nil when the driver has made none available.
    /// With VIRTIO_F_RING_EVENT_IDX, `avail_event` is advanced so the driver notifies again once
    /// more buffers arrive (§2.7.10).
    public mutating func pop(_ memory: GuestMemory) throws(VirtqueueError) -> DescriptorChain? {
        let availIndex: UInt16
        do { availIndex = try memory.readInteger(UInt16.self, at: GuestAddress(availRing.raw + 2)) } catch { throw .memory(error) }
        let pending = availIndex &- nextAvail
        guard pending <= size else { throw .availIndexJump(avail: availIndex, consumed: nextAvail, size: size) }
        if pending == 0 {
            if eventIndex { try publishAvailEvent(memory) }
            return nil
        }
        // Read the ring entry only after seeing the index (§2.7.13.1: the driver publishes the entry first).
        atomicMemoryFence(ordering: .acquiring)
        let slot = UInt64(nextAvail % size)
        let head: UInt16
        do { head = try memory.readInteger(UInt16.self, at: GuestAddress(availRing.raw + 4 + 2 * slot)) } catch { throw .memory(error) }
        nextAvail &+= 1
        if eventIndex { try publishAvailEvent(memory) }
        return try DescriptorChain.parse(
            head: head, table: descriptorTable, queueSize: size, indirectAllowed: indirect, memory: memory)
    }

    /// Undoes the last `pop`: that chain is taken again by the next `pop`. For a device that cannot
    /// complete a request now and keeps it in the ring (virtio-blk on a full host disk).
    public mutating func putBack() {
        nextAvail &-= 1
    }

    /// Returns a used chain to the driver (§2.7.8): the element first, then (after a fence) the index.
    public mutating func pushUsed(head: UInt16, length: UInt32, _ memory: GuestMemory) throws(VirtqueueError) {
        let slot = UInt64(nextUsed % size)
        let element = GuestAddress(usedRing.raw + 4 + 8 * slot)
        do {
            try memory.writeInteger(UInt32(head), at: element)
            try memory.writeInteger(length, at: GuestAddress(element.raw + 4))
            atomicMemoryFence(ordering: .releasing)
            nextUsed &+= 1
            try memory.writeInteger(nextUsed, at: GuestAddress(usedRing.raw + 2))
        } catch { throw .memory(error) }
    }

    /// Returns several used chains at once (§2.7.8): every element first, then (after a fence) the
    /// index, so the driver sees them together (virtio-net's mergeable buffers, §5.1.6.4).
    public mutating func pushUsed(_ elements: [(head: UInt16, length: UInt32)], _ memory: GuestMemory) throws(VirtqueueError) {
        guard !elements.isEmpty else { return }
        do {
            for (offset, element) in elements.enumerated() {
                let slot = UInt64((nextUsed &+ UInt16(truncatingIfNeeded: offset)) % size)
                let address = GuestAddress(usedRing.raw + 4 + 8 * slot)
                try memory.writeInteger(UInt32(element.head), at: address)
                try memory.writeInteger(element.length, at: GuestAddress(address.raw + 4))
            }
            atomicMemoryFence(ordering: .releasing)
            nextUsed &+= UInt16(truncatingIfNeeded: elements.count)
            try memory.writeInteger(nextUsed, at: GuestAddress(usedRing.raw + 2))
        } catch { throw .memory(error) }
    }

    /// Gives back the last `count` chains taken with ``pop(_:)`` and not yet used, so they are
    /// popped again later (a device that found too few buffers for a whole packet).
    public mutating func unpop(_ count: UInt16) {
        nextAvail &-= min(count, size)
    }

    /// Whether the driver wants a used-buffer notification now (§2.7.10 with event index:
    /// `vring_need_event(used_event, new, old)`; otherwise the avail ring's NO_INTERRUPT flag, §2.7.7).
    public mutating func needsNotification(_ memory: GuestMemory) -> Bool {
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        let old = signalledUsed
        let new = nextUsed
        if eventIndex {
            guard let usedEvent = try? memory.readInteger(UInt16.self, at: GuestAddress(availRing.raw + 4 + 2 * UInt64(size))) else {
                return true
            }
            signalledUsed = new
            return (new &- usedEvent &- 1) < (new &- old)
        }
        signalledUsed = new
        guard let flags = try? memory.readInteger(UInt16.self, at: availRing) else { return true }
        return flags & Self.availFlagNoInterrupt == 0
    }

    /// The queue's progress as both sides last published it, for diagnostics (QEMU's
    /// `x-query-virtio-queue-status`): what the device took and returned, and what the driver's
    /// rings say. Guest fields that cannot be read (a ring outside RAM) are nil.
    public func status(_ memory: GuestMemory) -> QueueStatus {
        func guestU16(_ address: UInt64) -> UInt16? { try? memory.readInteger(UInt16.self, at: GuestAddress(address)) }
        let n = UInt64(size)
        return QueueStatus(
            size: size, ready: ready, eventIndex: eventIndex, indirect: indirect, msixVector: msixVector,
            descriptorTable: descriptorTable.raw, availRing: availRing.raw, usedRing: usedRing.raw,
            nextAvail: nextAvail, nextUsed: nextUsed, signalledUsed: signalledUsed,
            availIndex: guestU16(availRing.raw + 2), availFlags: guestU16(availRing.raw),
            usedEvent: eventIndex ? guestU16(availRing.raw + 4 + 2 * n) : nil,
            usedIndex: guestU16(usedRing.raw + 2), usedFlags: guestU16(usedRing.raw),
            availEvent: eventIndex ? guestU16(usedRing.raw + 4 + 8 * n) : nil)
    }

    private func publishAvailEvent(_ memory: GuestMemory) throws(VirtqueueError) {
        do {
            try memory.writeInteger(nextAvail, at: GuestAddress(usedRing.raw + 4 + 8 * UInt64(size)))
        } catch { throw .memory(error) }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
    }
}

/// A snapshot of one split virtqueue (``SplitQueue/status(_:)``). Indexes are free-running 16-bit
/// counters (§2.7.6, §2.7.8): `availIndex - nextAvail` chains wait for the device, and with
/// event index the driver notifies again once `availIndex` passes `availEvent` (§2.7.10).
public struct QueueStatus: Sendable, Equatable {
    public var size: UInt16
    public var ready: Bool
    public var eventIndex: Bool
    public var indirect: Bool
    public var msixVector: UInt16
    public var descriptorTable: UInt64
    public var availRing: UInt64
    public var usedRing: UInt64
    /// The device's side: next available slot it will take, next used slot it will fill, and
    /// `nextUsed` when it last decided whether to interrupt.
    public var nextAvail: UInt16
    public var nextUsed: UInt16
    public var signalledUsed: UInt16
    /// The rings in guest memory: avail `idx` and `flags` and `used_event` (driver-written), used
    /// `idx`, `flags` and `avail_event` (device-written).
    public var availIndex: UInt16?
    public var availFlags: UInt16?
    public var usedEvent: UInt16?
    public var usedIndex: UInt16?
    public var usedFlags: UInt16?
    public var availEvent: UInt16?

    /// Chains the driver made available that the device has not taken.
    public var waiting: UInt16? { availIndex.map { $0 &- nextAvail } }

    /// One JSON object (the control socket's `virtio` command).
    public var json: String {
        func optional(_ value: UInt16?) -> String { value.map { String($0) } ?? "null" }
        func hex(_ value: UInt64) -> String { "\"0x\(String(value, radix: 16))\"" }
        return #"{"size":\#(size),"ready":\#(ready),"event_idx":\#(eventIndex),"indirect":\#(indirect),"msix_vector":\#(msixVector),"#
            + #""desc":\#(hex(descriptorTable)),"avail":\#(hex(availRing)),"used":\#(hex(usedRing)),"#
            + #""next_avail":\#(nextAvail),"next_used":\#(nextUsed),"signalled_used":\#(signalledUsed),"#
            + #""avail_idx":\#(optional(availIndex)),"avail_flags":\#(optional(availFlags)),"used_event":\#(optional(usedEvent)),"#
            + #""used_idx":\#(optional(usedIndex)),"used_flags":\#(optional(usedFlags)),"avail_event":\#(optional(availEvent)),"#
            + #""waiting":\#(optional(waiting))}"#
    }
}
