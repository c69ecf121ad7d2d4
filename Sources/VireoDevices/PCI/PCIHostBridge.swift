import Synchronization

/// The host bridge at 00:00.0: the function Linux's `pci_sanity_check` looks for (a class 0x0600
/// device on bus 0) before it trusts configuration mechanism #1; without it the guest reports
/// "PCI: Fatal: No config space access function found".
///
/// It is QEMU's generic PCIe host bridge ID (Red Hat 0x1B36:0x0008), which no Linux quirk matches,
/// and has no BARs, no capabilities and no interrupts.
public final class PCIHostBridge: PCIDevice {
    public static let vendorID: UInt16 = 0x1B36
    public static let deviceID: UInt16 = 0x0008
    /// Base class 0x06 (bridge), subclass 0x00 (host bridge), programming interface 0.
    public static let classCode: UInt32 = 0x06_00_00

    private let space = Mutex(PCIConfigSpace(vendorID: PCIHostBridge.vendorID, deviceID: PCIHostBridge.deviceID, classCode: PCIHostBridge.classCode))

    public init() {}

    public func readConfig(offset: Int, size: Int) -> UInt32 { space.withLock { $0.read(offset: offset, size: size) } }

    public func writeConfig(offset: Int, size: Int, value: UInt32) {
        space.withLock { $0.write(offset: offset, size: size, value: value) }
    }
}
