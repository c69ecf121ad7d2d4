/// Device types (virtio 1.2 §5, "Device Types").
public enum VirtioDeviceType: UInt16, Sendable {
    case net = 1
    case block = 2
    case console = 3
    case entropy = 4
    case balloon = 5
}

/// Feature bits shared by every device (virtio 1.2 §6, "Reserved Feature Bits").
public enum VirtioFeature {
    /// §2.7.5.3: the driver may use indirect descriptor tables.
    public static let ringIndirectDesc: UInt64 = 1 << 28
    /// §2.7.7, §2.7.10: `used_event` / `avail_event` suppress notifications.
    public static let ringEventIdx: UInt64 = 1 << 29
    /// §6: a modern (non-legacy) device; required by the virtio-pci modern transport.
    public static let version1: UInt64 = 1 << 32
    /// §6: the device can be used on a platform with an IOMMU / restricted access; not offered.
    public static let accessPlatform: UInt64 = 1 << 33
}

/// Device status bits (virtio 1.2 §2.1).
public enum VirtioStatus {
    public static let acknowledge: UInt8 = 1
    public static let driver: UInt8 = 2
    public static let driverOK: UInt8 = 4
    public static let featuresOK: UInt8 = 8
    /// §2.1.2: the device hit an error it cannot recover from; the driver must reset it.
    public static let deviceNeedsReset: UInt8 = 0x40
    public static let failed: UInt8 = 0x80
}
