import Logging
import Synchronization
import VireoMemory
import VireoSwitch
import VireoVirtio

/// virtio-net (virtio 1.2 §5.1) with one receiveq/transmitq pair.
///
/// Features: VIRTIO_NET_F_MAC; VIRTIO_NET_F_STATUS (the host sets the link up or down with
/// ``setLink(up:)``; while down, frames are dropped both ways); VIRTIO_NET_F_MRG_RXBUF (a received
/// packet spreads over several receive buffers, `num_buffers` in its header, §5.1.6.4); and the
/// checksum and TSO offloads (§5.1.6.2, §5.1.6.4) the ``NetBackend`` carries: CSUM/HOST_TSO4/
/// HOST_TSO6/HOST_ECN let the guest send partial checksums and GSO frames, GUEST_CSUM/GUEST_TSO4/
/// GUEST_TSO6/GUEST_ECN let it receive them (the backend is told which with
/// ``NetBackend/enableReceiveOffloads(_:)``). Every header is validated against what was
/// negotiated for its direction (``VirtioNetHeader/validate(frameLength:allowed:dataValidAllowed:)``):
/// a bad one drops its frame and is counted.
public final class VirtioNet: VirtioDevice {
    public static let receiveQueue = 0
    public static let transmitQueue = 1
    public static let headerLength = VirtioNetHeader.length
    /// Largest packet (header + frame) accepted from the guest: a 64 KiB GSO frame plus header.
    public static let maxPacket = 65_562
    /// Received packets kept while the guest has posted no buffers. With this many waiting the
    /// device stops taking packets from a polled backend (``attachPolling(_:)``) until half have
    /// been delivered, so the backend's own queue holds the rest and pushes back on the sender, as
    /// QEMU does by not reading its tap; a backend that pushes beyond it has the excess dropped.
    public static let maxPending = 256

    // Feature bits (§5.1.3).
    public static let featureCsum: UInt64 = 1 << 0
    public static let featureGuestCsum: UInt64 = 1 << 1
    public static let featureMAC: UInt64 = 1 << 5
    public static let featureGuestTSO4: UInt64 = 1 << 7
    public static let featureGuestTSO6: UInt64 = 1 << 8
    public static let featureGuestECN: UInt64 = 1 << 9
    public static let featureHostTSO4: UInt64 = 1 << 11
    public static let featureHostTSO6: UInt64 = 1 << 12
    public static let featureHostECN: UInt64 = 1 << 13
    public static let featureMergeableRxBuffers: UInt64 = 1 << 15
    public static let featureStatus: UInt64 = 1 << 16
    static let statusLinkUp: UInt16 = 1

    public struct Counters: Sendable, Equatable {
        public var txPackets = 0
        public var rxPackets = 0
        /// Guest packets shorter than the header or longer than ``maxPacket``, refused by the
        /// backend, or sent while the link was down.
        public var txDropped = 0
        /// Guest packets whose `virtio_net_hdr` was invalid or asked for an offload not negotiated.
        public var txInvalidHeader = 0
        /// Received packets larger than the posted buffers, beyond ``maxPending``, or arriving
        /// while the link was down.
        public var rxDropped = 0
        /// Backend packets whose header needs an offload the guest did not negotiate.
        public var rxInvalidHeader = 0
        /// Times the backend had no room for a guest packet, which then waited in the queue.
        public var txWaits = 0
    }

    /// What the driver negotiated, fixed at activation.
    struct Session: Sendable {
        let queues: ActiveQueues
        /// Offloads the guest may use when sending (CSUM, HOST_*).
        let transmitOffloads: NetOffloads
        /// Offloads the guest accepts when receiving (GUEST_*).
        let receiveOffloads: NetOffloads
        let mergeable: Bool
    }

    public let mac: [UInt8]
    public let backend: any NetBackend
    let logger: Logger
    /// Held while the queues are worked on, so ``reset()`` waits for work in flight: after a reset
    /// the device touches no buffer the driver may already have freed (§2.4).
    private let session = Mutex<Session?>(nil)
    private let pending = Mutex<[[UInt8]]>([])
    private let linkUp = Atomic<Bool>(true)
    private let counterState = Mutex(Counters())
    /// Who polls the backend, and whether the device asked it to stop (``maxPending`` waiting).
    private let polling = Mutex<(target: (any ReceivePolling)?, paused: Bool)>((nil, false))
    /// The backend was busy (``NetSendResult/busy``): guest packets wait in the transmit queue
    /// until its poll descriptor becomes readable.
    private let transmitWaiting = Atomic<Bool>(false)
    /// Whether the next packets are read straight into guest buffers (``receiveInPlace()``):
    /// the last packet received was large (``inPlaceThreshold``).
    private let preferInPlace = Atomic<Bool>(true)

    public init(mac: [UInt8], backend: any NetBackend, logger: Logger = Logger(label: "virtio-net")) {
        precondition(mac.count == 6, "a MAC address has 6 bytes")
        self.mac = mac
        self.backend = backend
        self.logger = logger
    }

    public var deviceType: VirtioDeviceType { .net }

    public var features: UInt64 {
        VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx | Self.featureMAC | Self.featureStatus
            | Self.featureMergeableRxBuffers | Self.offloadFeatures(backend.offloads)
    }

    /// The offload features a backend's offloads allow, respecting the dependencies of §5.1.3.1
    /// (TSO needs the checksum offload, ECN needs TSO).
    static func offloadFeatures(_ offloads: NetOffloads) -> UInt64 {
        guard offloads.contains(.checksum) else { return 0 }
        var features = featureCsum | featureGuestCsum
        if offloads.contains(.tso4) { features |= featureHostTSO4 | featureGuestTSO4 }
        if offloads.contains(.tso6) { features |= featureHostTSO6 | featureGuestTSO6 }
        if offloads.contains(.tsoECN), !offloads.isDisjoint(with: [.tso4, .tso6]) {
            features |= featureHostECN | featureGuestECN
        }
        return features
    }

    /// The offloads negotiated `features` allow in each direction. A driver that breaks the
    /// dependencies of §5.1.3.1 gets only the consistent part.
    static func negotiatedOffloads(_ features: UInt64) -> (transmit: NetOffloads, receive: NetOffloads) {
        func offloads(checksum: UInt64, tso4: UInt64, tso6: UInt64, ecn: UInt64) -> NetOffloads {
            guard features & checksum != 0 else { return [] }
            var result: NetOffloads = .checksum
            if features & tso4 != 0 { result.insert(.tso4) }
            if features & tso6 != 0 { result.insert(.tso6) }
            if features & ecn != 0, !result.isDisjoint(with: [.tso4, .tso6]) { result.insert(.tsoECN) }
            return result
        }
        return (offloads(checksum: featureCsum, tso4: featureHostTSO4, tso6: featureHostTSO6, ecn: featureHostECN),
                offloads(checksum: featureGuestCsum, tso4: featureGuestTSO4, tso6: featureGuestTSO6, ecn: featureGuestECN))
    }

    public var queueMaxSizes: [UInt16] { [256, 256] }
    public var counters: Counters { counterState.withLock { $0 } }
    public var counterValues: [(name: String, value: Int)] {
        let c = counters
        return [("tx_packets", c.txPackets), ("tx_dropped", c.txDropped), ("tx_invalid_header", c.txInvalidHeader),
                ("rx_packets", c.rxPackets), ("rx_dropped", c.rxDropped), ("rx_invalid_header", c.rxInvalidHeader),
                ("rx_pending", pending.withLock { $0.count }), ("tx_waits", c.txWaits),
                ("tx_waiting", transmitWaiting.load(ordering: .relaxed) ? 1 : 0), ("link_up", isLinkUp ? 1 : 0)]
    }
    public var isLinkUp: Bool { linkUp.load(ordering: .acquiring) }

    /// Config space (§5.1.4): mac[6], status le16.
    public func readConfig(offset: Int, size: Int) -> UInt64 {
        let status = isLinkUp ? Self.statusLinkUp : 0
        return VirtioConfigBytes.read(mac + [UInt8(status & 0xFF), UInt8(status >> 8)], offset: offset, size: size)
    }

    /// Changes the link state the guest sees (the status field's VIRTIO_NET_S_LINK_UP) and raises a
    /// configuration-change interrupt (§5.1.4.2). While the link is down, frames are dropped both ways.
    public func setLink(up: Bool) {
        guard linkUp.exchange(up, ordering: .acquiringAndReleasing) != up else { return }
        if !up {
            let dropped = pending.withLock { pending in
                defer { pending.removeAll() }
                return pending.count
            }
            counterState.withLock { $0.rxDropped += dropped }
        }
        session.withLock { $0 }?.queues.activation.interrupt.notifyConfigChange()
        if !up { resumeBackend() }  // frames go on being taken from the backend (and dropped)
    }

    /// The backend's descriptor is polled by `target`, which the device pauses while
    /// ``maxPending`` packets wait for the guest and resumes once it has room.
    public func attachPolling(_ target: any ReceivePolling) {
        polling.withLock { $0.target = target }
    }

    public func activate(_ active: ActiveQueues) {
        let (transmit, receive) = Self.negotiatedOffloads(active.activation.features & features)
        if !backend.enableReceiveOffloads(receive) { logger.warning("the backend refused receive offloads \(receive)") }
        session.withLock {
            $0 = Session(queues: active, transmitOffloads: transmit, receiveOffloads: receive,
                         mergeable: active.activation.features & Self.featureMergeableRxBuffers != 0)
        }
        resumeBackend(force: true)
    }

    public func reset() {
        session.withLock { $0 = nil }
        transmitWaiting.store(false, ordering: .relaxed)
        pending.withLock { $0.removeAll() }
        backend.enableReceiveOffloads([])
        resumeBackend()
    }

    public func queueNotified(_ index: Int) {
        switch index {
        case Self.transmitQueue:
            // Packets wait for a busy backend: its readiness, not the guest's kick, resumes them
            // (retrying now would read a 64 KiB packet again only to find no room).
            guard !transmitWaiting.load(ordering: .acquiring) else { return }
            transmit()
        case Self.receiveQueue:
            deliver()
            resumeBackend()
        default: break
        }
    }

    /// The backend's descriptor became readable (or a backend pushes): take waiting packets and
    /// deliver what the posted buffers hold, until the backend is empty or ``maxPending`` packets
    /// wait for the guest (then polling pauses until the guest posts buffers). A backend that lost
    /// its peer (its socket was hung up) takes the link down: VIRTIO_NET_S_LINK_UP cleared,
    /// configuration change (§5.1.4).
    public func backendReadable() {
        if transmitWaiting.exchange(false, ordering: .acquiringAndReleasing) { transmit() }
        reading: while true {
            deliver()
            switch receiveInPlace() {
            case .backendEmpty: break reading
            case .batchDone: continue reading
            case .useArrays: break
            }
            let room = Self.maxPending - pending.withLock { $0.count }
            if room <= 0 {
                if pauseBackend() { break }
                continue
            }
            var taken = 0
            while taken < room, let packet = backend.receive() {
                if packet.count >= Self.inPlaceThreshold { preferInPlace.store(true, ordering: .relaxed) }
                enqueue(packet)
                taken += 1
            }
            if taken < room {  // the backend is empty
                deliver()
                break
            }
        }
        if !backend.isLinkUp { setLink(up: false) }
    }

    enum InPlaceOutcome {
        /// The backend has nothing more now.
        case backendEmpty
        /// ``inPlaceBatch`` packets were read: more may wait.
        case batchDone
        /// Not possible now (packets already wait in arrays, no mergeable buffers negotiated, too
        /// few buffers posted, a backend that cannot, the link down): read through arrays.
        case useArrays
    }

    /// Packets received in place before they are published to the guest together.
    static let inPlaceBatch = 64
    /// Receiving in place pays off for large packets (a TCP stream's coalesced super-frames), where
    /// the copy it saves is most of the cost; a small one costs more in place (buffers for the
    /// largest packet gathered for each read) than its copy. The device receives in place while the
    /// last packet was at least this long, through an array otherwise (Linux sizes its mergeable
    /// buffers from recent packet lengths the same way).
    static let inPlaceThreshold = 4096

    /// Reads packets from a backend that can (``NetBackend/receivesInPlace``, a tap) straight into
    /// the guest's mergeable receive buffers (§5.1.6.4.2): chains covering the largest packet are
    /// taken, the backend fills them with one `readv` (the only copy, the kernel's), and the chains
    /// it did not reach are kept for the next packet (and put back at the end). The header it
    /// wrote is read back, checked against the guest's receive offloads as any other (a refused
    /// packet is counted and its chains reused), and written again with `num_buffers`.
    private func receiveInPlace() -> InPlaceOutcome {
        guard backend.receivesInPlace, preferInPlace.load(ordering: .relaxed), isLinkUp, pending.withLock({ $0.isEmpty }) else {
            return .useArrays
        }
        var outcome = InPlaceOutcome.useArrays
        withSession { session in
            guard session.mergeable else { return }
            session.queues.withQueue(Self.receiveQueue) { queue, memory throws(VirtqueueError) in
                var used: [(head: UInt16, length: UInt32)] = []
                var delivered = 0, reads = 0
                // Chains taken but not filled yet, in ring order: topped up to cover the largest
                // packet before each read, the rest put back at the end (not popped again per packet).
                var spare: [DescriptorChain] = []
                var spareRoom: UInt64 = 0
                reading: while reads < Self.inPlaceBatch {
                    while spareRoom < UInt64(Self.maxPacket) {
                        guard spare.count < Int(queue.size), let chain = try queue.pop(memory) else { break reading }
                        guard chain.writableLength >= UInt64(Self.headerLength) else {
                            throw .malformedRequest("receive buffer of \(chain.writableLength) bytes, smaller than the virtio-net header")
                        }
                        spare.append(chain)
                        spareRoom += chain.writableLength
                    }
                    let buffers = spare.flatMap { chain in chain.writable.map { (address: $0.address, length: UInt64($0.length)) } }
                    let received: Int?
                    do throws(GuestMemoryError) {
                        received = try memory.withIOVectors(buffers) { backend.receive(into: $0) }
                    } catch { throw .memory(error) }
                    guard let length = received else {
                        outcome = .backendEmpty
                        break reading
                    }
                    reads += 1
                    // The chains the packet reached, and how much of each.
                    var lengths: [(head: UInt16, length: UInt32)] = []
                    var covered: UInt64 = 0
                    while covered < UInt64(length) {
                        let take = min(spare[lengths.count].writableLength, UInt64(length) - covered)
                        lengths.append((spare[lengths.count].head, UInt32(take)))
                        covered += take
                    }
                    let first = spare[0].writable.map { (address: $0.address, length: UInt64($0.length)) }
                    let headerBytes: [UInt8]
                    do throws(GuestMemoryError) {
                        headerBytes = try memory.withIOVectors(first) { $0.bytes(0..<min(Self.headerLength, $0.count)) }
                    } catch { throw .memory(error) }
                    // A refused packet leaves its chains spare, for the next one.
                    guard length >= Self.headerLength, let written = VirtioNetHeader(headerBytes),
                          var header = checkedReceiveHeader(written, frameLength: length - Self.headerLength, session) else {
                        if length < Self.headerLength { counterState.withLock { $0.rxInvalidHeader += 1 } }
                        continue reading
                    }
                    header.numBuffers = UInt16(lengths.count)
                    var writer = spare[0].writer(memory)
                    try writer.write(header.bytes)
                    used += lengths
                    delivered += 1
                    for chain in spare.prefix(lengths.count) { spareRoom -= chain.writableLength }
                    spare.removeFirst(lengths.count)
                    if length < Self.inPlaceThreshold {
                        preferInPlace.store(false, ordering: .relaxed)
                        break reading
                    }
                }
                queue.unpop(UInt16(spare.count))
                if reads == Self.inPlaceBatch { outcome = .batchDone }
                counterState.withLock { $0.rxPackets += delivered }
                try queue.pushUsed(used, memory)
                return used.count
            }
        }
        return outcome
    }

    /// Stops polling the backend while ``maxPending`` packets wait; false when they no longer do
    /// (the guest took some meanwhile), so the caller goes on reading. Transmit packets waiting
    /// for the backend would wait on a descriptor nobody polls: they are sent or dropped now, and
    /// until polling resumes a busy backend drops (as before back-pressure), so a guest that never
    /// posts receive buffers cannot stall its own transmissions.
    private func pauseBackend() -> Bool {
        let paused = polling.withLock { polling in
            guard pending.withLock({ $0.count }) >= Self.maxPending else { return false }
            if !polling.paused {
                polling.paused = true
                polling.target?.pause()
            }
            return true
        }
        if paused, transmitWaiting.exchange(false, ordering: .acquiringAndReleasing) { transmit() }
        return paused
    }

    /// Polls the backend again once at most half of ``maxPending`` packets wait (or the link went
    /// down, or the device was reset or activated: `force`). The poller then reads on its own
    /// thread; without one (a backend the caller drives) the device reads here.
    private func resumeBackend(force: Bool = false) {
        let readHere = polling.withLock { polling -> Bool in
            guard polling.paused || force,
                  force || pending.withLock({ $0.count }) <= Self.maxPending / 2 || !isLinkUp
            else { return false }
            polling.paused = false
            // Under the lock, so a pause decided meanwhile on another thread cannot be undone.
            polling.target?.resume()
            return polling.target == nil
        }
        if readHere { backendReadable() }
    }

    /// Queues one received packet (header + frame) for the guest.
    public func enqueue(_ packet: [UInt8]) {
        let kept = isLinkUp && pending.withLock { pending -> Bool in
            guard pending.count < Self.maxPending, packet.count >= Self.headerLength else { return false }
            pending.append(packet)
            return true
        }
        if !kept { counterState.withLock { $0.rxDropped += 1 } }
    }

    private func transmit() {
        withSession { session in transmit(session) }
    }

    /// Runs `body` with the active session, holding its lock (see ``session``).
    private func withSession(_ body: (Session) -> Void) {
        session.withLock { session in
            guard let session else { return }
            body(session)
        }
    }

    /// Sends the guest's packets in order. One the backend has no room for is put back with every
    /// packet after it (§2.7.13: the device consumes buffers in order) until the backend is readable.
    private func transmit(_ session: Session) {
        let active = session.queues
        let dropWhenBusy = polling.withLock { $0.paused }
        active.process(Self.transmitQueue) { chain throws(VirtqueueError) in
            let length = chain.readableLength
            guard length >= UInt64(Self.headerLength), length <= UInt64(Self.maxPacket), isLinkUp else {
                counterState.withLock { $0.txDropped += 1 }
                return .used(0)
            }
            // The header is copied and checked, and that copy is what goes out (the guest may
            // rewrite its own meanwhile); the frame goes from guest memory to the backend.
            var reader = chain.reader(active.memory)
            let header = try reader.read(Self.headerLength)
            if let problem = VirtioNetHeader(header)?.validate(frameLength: Int(length) - Self.headerLength, allowed: session.transmitOffloads) {
                logger.debug("transmit header refused: \(problem)")
                counterState.withLock { $0.txInvalidHeader += 1 }
                return .used(0)
            }
            let frame = chain.readable(from: UInt64(Self.headerLength)).map { (address: $0.address, length: UInt64($0.length)) }
            let result: NetSendResult
            do throws(GuestMemoryError) {
                result = try active.memory.withIOVectors(frame) { vectors in backend.send(header: header, frame: vectors) }
            } catch { throw .memory(error) }
            switch result {
            case .sent:
                counterState.withLock { $0.txPackets += 1 }
            case .dropped:
                counterState.withLock { $0.txDropped += 1 }
            case .busy where dropWhenBusy:
                counterState.withLock { $0.txDropped += 1 }
            case .busy:
                counterState.withLock { $0.txWaits += 1 }
                transmitWaiting.store(true, ordering: .releasing)
                return .putBack
            }
            return .used(0)
        }
    }

    /// Moves pending packets into the receive queue until either runs out. Each packet's header is
    /// checked against the guest's receive offloads (DATA_VALID is cleared without GUEST_CSUM) and
    /// gets `num_buffers`; the used elements of one packet are published together.
    private func deliver() {
        guard !pending.withLock({ $0.isEmpty }) else { return }
        withSession { session in deliver(session) }
    }

    private func deliver(_ session: Session) {
        session.queues.withQueue(Self.receiveQueue) { queue, memory throws(VirtqueueError) in
            var used: [(head: UInt16, length: UInt32)] = []
            while let packet = pending.withLock({ $0.first }) {
                guard let received = VirtioNetHeader(packet) else { break }
                guard let header = checkedReceiveHeader(received, frameLength: packet.count - Self.headerLength, session) else {
                    pending.withLock { _ = $0.removeFirst() }
                    continue
                }
                let placed = session.mergeable
                    ? try placeMergeable(packet, header: header, in: &queue, memory)
                    : try placeWhole(packet, header: header, in: &queue, memory)
                guard let placed else { break }  // no buffers: the packet waits for more
                pending.withLock { _ = $0.removeFirst() }
                used += placed
            }
            try queue.pushUsed(used, memory)
            return used.count
        }
    }

    /// A received packet's header as the guest may see it, checked against its receive offloads
    /// (DATA_VALID cleared without GUEST_CSUM); nil, counted, when it asks for one not negotiated.
    private func checkedReceiveHeader(_ received: VirtioNetHeader, frameLength: Int, _ session: Session) -> VirtioNetHeader? {
        var header = received
        if header.flags & VirtioNetHeader.flagDataValid != 0, !session.receiveOffloads.contains(.checksum) {
            header.flags &= ~VirtioNetHeader.flagDataValid
        }
        if let problem = header.validate(frameLength: frameLength, allowed: session.receiveOffloads, dataValidAllowed: true) {
            logger.debug("received header refused: \(problem)")
            counterState.withLock { $0.rxInvalidHeader += 1 }
            return nil
        }
        return header
    }

    /// Without MRG_RXBUF: the whole packet in one chain (num_buffers 1). A packet larger than the
    /// chain is dropped and the buffer returned empty. Nil when no chain is available.
    private func placeWhole(_ packet: [UInt8], header: VirtioNetHeader, in queue: inout SplitQueue, _ memory: GuestMemory)
        throws(VirtqueueError) -> [(head: UInt16, length: UInt32)]?
    {
        guard let chain = try queue.pop(memory) else { return nil }
        var writer = chain.writer(memory)
        guard UInt64(packet.count) <= writer.remaining else {
            counterState.withLock { $0.rxDropped += 1 }
            return [(chain.head, 0)]
        }
        var header = header
        header.numBuffers = 1
        try writer.write(header.bytes)
        try writer.write(packet[Self.headerLength...])
        counterState.withLock { $0.rxPackets += 1 }
        return [(chain.head, writer.written)]
    }

    /// With MRG_RXBUF (§5.1.6.4.2): as many chains as the packet needs, `num_buffers` of them, the
    /// header in the first. Nil (chains put back) when too few are available yet; a packet that
    /// would not fit in the whole ring is dropped. Each buffer must hold at least the header
    /// (§5.1.6.3.1); a smaller one is a malformed queue.
    private func placeMergeable(_ packet: [UInt8], header: VirtioNetHeader, in queue: inout SplitQueue, _ memory: GuestMemory)
        throws(VirtqueueError) -> [(head: UInt16, length: UInt32)]?
    {
        var chains: [DescriptorChain] = []
        var room: UInt64 = 0
        while room < UInt64(packet.count) {
            guard chains.count < Int(queue.size) else {
                // Larger than every buffer of the ring together: it can never be delivered.
                queue.unpop(UInt16(chains.count))
                counterState.withLock { $0.rxDropped += 1 }
                return []
            }
            guard let chain = try queue.pop(memory) else {
                queue.unpop(UInt16(chains.count))
                return nil
            }
            guard chain.writableLength >= UInt64(Self.headerLength) else {
                throw .malformedRequest("receive buffer of \(chain.writableLength) bytes, smaller than the virtio-net header")
            }
            chains.append(chain)
            room += chain.writableLength
        }
        var header = header
        header.numBuffers = UInt16(chains.count)
        // Straight from the packet into the buffers (QEMU's one copy per direction): the new header
        // into the first buffer (each holds one, checked above), then the frame across them all.
        var used: [(head: UInt16, length: UInt32)] = []
        var offset = Self.headerLength
        for (index, chain) in chains.enumerated() {
            var writer = chain.writer(memory)
            if index == 0 { try writer.write(header.bytes) }
            let take = Int(min(writer.remaining, UInt64(packet.count - offset)))
            try writer.write(packet[offset..<(offset + take)])
            offset += take
            used.append((chain.head, writer.written))
        }
        counterState.withLock { $0.rxPackets += 1 }
        return used
    }
}
