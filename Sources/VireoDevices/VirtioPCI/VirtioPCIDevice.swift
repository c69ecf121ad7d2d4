import Logging
import Synchronization
import VireoMemory
import VireoSystem
import VireoVirtio

/// The virtio-pci modern transport (virtio 1.2 §4.1) around one `VirtioDevice`.
///
/// BAR 0 (64-bit memory, 16 KiB; registers 0–1) holds the structures the vendor capabilities (§4.1.4) point at:
///
/// | BAR 0 offset | structure |
/// |---|---|
/// | 0x0000 | common configuration (§4.1.4.3) |
/// | 0x1000 | ISR status (§4.1.4.5) |
/// | 0x2000 | device-specific configuration (§4.1.4.6) |
/// | 0x3000 | notifications: queue *n* at 0x3000 + n × ``notifyOffsetMultiplier`` (§4.1.4.4) |
///
/// BAR 2 (64-bit memory, 4 KiB; registers 2–3) holds the MSI-X table at 0 and the pending bit array at
/// 0x800 (PCI 3.0 §6.8.2). Both are 64-bit so the VMM may place them above 4 GiB.
/// The device status machine (§2.1, §3.1.1): writing 0 resets; FEATURES_OK is kept only when the
/// driver accepted a subset of the offered features including VIRTIO_F_VERSION_1; DRIVER_OK
/// validates every enabled queue and activates the device; a malformed queue sets
/// DEVICE_NEEDS_RESET and sends a configuration-change interrupt (§2.1.2).
///
/// Interrupts go through MSI-X when the driver enabled it; otherwise (§4.1.4.5) through the legacy
/// INTA line, held asserted while the ISR status is non-zero and released when the driver reads it.
public final class VirtioPCIDevice: PCIBarDevice, VirtioInterrupt {
    public static let vendorID: UInt16 = 0x1AF4
    /// §4.1.2.1: 0x1040 + device type.
    public static let deviceIDBase: UInt16 = 0x1040
    public static let bar0Size: UInt64 = 0x4000
    public static let msixBarSize: UInt64 = 0x1000
    /// The BAR register index of the MSI-X BAR.
    public static let msixBar = 2
    public static let commonOffset: UInt64 = 0x0000
    public static let isrOffset: UInt64 = 0x1000
    public static let deviceConfigOffset: UInt64 = 0x2000
    public static let notifyOffset: UInt64 = 0x3000
    public static let notifyOffsetMultiplier: UInt32 = 4
    public static let pbaOffset: UInt64 = 0x800
    static let noVector: UInt16 = 0xFFFF

    /// `cfg_type` values of `struct virtio_pci_cap` (§4.1.4).
    enum CapabilityType: UInt8 { case common = 1, notify = 2, isr = 3, device = 4, pciConfig = 5 }

    struct State: Sendable {
        var config: PCIConfigSpace
        var deviceFeatureSelect: UInt32 = 0
        var driverFeatureSelect: UInt32 = 0
        var driverFeatures: UInt64 = 0
        var status: UInt8 = 0
        var configGeneration: UInt8 = 0
        var configVector: UInt16 = VirtioPCIDevice.noVector
        var queueSelect: UInt16 = 0
        var queues: [SplitQueue]
        var msix: MSIXTable
        var msixCapability = 0
        /// Offset of the VIRTIO_PCI_CAP_PCI_CFG capability (§4.1.4.9).
        var pciConfigCapability = 0
        /// Set while the device is active (DRIVER_OK accepted, not failed).
        var active = false
        /// The INTx level last given to the line.
        var intxAsserted = false
        /// The queues the device works on since DRIVER_OK (kept after a failure, for diagnostics).
        var activeQueues: ActiveQueues?
        /// Why the device needs a reset, once it does.
        var failure: String?
    }

    public let device: any VirtioDevice
    let memory: GuestMemory
    let msi: any MSIController
    let logger: Logger
    let offeredFeatures: UInt64
    private let state: Mutex<State>
    private let isr = Atomic<UInt8>(0)
    private let notifyObserver = Mutex<(@Sendable (UInt64?) -> Void)?>(nil)
    /// Where a notify write that arrived as an MMIO exit goes; nil runs the device on the caller's thread.
    private let notifyForwarder = Mutex<(@Sendable (Int) -> Void)?>(nil)
    /// MSI-X vectors: one per queue plus one for configuration changes.
    public let vectorCount: Int
    /// INTA, when the platform wires one (interrupt pin 1 in config space); nil leaves the pin at 0.
    let intx: (any InterruptLine)?

    /// - Parameters:
    ///   - bar0, msixBar: initial guest-physical addresses of BAR 0 and the MSI-X BAR (the guest may move them).
    ///   - intx: the line INTA drives, for drivers without MSI-X.
    public init(device: any VirtioDevice, memory: GuestMemory, msi: any MSIController, bar0: UInt64, msixBar: UInt64,
                intx: (any InterruptLine)? = nil, logger: Logger) {
        self.device = device
        self.intx = intx
        self.memory = memory
        self.msi = msi
        self.logger = logger
        offeredFeatures = device.features | VirtioFeature.version1
        vectorCount = device.queueMaxSizes.count + 1
        let type = device.deviceType
        var config = PCIConfigSpace(
            vendorID: Self.vendorID, deviceID: Self.deviceIDBase + type.rawValue, classCode: Self.classCode(type),
            revision: 1, subsystemVendorID: Self.vendorID, subsystemID: 0x40)
        if intx != nil { config.setInterruptPin(1) }
        config.addMemoryBar64(index: 0, size: Self.bar0Size, address: bar0)
        config.addMemoryBar64(index: Self.msixBar, size: Self.msixBarSize, address: msixBar)
        func virtioCap(_ type: CapabilityType, offset: UInt64, length: UInt32, extra: [UInt8] = []) -> [UInt8] {
            let capLength = UInt8(16 + extra.count)
            return [capLength, type.rawValue, 0, 0, 0, 0] + le(UInt32(offset)) + le(length) + extra
        }
        config.addCapability(id: 0x09, body: virtioCap(.common, offset: Self.commonOffset, length: 0x38))
        config.addCapability(
            id: 0x09,
            body: virtioCap(.notify, offset: Self.notifyOffset, length: UInt32(max(1, device.queueMaxSizes.count)) * Self.notifyOffsetMultiplier,
                            extra: le(Self.notifyOffsetMultiplier)))
        config.addCapability(id: 0x09, body: virtioCap(.isr, offset: Self.isrOffset, length: 4))
        config.addCapability(id: 0x09, body: virtioCap(.device, offset: Self.deviceConfigOffset, length: 0x1000))
        // §4.1.4.9: the alternative access window; bar, offset, length and pci_cfg_data are driver-writable.
        let pciConfigCap = config.addCapability(
            id: 0x09, body: virtioCap(.pciConfig, offset: 0, length: 0, extra: [0, 0, 0, 0]),
            writable: [0, 0, 0xFF, 0, 0, 0] + [UInt8](repeating: 0xFF, count: 8) + [0xFF, 0xFF, 0xFF, 0xFF])
        // MSI-X (PCI 3.0 §6.8.2): Message Control (table size - 1; bits 14-15 writable), table in the MSI-X BAR at 0, PBA at 0x800.
        let bir = UInt32(Self.msixBar)
        let msixCap = config.addCapability(
            id: 0x11, body: le(UInt16(vectorCount - 1)) + le(bir) + le(UInt32(Self.pbaOffset) | bir),
            writable: [0x00, 0xC0])
        state = Mutex(State(config: config, queues: device.queueMaxSizes.map(SplitQueue.init(maxSize:)),
                            msix: MSIXTable(vectors: vectorCount), msixCapability: msixCap, pciConfigCapability: pciConfigCap))
    }

    static func classCode(_ type: VirtioDeviceType) -> UInt32 {
        switch type {
        case .block: 0x01_80_00  // mass storage, other
        case .net: 0x02_00_00  // Ethernet
        case .console: 0x07_80_00  // communication, other
        default: 0xFF_00_00  // unassigned class
        }
    }

    // MARK: PCI configuration space

    public func readConfig(offset: Int, size: Int) -> UInt32 {
        let (value, window) = state.withLock { s in (s.config.read(offset: offset, size: size), pciConfigWindow(s, offset: offset)) }
        if let window { return UInt32(truncatingIfNeeded: readBar(window.bar, offset: window.offset, size: window.length)) }
        return value
    }

    /// The BAR access a read or write of `pci_cfg_data` at `offset` stands for (§4.1.4.9.1): `length`
    /// 1, 2 or 4 bytes at `offset` (aligned to the length) in BAR `bar`; nil for any other access.
    private func pciConfigWindow(_ s: State, offset: Int) -> (bar: Int, offset: UInt64, length: Int)? {
        let cap = s.pciConfigCapability
        guard cap > 0, offset == cap + 16 else { return nil }
        let bar = Int(s.config.read(offset: cap + 4, size: 1))
        let barOffset = UInt64(s.config.read(offset: cap + 8, size: 4))
        let length = Int(s.config.read(offset: cap + 12, size: 4))
        guard bar == 0 || bar == Self.msixBar, [1, 2, 4].contains(length), barOffset % UInt64(length) == 0 else { return nil }
        return (bar, barOffset, length)
    }

    public func writeConfig(offset: Int, size: Int, value: UInt32) {
        if let window = state.withLock({ pciConfigWindow($0, offset: offset) }) {
            writeBar(window.bar, offset: window.offset, size: window.length, value: UInt64(value))
            return
        }
        let notifyBefore = notifyAddress
        defer {
            updateINTx()  // MSI-X enable and Interrupt Disable both gate INTx
            let notifyAfter = notifyAddress
            if notifyAfter != notifyBefore, let observer = notifyObserver.withLock({ $0 }) { observer(notifyAfter) }
        }
        let deliver: [(Int, MSIMessage)] = state.withLock { state in
            state.config.write(offset: offset, size: size, value: value)
            let control = state.config.read(offset: state.msixCapability + 2, size: 2)
            state.msix.enabled = control & 0x8000 != 0
            state.msix.functionMasked = control & 0x4000 != 0
            return takeDeliverable(&state)
        }
        for (vector, message) in deliver { msi.signal(vector: vector, message: message) }
    }

    public func decodedBar(_ index: Int) -> (base: UInt64, size: UInt64)? {
        state.withLock { state in
            guard state.config.memorySpaceEnabled, let base = state.config.barAddress(index) else { return nil }
            return (base, state.config.barSizes[index])
        }
    }

    /// Where the notify area currently is (for ioeventfd registration), nil when not decoded.
    public var notifyAddress: UInt64? { decodedBar(0).map { $0.base + Self.notifyOffset } }

    /// Called with the new ``notifyAddress`` whenever the guest moves BAR 0 or switches memory
    /// decoding, so the VMM can move its ioeventfds (a notify write that misses them still arrives
    /// through the MMIO exit path).
    public func observeNotifyAddress(_ observer: @escaping @Sendable (UInt64?) -> Void) {
        notifyObserver.withLock { $0 = observer }
        observer(notifyAddress)
    }

    /// Routes notify writes that exit to the VMM (no ioeventfd registered, or a BAR the ioeventfds
    /// have not followed yet) to `forward`, typically a signal of the queue's eventfd.
    public func forwardNotifications(_ forward: @escaping @Sendable (Int) -> Void) {
        notifyForwarder.withLock { $0 = forward }
    }

    /// Number of virtqueues (each has a notify address at ``notifyAddress`` + index × multiplier).
    public var queueCount: Int { device.queueMaxSizes.count }

    // MARK: BARs

    public func readBar(_ index: Int, offset: UInt64, size: Int) -> UInt64 {
        if index == Self.msixBar {
            return state.withLock { state in
                offset >= Self.pbaOffset ? state.msix.readPBA(offset: offset - Self.pbaOffset, size: size) : state.msix.readTable(offset: offset, size: size)
            }
        }
        switch offset {
        case Self.commonOffset..<(Self.commonOffset + 0x38):
            return state.withLock { readCommon(&$0, offset: Int(offset - Self.commonOffset), size: size) }
        case Self.isrOffset..<(Self.isrOffset + 4):
            // §4.1.4.5.1: reading the ISR clears it (and releases INTx).
            guard offset == Self.isrOffset else { return 0 }
            let value = isr.exchange(0, ordering: .acquiringAndReleasing)
            updateINTx()
            return UInt64(value)
        case Self.deviceConfigOffset..<(Self.deviceConfigOffset + 0x1000):
            return device.readConfig(offset: Int(offset - Self.deviceConfigOffset), size: size)
        default:
            return 0
        }
    }

    public func writeBar(_ index: Int, offset: UInt64, size: Int, value: UInt64) {
        if index == Self.msixBar {
            let deliver: [(Int, MSIMessage)] = state.withLock { state in
                guard offset < Self.pbaOffset else { return [] }
                _ = state.msix.writeTable(offset: offset, size: size, value: value)
                return takeDeliverable(&state)
            }
            for (vector, message) in deliver { msi.signal(vector: vector, message: message) }
            return
        }
        switch offset {
        case Self.commonOffset..<(Self.commonOffset + 0x38):
            writeCommon(offset: Int(offset - Self.commonOffset), size: size, value: value)
        case Self.deviceConfigOffset..<(Self.deviceConfigOffset + 0x1000):
            device.writeConfig(offset: Int(offset - Self.deviceConfigOffset), size: size, value: value)
        case Self.notifyOffset..<(Self.notifyOffset + 0x1000):
            // The vCPU-exit path of a queue notification (when no ioeventfd caught it): hand it to the
            // I/O thread when the VMM installed a forwarder, so device work stays off vCPU threads.
            let queue = Int((offset - Self.notifyOffset) / UInt64(Self.notifyOffsetMultiplier))
            guard queue < queueCount else { return }
            if let forward = notifyForwarder.withLock({ $0 }) { forward(queue) } else { notifyQueue(fromDriver: queue) }
        default:
            break
        }
    }

    /// A driver notification for `queue` (§4.1.4.4), from the notify BAR or an ioeventfd.
    public func notifyQueue(fromDriver queue: Int) {
        let active = state.withLock { $0.active && queue < $0.queues.count }
        if active { device.queueNotified(queue) }
    }

    // MARK: Common configuration (§4.1.4.3)

    private func readCommon(_ s: inout State, offset: Int, size: Int) -> UInt64 {
        let queue = Int(s.queueSelect) < s.queues.count ? s.queues[Int(s.queueSelect)] : nil
        let value: UInt64
        switch offset {
        case 0x00: value = UInt64(s.deviceFeatureSelect)
        case 0x04: value = s.deviceFeatureSelect < 2 ? (offeredFeatures >> (32 * UInt64(s.deviceFeatureSelect))) & 0xFFFF_FFFF : 0
        case 0x08: value = UInt64(s.driverFeatureSelect)
        case 0x0C: value = s.driverFeatureSelect < 2 ? (s.driverFeatures >> (32 * UInt64(s.driverFeatureSelect))) & 0xFFFF_FFFF : 0
        case 0x10: value = UInt64(s.configVector)
        case 0x12: value = UInt64(s.queues.count)
        case 0x14: value = UInt64(s.status)
        case 0x15: value = UInt64(s.configGeneration)
        case 0x16: value = UInt64(s.queueSelect)
        case 0x18: value = UInt64(queue?.size ?? 0)
        case 0x1A: value = UInt64(queue?.msixVector ?? Self.noVector)
        case 0x1C: value = queue?.ready == true ? 1 : 0
        case 0x1E: value = UInt64(s.queueSelect)  // queue_notify_off: queue n notifies at n × multiplier
        case 0x20: value = queue?.descriptorTable.raw ?? 0
        case 0x24: value = (queue?.descriptorTable.raw ?? 0) >> 32
        case 0x28: value = queue?.availRing.raw ?? 0
        case 0x2C: value = (queue?.availRing.raw ?? 0) >> 32
        case 0x30: value = queue?.usedRing.raw ?? 0
        case 0x34: value = (queue?.usedRing.raw ?? 0) >> 32
        default: value = 0
        }
        return size >= 8 ? value : value & ((UInt64(1) << UInt64(size * 8)) - 1)
    }

    private func writeCommon(offset: Int, size: Int, value: UInt64) {
        var activation: [SplitQueue]?
        var features: UInt64 = 0
        var reset = false
        var failure: String?
        state.withLock { s in
            let select = Int(s.queueSelect)
            let queueWritable = select < s.queues.count && s.status & VirtioStatus.driverOK == 0
            let dword = UInt32(truncatingIfNeeded: value)
            func setAddress(_ keyPath: WritableKeyPath<SplitQueue, GuestAddress>, high: Bool) {
                guard queueWritable else { return }
                var raw = s.queues[select][keyPath: keyPath].raw
                if size == 8 { raw = value } else if high { raw = (raw & 0xFFFF_FFFF) | UInt64(dword) << 32 } else { raw = (raw & ~0xFFFF_FFFF) | UInt64(dword) }
                s.queues[select][keyPath: keyPath] = GuestAddress(raw)
            }
            switch offset {
            case 0x00: s.deviceFeatureSelect = dword
            case 0x08: s.driverFeatureSelect = dword
            case 0x0C:
                // §2.2: features are fixed once FEATURES_OK is set.
                guard s.status & VirtioStatus.featuresOK == 0, s.driverFeatureSelect < 2 else { break }
                let shift = 32 * UInt64(s.driverFeatureSelect)
                s.driverFeatures = (s.driverFeatures & ~(0xFFFF_FFFF << shift)) | UInt64(dword) << shift
            case 0x10: s.configVector = UInt16(truncatingIfNeeded: value)
            case 0x14:
                let new = UInt8(truncatingIfNeeded: value)
                if new == 0 {
                    reset = true
                    s.status = 0
                    s.active = false
                    s.driverFeatures = 0
                    s.deviceFeatureSelect = 0
                    s.driverFeatureSelect = 0
                    s.configVector = Self.noVector
                    s.queueSelect = 0
                    s.activeQueues = nil
                    s.failure = nil
                    for index in s.queues.indices { s.queues[index].reset() }
                    isr.store(0, ordering: .releasing)
                    if s.intxAsserted {
                        s.intxAsserted = false
                        intx?.setLevel(false)
                    }
                    break
                }
                var accepted = new | s.status & VirtioStatus.deviceNeedsReset
                if new & VirtioStatus.featuresOK != 0, s.status & VirtioStatus.featuresOK == 0 {
                    let ok = s.driverFeatures & ~offeredFeatures == 0 && s.driverFeatures & VirtioFeature.version1 != 0
                    if !ok {
                        accepted &= ~VirtioStatus.featuresOK
                        logger.info("virtio-\(device.deviceType): driver features 0x\(String(s.driverFeatures, radix: 16)) refused (offered 0x\(String(offeredFeatures, radix: 16)))")
                    }
                }
                if new & VirtioStatus.driverOK != 0, s.status & VirtioStatus.driverOK == 0, !s.active,
                   accepted & VirtioStatus.featuresOK != 0 {
                    do throws(VirtqueueError) {
                        for index in s.queues.indices where s.queues[index].ready {
                            try s.queues[index].activate(features: s.driverFeatures, memory: memory)
                        }
                        s.active = true
                        activation = s.queues
                        features = s.driverFeatures
                    } catch {
                        failure = "queue setup: \(error)"
                    }
                }
                s.status = accepted
            case 0x16: s.queueSelect = UInt16(truncatingIfNeeded: value)
            case 0x18: if queueWritable { s.queues[select].size = UInt16(truncatingIfNeeded: value) }
            case 0x1A: if select < s.queues.count { s.queues[select].msixVector = UInt16(truncatingIfNeeded: value) }
            case 0x1C: if queueWritable, value & 1 == 1 { s.queues[select].ready = true }
            case 0x20: setAddress(\.descriptorTable, high: false)
            case 0x24: setAddress(\.descriptorTable, high: true)
            case 0x28: setAddress(\.availRing, high: false)
            case 0x2C: setAddress(\.availRing, high: true)
            case 0x30: setAddress(\.usedRing, high: false)
            case 0x34: setAddress(\.usedRing, high: true)
            default: break
            }
        }
        if reset {
            device.reset()
            logger.debug("virtio-\(device.deviceType): reset by the driver")
        }
        if let failure { fail(failure) }
        if let queues = activation {
            logger.debug("virtio-\(device.deviceType): activated with features 0x\(String(features, radix: 16))")
            let active = ActiveQueues(VirtioActivation(features: features, memory: memory, queues: queues, interrupt: self) { [weak self] reason in
                self?.fail(reason)
            })
            state.withLock { $0.activeQueues = active }
            device.activate(active)
        }
    }

    // MARK: Diagnostics

    /// What the driver and the device agreed and how far each got: the device status byte
    /// (§2.1), the negotiated features, why the device needs a reset if it does, and each queue's
    /// progress once the driver set DRIVER_OK (before that, the configuration it wrote).
    public func status() -> VirtioPCIStatus {
        let (snapshot, active) = state.withLock { s in (s, s.activeQueues) }
        let queues = active?.statuses() ?? snapshot.queues.map { $0.status(memory) }
        return VirtioPCIStatus(
            deviceType: device.deviceType, status: snapshot.status, offeredFeatures: offeredFeatures,
            driverFeatures: snapshot.driverFeatures, failure: snapshot.failure, msixEnabled: snapshot.msix.enabled,
            isr: isr.load(ordering: .acquiring), queues: queues, counters: device.counterValues)
    }

    // MARK: Interrupts

    /// DEVICE_NEEDS_RESET (§2.1.2): stop the device, tell the driver through a config interrupt.
    public func fail(_ reason: String) {
        let alreadyFailed = state.withLock { s -> Bool in
            let was = s.status & VirtioStatus.deviceNeedsReset != 0
            s.status |= VirtioStatus.deviceNeedsReset
            if !was { s.failure = reason }
            s.active = false
            return was
        }
        guard !alreadyFailed else { return }
        logger.error("virtio-\(device.deviceType): device needs reset: \(reason)")
        notifyConfigChange()
    }

    public func notifyQueue(_ index: Int) {
        isr.bitwiseOr(1, ordering: .acquiringAndReleasing)
        let vector = state.withLock { index < $0.queues.count ? $0.queues[index].msixVector : Self.noVector }
        raise(vector: vector)
    }

    public func notifyConfigChange() {
        isr.bitwiseOr(2, ordering: .acquiringAndReleasing)
        let vector = state.withLock { s -> UInt16 in
            s.configGeneration &+= 1
            return s.configVector
        }
        raise(vector: vector)
    }

    private func raise(vector: UInt16) {
        if intx != nil, !state.withLock({ $0.msix.enabled }) {
            updateINTx()
            return
        }
        let message: (Int, MSIMessage)? = state.withLock { s in
            let index = Int(vector)
            guard vector != Self.noVector, index < s.msix.entries.count else { return nil }
            if s.msix.isMasked(index) {
                s.msix.pending[index] = true
                return nil
            }
            return (index, s.msix.message(index))
        }
        if let (index, message) = message { msi.signal(vector: index, message: message) }
    }

    /// Drives INTA to "ISR non-zero, MSI-X off, interrupts not disabled"; the line changes under the lock,
    /// so concurrent raises and ISR reads cannot reorder the levels.
    private func updateINTx() {
        guard let intx else { return }
        state.withLock { s in
            let level = isr.load(ordering: .acquiring) != 0 && !s.msix.enabled
                && s.config.command & PCIConfigSpace.commandInterruptDisable == 0
            guard level != s.intxAsserted else { return }
            s.intxAsserted = level
            intx.setLevel(level)
        }
    }

    private func takeDeliverable(_ s: inout State) -> [(Int, MSIMessage)] {
        let vectors = s.msix.deliverable()
        for vector in vectors { s.msix.pending[vector] = false }
        return vectors.map { ($0, s.msix.message($0)) }
    }
}

private func le<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
    (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
}

/// A snapshot of one virtio-pci function (``VirtioPCIDevice/status()``).
public struct VirtioPCIStatus: Sendable {
    public var deviceType: VirtioDeviceType
    /// The device status byte (ACKNOWLEDGE 1, DRIVER 2, DRIVER_OK 4, FEATURES_OK 8, DEVICE_NEEDS_RESET 64, FAILED 128).
    public var status: UInt8
    public var offeredFeatures: UInt64
    public var driverFeatures: UInt64
    public var failure: String?
    public var msixEnabled: Bool
    public var isr: UInt8
    public var queues: [QueueStatus]
    public var counters: [(name: String, value: Int)]

    /// One JSON object; `pci` is the function's address as the guest's `lspci` shows it.
    public func json(pci: String) -> String {
        let failureJSON = failure.map(jsonQuoted) ?? "null"
        let counterJSON = counters.map { "\"\($0.name)\":\($0.value)" }.joined(separator: ",")
        return #"{"pci":"\#(pci)","device":"\#(deviceType)","status":\#(status),"#
            + #""driver_ok":\#(status & VirtioStatus.driverOK != 0),"needs_reset":\#(status & VirtioStatus.deviceNeedsReset != 0),"#
            + #""failure":\#(failureJSON),"features_offered":"0x\#(String(offeredFeatures, radix: 16))","#
            + #""features":"0x\#(String(driverFeatures, radix: 16))","msix":\#(msixEnabled),"isr":\#(isr),"#
            + #""queues":[\#(queues.map(\.json).joined(separator: ","))],"counters":{\#(counterJSON)}}"#
    }
}
