import Synchronization

/// Ports Linux pokes routinely that we deliberately do not emulate (e.g. 0x87, the DMA page register
/// touched by legacy drivers): reads float high, writes vanish, and, unlike unclaimed bus addresses,
/// nothing is logged, because these accesses are expected.
public final class IgnoredPorts: BusDevice {
    public init() {}
    public func read(offset: UInt64, size: Int) -> UInt64 { AccessWidth.allOnes(size) }
    public func write(offset: UInt64, size: Int, value: UInt64) {}
}

/// System control port B (port 0x61, the 8255 PPI port B of the IBM PC/AT).
///
/// Bits 0–3 are writable (bit 0 gates PIT channel 2, bit 1 enables the speaker). Bit 5 is PIT channel 2's
/// OUT and bit 4 the DRAM refresh toggle. Linux's PIT/TSC calibration (`pit_calibrate_tsc`,
/// arch/x86/kernel/tsc.c) and old delay loops spin until those bits change; without an emulated PIT we
/// flip both on every read so such loops always terminate. (With KVM's in-kernel PIT, KVM answers 0x61.)
public final class SystemControlPortB: BusDevice {
    private struct State {
        var control: UInt8 = 0
        var toggles: UInt8 = 0
    }
    private let state = Mutex(State())

    public init() {}

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset == 0 else { return AccessWidth.allOnes(size) }
        let value = state.withLock { s in
            s.toggles ^= 0x30
            return (s.control & 0x0F) | s.toggles
        }
        return UInt64(value)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset == 0 else { return }
        state.withLock { $0.control = UInt8(value & 0x0F) }
    }
}
