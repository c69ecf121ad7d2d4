/// A type-0 PCI configuration header (PCI Local Bus spec 3.0 §6.1) plus a capability list, as
/// a value that a function wraps in its own lock.
///
/// Every byte has a write mask: the guest can change only the bits real hardware lets it change
/// (command register, cache line size, latency timer, interrupt line, BAR address bits, and what a
/// capability declares writable). Base address registers implement sizing (§6.2.5.1): the address
/// bits below the BAR's size are hard-wired to zero, so writing all ones reads back the size mask.
public struct PCIConfigSpace: Sendable {
    public static let size = 256

    /// Standard header offsets (§6.1).
    public enum Offset {
        public static let vendorID = 0x00
        public static let command = 0x04
        public static let status = 0x06
        public static let revision = 0x08
        public static let classCode = 0x09
        public static let headerType = 0x0E
        public static let bar0 = 0x10
        public static let subsystemVendorID = 0x2C
        public static let subsystemID = 0x2E
        public static let capabilitiesPointer = 0x34
        public static let interruptLine = 0x3C
        public static let interruptPin = 0x3D
    }

    /// Command register bits (§6.2.2).
    public static let commandIOSpace: UInt16 = 1 << 0
    public static let commandMemorySpace: UInt16 = 1 << 1
    public static let commandBusMaster: UInt16 = 1 << 2
    /// Status register: a capability list is present (§6.2.3).
    public static let statusCapabilityList: UInt16 = 1 << 4

    public private(set) var bytes: [UInt8]
    private var writeMask: [UInt8]
    /// Size of each of the six BARs; 0 when the BAR is not implemented (or is the upper half of a 64-bit BAR).
    public private(set) var barSizes: [UInt64] = Array(repeating: 0, count: 6)
    /// Which BARs are 64-bit (their address continues in the next BAR register).
    public private(set) var barIs64Bit: [Bool] = Array(repeating: false, count: 6)
    /// BAR memory type "64-bit" (bits 2:1 = 10b, §6.2.5.1).
    public static let barType64: UInt32 = 0x4
    private var nextCapability = 0x40

    public init(vendorID: UInt16, deviceID: UInt16, classCode: UInt32, revision: UInt8 = 0,
                subsystemVendorID: UInt16 = 0, subsystemID: UInt16 = 0) {
        bytes = [UInt8](repeating: 0, count: Self.size)
        writeMask = [UInt8](repeating: 0, count: Self.size)
        put16(vendorID, at: Offset.vendorID)
        put16(deviceID, at: Offset.vendorID + 2)
        bytes[Offset.revision] = revision
        bytes[Offset.classCode] = UInt8(truncatingIfNeeded: classCode)
        bytes[Offset.classCode + 1] = UInt8(truncatingIfNeeded: classCode >> 8)
        bytes[Offset.classCode + 2] = UInt8(truncatingIfNeeded: classCode >> 16)
        put16(subsystemVendorID, at: Offset.subsystemVendorID)
        put16(subsystemID, at: Offset.subsystemID)
        // Command: I/O, memory, bus master, parity, SERR#, INTx disable (§6.2.2).
        writeMask[Offset.command] = 0x47
        writeMask[Offset.command + 1] = 0x05
        writeMask[0x0C] = 0xFF  // cache line size
        writeMask[0x0D] = 0xFF  // latency timer
        writeMask[Offset.interruptLine] = 0xFF
    }

    // MARK: Building

    /// Declares BAR `index` as a 32-bit, non-prefetchable memory BAR of `size` bytes (a power of two,
    /// at least 16) currently at `address`.
    public mutating func addMemoryBar(index: Int, size: UInt64, address: UInt64) {
        precondition((0..<6).contains(index) && size >= 16 && size & (size - 1) == 0 && size <= 1 << 31)
        barSizes[index] = size
        let offset = Offset.bar0 + 4 * index
        put32(UInt32(truncatingIfNeeded: address) & ~UInt32(size - 1), at: offset)
        let mask = ~UInt32(size - 1)
        for byte in 0..<4 { writeMask[offset + byte] = UInt8(truncatingIfNeeded: mask >> (8 * byte)) }
    }

    /// Declares BARs `index` and `index + 1` as one 64-bit, non-prefetchable memory BAR of `size` bytes
    /// (a power of two, at least 16) currently at `address` (§6.2.5.1: type 10b; the next register holds
    /// the upper 32 address bits, all writable, so sizing reads back all ones there).
    public mutating func addMemoryBar64(index: Int, size: UInt64, address: UInt64) {
        precondition((0..<5).contains(index) && size >= 16 && size & (size - 1) == 0)
        barSizes[index] = size
        barIs64Bit[index] = true
        let offset = Offset.bar0 + 4 * index
        let aligned = address & ~(size - 1)
        put32(UInt32(truncatingIfNeeded: aligned) | Self.barType64, at: offset)
        put32(UInt32(truncatingIfNeeded: aligned >> 32), at: offset + 4)
        let mask = ~(size - 1)
        for byte in 0..<8 { writeMask[offset + byte] = UInt8(truncatingIfNeeded: mask >> (8 * byte)) }
        writeMask[offset] &= 0xF0  // type bits stay read-only
    }

    /// Declares that the function raises INTx `pin` (1 = INTA … 4 = INTD; §6.2.4, Interrupt Pin).
    public mutating func setInterruptPin(_ pin: UInt8) {
        bytes[Offset.interruptPin] = pin
    }

    /// The command register's Interrupt Disable bit (§6.2.2): the function must not assert INTx.
    public static let commandInterruptDisable: UInt16 = 1 << 10

    /// Appends a capability (§6.7): `body` starts after the ID and next-pointer bytes. `writable`
    /// gives write masks for the body bytes (missing bytes are read-only). Returns the capability's offset.
    @discardableResult
    public mutating func addCapability(id: UInt8, body: [UInt8], writable: [UInt8] = []) -> Int {
        let offset = nextCapability
        let length = (2 + body.count + 3) & ~3
        precondition(offset + length <= Self.size, "PCI capabilities overflow the 256-byte config space")
        bytes[offset] = id
        bytes[offset + 1] = 0
        for (index, byte) in body.enumerated() { bytes[offset + 2 + index] = byte }
        for (index, mask) in writable.prefix(body.count).enumerated() { writeMask[offset + 2 + index] = mask }
        // Link it at the end of the list.
        if bytes[Offset.capabilitiesPointer] == 0 {
            bytes[Offset.capabilitiesPointer] = UInt8(offset)
        } else {
            var cursor = Int(bytes[Offset.capabilitiesPointer])
            while bytes[cursor + 1] != 0 { cursor = Int(bytes[cursor + 1]) }
            bytes[cursor + 1] = UInt8(offset)
        }
        put16(read16(Offset.status) | Self.statusCapabilityList, at: Offset.status)
        nextCapability = offset + length
        return offset
    }

    // MARK: Guest access

    /// A config read of `size` (1, 2 or 4) bytes at `offset`; beyond the 256-byte space reads zero
    /// (no extended capabilities).
    public func read(offset: Int, size: Int) -> UInt32 {
        guard offset >= 0, size > 0, size <= 4, offset + size <= Self.size else { return 0 }
        var value: UInt32 = 0
        for index in 0..<size { value |= UInt32(bytes[offset + index]) << (8 * index) }
        return value
    }

    /// A config write: only the bits of the write mask change.
    public mutating func write(offset: Int, size: Int, value: UInt32) {
        guard offset >= 0, size > 0, size <= 4, offset + size <= Self.size else { return }
        for index in 0..<size {
            let mask = writeMask[offset + index]
            let byte = UInt8(truncatingIfNeeded: value >> (8 * index))
            bytes[offset + index] = (bytes[offset + index] & ~mask) | (byte & mask)
        }
    }

    /// Overwrites bytes directly (device-side state such as the MSI-X control register's read-only bits).
    public mutating func store(_ value: UInt32, at offset: Int, size: Int) {
        for index in 0..<size where offset + index < Self.size {
            bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index))
        }
    }

    public var command: UInt16 { read16(Offset.command) }
    public var memorySpaceEnabled: Bool { command & Self.commandMemorySpace != 0 }

    /// The guest-physical address BAR `index` decodes, or nil when it is not implemented.
    public func barAddress(_ index: Int) -> UInt64? {
        guard (0..<6).contains(index), barSizes[index] != 0 else { return nil }
        let low = UInt64(read(offset: Offset.bar0 + 4 * index, size: 4) & 0xFFFF_FFF0)
        let high = barIs64Bit[index] ? UInt64(read(offset: Offset.bar0 + 4 * index + 4, size: 4)) << 32 : 0
        return (high | low) & ~(barSizes[index] - 1)
    }

    func read16(_ offset: Int) -> UInt16 { UInt16(read(offset: offset, size: 2)) }

    private mutating func put16(_ value: UInt16, at offset: Int) { store(UInt32(value), at: offset, size: 2) }
    private mutating func put32(_ value: UInt32, at offset: Int) { store(value, at: offset, size: 4) }
}
