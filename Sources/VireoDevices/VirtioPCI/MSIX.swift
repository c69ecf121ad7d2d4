/// An MSI message (PCI 3.0 §6.8.3.5): the address and data a vector writes to raise an interrupt.
public struct MSIMessage: Equatable, Sendable {
    public var address: UInt64
    public var data: UInt32
    public init(address: UInt64, data: UInt32) {
        self.address = address
        self.data = data
    }
}

/// Where a function's MSI-X vectors go; the VMM backs it with KVM (`KVM_SIGNAL_MSI`, or GSI
/// routing plus irqfd). Devices never see KVM.
public protocol MSIController: Sendable {
    /// Raises MSI-X vector `vector` of this function once, with its current `message`.
    func signal(vector: Int, message: MSIMessage)
}

/// The MSI-X table and pending bit array of one function (PCI 3.0 §6.8.2): 16-byte entries of
/// message address low/high, data and vector control (bit 0 = masked), and one pending bit per vector.
/// A vector that fires while masked (per entry, by the function mask, or with MSI-X disabled) sets its
/// pending bit and is delivered when unmasked.
struct MSIXTable: Sendable {
    struct Entry: Sendable {
        var addressLow: UInt32 = 0
        var addressHigh: UInt32 = 0
        var data: UInt32 = 0
        var control: UInt32 = 1  // masked at reset (§6.8.2.9)
    }

    static let entrySize = 16
    var entries: [Entry]
    var pending: [Bool]
    var enabled = false
    var functionMasked = false

    init(vectors: Int) {
        entries = Array(repeating: Entry(), count: vectors)
        pending = Array(repeating: false, count: vectors)
    }

    func message(_ vector: Int) -> MSIMessage {
        let entry = entries[vector]
        return MSIMessage(address: UInt64(entry.addressHigh) << 32 | UInt64(entry.addressLow), data: entry.data)
    }

    func isMasked(_ vector: Int) -> Bool {
        !enabled || functionMasked || entries[vector].control & 1 != 0
    }

    /// Table read at `offset` (dword granular; 8-byte reads return two dwords).
    func readTable(offset: UInt64, size: Int) -> UInt64 {
        guard size == 4 || size == 8 else { return 0 }
        var value: UInt64 = 0
        for part in 0..<(size / 4) {
            value |= UInt64(tableDword(offset + UInt64(4 * part))) << (32 * part)
        }
        return value
    }

    private func tableDword(_ offset: UInt64) -> UInt32 {
        let index = Int(offset / 16)
        guard index < entries.count else { return 0 }
        let entry = entries[index]
        switch offset % 16 {
        case 0: return entry.addressLow
        case 4: return entry.addressHigh
        case 8: return entry.data
        case 12: return entry.control
        default: return 0
        }
    }

    /// Table write; returns vectors that became unmasked while pending (to deliver now).
    mutating func writeTable(offset: UInt64, size: Int, value: UInt64) -> [Int] {
        guard size == 4 || size == 8 else { return [] }
        var unmasked: [Int] = []
        for part in 0..<(size / 4) {
            let at = offset + UInt64(4 * part)
            let dword = UInt32(truncatingIfNeeded: value >> (32 * part))
            let index = Int(at / 16)
            guard index < entries.count else { continue }
            switch at % 16 {
            case 0: entries[index].addressLow = dword & ~3
            case 4: entries[index].addressHigh = dword
            case 8: entries[index].data = dword
            case 12:
                entries[index].control = dword & 1
                if dword & 1 == 0 { unmasked.append(index) }
            default: break
            }
        }
        return unmasked.filter { pending[$0] && !isMasked($0) }
    }

    func readPBA(offset: UInt64, size: Int) -> UInt64 {
        var value: UInt64 = 0
        for bit in 0..<(size * 8) {
            let vector = Int(offset * 8) + bit
            if vector < pending.count, pending[vector] { value |= 1 << UInt64(bit) }
        }
        return value
    }

    /// Vectors pending and now deliverable (after the enable or function-mask bits changed).
    func deliverable() -> [Int] { pending.indices.filter { pending[$0] && !isMasked($0) } }
}
