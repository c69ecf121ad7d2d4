#if canImport(Glibc)
import Glibc
#endif
import Synchronization
import VireoSwitch
import VireoSystem

/// A `vm:` port of a Vireo switch (`vireo-switchd`) as the backend (`--net switch=NAME`): a
/// SOCK_SEQPACKET unix socket carrying one Ethernet frame per message (docs/network.md).
///
/// In offload mode (the port's `offload=on`, what `vireo-vmm` asks for) each message is the
/// device's 12-byte `virtio_net_hdr_v1` (virtio 1.2 §5.1.6) and the frame, passed through both
/// ways, so the guest's checksum and TSO offloads cross the switch: a 64 KiB TCP super-frame is one
/// message, and the switch segments it only for ports that cannot take it. What the guest accepts
/// is announced to the switch (``OffloadAnnouncement``) whenever its receive features change.
/// Without offload mode the header is dropped on send and received frames get a zeroed one (no
/// checksum to complete, `GSO_NONE`), which is all a driver that negotiated no offloads may be handed.
///
/// Rings (the default): right after connecting, the backend offers the switch a pair of
/// shared-memory rings (``RingHandshake``, `FrameRingRegion`), and once accepted frames travel
/// there instead of one message each: under load neither side makes a system call per frame.
/// The socket then carries one-byte kicks (a side that emptied its ring and went to sleep is
/// woken by the other), offload announcements and the end of the connection, and stays the
/// descriptor the VMM polls.
public final class SwitchPortBackend: NetBackend {
    /// The port's socket path, `DIR/SWITCH-PORT.sock`.
    public let socketPath: String
    private let socket: FileDescriptor
    private let parking: EventFD
    private let connectedState = Atomic<Bool>(true)
    /// One frame-sized buffer reused by every ``receive()`` (zeroing a fresh 64 KiB array per frame
    /// would cost more than a small frame).
    private let scratch = Mutex([UInt8](repeating: 0, count: SwitchPortBackend.maxFrame))
    /// Ring mode: ring 0 (to the switch) and ring 1 (from it), each used under its lock.
    private let transmitRing: Mutex<FrameRing?>
    private let receiveRing: Mutex<FrameRing?>
    /// Whether frames travel in shared-memory rings (the switch accepted them).
    public let usesRings: Bool
    /// Frames the switch sent as messages before it answered the ring offer.
    private let early = Mutex<[[UInt8]]>([])
    private static let header = [UInt8](repeating: 0, count: VirtioNetHeader.length)
    /// The largest message the switch sends: a header, then 64 KiB plus an Ethernet header and a tag.
    static let maxFrame = VirtioNetHeader.length + 65_536 + 18
    /// Whether messages carry the virtio-net header (the port was created with `offload=on`).
    public let offloadMode: Bool

    /// Connects to the port's socket; with `rings`, offers shared-memory rings of `ringCapacity`
    /// bytes each way and waits up to `handshakeTimeoutMilliseconds` for the switch's answer (a
    /// switch that refuses them leaves the port on messages; one that does not answer is an error).
    public init(socketPath: String, offload: Bool = false, rings: Bool = true,
                ringCapacity: UInt32 = FrameRingRegion.defaultCapacity, handshakeTimeoutMilliseconds: Int32 = 10_000) throws(SystemError) {
        self.socketPath = socketPath
        offloadMode = offload
        let socket = try FrameChannel.connectSeqPacketNonBlocking(path: socketPath)
        parking = try EventFD(nonBlocking: true)
        var earlyFrames: [[UInt8]] = []
        if rings {
            let region = try FrameRingRegion(capacity: ringCapacity)
            try FrameChannel.sendMessage(socket.rawValue, RingHandshake.offer(capacity: ringCapacity), descriptors: [region.descriptor.rawValue])
            let status = try Self.awaitReply(socket.rawValue, timeoutMilliseconds: handshakeTimeoutMilliseconds, early: &earlyFrames)
            usesRings = status == .accepted
            transmitRing = Mutex(usesRings ? region.ring(0, producer: true) : nil)
            receiveRing = Mutex(usesRings ? region.ring(1, producer: false) : nil)
        } else {
            usesRings = false
            transmitRing = Mutex(nil)
            receiveRing = Mutex(nil)
        }
        self.socket = socket
        early.withLock { $0 = earlyFrames }
    }

    /// Reads the switch's answer to the ring offer, keeping the frames that came before it.
    private static func awaitReply(_ fd: Int32, timeoutMilliseconds: Int32, early: inout [[UInt8]]) throws(SystemError) -> RingHandshake.Status {
        let deadline = monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while true {
            if let (message, _) = try FrameChannel.receiveMessage(fd, capacity: maxFrame) {
                guard !message.isEmpty else { throw SystemError("the switch closed the port while it was offered rings", errno: ECONNRESET) }
                if let status = RingHandshake.decodeReply(message) { return status }
                if early.count < 256 { early.append(message) }
                continue
            }
            let now = monotonicNanoseconds()
            guard now < deadline, FrameChannel.waitReadable(fd, timeoutMilliseconds: Int32((deadline - now) / 1_000_000) + 1) else {
                throw SystemError("the switch did not answer the ring offer within \(timeoutMilliseconds) ms", errno: ETIMEDOUT)
            }
        }
    }


    /// False once the switch has closed the connection.
    public var isConnected: Bool { connectedState.load(ordering: .acquiring) }

    /// In ring mode a full ring makes the packet wait (``NetSendResult/busy``): the switch kicks
    /// once it has taken records (the ring's "waiting for room" flag).
    public func send(_ packet: [UInt8]) -> NetSendResult {
        guard packet.count > Self.header.count else { return .dropped }
        return IOVectors.withBytes(Array(packet[Self.header.count...])) { frame in
            send(header: Array(packet[..<Self.header.count]), frame: frame)
        }
    }

    /// In ring mode the frame goes from guest memory into the ring with one copy.
    public func send(header: [UInt8], frame: borrowing IOVectors) -> NetSendResult {
        guard frame.count > 0, isConnected else { return .dropped }
        let first = offloadMode ? header[...] : []
        guard usesRings else {
            return FrameChannel.sendMessage(socket.rawValue, (first + frame.bytes)[...]) ? .sent : .dropped
        }
        let length = first.count + frame.count
        let (result, kick) = transmitRing.withLock { ring -> (FrameRing.PushResult, Bool) in
            guard var result = ring?.push(first, vectors: frame) else { return (.broken, false) }
            if result == .full, ring?.waitForRoom(length: length) == true {
                result = ring?.push(first, vectors: frame) ?? .broken
            }
            return (result, result == .pushed && ring?.kickNeeded() == true)
        }
        if kick { _ = FrameChannel.sendMessage(socket.rawValue, RingHandshake.kick) }
        switch result {
        case .pushed: return .sent
        case .full: return .busy
        case .broken:
            disconnect()
            return .dropped
        }
    }

    public var offloads: NetOffloads { offloadMode ? .all : [] }

    /// Tells the switch what the guest now accepts (an ``OffloadAnnouncement``): from then on it
    /// resolves in software whatever needs more.
    public func enableReceiveOffloads(_ offloads: NetOffloads) -> Bool {
        guard offloadMode else { return offloads.isEmpty }
        guard isConnected else { return true }
        return FrameChannel.sendMessage(socket.rawValue, OffloadAnnouncement.message(offloads))
    }

    public func receive() -> [UInt8]? {
        while isConnected {
            if let frame = early.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) {
                if let packet = packet(from: frame[...]) { return packet }
                continue
            }
            if usesRings {
                switch readRing() {
                case .packet(let packet): return packet
                case .invalid: continue
                case .broken:
                    disconnect()
                    return nil
                case .empty: break
                }
            }
            // The ring is empty (or there is none): the socket's messages (kicks, frames sent before
            // the switch answered the offer, the end of the stream).
            while let message = receiveMessage() {
                if !RingHandshake.isKick(message[...]) { return message }
            }
            // Say we are waiting, then look once more: records that came meanwhile are taken now,
            // later ones come with a kick.
            guard usesRings, isConnected, receiveRing.withLock({ $0?.arm() == true }) else { return nil }
        }
        return nil
    }

    /// Ring mode: records go from the switch's ring straight into the guest's buffers.
    public var receivesInPlace: Bool { usesRings }

    /// The next record copied from the ring into `buffers`, the guest's receive buffers: the one
    /// copy between the switch and the guest, as a tap's `readv` is on a bridge. Frames that came
    /// as messages (before the ring was accepted) and the arming of the ring when it runs dry go
    /// through ``receive()``.
    public func receive(into buffers: borrowing IOVectors) -> Int? {
        // In offload mode a record is header + frame, as the device wants it; without, a zeroed header goes first.
        let offset = offloadMode ? 0 : Self.header.count
        while isConnected {
            if usesRings, early.withLock({ $0.isEmpty }) {
                let result = receiveRing.withLock { ring in ring?.pop(into: buffers, at: offset) ?? .broken }
                switch result {
                case .record(let length):
                    guard length > Self.header.count - offset else { continue }  // too short to be a packet
                    if offset > 0 { buffers.store(Self.header, at: 0) }
                    return offset + length
                case .tooLong: continue
                case .broken:
                    disconnect()
                    return nil
                case .empty: break
                }
            }
            guard let packet = receive() else { return nil }
            guard packet.count <= buffers.count else { continue }
            buffers.store(packet, at: 0)
            return packet.count
        }
        return nil
    }

    private enum RingRead {
        case packet([UInt8])
        /// A record too short to be a frame: skipped.
        case invalid
        case empty
        case broken
    }

    private func readRing() -> RingRead {
        if offloadMode {
            // Header and frame as the switch sent them: the record is the packet, copied once.
            return receiveRing.withLock { ring in
                switch ring?.popRecord() {
                case .record(let record): record.count > Self.header.count ? .packet(record) : .invalid
                case .empty: .empty
                case .broken, nil: .broken
                }
            }
        }
        return scratch.withLock { buffer in
            receiveRing.withLock { ring in
                switch ring?.pop(into: &buffer) {
                case .record(let length): packet(from: buffer[0..<length]).map { .packet($0) } ?? .invalid
                case .empty: .empty
                case .broken, nil: .broken
                }
            }
        }
    }

    /// A frame (header included in offload mode) as the device's packet: header + frame.
    private func packet(from frame: ArraySlice<UInt8>) -> [UInt8]? {
        // In offload mode: header and frame as the switch sent them; the device checks the header.
        offloadMode ? (frame.count > Self.header.count ? Array(frame) : nil) : Self.header + frame
    }

    /// One message from the socket as a packet; nil when none is waiting or the switch closed it.
    private func receiveMessage() -> [UInt8]? {
        let result: Result<[UInt8]?, any Error> = scratch.withLock { buffer in
            do {
                guard let length = try FrameChannel.read(socket.rawValue, into: &buffer) else { return .success(nil) }
                guard length > 0 else { return .success([]) }
                if length == RingHandshake.kick.count { return .success(RingHandshake.kick) }
                return .success(packet(from: buffer[0..<length]) ?? RingHandshake.kick)
            } catch {
                return .failure(error)
            }
        }
        switch result {
        case .success(let packet?) where !packet.isEmpty: return packet
        case .success(nil): return nil
        case .success, .failure:
            // End of stream (an empty message never comes from the switch) or a socket error.
            disconnect()
            return nil
        }
    }

    public var pollDescriptor: Int32? { socket.rawValue }

    public var isLinkUp: Bool { isConnected }

    private func disconnect() {
        guard connectedState.exchange(false, ordering: .acquiringAndReleasing) else { return }
        try? FrameChannel.park(socket.rawValue, on: parking.rawValue)
    }
}
