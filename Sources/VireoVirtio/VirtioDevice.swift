import VireoMemory

/// How a device raises interrupts; the transport (virtio-pci) implements it with MSI-X vectors
/// and the ISR status register (§4.1.4.5).
public protocol VirtioInterrupt: Sendable {
    /// A used-buffer notification for queue `index` (§2.3.2).
    func notifyQueue(_ index: Int)
    /// A configuration-change notification (§2.3.1).
    func notifyConfigChange()
}

/// What a device receives when the driver sets DRIVER_OK (§3.1.1 step 8).
public struct VirtioActivation: Sendable {
    /// The negotiated features (§2.2).
    public let features: UInt64
    public let memory: GuestMemory
    /// One per queue the device declared, already validated (`SplitQueue.activate`); queues the
    /// driver left disabled have `ready == false`.
    public let queues: [SplitQueue]
    public let interrupt: any VirtioInterrupt
    /// Puts the device in DEVICE_NEEDS_RESET (§2.1.2) after a malformed queue; logs `reason`.
    public let fail: @Sendable (String) -> Void

    public init(features: UInt64, memory: GuestMemory, queues: [SplitQueue], interrupt: any VirtioInterrupt,
                fail: @escaping @Sendable (String) -> Void) {
        self.features = features
        self.memory = memory
        self.queues = queues
        self.interrupt = interrupt
        self.fail = fail
    }
}

/// A virtio device independent of its transport (virtio 1.2 §2, §5).
///
/// The transport owns feature negotiation and the status machine; the device declares its
/// type, features, queues and configuration space, and does the work when a queue is notified.
/// Calls may come from vCPU threads (config space) and the I/O thread (queues); implementations
/// synchronise their own state. Nothing a guest does may make them trap.
public protocol VirtioDevice: AnyObject, Sendable {
    var deviceType: VirtioDeviceType { get }
    /// Every feature the device offers, including the generic ring features it supports.
    /// The transport adds VIRTIO_F_VERSION_1.
    var features: UInt64 { get }
    /// Maximum size of each queue; the count is the number of queues.
    var queueMaxSizes: [UInt16] { get }
    /// Reads the device-specific configuration space (§4.1.4.6), `size` 1, 2, 4 or 8 bytes.
    func readConfig(offset: Int, size: Int) -> UInt64
    func writeConfig(offset: Int, size: Int, value: UInt64)
    /// DRIVER_OK: start using the queues. The transport built `queues` from the validated
    /// configuration and keeps them too, to report their progress (``ActiveQueues/statuses()``).
    func activate(_ queues: ActiveQueues)
    /// The driver notified queue `index` (§2.7.13.3, §4.1.4.4).
    func queueNotified(_ index: Int)
    /// Device reset (§2.4): drop the queues and return to the initial state.
    func reset()
    /// Device-specific counters (packets, drops, …) for diagnostics, in a stable order.
    var counterValues: [(name: String, value: Int)] { get }
}

extension VirtioDevice {
    public func writeConfig(offset: Int, size: Int, value: UInt64) {}
    public var counterValues: [(name: String, value: Int)] { [] }
}

/// Helpers to serve a config space held as little-endian bytes.
public enum VirtioConfigBytes {
    /// Reads `size` bytes at `offset` of `bytes`; out of range reads zero.
    public static func read(_ bytes: [UInt8], offset: Int, size: Int) -> UInt64 {
        guard offset >= 0, size > 0, size <= 8, offset + size <= bytes.count else { return 0 }
        var value: UInt64 = 0
        for index in 0..<size { value |= UInt64(bytes[offset + index]) << (8 * index) }
        return value
    }
}
