import VireoSystem

/// Where a virtio-net device's frames go (virtio 1.2 §5.1). Every packet crossing this boundary
/// is a 12-byte `virtio_net_hdr_v1` followed by one Ethernet frame, so a tap with IFF_VNET_HDR
/// passes them through untouched. A virtual switch port is another implementation.
public protocol NetBackend: AnyObject, Sendable {
    /// Sends one packet (header + frame); false when the backend dropped it.
    @discardableResult func send(_ packet: [UInt8]) -> Bool
    /// The next received packet (header + frame), or nil when none is waiting. Never blocks.
    func receive() -> [UInt8]?
    /// A descriptor that becomes readable when ``receive()`` has something; nil for backends
    /// that deliver by calling the device themselves.
    var pollDescriptor: Int32? { get }
    /// False once the backend has lost its peer for good (a switch port whose connection the
    /// switch closed): the device then reports the link down to the guest.
    var isLinkUp: Bool { get }
}

extension NetBackend {
    public var isLinkUp: Bool { true }
}

/// A host tap interface as the backend (`--net tap=NAME`).
public final class TapBackend: NetBackend {
    public let tap: TapDevice

    public init(name: String) throws(SystemError) {
        tap = try TapDevice(name: name)
    }

    public func send(_ packet: [UInt8]) -> Bool { tap.write(packet) }
    public func receive() -> [UInt8]? { tap.read() }
    public var pollDescriptor: Int32? { tap.rawValue }
}
