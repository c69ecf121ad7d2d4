import Synchronization
import VireoSwitch
import VireoSystem

/// What became of a packet handed to ``NetBackend/send(_:)``.
public enum NetSendResult: Sendable, Equatable {
    case sent
    /// Lost: the peer is gone or refused it. The device counts a transmit drop.
    case dropped
    /// No room now (a switch port whose ring is full): the device leaves the packet in the guest's
    /// transmit queue and stops there, and sends again once the backend's ``NetBackend/pollDescriptor``
    /// becomes readable, so a guest that sends faster than the switch forwards is slowed, as a tap
    /// slows it, instead of losing frames.
    case busy
}

/// Where a virtio-net device's frames go (virtio 1.2 §5.1). Every packet crossing this boundary
/// is a 12-byte `virtio_net_hdr_v1` followed by one Ethernet frame, so a tap with IFF_VNET_HDR
/// passes them through untouched. A virtual switch port is another implementation.
///
/// Offloads: the device offers the guest only the offload features the backend lists in
/// ``offloads`` (default none: the guest then sends complete checksums and no GSO, and the device
/// refuses packets from the backend that need either). The guest's header fields are validated by
/// the device before ``send(_:)``.
public protocol NetBackend: AnyObject, Sendable {
    /// Sends one packet (header + frame).
    @discardableResult func send(_ packet: [UInt8]) -> NetSendResult
    /// Sends one packet: `header`, the device's own checked copy of the guest's, then the frame,
    /// still in guest memory (`frame`), so a backend can move it with one copy as QEMU does (a
    /// tap's `writev`, a ring record). The guest may change those bytes meanwhile, as under real
    /// DMA; nothing reads them to decide anything. Default: gathers them and calls ``send(_:)``.
    @discardableResult func send(header: [UInt8], frame: borrowing IOVectors) -> NetSendResult
    /// The next received packet (header + frame), or nil when none is waiting. Never blocks.
    func receive() -> [UInt8]?
    /// Reads the next packet (header + frame) straight into `buffers`, the guest's receive
    /// buffers, and returns its length; nil when none is waiting. Only called when
    /// ``receivesInPlace`` is true, with room for ``VirtioNet/maxPacket`` bytes.
    func receive(into buffers: borrowing IOVectors) -> Int?
    /// Whether ``receive(into:)`` works: the device then skips the copy through an array
    /// whenever the guest has posted enough buffers. Default: false.
    var receivesInPlace: Bool { get }
    /// A descriptor that becomes readable when ``receive()`` has something, or when a backend
    /// that answered ``NetSendResult/busy`` has room again; nil for backends that deliver by
    /// calling the device themselves.
    var pollDescriptor: Int32? { get }
    /// Offloads the backend carries both ways: it accepts such packets in ``send(_:)`` and can
    /// produce them in ``receive()`` once enabled. Default: none.
    var offloads: NetOffloads { get }
    /// The subset of ``offloads`` the guest accepts on receive (its negotiated GUEST_* features);
    /// set at activation and back to none at reset. ``receive()`` must not produce packets
    /// needing others. False when the backend could not apply it. Default: does nothing.
    @discardableResult func enableReceiveOffloads(_ offloads: NetOffloads) -> Bool
    /// False once the backend has lost its peer for good (a switch port whose connection the
    /// switch closed): the device then reports the link down to the guest.
    var isLinkUp: Bool { get }
}

extension NetBackend {
    public var isLinkUp: Bool { true }
}

extension NetBackend {
    public func send(header: [UInt8], frame: borrowing IOVectors) -> NetSendResult { send(header + frame.bytes) }
    public func receive(into buffers: borrowing IOVectors) -> Int? { nil }
    public var receivesInPlace: Bool { false }
    public var offloads: NetOffloads { [] }
    public func enableReceiveOffloads(_ offloads: NetOffloads) -> Bool { true }
}

/// How virtio-net stops and restarts taking packets from a polled backend (``NetBackend/pollDescriptor``):
/// the VMM's I/O thread mutes the descriptor while the guest has no room, so packets wait in the
/// backend (the tap's queue, the switch port) instead of being dropped in the VMM.
public protocol ReceivePolling: Sendable {
    /// Stop calling ``VirtioNet/backendReadable()`` on readability.
    func pause()
    /// Poll again, and call ``VirtioNet/backendReadable()`` once soon on the polling thread
    /// (what is already waiting may announce itself no more).
    func resume()
}

/// A host tap interface as the backend (`--net tap=NAME`). The kernel's tap handles every
/// offload (`TUNSETOFFLOAD` decides which ones it may hand us).
public final class TapBackend: NetBackend {
    public let tap: TapDevice

    public init(name: String) throws(SystemError) {
        tap = try TapDevice(name: name)
    }

    public func send(_ packet: [UInt8]) -> NetSendResult { tap.write(packet) ? .sent : .dropped }
    public func send(header: [UInt8], frame: borrowing IOVectors) -> NetSendResult {
        tap.write(header: header, frame: frame) ? .sent : .dropped
    }
    /// Read straight into the packet's own array: one copy, the kernel's.
    public func receive() -> [UInt8]? { tap.read(maxLength: VirtioNet.maxPacket) }
    /// `readv` into the guest's buffers: the kernel's copy is the only one.
    public func receive(into buffers: borrowing IOVectors) -> Int? { tap.read(into: buffers) }
    public var receivesInPlace: Bool { true }
    public var pollDescriptor: Int32? { tap.rawValue }
    public var offloads: NetOffloads { .all }

    public func enableReceiveOffloads(_ offloads: NetOffloads) -> Bool {
        var flags: TapDevice.Offloads = []
        // TUN_F_TSO* are only honoured together with TUN_F_CSUM (drivers/net/tun.c set_offload).
        if offloads.contains(.checksum) {
            flags.insert(.checksum)
            if offloads.contains(.tso4) { flags.insert(.tso4) }
            if offloads.contains(.tso6) { flags.insert(.tso6) }
            if offloads.contains(.tsoECN), !offloads.isDisjoint(with: [.tso4, .tso6]) { flags.insert(.tsoECN) }
        }
        do { try tap.setOffloads(flags) } catch { return false }
        return true
    }
}
