/// A device that answers port-I/O or MMIO accesses.
///
/// `offset` is relative to the base the device was registered at; `size` is 1, 2, 4 or 8 bytes.
/// Implementations are called concurrently from vCPU threads and see guest-controlled values only:
/// they must never trap, whatever the offset, size or value.
public protocol BusDevice: AnyObject, Sendable {
    func read(offset: UInt64, size: Int) -> UInt64
    func write(offset: UInt64, size: Int, value: UInt64)
}

/// An interrupt input line (the VMM backs it with `KVM_IRQ_LINE` on a GSI).
///
/// Level semantics: a device sets the line to whether it has an interrupt pending. Devices only call
/// `setLevel` when the level changes, so each call is worth an ioctl.
public protocol InterruptLine: Sendable {
    func setLevel(_ asserted: Bool)
}

/// Bytes the guest writes to a console device go here.
public protocol ConsoleOutput: Sendable {
    func write(_ bytes: [UInt8])
}

/// Helpers shared by the devices for sizing accesses.
enum AccessWidth {
    /// All ones for an access of `size` bytes: what an unclaimed bus returns (the data lines float high).
    /// Sizes outside 1...8 are clamped so a malformed exit cannot make a shift trap.
    @inline(__always)
    static func allOnes(_ size: Int) -> UInt64 {
        size >= 8 ? UInt64.max : size <= 0 ? 0 : (UInt64(1) << UInt64(size * 8)) &- 1
    }

    /// `value` truncated to `size` bytes.
    @inline(__always)
    static func truncate(_ value: UInt64, _ size: Int) -> UInt64 { value & allOnes(size) }
}
