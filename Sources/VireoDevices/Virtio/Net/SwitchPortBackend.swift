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
public final class SwitchPortBackend: NetBackend {
    /// The port's socket path, `DIR/SWITCH-PORT.sock`.
    public let socketPath: String
    private let socket: FileDescriptor
    private let parking: EventFD
    private let connectedState = Atomic<Bool>(true)
    /// One frame-sized buffer reused by every ``receive()`` (zeroing a fresh 64 KiB array per frame
    /// would cost more than a small frame).
    private let scratch = Mutex([UInt8](repeating: 0, count: SwitchPortBackend.maxFrame))
    private static let header = [UInt8](repeating: 0, count: VirtioNetHeader.length)
    /// The largest message the switch sends: a header, then 64 KiB plus an Ethernet header and a tag.
    static let maxFrame = VirtioNetHeader.length + 65_536 + 18
    /// Whether messages carry the virtio-net header (the port was created with `offload=on`).
    public let offloadMode: Bool

    public init(socketPath: String, offload: Bool = false) throws(SystemError) {
        self.socketPath = socketPath
        offloadMode = offload
        socket = try FrameChannel.connectSeqPacketNonBlocking(path: socketPath)
        parking = try EventFD(nonBlocking: true)
    }

    /// False once the switch has closed the connection.
    public var isConnected: Bool { connectedState.load(ordering: .acquiring) }

    public func send(_ packet: [UInt8]) -> Bool {
        guard packet.count > Self.header.count, isConnected else { return false }
        return FrameChannel.sendMessage(socket.rawValue, offloadMode ? packet[...] : packet[Self.header.count...])
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
        guard isConnected else { return nil }
        let result: Result<[UInt8]?, any Error> = scratch.withLock { buffer in
            do {
                guard let length = try FrameChannel.read(socket.rawValue, into: &buffer) else { return .success(nil) }
                guard length > 0 else { return .success([]) }
                if offloadMode {
                    // Header and frame as the switch sent them; the device checks the header.
                    return .success(length > Self.header.count ? Array(buffer[0..<length]) : nil)
                }
                return .success(Self.header + buffer[0..<length])
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
