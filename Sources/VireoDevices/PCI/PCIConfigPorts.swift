import Synchronization

/// PCI configuration mechanism #1 (PCI Local Bus spec 3.0 §3.2.2.3.2): ports 0xCF8–0xCFF, registered with
/// length 8.
///
/// CONFIG_ADDRESS (0xCF8, offset 0) is latched only by a dword write: bit 31 enable, bits 23–16 bus,
/// 15–11 device, 10–8 function, 7–2 register. Bits 27–24 are kept as the AMD-style extension giving
/// register bits 11–8, reserved bits 30–28 and 1–0 read as zero. Byte and word accesses to 0xCF8–0xCFB are
/// not the address register (Linux's `pci_check_type1` writes a byte to 0xCFB and then checks that a dword
/// at 0xCF8 still reads back what it wrote): writes are ignored and reads float high.
///
/// CONFIG_DATA (0xCFC–0xCFF, offsets 4–7) forwards to the function on `bus` at the latched address, with
/// the low two address bits taken from the port. With the enable bit clear, no function there, or an
/// access crossing 0xCFF, reads return all ones and writes are dropped.
public final class PCIConfigPorts: BusDevice {
    public static let portBase: UInt64 = 0xCF8
    public static let portLength: UInt64 = 8

    static let enableBit: UInt32 = 0x8000_0000
    static let addressMask: UInt32 = 0x8FFF_FFFC

    /// The functions behind the data port.
    public let bus: PCIBus
    private let address = Atomic<UInt32>(0)

    public init(bus: PCIBus = PCIBus()) {
        self.bus = bus
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 0 where size == 4:
            return UInt64(address.load(ordering: .relaxed))
        case 4...7:
            guard let (device, register) = target(offset: offset, size: size) else { return AccessWidth.allOnes(size) }
            return UInt64(device.readConfig(offset: register, size: size)) & AccessWidth.allOnes(size)
        default:
            return AccessWidth.allOnes(size)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        switch offset {
        case 0 where size == 4:
            address.store(UInt32(truncatingIfNeeded: value) & Self.addressMask, ordering: .relaxed)
        case 4...7:
            guard let (device, register) = target(offset: offset, size: size) else { return }
            device.writeConfig(offset: register, size: size, value: UInt32(truncatingIfNeeded: value))
        default:
            break
        }
    }

    /// The function and config-space byte offset a data-port access at `offset` goes to.
    private func target(offset: UInt64, size: Int) -> (any PCIDevice, Int)? {
        let byte = Int(offset - 4)
        guard size == 1 || size == 2 || size == 4, byte + size <= 4 else { return nil }
        let latched = address.load(ordering: .relaxed)
        guard latched & Self.enableBit != 0 else { return nil }
        let register = Int(latched & 0xFC) | Int((latched >> 16) & 0xF00)
        guard
            let device = bus.device(
                bus: UInt8(truncatingIfNeeded: latched >> 16),
                device: UInt8(truncatingIfNeeded: (latched >> 11) & 0x1F),
                function: UInt8(truncatingIfNeeded: (latched >> 8) & 0x07))
        else { return nil }
        return (device, register + byte)
    }
}
