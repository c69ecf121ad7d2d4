/// PCI Express enhanced configuration access (ECAM, PCIe base spec §7.2.2) for `bus`: a memory
/// region in which bits 27–20 of the offset select the bus, 19–15 the device, 14–12 the function and
/// 11–0 the register, so the whole 4 KiB configuration space of every function is reachable (the
/// 0xCF8/0xCFC ports reach the first 256 bytes). Accesses of 1, 2 or 4 bytes inside one dword go to
/// the function; anything else, and absent functions, read as all ones and drop writes.
public final class PCIECAM: BusDevice {
    public let bus: PCIBus

    public init(bus: PCIBus) {
        self.bus = bus
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard let (device, register) = target(offset: offset, size: size) else { return AccessWidth.allOnes(size) }
        return UInt64(device.readConfig(offset: register, size: size)) & AccessWidth.allOnes(size)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard let (device, register) = target(offset: offset, size: size) else { return }
        device.writeConfig(offset: register, size: size, value: UInt32(truncatingIfNeeded: value))
    }

    private func target(offset: UInt64, size: Int) -> (any PCIDevice, Int)? {
        let register = Int(offset & 0xFFF)
        guard size == 1 || size == 2 || size == 4, register % 4 + size <= 4, offset < 1 << 28 else { return nil }
        guard
            let device = bus.device(
                bus: UInt8(truncatingIfNeeded: offset >> 20),
                device: UInt8(truncatingIfNeeded: (offset >> 15) & 0x1F),
                function: UInt8(truncatingIfNeeded: (offset >> 12) & 0x07))
        else { return nil }
        return (device, register)
    }
}
