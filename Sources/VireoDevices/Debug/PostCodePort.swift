import Synchronization

/// The POST diagnostic port (0x80): firmware and tiny test guests write progress codes to it, and Linux
/// writes to it as an I/O delay (`outb_p`), so an access must stay cheap: one atomic, no lock, no log.
///
/// Reads return the last code written (0xFF before any), as POST-card hardware latches it.
public final class PostCodePort: BusDevice {
    /// Bit 8 set = nothing written yet; otherwise the low byte is the last code.
    private let latched = Atomic<UInt16>(0x100)

    public init() {}

    /// The last byte the guest wrote, or nil if it never wrote one.
    public var lastCode: UInt8? {
        let value = latched.load(ordering: .relaxed)
        return value > 0xFF ? nil : UInt8(value)
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset == 0 else { return AccessWidth.allOnes(size) }
        let value = latched.load(ordering: .relaxed)
        let code = value > 0xFF ? 0xFF : UInt64(value)
        return code | (AccessWidth.allOnes(size) & ~0xFF)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset == 0 else { return }
        latched.store(UInt16(value & 0xFF), ordering: .relaxed)
    }
}
