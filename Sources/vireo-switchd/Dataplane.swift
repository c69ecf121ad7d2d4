#if canImport(Glibc)
import Glibc
#endif
import Logging
import VireoSwitch
import VireoSystem

/// An owned descriptor held by reference, so port backends can share and replace it.
final class Handle {
    let descriptor: FileDescriptor
    init(_ descriptor: consuming FileDescriptor) { self.descriptor = descriptor }
    var raw: Int32 { descriptor.rawValue }
}

/// What backs one switch port: the descriptor frames move through.
final class PortBackend {
    let id: PortID
    let config: PortConfig
    /// tap: the tap fd; uplink: the AF_PACKET socket; vm: the listening socket.
    let main: Handle
    let mainToken: UInt64
    /// vm: the connected VMM, if any.
    var peer: Handle?
    var peerToken: UInt64 = 0
    /// vm: the socket path.
    let socketPath: String?
    /// uplink: the interface's index, when its frames may take the kernel fast path.
    var fastPathInterface: Int32?
    /// vm in offload mode: what the peer last announced it accepts (``OffloadAnnouncement``).
    var peerOffloads: NetOffloads = []
    /// vm: frames switched to this port during one ingress batch, sent together (one `sendmmsg`):
    /// message i is `queuedLengths[i]` bytes at `queuedOffsets[i]` in `queuedBytes`.
    @exclusivity(unchecked) var queuedBytes: [UInt8] = []
    @exclusivity(unchecked) var queuedOffsets: [UInt32] = []
    @exclusivity(unchecked) var queuedLengths: [UInt32] = []
    /// vm: the peer has not sent its first message yet, which may be a ring offer (``RingHandshake``).
    var awaitingFirstMessage = false
    /// vm in ring mode: the shared-memory rings the peer offered; the socket then carries kicks.
    @exclusivity(unchecked) var rings: PeerRings?

    init(id: PortID, config: PortConfig, main: Handle, mainToken: UInt64, socketPath: String?) {
        self.id = id
        self.config = config
        self.main = main
        self.mainToken = mainToken
        self.socketPath = socketPath
    }

    /// Offloads a frame may still need when it is handed to this port: taps and uplinks in offload
    /// mode take them all (the kernel finishes the work, in the NIC or in software), VM ports what
    /// their peer announced, others none.
    var acceptedOffloads: NetOffloads {
        guard config.offload else { return [] }
        return config.kind == .vm ? peerOffloads : .all
    }

    /// Whether messages on this port carry a virtio-net header before the frame: in offload mode,
    /// and always on an uplink, whose packet socket has PACKET_VNET_HDR so that checksum-partial
    /// and GSO packets from the host's stack arrive with what is needed to finish them.
    var headed: Bool { config.offload || config.kind == .uplink }

    /// The descriptor frames are written to, if there is one now.
    var transmitFD: Int32? {
        switch config.kind {
        case .tap, .uplink: main.raw
        case .vm: peer?.raw
        }
    }
}

/// A VM port's shared-memory rings, from the switch's side: it consumes ring 0 and produces ring 1.
final class PeerRings {
    let region: FrameRingRegion
    @exclusivity(unchecked) var fromPeer: FrameRing
    @exclusivity(unchecked) var toPeer: FrameRing
    /// Frames were pushed to the peer in this batch: see at its end whether it needs a kick.
    @exclusivity(unchecked) var pushed = false
    /// The peer's ring was left non-empty (a full batch, or records arrived while arming): it is
    /// read again in the next turn of the loop without waiting for a kick.
    @exclusivity(unchecked) var busy = false

    init(region: FrameRingRegion) {
        self.region = region
        fromPeer = region.ring(0, producer: false)
        toPeer = region.ring(1, producer: true)
    }
}

/// Port backends by port ID. IDs are small slot indices, so an array serves, without hashing on
/// the per-frame path.
struct BackendTable {
    private var slots: [PortBackend?] = []

    subscript(id: Int) -> PortBackend? {
        get { id >= 0 && id < slots.count ? slots[id] : nil }
        set {
            guard id >= 0 else { return }
            if id >= slots.count { slots += [PortBackend?](repeating: nil, count: id - slots.count + 1) }
            slots[id] = newValue
        }
    }

    mutating func removeValue(forKey id: Int) -> PortBackend? {
        defer { self[id] = nil }
        return self[id]
    }

    var values: [PortBackend] { slots.compactMap { $0 } }
}

/// A control connection: a line buffer in, JSON lines out.
final class ControlClient {
    let handle: Handle
    var input: [UInt8] = []
    init(_ handle: Handle) { self.handle = handle }
}

/// The event loop: one thread, one epoll, every port and control connection.
///
/// Everything here runs on that one thread, so the properties the per-frame path touches are
/// `@exclusivity(unchecked)`: Swift's dynamic exclusivity checks on class properties cost about a
/// tenth of the switch's time at a million frames per second, and no second thread exists to race.
///
/// Frames are read in batches (up to ``batch`` per ready descriptor per wake-up: one `recvmmsg` on
/// a VM port, a `read` per frame on taps and uplinks), switched by ``Switch``, and written to each
/// egress port without blocking: frames for a VM port are queued and sent with one `sendmmsg` at
/// the end of the batch, others written one by one. A port that cannot take a frame drops it
/// (`transmit-failed`) rather than stall the others.
///
/// Offloads: on ports in offload mode (taps by default, VM ports that ask) a frame travels with
/// its virtio-net header, so a TCP super-frame of up to 64 KiB crosses the switch as one frame and
/// checksums are left to whoever finally needs them. A frame leaves as it came to a port that
/// accepts what its header still asks for; to any other port it is resolved in software first
/// (``SoftwareOffload``: the checksum completed, the super-frame cut into segments).
final class Dataplane {
    enum Registration {
        case port(PortID)
        case vmListener(PortID)
        case control
        case client(ControlClient)
        case signal
    }

    let name: String
    let socketDirectory: String
    let controlPath: String
    var logger: Logger
    @exclusivity(unchecked) var fabric: Switch
    let epoll: Epoll
    /// Forwarding between uplinks in the kernel (``KernelFastPath``); nil when off or unavailable.
    let fastPath: KernelFastPath?
    let control: Handle
    let signals: Handle
    @exclusivity(unchecked) var backends = BackendTable()
    var registrations: [UInt64: Registration] = [:]
    var nextToken: UInt64 = 1
    var running = true
    /// With `--exit-with-parent`: the parent's PID at start; checked once a second.
    var watchedParent: Int32?

    static let batch = 64
    /// The largest message a port carries: a virtio-net header, then 64 KiB plus an Ethernet header and a tag.
    static let slot = VirtioNetHeader.length + 65_536 + 18
    @exclusivity(unchecked) var buffer = [UInt8](repeating: 0, count: Dataplane.slot)
    /// VM-port receive batches: message i at `i * slot`.
    @exclusivity(unchecked) var receiveArena = [UInt8](repeating: 0, count: Dataplane.batch * Dataplane.slot)
    @exclusivity(unchecked) var receiveLengths = [UInt32](repeating: 0, count: Dataplane.batch)
    /// VM ports with queued frames (``PortBackend/queuedLengths``) to send at the end of the batch.
    @exclusivity(unchecked) var queued: [PortBackend] = []
    /// VM ports in ring mode that were handed frames in this batch (a kick may be due).
    @exclusivity(unchecked) var pushedRings: [PortBackend] = []
    /// VM ports in ring mode whose ring to the switch still holds records (``PeerRings/busy``).
    @exclusivity(unchecked) var busyRings: [PortBackend] = []
    @exclusivity(unchecked) var egress: [Egress] = []
    /// The ring record being switched while it is left in its ring (``drainRing(_:now:)``):
    /// `buffer` holds its first `copied` bytes (its headers: all that is decided on), the rest
    /// is copied from the ring straight to a ring or tap port, or, for the paths that read the
    /// whole frame, the frame is put together in `completed` (`complete`): not in `buffer`, which
    /// slices of the frame being switched share (writing to it would copy all of it).
    struct InPlaceFrame {
        let rings: PeerRings
        let length: Int
        let copied: Int
        var complete: Bool
    }
    @exclusivity(unchecked) var inPlace: InPlaceFrame?
    @exclusivity(unchecked) var completed = [UInt8](repeating: 0, count: Dataplane.slot)
    /// Bytes of a ring record copied before switching it: the virtio-net and Ethernet headers and,
    /// for a TCP super-frame, its IP and TCP headers (``SoftwareOffload`` reads them).
    static let headerCopy = 256

    /// The frame being switched as it leaves untagged (index 0), in a C-tag (1) and in an S-tag
    /// (2), each built at most once per frame.
    @exclusivity(unchecked) var forms = [EgressForm(), EgressForm(), EgressForm()]

    init(name: String, socketDirectory: String, ageingSeconds: Int, kernelFastPath: Bool = true, logger: Logger) throws(SystemError) {
        self.name = name
        self.socketDirectory = socketDirectory
        self.logger = logger
        self.controlPath = "\(socketDirectory)/\(name).ctl"
        fabric = Switch(table: MACTable(ageingTime: UInt64(ageingSeconds) * 1_000_000_000))
        epoll = try Epoll()
        if kernelFastPath {
            do {
                fastPath = try KernelFastPath()
            } catch {
                fastPath = nil
                logger.notice("kernel fast path unavailable, every frame goes through the switch process: \(error)")
            }
        } else {
            fastPath = nil
        }
        // Bound under a temporary name: the control socket appears at `controlPath` only once the
        // switch is ready (``publishControlSocket()``), so whoever waits for it finds the ports too.
        control = Handle(try FrameChannel.listenStream(path: controlPath + ".new"))
        signals = Handle(try TerminationSignalFD.open())
        for index in forms.indices { forms[index].headed.reserveCapacity(Self.slot) }
        try register(control.raw, .control)
        try register(signals.raw, .signal)
    }

    /// Makes the control socket reachable at ``controlPath`` (an atomic rename): call once the
    /// startup ports are added, so that a client that sees the socket also finds their sockets.
    func publishControlSocket() throws(SystemError) {
        guard Glibc.rename(controlPath + ".new", controlPath) == 0 else {
            throw SystemError("rename \(controlPath).new to \(controlPath)", errno: errno)
        }
    }

    @discardableResult
    private func register(_ fd: Int32, _ registration: Registration) throws(SystemError) -> UInt64 {
        let token = nextToken
        nextToken += 1
        try epoll.add(fd, token: token, events: Epoll.readable | Epoll.hangup)
        registrations[token] = registration
        return token
    }

    private func unregister(_ fd: Int32, token: UInt64) {
        try? epoll.remove(fd)
        registrations[token] = nil
    }

    // MARK: Ports

    enum PortError: Error, CustomStringConvertible {
        case system(SystemError)
        case config(SwitchError)
        var description: String {
            switch self {
            case .system(let error): error.description
            case .config(let error): error.description
            }
        }
    }

    func addPort(_ config: PortConfig) throws(PortError) {
        guard fabric.port(named: config.name) == nil else { throw .config(.duplicatePort(config.name)) }
        let main: Handle
        var socketPath: String?
        do {
            switch config.kind {
            case .tap:
                var actual = ""
                main = Handle(try FrameChannel.openTap(named: config.name, offload: config.offload, deviceName: &actual))
                if actual != config.name { logger.warning("tap \(config.name) was created as \(actual)") }
            case .uplink:
                main = Handle(try FrameChannel.openPacketSocket(interface: config.name, headed: true))
            case .vm:
                let path = "\(socketDirectory)/\(name)-\(config.name).sock"
                main = Handle(try FrameChannel.listenSeqPacket(path: path))
                socketPath = path
            }
        } catch {
            throw .system(error)
        }
        let id: PortID
        do { id = try fabric.addPort(config) } catch { throw .config(error) }
        let token: UInt64
        do {
            token = try register(main.raw, config.kind == .vm ? .vmListener(id) : .port(id))
        } catch {
            _ = try? fabric.removePort(named: config.name)
            throw .system(error)
        }
        let backend = PortBackend(id: id, config: config, main: main, mainToken: token, socketPath: socketPath)
        backends[id.rawValue] = backend
        if config.kind == .uplink { joinFastPath(backend) }
        logger.info("port \(config.spec) added as \(id)\(socketPath.map { " at \($0)" } ?? "")\(backend.fastPathInterface == nil ? "" : ", kernel fast path")")
    }

    /// Puts an uplink on the kernel fast path, unless its MTU is set below its interface's (the
    /// kernel would not enforce it) or its tags are 802.1ad or tunnelled (the program knows plain
    /// C-tags only): a port that cannot join keeps the user-space path.
    private func joinFastPath(_ backend: PortBackend) {
        guard let fastPath else { return }
        let name = backend.config.name
        let index = Int32(bitPattern: if_nametoindex(name))
        guard backend.config.tagType == VLAN.customerTPID, !backend.config.tunnel else {
            logger.info("port \(name): not on the kernel fast path (802.1ad and tunnel ports stay with the switch process)")
            return
        }
        guard index > 0, let interfaceMTU = Self.interfaceMTU(name), backend.config.mtu >= interfaceMTU else {
            logger.info("port \(name): not on the kernel fast path (its mtu=\(backend.config.mtu) is below the interface's, or the interface is gone)")
            return
        }
        do {
            try fastPath.attach(backend.id, interfaceIndex: index, socket: backend.main.raw)
            backend.fastPathInterface = index
        } catch {
            logger.warning("port \(name): not on the kernel fast path: \(error)")
        }
    }

    /// An interface's MTU, from sysfs.
    private static func interfaceMTU(_ name: String) -> Int? {
        guard let file = try? FileDescriptor.open("/sys/class/net/\(name)/mtu", flags: O_RDONLY), let text = try? file.read(upTo: 32) else { return nil }
        return Int(String(decoding: text.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }, as: UTF8.self))
    }

    func removePort(named portName: String) throws(SwitchError) {
        let id = try fabric.removePort(named: portName)
        fastPath?.detach(id)
        guard let backend = backends.removeValue(forKey: id.rawValue) else { return }
        if let peer = backend.peer { unregister(peer.raw, token: backend.peerToken) }
        unregister(backend.main.raw, token: backend.mainToken)
        if let path = backend.socketPath { FileSystem.remove(path) }
        logger.info("port \(portName) removed")
    }

    // MARK: Event loop

    func run() throws(SystemError) {
        var ready: [(token: UInt64, events: UInt32)] = []
        var lastSweep = monotonicNanoseconds()
        while running {
            // Rings left non-empty are read again at once; otherwise sleep until a descriptor is ready.
            try epoll.wait(into: &ready, timeoutMilliseconds: busyRings.isEmpty ? 1000 : 0)
            let now = monotonicNanoseconds()
            for (token, events) in ready {
                guard let registration = registrations[token] else { continue }
                switch registration {
                case .port(let id): portReadable(id, token: token, events: events, now: now)
                case .vmListener(let id): acceptPeer(id)
                case .control: acceptControl()
                case .client(let client): controlReadable(client, token: token, now: now)
                case .signal:
                    logger.info("termination signal: stopping")
                    running = false
                }
            }
            if !busyRings.isEmpty {
                let polling = busyRings
                busyRings.removeAll(keepingCapacity: true)
                for backend in polling {
                    backend.rings?.busy = false
                    drainRing(backend, now: now)
                }
                flushQueued()
            }
            fastPath?.revalidate(&fabric, now: now)
            if now &- lastSweep >= 1_000_000_000 {
                fastPath?.sweep(&fabric, now: now)
                let expired = fabric.expire(now: now)
                if expired > 0 { logger.debug("aged out \(expired) address(es)") }
                lastSweep = now
                if let watchedParent, parentProcessID() != watchedParent {
                    logger.info("parent process \(watchedParent) exited: stopping")
                    running = false
                }
            }
        }
    }

    func shutdown() {
        for backend in backends.values {
            if let path = backend.socketPath { FileSystem.remove(path) }
        }
        FileSystem.remove(controlPath)
        FileSystem.remove(controlPath + ".new")
    }

    private func portReadable(_ id: PortID, token: UInt64, events: UInt32, now: UInt64) {
        guard let backend = backends[id.rawValue] else { return }
        if backend.config.kind == .vm {
            peerReadable(backend, events: events, now: now)
        } else {
            interfaceReadable(backend, token: token, now: now)
        }
        flushQueued()
    }

    /// One `recvmmsg` batch from a VM port's peer (its first message alone, which may be a ring
    /// offer), then, in ring mode, a batch from its ring.
    private func peerReadable(_ backend: PortBackend, events: UInt32, now: UInt64) {
        guard let fd = backend.peer?.raw else { return }
        if backend.awaitingFirstMessage {
            guard readFirstMessage(backend, fd: fd, now: now) else { return }
        }
        if !backend.awaitingFirstMessage, !receiveMessages(backend, fd: fd, now: now) { return }
        drainRing(backend, now: now)
        if events & Epoll.hangup != 0, events & Epoll.readable == 0 { dropPeer(backend, reason: "hang-up") }
    }

    /// One `recvmmsg` batch; false when the peer was dropped.
    private func receiveMessages(_ backend: PortBackend, fd: Int32, now: UInt64) -> Bool {
        let got: Int?
        do {
            got = try FrameChannel.receiveBatch(fd, into: &receiveArena, slot: Self.slot, lengths: &receiveLengths)
        } catch {
            dropPeer(backend, reason: "\(error)")
            return false
        }
        for index in 0..<(got ?? 0) {
            let length = Int(receiveLengths[index])
            guard length > 0 else {
                dropPeer(backend, reason: "closed")
                return false
            }
            let start = index * Self.slot
            peerMessage(backend, receiveArena[start..<start + length], now: now)
        }
        return true
    }

    /// A message from a VM port's socket: a kick (in ring mode: the ring is read next), an
    /// offload announcement, or a frame.
    private func peerMessage(_ backend: PortBackend, _ message: ArraySlice<UInt8>, now: UInt64) {
        if backend.rings != nil, RingHandshake.isKick(message) { return }
        if backend.config.offload, let announced = OffloadAnnouncement.decode(message) {
            if announced != backend.peerOffloads { logger.info("port \(backend.config.name): peer accepts offloads \(announced.names)") }
            backend.peerOffloads = announced
            return
        }
        receive(message, headed: backend.headed, from: backend.id, now: now)
    }

    /// A new peer's first message, read with the descriptors it may carry: a ring offer maps the
    /// peer's region (refused unless sealed, big enough and initialised) and is answered; anything
    /// else is an ordinary message and the port stays on messages. False when the peer was dropped.
    private func readFirstMessage(_ backend: PortBackend, fd: Int32, now: UInt64) -> Bool {
        let received: (message: [UInt8], descriptors: ReceivedDescriptors)?
        do { received = try FrameChannel.receiveMessage(fd, capacity: Self.slot) } catch {
            dropPeer(backend, reason: "\(error)")
            return false
        }
        guard let received else { return true }
        backend.awaitingFirstMessage = false
        guard !received.message.isEmpty else {
            dropPeer(backend, reason: "closed")
            return false
        }
        guard let (version, capacity) = RingHandshake.decodeOffer(received.message) else {
            peerMessage(backend, received.message[...], now: now)
            return true
        }
        let name = backend.config.name
        var status = RingHandshake.Status.refused
        if version != RingHandshake.version {
            logger.warning("port \(name): ring offer refused: version \(version), this switch speaks \(RingHandshake.version)")
        } else if received.descriptors.count == 1, let memfd = received.descriptors.take(0) {
            do {
                let region = try FrameRingRegion(mapping: memfd, capacity: capacity)
                if region.hasValidHeader {
                    backend.rings = PeerRings(region: region)
                    status = .accepted
                } else {
                    logger.warning("port \(name): ring offer refused: the region has no valid header")
                }
            } catch {
                logger.warning("port \(name): ring offer refused: \(error)")
            }
        } else {
            logger.warning("port \(name): ring offer refused: it carried \(received.descriptors.count) descriptors, not 1")
        }
        guard FrameChannel.sendMessage(fd, RingHandshake.reply(status, offeredVersion: version)) else {
            dropPeer(backend, reason: "the ring reply could not be sent")
            return false
        }
        if status == .accepted { logger.info("port \(name): frames in shared-memory rings of \(capacity >> 10) KiB each way") }
        return true
    }

    /// Up to ``batch`` records from a ring-mode peer's ring. An emptied ring is armed (the peer
    /// kicks once it adds more); one left non-empty is read again in the next turn of the loop.
    /// A peer that waits for room in its ring is kicked once records were taken.
    private func drainRing(_ backend: PortBackend, now: UInt64) {
        guard let rings = backend.rings else { return }
        var taken = false
        defer {
            if taken, backend.rings === rings, rings.fromPeer.roomKickNeeded(), let peer = backend.peer {
                _ = FrameChannel.sendMessage(peer.raw, RingHandshake.kick)
            }
        }
        for _ in 0..<Self.batch {
            switch rings.fromPeer.peek() {
            case .record(let length):
                taken = true
                let copied = copyHeaders(of: length, headed: backend.headed, from: rings)
                inPlace = InPlaceFrame(rings: rings, length: length, copied: copied, complete: copied == length)
                receive(buffer[0..<length], headed: backend.headed, from: backend.id, now: now)
                inPlace = nil
                rings.fromPeer.release()
                guard backend.rings === rings else { return }
            case .empty:
                if rings.fromPeer.arm() { markBusy(backend, rings) }
                return
            case .broken:
                dropPeer(backend, reason: "its ring to the switch is broken")
                return
            }
        }
        markBusy(backend, rings)
    }

    /// Copies the part of the peeked record in `rings` that switching reads into `buffer` (the
    /// peer may rewrite the record meanwhile, so only this copy is decided on); returns its length.
    private func copyHeaders(of length: Int, headed: Bool, from rings: PeerRings) -> Int {
        var copied = min(length, Self.headerCopy)
        rings.fromPeer.copyPeeked(0..<copied, into: &buffer)
        // A super-frame's TCP header starts at csum_start, which a sender may put further in.
        if headed, copied < length, let header = VirtioNetHeader(buffer[0..<copied]), header.isSegmentationOffload {
            let needed = min(length, VirtioNetHeader.length + max(Self.headerCopy, Int(header.checksumStart) + 64))
            if needed > copied {
                rings.fromPeer.copyPeeked(copied..<needed, into: &buffer)
                copied = needed
            }
        }
        return copied
    }

    /// Puts the whole of the frame being switched together in `completed` (its headers from
    /// `buffer`, the rest from its ring) for the paths that read all of it (a tag to add or
    /// remove, offloads to finish, a port without a ring or tap), and points `frame` and `message`
    /// there. False when there was nothing to do (not in place, or done already).
    private func completeInPlaceFrame(_ frame: inout ArraySlice<UInt8>, _ message: inout ArraySlice<UInt8>?) -> Bool {
        guard let record = inPlace, !record.complete else { return false }
        completed[0..<record.copied] = buffer[0..<record.copied]
        record.rings.fromPeer.copyPeeked(record.copied..<record.length, into: &completed)
        inPlace?.complete = true
        frame = completed[frame.indices]
        message = message.map { completed[$0.indices] }
        return true
    }

    private func markBusy(_ backend: PortBackend, _ rings: PeerRings) {
        guard !rings.busy else { return }
        rings.busy = true
        busyRings.append(backend)
    }

    /// Up to ``batch`` frames from a tap or an uplink, one read each.
    private func interfaceReadable(_ backend: PortBackend, token: UInt64, now: UInt64) {
        let fd = backend.main.raw
        for _ in 0..<Self.batch {
            let length: Int?
            do {
                length = backend.config.kind == .uplink
                    ? try FrameChannel.receivePacket(fd, into: &buffer, headed: true)
                    : try FrameChannel.read(fd, into: &buffer)
            } catch {
                if error.errno == ENETDOWN || error.errno == ENXIO {
                    // An interface going down reports this once (the socket's pending error);
                    // the port works again when the interface comes back up.
                    logger.notice("port \(backend.config.name): interface down")
                    return
                } else {
                    logger.error("port \(backend.config.name): \(error); port disabled until re-added")
                    unregister(fd, token: token)
                }
                return
            }
            guard let length, length > 0 else { break }
            if backend.headed, backend.config.kind != .uplink, length >= VirtioNetHeader.length {
                // A tap fills the 10 bytes of `virtio_net_hdr` and skips `num_buffers`
                // (tun_put_user), which would otherwise hold what the buffer held before (the
                // uplink's packet_recv clears them itself).
                buffer[10] = 0
                buffer[11] = 0
            }
            receive(buffer[0..<length], headed: backend.headed, from: backend.id, now: now)
        }
    }

    /// Splits a message from an offload-mode port into its virtio-net header and frame.
    private func receive(_ message: ArraySlice<UInt8>, headed: Bool, from ingress: PortID, now: UInt64) {
        guard headed else {
            switchFrame(message, offload: nil, from: ingress, now: now)
            return
        }
        guard let header = VirtioNetHeader(message) else {
            fabric.countDrop(on: ingress, .runt)
            return
        }
        switchFrame(message.dropFirst(VirtioNetHeader.length), offload: header, message: message, from: ingress, now: now)
    }

    /// Forwards `frame` (`message` is the frame with its header, when it came with one).
    private func switchFrame(_ frame: ArraySlice<UInt8>, offload: VirtioNetHeader?, message: ArraySlice<UInt8>? = nil, from ingress: PortID, now: UInt64) {
        guard case .forward(let header, let vlan, let flooded) = fabric.receive(frame, offload: offload, on: ingress, now: now, egress: &egress) else { return }
        var (frame, message) = (frame, message)
        for index in forms.indices { forms[index].reset() }
        // Untagged in and untagged out, a frame leaves byte for byte as it came.
        let arrivedUntagged = header.headerLength == FrameHeader.untaggedLength
        // An address this frame moved must leave the kernel's flows before anyone can answer it.
        fastPath?.revalidate(&fabric, now: now)
        if let fastPath, !flooded, egress.count == 1, header.innerTagLength == 0,
           backends[ingress.rawValue]?.fastPathInterface != nil, let egressInterface = backends[egress[0].port.rawValue]?.fastPathInterface {
            // The kernel's program handles no tag or a plain C-tag (a VID, no priority bits), both ways.
            let ingressTag: UInt16? = switch header.tagControl {
            case nil: 0
            case let control? where control & 0xF000 == 0 && control != 0: control
            default: nil
            }
            if let ingressTag {
                fastPath.offer(KernelFastPath.Flow(ingress: ingress, ingressTag: ingressTag, vlan: vlan, source: header.source, destination: header.destination),
                               egress: egress[0].port, egressTag: egress[0].vid ?? 0, egressInterface: egressInterface, table: fabric.table, now: now)
            }
        }
        for target in egress {
            guard let backend = backends[target.port.rawValue] else { continue }
            guard let fd = backend.transmitFD else {
                fabric.countDrop(on: target.port, .noPeer)
                continue
            }
            if arrivedUntagged, target.vid == nil,
               let unchanged = Self.unchangedMessage(frame, offload: offload, message: message, to: backend) {
                if !deliverInPlace(backend, fd, unchanged) {
                    deliver(backend, fd, completeInPlaceFrame(&frame, &message) ? completed[unchanged.indices] : unchanged)
                }
                continue
            }
            _ = completeInPlaceFrame(&frame, &message)
            let form = target.vid == nil ? 0 : target.tagType == VLAN.customerTPID ? 1 : 2
            if !forms[form].isBuilt {
                forms[form].build(frame, header: header, offload: offload, vid: target.vid == nil ? nil : vlan, tagType: target.tagType)
            }
            let accepted = backend.acceptedOffloads
            if forms[form].offload.isAccepted(by: accepted) {
                // As it came: with its (shifted) header to a port in offload mode, without to others.
                let headed = forms[form].headed
                deliver(backend, fd, backend.headed ? headed[...] : headed.dropFirst(VirtioNetHeader.length))
                continue
            }
            guard forms[form].resolveSegments() else {
                fabric.countDrop(on: target.port, .badOffload)
                continue
            }
            for segment in forms[form].segments {
                deliver(backend, fd, backend.headed ? (EgressForm.plainHeader + segment)[...] : segment[...])
            }
        }
    }

    /// What a port gets for a frame that leaves unchanged, without building an ``EgressForm`` (a
    /// copy of each 64 KiB super-frame less): the message as it arrived to a port in offload mode,
    /// the bare frame to others. Nil when the header must change on the way (a `num_buffers` to
    /// clear, a plain header to add) or the port needs the frame finished in software.
    private static func unchangedMessage(_ frame: ArraySlice<UInt8>, offload: VirtioNetHeader?, message: ArraySlice<UInt8>?,
                                         to backend: PortBackend) -> ArraySlice<UInt8>? {
        guard (offload ?? VirtioNetHeader()).isAccepted(by: backend.acceptedOffloads) else { return nil }
        guard backend.headed else { return frame }
        guard let offload, offload.numBuffers == 0, let message else { return nil }
        return message
    }

    /// Sends a frame that leaves as it came (`message`, a slice of `buffer`) while it is still in
    /// the ring it came from: a ring-mode VM port or a tap gets the switch's copy of its headers
    /// and the rest straight from that ring, one copy from ring to ring (or to the tap) instead of
    /// two. False, having sent nothing, for other ports or a frame not (or no longer) in place.
    private func deliverInPlace(_ backend: PortBackend, _ fd: Int32, _ message: ArraySlice<UInt8>) -> Bool {
        guard let record = inPlace, !record.complete, message.endIndex > record.copied,
              backend.rings != nil || backend.config.kind == .tap else { return false }
        let headers = buffer[message.startIndex..<record.copied]
        let rest = record.copied..<message.endIndex
        if let rings = backend.rings {
            let result = record.rings.fromPeer.withPeeked(rest) { rings.toPeer.push(headers, vectors: $0) }
            countRingPush(result, backend, rings, message: message)
        } else {
            let sent = record.rings.fromPeer.withPeeked(rest) { FrameChannel.write(fd, headers, $0) }
            countWrite(sent, backend, message: message)
        }
        return true
    }

    /// Sends one message to a port: into a ring-mode VM port's ring, queued for another VM port's
    /// batch, written at once to others.
    private func deliver(_ backend: PortBackend, _ fd: Int32, _ message: ArraySlice<UInt8>) {
        if let rings = backend.rings {
            countRingPush(rings.toPeer.push(message), backend, rings, message: message)
            return
        }
        if backend.config.kind == .vm {
            enqueue(backend, message)
            return
        }
        let sent = backend.config.kind == .uplink ? FrameChannel.sendPacket(fd, headed: message) : FrameChannel.write(fd, message)
        countWrite(sent, backend, message: message)
    }

    /// Counts a message pushed into a VM port's ring (a kick is considered at the end of the batch)
    /// or not: dropped when the ring is full, the peer dropped when its ring is broken.
    private func countRingPush(_ result: FrameRing.PushResult, _ backend: PortBackend, _ rings: PeerRings, message: ArraySlice<UInt8>) {
        switch result {
        case .pushed:
            fabric.countTransmit(on: backend.id, bytes: message.count - (backend.headed ? VirtioNetHeader.length : 0))
            if !rings.pushed {
                rings.pushed = true
                pushedRings.append(backend)
            }
        case .full:
            fabric.countDrop(on: backend.id, .transmitFailed)
        case .broken:
            fabric.countDrop(on: backend.id, .transmitFailed)
            dropPeer(backend, reason: "its ring from the switch is broken")
        }
    }

    private func countWrite(_ sent: Bool, _ backend: PortBackend, message: ArraySlice<UInt8>) {
        if sent {
            fabric.countTransmit(on: backend.id, bytes: message.count - (backend.headed ? VirtioNetHeader.length : 0))
        } else {
            fabric.countDrop(on: backend.id, .transmitFailed)
        }
    }

    /// Queues a message for a VM port; a full batch goes out at once.
    private func enqueue(_ backend: PortBackend, _ frame: ArraySlice<UInt8>) {
        if backend.queuedLengths.isEmpty { queued.append(backend) }
        backend.queuedOffsets.append(UInt32(backend.queuedBytes.count))
        backend.queuedLengths.append(UInt32(frame.count))
        backend.queuedBytes.append(contentsOf: frame)
        if backend.queuedLengths.count >= FrameChannel.batchLimit { flush(backend) }
    }

    /// Sends a VM port's queued frames with one `sendmmsg`; those the socket cannot take are dropped.
    private func flush(_ backend: PortBackend) {
        guard !backend.queuedLengths.isEmpty else { return }
        let sent = backend.peer.map {
            FrameChannel.sendBatch($0.raw, bytes: backend.queuedBytes, offsets: backend.queuedOffsets, lengths: backend.queuedLengths)
        } ?? 0
        let headerBytes = backend.headed ? VirtioNetHeader.length : 0
        for (index, length) in backend.queuedLengths.enumerated() {
            if index < sent {
                fabric.countTransmit(on: backend.id, bytes: Int(length) - headerBytes)
            } else {
                fabric.countDrop(on: backend.id, backend.peer == nil ? .noPeer : .transmitFailed)
            }
        }
        backend.queuedBytes.removeAll(keepingCapacity: true)
        backend.queuedOffsets.removeAll(keepingCapacity: true)
        backend.queuedLengths.removeAll(keepingCapacity: true)
    }

    /// Sends the queued VM-port batches, and kicks ring-mode peers that were handed frames while
    /// they said they were waiting.
    private func flushQueued() {
        for backend in queued { flush(backend) }
        queued.removeAll(keepingCapacity: true)
        for backend in pushedRings {
            guard let rings = backend.rings, rings.pushed else { continue }
            rings.pushed = false
            if rings.toPeer.kickNeeded(), let peer = backend.peer { _ = FrameChannel.sendMessage(peer.raw, RingHandshake.kick) }
        }
        pushedRings.removeAll(keepingCapacity: true)
    }

    private func acceptPeer(_ id: PortID) {
        guard let backend = backends[id.rawValue] else { return }
        while true {
            let accepted: FileDescriptor?
            do { accepted = try FrameChannel.accept(backend.main.raw) } catch {
                logger.warning("port \(backend.config.name): \(error)")
                return
            }
            guard let accepted else { return }
            if backend.peer != nil { dropPeer(backend, reason: "replaced by a new connection") }
            backend.peerOffloads = []
            backend.awaitingFirstMessage = true
            let handle = Handle(accepted)
            do {
                backend.peerToken = try register(handle.raw, .port(id))
                backend.peer = handle
                logger.info("port \(backend.config.name): peer connected")
            } catch {
                logger.warning("port \(backend.config.name): \(error)")
            }
        }
    }

    private func dropPeer(_ backend: PortBackend, reason: String) {
        guard let peer = backend.peer else { return }
        unregister(peer.raw, token: backend.peerToken)
        backend.peer = nil
        backend.rings = nil
        backend.awaitingFirstMessage = false
        logger.info("port \(backend.config.name): peer disconnected (\(reason))")
    }

    // MARK: Control socket

    private func acceptControl() {
        while true {
            let accepted: FileDescriptor?
            do { accepted = try FrameChannel.accept(control.raw) } catch {
                logger.warning("control socket: \(error)")
                return
            }
            guard let accepted else { return }
            let client = ControlClient(Handle(accepted))
            do { try register(client.handle.raw, .client(client)) } catch { logger.warning("control socket: \(error)") }
        }
    }

    private func controlReadable(_ client: ControlClient, token: UInt64, now: UInt64) {
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let got: Int?
            do { got = try FrameChannel.read(client.handle.raw, into: &chunk) } catch {
                unregister(client.handle.raw, token: token)
                return
            }
            guard let got else { break }
            if got == 0 {
                unregister(client.handle.raw, token: token)
                return
            }
            client.input += chunk[0..<got]
            if client.input.count > 65_536 {
                unregister(client.handle.raw, token: token)
                return
            }
        }
        while let newline = client.input.firstIndex(of: UInt8(ascii: "\n")) {
            let line = String(decoding: client.input[..<newline], as: UTF8.self)
            client.input.removeSubrange(...newline)
            let reply = execute(line, now: now) + "\n"
            if !FrameChannel.writeAll(client.handle.raw, Array(reply.utf8)) {
                unregister(client.handle.raw, token: token)
                return
            }
        }
    }

    /// Runs one control command and returns its JSON reply.
    func execute(_ line: String, now: UInt64) -> String {
        let words = line.split(separator: " ", omittingEmptySubsequences: true).map(String.init)
        guard let command = words.first else { return JSON.error("empty command") }
        switch (command, words.count) {
        case ("ports", 1):
            return JSON.object(["ports": JSON.array(fabric.ports.map(portJSON))])
        case ("stats", 1):
            return JSON.object([
                "ports": JSON.array(fabric.ports.map(statsJSON)), "fdb_entries": "\(fabric.table.count)",
                "kernel_fast_path": fastPath == nil ? "false" : "true", "kernel_flows": "\(fastPath?.flowCount ?? 0)",
            ])
        case ("fdb", 1):
            let entries = fabric.table.allEntries.compactMap { entry -> String? in
                guard let port = fabric[port: entry.port] else { return nil }
                let age = Double(now &- entry.lastSeen) / 1e9
                return JSON.object([
                    "vlan": "\(entry.vlan)", "mac": JSON.string(entry.mac.description), "port": JSON.string(port.config.name),
                    "age_seconds": "\(Double(Int(age * 10)) / 10)",
                ])
            }
            return JSON.object(["entries": JSON.array(entries)])
        case ("add-port", 2):
            do {
                let config = try PortConfig.parse(words[1])
                try addPort(config)
                return JSON.object(["ok": "true", "port": portJSON(fabric[port: fabric.port(named: config.name)!]!)])
            } catch let error as PortSpecError {
                return JSON.error(error.description)
            } catch {
                return JSON.error("\(error)")
            }
        case ("del-port", 2):
            do {
                try removePort(named: words[1])
                return JSON.object(["ok": "true"])
            } catch { return JSON.error(error.description) }
        case ("ageing", 2):
            guard let seconds = UInt64(words[1]), seconds > 0 else { return JSON.error("ageing takes a positive number of seconds") }
            fabric.setAgeingTime(seconds * 1_000_000_000)
            fabric.expire(now: now)
            return JSON.object(["ok": "true", "ageing_seconds": "\(seconds)"])
        case ("flush", 1):
            fabric.flushTable()
            return JSON.object(["ok": "true"])
        default:
            return JSON.error("unknown command '\(line)' (commands: ports, stats, fdb, add-port SPEC, del-port NAME, ageing SECONDS, flush)")
        }
    }

    private func portJSON(_ port: SwitchPort) -> String {
        var fields: [String: String] = [
            "name": JSON.string(port.config.name), "kind": JSON.string(port.config.kind.rawValue),
            "spec": JSON.string(port.config.spec), "id": "\(port.id)", "mtu": "\(port.config.mtu)", "mac_limit": "\(port.config.macLimit)",
        ]
        switch port.config.mode {
        case .access(let vlan):
            fields["mode"] = JSON.string("access")
            fields["vlan"] = "\(vlan)"
        case .trunk(let allowed, let native):
            fields["mode"] = JSON.string("trunk")
            fields["allowed"] = JSON.array(allowed.map { "\($0)" })
            fields["native"] = native.map { "\($0)" } ?? "null"
        }
        fields["offload"] = port.config.offload ? "true" : "false"
        if port.config.kind == .uplink { fields["kernel_fast_path"] = backends[port.id.rawValue]?.fastPathInterface == nil ? "false" : "true" }
        fields["tpid"] = JSON.string(String(port.config.tagType, radix: 16))
        if port.config.tunnel { fields["tunnel"] = "true" }
        if let backend = backends[port.id.rawValue] {
            if let path = backend.socketPath {
                fields["socket"] = JSON.string(path)
                fields["connected"] = backend.peer == nil ? "false" : "true"
                fields["rings"] = backend.rings == nil ? "false" : "true"
            }
            if port.config.offload { fields["accepted_offloads"] = JSON.array(backend.acceptedOffloads.names.map(JSON.string)) }
        }
        return JSON.object(fields)
    }

    private func statsJSON(_ port: SwitchPort) -> String {
        let counters = port.counters
        var drops: [String: String] = [:]
        for reason in DropReason.allCases { drops[reason.description] = "\(counters[drop: reason])" }
        return JSON.object([
            "name": JSON.string(port.config.name), "rx_packets": "\(counters.rxPackets)", "rx_bytes": "\(counters.rxBytes)",
            "tx_packets": "\(counters.txPackets)", "tx_bytes": "\(counters.txBytes)",
            "unlearned_sources": "\(counters.unlearnedSources)", "learned": "\(fabric.table.count(on: port.id))",
            "kernel_rx_packets": "\(counters.kernelPackets)",
            "drops_total": "\(counters.totalDrops)", "drops": JSON.object(drops),
        ])
    }
}

/// Minimal JSON writing: values are already-encoded JSON text; keys are sorted for stable output.
enum JSON {
    static func object(_ fields: [String: String]) -> String {
        "{" + fields.sorted { $0.key < $1.key }.map { "\(string($0.key)):\($0.value)" }.joined(separator: ",") + "}"
    }

    static func array(_ items: [String]) -> String { "[" + items.joined(separator: ",") + "]" }

    static func string(_ text: String) -> String { jsonQuoted(text) }

    static func error(_ message: String) -> String { object(["error": string(message)]) }
}

/// One frame as it leaves the switch untagged or tagged: its virtio-net header (shifted for the
/// tag change, or a plain one for a frame that came without) followed by the frame, and, only if
/// some egress port needs them, the frames resolved in software for ports without its offloads.
struct EgressForm {
    /// A header asking for nothing: what precedes a resolved frame on a port in offload mode.
    static let plainHeader = VirtioNetHeader().bytes
    var isBuilt = false
    var offload = VirtioNetHeader()
    /// The header, then the frame.
    var headed: [UInt8] = []
    var networkOffset = FrameHeader.untaggedLength
    var segmentsBuilt = false
    var resolvable = true
    var segments: [[UInt8]] = []

    mutating func reset() {
        isBuilt = false
        segmentsBuilt = false
    }

    mutating func build(_ frame: ArraySlice<UInt8>, header: FrameHeader, offload ingress: VirtioNetHeader?, vid: UInt16?, tagType: UInt16) {
        let outerHeader = FrameHeader.untaggedLength + (vid == nil ? 0 : FrameHeader.tagLength)
        networkOffset = outerHeader + header.innerTagLength
        offload = (ingress ?? VirtioNetHeader()).shifted(by: outerHeader - header.headerLength)
        offload.numBuffers = 0
        headed.removeAll(keepingCapacity: true)
        offload.append(to: &headed)
        header.appendEgressFrame(frame, vid: vid, tagType: tagType, to: &headed)
        isBuilt = true
    }

    /// The checksum completed and super-frames segmented, once per frame; false when the frame's
    /// headers do not allow it.
    mutating func resolveSegments() -> Bool {
        if !segmentsBuilt {
            resolvable = SoftwareOffload.resolve(headed.dropFirst(VirtioNetHeader.length), header: offload, networkOffset: networkOffset, into: &segments)
            segmentsBuilt = true
        }
        return resolvable
    }
}

extension VirtioNetHeader {
    /// Whether a port accepting `offloads` may be handed the packet with this header as it is:
    /// nothing left to do that it does not take, and DATA_VALID only for one taking checksums.
    func isAccepted(by offloads: NetOffloads) -> Bool {
        requiredOffloads.isSubset(of: offloads) && (flags & Self.flagDataValid == 0 || offloads.contains(.checksum))
    }
}

extension NetOffloads {
    /// Names for logs and the control socket.
    var names: [String] {
        [(NetOffloads.checksum, "checksum"), (.tso4, "tso4"), (.tso6, "tso6"), (.tsoECN, "tso-ecn")].compactMap { contains($0.0) ? $0.1 : nil }
    }
}
