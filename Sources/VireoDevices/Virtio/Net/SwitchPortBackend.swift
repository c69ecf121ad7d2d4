import Synchronization
import VireoSystem

/// A `vm:` port of a Vireo switch (`vireo-switchd`) as the backend (`--net switch=NAME`): a
/// SOCK_SEQPACKET unix socket carrying one Ethernet frame per message, without the virtio-net
/// header (docs/network.md). The device's 12-byte `virtio_net_hdr_v1` (virtio 1.2 §5.1.6) is
/// dropped on send; received frames get a zeroed one (no checksum to complete, `GSO_NONE`), which
/// is all a driver that negotiated no offloads may be handed.
///
/// When the switch closes the connection (the port was deleted, the switch stopped, another
/// process took the port over) the socket is parked on a descriptor that never becomes readable,
/// so the I/O thread stops being woken; from then on every send is a drop, and the device reports
/// the link down (``isLinkUp``).
public final class SwitchPortBackend: NetBackend {
    /// The port's socket path, `DIR/SWITCH-PORT.sock`.
    public let socketPath: String
    private let socket: FileDescriptor
    private let parking: EventFD
    private let connectedState = Atomic<Bool>(true)
    /// One frame-sized buffer reused by every ``receive()`` (zeroing a fresh 64 KiB array per frame
    /// would cost more than a small frame).
    private let scratch = Mutex([UInt8](repeating: 0, count: SwitchPortBackend.maxFrame))
    private static let header = [UInt8](repeating: 0, count: 12)
    /// The largest frame the switch forwards (64 KiB plus an 802.1Q tag).
    static let maxFrame = 65_540

    public init(socketPath: String) throws(SystemError) {
        self.socketPath = socketPath
        socket = try FrameChannel.connectSeqPacketNonBlocking(path: socketPath)
        parking = try EventFD(nonBlocking: true)
    }

    /// False once the switch has closed the connection.
    public var isConnected: Bool { connectedState.load(ordering: .acquiring) }

    public func send(_ packet: [UInt8]) -> Bool {
        guard packet.count > Self.header.count, isConnected else { return false }
        return FrameChannel.sendMessage(socket.rawValue, Array(packet[Self.header.count...]))
    }

    public func receive() -> [UInt8]? {
        guard isConnected else { return nil }
        let result: Result<[UInt8]?, any Error> = scratch.withLock { buffer in
            do {
                guard let length = try FrameChannel.read(socket.rawValue, into: &buffer) else { return .success(nil) }
                return .success(length > 0 ? Self.header + buffer[0..<length] : [])
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
