import Logging
import Synchronization
import VireoVirtio

/// virtio-net (virtio 1.2 §5.1) with one receiveq/transmitq pair. Offers VIRTIO_NET_F_MAC and
/// VIRTIO_NET_F_STATUS (the host sets the link up or down with ``setLink(up:)``); no offloads, so
/// the guest sends complete checksums and no GSO. Every packet carries the 12-byte
/// `virtio_net_hdr_v1` (§5.1.6), passed to and from the ``NetBackend`` as is.
public final class VirtioNet: VirtioDevice {
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    public static let headerLength = 12
    /// Largest packet (header + frame) accepted from the guest: a 64 KiB GSO frame plus header.
    public static let maxPacket = 65_562
    /// Received packets kept while the guest has posted no buffers; more are dropped.
    public static let maxPending = 256

    public static let featureMAC: UInt64 = 1 << 5
    public static let featureStatus: UInt64 = 1 << 16
    static let statusLinkUp: UInt16 = 1

    public struct Counters: Sendable, Equatable {
        public var txPackets = 0
        public var rxPackets = 0
        /// Guest packets shorter than the header or longer than ``maxPacket``, or refused by the backend.
        public var txDropped = 0
        /// Received packets larger than the posted buffer, or beyond ``maxPending``.
        public var rxDropped = 0
    }

    public let mac: [UInt8]
    public let backend: any NetBackend
    let logger: Logger
    private let queues = Mutex<ActiveQueues?>(nil)
    private let pending = Mutex<[[UInt8]]>([])
    private let linkUp = Atomic<Bool>(true)
    private let counterState = Mutex(Counters())

    public init(mac: [UInt8], backend: any NetBackend, logger: Logger = Logger(label: "virtio-net")) {
        precondition(mac.count == 6, "a MAC address has 6 bytes")
        self.mac = mac
        self.backend = backend
        self.logger = logger
    }

    public var deviceType: VirtioDeviceType { .net }
    public var features: UInt64 {
        VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx | Self.featureMAC | Self.featureStatus
    }
    public var queueMaxSizes: [UInt16] { [256, 256] }
    public var counters: Counters { counterState.withLock { $0 } }

    /// Config space (§5.1.4): mac[6], status le16.
    public func readConfig(offset: Int, size: Int) -> UInt64 {
        let status = linkUp.load(ordering: .acquiring) ? Self.statusLinkUp : 0
        return VirtioConfigBytes.read(mac + [UInt8(status & 0xFF), UInt8(status >> 8)], offset: offset, size: size)
    }

    /// Changes the link state the guest sees and raises a configuration-change interrupt.
    public func setLink(up: Bool) {
        guard linkUp.exchange(up, ordering: .acquiringAndReleasing) != up else { return }
        queues.withLock { $0 }?.activation.interrupt.notifyConfigChange()
    }

    public func activate(_ activation: VirtioActivation) {
        queues.withLock { $0 = ActiveQueues(activation) }
        backendReadable()
    }

    public func reset() {
        queues.withLock { $0 = nil }
        pending.withLock { $0.removeAll() }
    }

    public func queueNotified(_ index: Int) {
        switch index {
        case Self.transmitQueue: transmit()
        case Self.receiveQueue: deliver()
        default: break
        }
    }

    /// The backend's descriptor became readable (or a backend pushes): take every waiting packet
    /// and deliver what the posted buffers hold. A backend that lost its peer (its socket was
    /// hung up) takes the link down: VIRTIO_NET_S_LINK_UP cleared, configuration change (§5.1.4).
    public func backendReadable() {
        while let packet = backend.receive() { enqueue(packet) }
        deliver()
        if !backend.isLinkUp { setLink(up: false) }
    }

    /// Queues one received packet (header + frame) for the guest.
    public func enqueue(_ packet: [UInt8]) {
        let kept = pending.withLock { pending -> Bool in
            guard pending.count < Self.maxPending, packet.count >= Self.headerLength else { return false }
            pending.append(packet)
            return true
        }
        if !kept { counterState.withLock { $0.rxDropped += 1 } }
    }

    private func transmit() {
        guard let active = queues.withLock({ $0 }) else { return }
        active.drain(Self.transmitQueue) { chain throws(VirtqueueError) in
            let length = chain.readableLength
            guard length >= UInt64(Self.headerLength), length <= UInt64(Self.maxPacket) else {
                counterState.withLock { $0.txDropped += 1 }
                return 0
            }
            var reader = chain.reader(active.memory)
            let packet = try reader.read(Int(length))
            let sent = backend.send(packet)
            counterState.withLock { sent ? ($0.txPackets += 1) : ($0.txDropped += 1) }
            return 0
        }
    }

    private func deliver() {
        guard let active = queues.withLock({ $0 }) else { return }
        guard !pending.withLock({ $0.isEmpty }) else { return }
        active.drain(Self.receiveQueue, while: { !pending.withLock { $0.isEmpty } }) { chain throws(VirtqueueError) in
            guard var packet = pending.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else { return 0 }
            var writer = chain.writer(active.memory)
            guard UInt64(packet.count) <= writer.remaining else {
                // Too large for the posted buffer (no mergeable buffers): drop it, return the buffer empty.
                counterState.withLock { $0.rxDropped += 1 }
                return 0
            }
            // num_buffers (§5.1.6.4): always 1 without VIRTIO_NET_F_MRG_RXBUF.
            packet[10] = 1
            packet[11] = 0
            try writer.write(packet)
            counterState.withLock { $0.rxPackets += 1 }
            return writer.written
        }
    }
}
