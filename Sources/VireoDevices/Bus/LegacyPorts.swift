/// Where the VMM registers the legacy PC devices on the port-I/O bus, and their ISA IRQs (GSIs on KVM's
/// in-kernel irqchip). Collected here so the VMM and the ACPI tables (FADT, DSDT) use the same numbers.
public enum LegacyPorts {
    /// COM1, a `Serial8250`; IRQ 4.
    public static let com1 = (base: UInt64(0x3F8), length: UInt64(8), irq: UInt32(4))
    /// The `I8042` span 0x60–0x64 (includes port 0x61, served by the controller's `portB`); IRQ 1.
    public static let i8042 = (base: I8042.portBase, length: I8042.portLength, irq: UInt32(1))
    /// The RTC/`CMOS` index and data ports.
    public static let cmos = (base: CMOS.portBase, length: CMOS.portLength)
    /// The POST code port, a `PostCodePort`.
    public static let postCode = (base: UInt64(0x80), length: UInt64(1))
    /// DMA page register 0x87, poked by Linux and deliberately not emulated (`IgnoredPorts`).
    public static let dmaPage = (base: UInt64(0x87), length: UInt64(1))
    /// PCI configuration mechanism #1, a `PCIConfigPorts`.
    public static let pciConfig = (base: PCIConfigPorts.portBase, length: PCIConfigPorts.portLength)
    /// The ACPI sleep control / sleep status / reset registers, an `AcpiPowerDevice`
    /// (FADT: SLEEP_CONTROL_REG = base, SLEEP_STATUS_REG = base + 1, RESET_REG = base + 2).
    public static let acpi = (base: AcpiPowerDevice.portBase, length: AcpiPowerDevice.portLength)
}
