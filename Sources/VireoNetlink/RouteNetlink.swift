import VireoSystem

/// A network interface as rtnetlink reports it (`RTM_NEWLINK`, `ip -d link show`).
public struct Link: Sendable, Equatable {
    /// RFC 2863 operational state (IFLA_OPERSTATE, `IF_OPER_*`).
    public enum OperationalState: UInt8, Sendable {
        case unknown = 0, notPresent, down, lowerLayerDown, testing, dormant, up
    }

    public var index: Int32
    public var name: String
    /// IFLA_INFO_KIND: `bridge`, `veth`, `tun`, …; nil for devices without link info (physical NICs, loopback).
    public var kind: String?
    /// The bridge (or bond) this interface is a port of.
    public var masterIndex: Int32?
    /// Administratively up (IFF_UP).
    public var isUp: Bool
    /// Carrier present (IFF_LOWER_UP).
    public var hasCarrier: Bool
    public var operationalState: OperationalState
    public var mtu: Int
    /// The hardware address, `aa:bb:cc:dd:ee:ff`.
    public var address: String?
    /// Bridges only: whether VLAN filtering is on (IFLA_BR_VLAN_FILTERING; absent on kernels without it).
    public var vlanFiltering: Bool?

    public var isBridge: Bool { kind == "bridge" }
}

/// Why a netlink operation failed.
public enum NetlinkError: Error, Equatable, Sendable, CustomStringConvertible {
    case system(SystemError)
    /// The kernel refused the request: the operation, errno, and the kernel's extended-ack message.
    case kernel(operation: String, errno: Int32, message: String?)
    case noSuchLink(String)
    /// The kernel's bridge has no VLAN filtering (built without CONFIG_BRIDGE_VLAN_FILTERING).
    case vlanFilteringUnsupported(bridge: String)
    case invalidName(String)
    case malformedReply(String)

    public var description: String {
        switch self {
        case .system(let error): error.description
        case .kernel(let operation, let errno, let message):
            "\(operation): \(message ?? SystemError.message(for: errno)) (errno \(errno))"
        case .noSuchLink(let name): "no network interface named '\(name)'"
        case .vlanFilteringUnsupported(let bridge):
            "bridge \(bridge): this kernel's bridges have no VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING); use a Vireo switch (vireo-switchd) for VLANs"
        case .invalidName(let name): "invalid interface name '\(name)' (1-15 bytes, no '/', ':' or whitespace)"
        case .malformedReply(let detail): "malformed netlink reply: \(detail)"
        }
    }
}

/// A small rtnetlink client (`man 7 rtnetlink`) for Linux bridges: list links, create and delete
/// bridges and taps, bring links up and down, attach ports to bridges, bridge VLAN filtering.
/// Every change is acknowledged (NLM_F_ACK) before the call returns. One request at a time: a
/// client is not shared between threads (make one per task; they are cheap).
public final class RouteNetlink {
    private let socket: NetlinkSocket
    private var sequence: UInt32 = 1
    /// The network namespace this client works in (nil: the process's).
    public let namespacePath: String?

    static let errnoNoDevice: Int32 = 19  // ENODEV
    static let errnoNotSupported: Int32 = 95  // EOPNOTSUPP

    public init(namespacePath: String? = nil) throws(NetlinkError) {
        self.namespacePath = namespacePath
        do { socket = try NetlinkSocket(namespacePath: namespacePath) } catch { throw .system(error) }
    }

    // MARK: Queries

    /// Every link (`RTM_GETLINK` dump).
    public func links() throws(NetlinkError) -> [Link] {
        var message = start(Wire.getLink, flags: Wire.dump)
        message.appendInterfaceInfo()
        var links: [Link] = []
        try exchange(message, operation: "list links", dump: true) { reply throws(NetlinkError) in
            if let link = try Self.decodeLink(reply) { links.append(link) }
        }
        return links
    }

    /// The link called `name`, or nil.
    public func link(named name: String) throws(NetlinkError) -> Link? {
        try validate(name)
        var message = start(Wire.getLink, flags: 0)
        message.appendInterfaceInfo()
        message.attribute(Wire.interfaceName, string: name)
        var found: Link?
        do {
            try exchange(message, operation: "get link \(name)", dump: false) { reply throws(NetlinkError) in
                found = try Self.decodeLink(reply)
            }
        } catch .kernel(_, Self.errnoNoDevice, _) {
            return nil
        }
        return found
    }

    // MARK: Changes

    /// Creates a bridge (`ip link add NAME type bridge [vlan_filtering 1]`), down.
    public func createBridge(named name: String, vlanFiltering: Bool = false) throws(NetlinkError) {
        try validate(name)
        var message = start(Wire.newLink, flags: Wire.create | Wire.exclusive)
        message.appendInterfaceInfo()
        message.attribute(Wire.interfaceName, string: name)
        message.nested(Wire.linkInfo) { info in
            info.attribute(Wire.infoKind, string: "bridge")
            if vlanFiltering { info.nested(Wire.infoData) { $0.attribute(Wire.bridgeVLANFiltering, u8: 1) } }
        }
        do {
            try exchange(message, operation: "create bridge \(name)")
        } catch .kernel(_, Self.errnoNotSupported, _) where vlanFiltering {
            throw .vlanFilteringUnsupported(bridge: name)
        }
    }

    /// Turns VLAN filtering on a bridge on or off (`ip link set NAME type bridge vlan_filtering N`).
    public func setVLANFiltering(bridge name: String, enabled: Bool) throws(NetlinkError) {
        let index = try index(of: name)
        var message = start(Wire.newLink, flags: 0)
        message.appendInterfaceInfo(index: index)
        message.nested(Wire.linkInfo) { info in
            info.attribute(Wire.infoKind, string: "bridge")
            info.nested(Wire.infoData) { $0.attribute(Wire.bridgeVLANFiltering, u8: enabled ? 1 : 0) }
        }
        do {
            try exchange(message, operation: "set vlan_filtering on \(name)")
        } catch .kernel(_, Self.errnoNotSupported, _) {
            throw .vlanFilteringUnsupported(bridge: name)
        }
    }

    /// Lets VLAN `vid` through bridge port `port` (`bridge vlan add dev PORT vid N [pvid] [untagged]`).
    public func addBridgeVLAN(port: String, vid: UInt16, pvid: Bool = false, untagged: Bool = false) throws(NetlinkError) {
        guard (1...4094).contains(vid) else { throw .kernel(operation: "bridge vlan add vid \(vid)", errno: 22, message: "VLAN IDs are 1-4094") }
        let index = try index(of: port)
        var message = start(Wire.setLink, flags: 0)
        message.appendInterfaceInfo(family: Wire.familyBridge, index: index)
        message.nested(Wire.addressFamilySpecific) { spec in
            // struct bridge_vlan_info { __u16 flags; __u16 vid; }: BRIDGE_VLAN_INFO_PVID 0x2, _UNTAGGED 0x4.
            let flags: UInt16 = (pvid ? 0x2 : 0) | (untagged ? 0x4 : 0)
            spec.attribute(Wire.bridgeVLANInfo, [UInt8(flags & 0xFF), UInt8(flags >> 8), UInt8(vid & 0xFF), UInt8(vid >> 8)])
        }
        do {
            try exchange(message, operation: "bridge vlan add dev \(port) vid \(vid)")
        } catch .kernel(_, Self.errnoNotSupported, _) {
            throw .vlanFilteringUnsupported(bridge: try masterName(of: port) ?? port)
        }
    }

    /// Creates a persistent tap (`ip tuntap add NAME mode tap`) in this client's namespace.
    public func createTap(named name: String) throws(NetlinkError) {
        try validate(name)
        do { try PersistentTap.create(name: name, namespacePath: namespacePath) } catch { throw .system(error) }
    }

    /// Deletes a link (`ip link del NAME`): bridges, taps, veths.
    public func deleteLink(named name: String) throws(NetlinkError) {
        let index = try index(of: name)
        var message = start(Wire.deleteLink, flags: 0)
        message.appendInterfaceInfo(index: index)
        try exchange(message, operation: "delete link \(name)")
    }

    /// Brings a link up or down (`ip link set NAME up|down`).
    public func setUp(_ name: String, _ up: Bool) throws(NetlinkError) {
        let index = try index(of: name)
        var message = start(Wire.newLink, flags: 0)
        message.appendInterfaceInfo(index: index, flags: up ? Wire.flagUp : 0, change: Wire.flagUp)
        try exchange(message, operation: "set \(name) \(up ? "up" : "down")")
    }

    /// Makes `name` a port of `bridge` (`ip link set NAME master BRIDGE`), or of nothing (`nomaster`) when nil.
    public func setMaster(_ name: String, bridge: String?) throws(NetlinkError) {
        let index = try index(of: name)
        let master = try bridge.map { name throws(NetlinkError) in try self.index(of: name) } ?? 0
        var message = start(Wire.newLink, flags: 0)
        message.appendInterfaceInfo(index: index)
        message.attribute(Wire.master, u32: UInt32(bitPattern: master))
        try exchange(message, operation: bridge.map { "set \(name) master \($0)" } ?? "set \(name) nomaster")
    }

    // MARK: Plumbing

    private func validate(_ name: String) throws(NetlinkError) {
        guard !name.isEmpty, name.utf8.count < 16, name != ".", name != "..",
              !name.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace })
        else { throw .invalidName(name) }
    }

    private func index(of name: String) throws(NetlinkError) -> Int32 {
        guard let link = try link(named: name) else { throw .noSuchLink(name) }
        return link.index
    }

    private func masterName(of name: String) throws(NetlinkError) -> String? {
        guard let master = try link(named: name)?.masterIndex else { return nil }
        return try links().first { $0.index == master }?.name
    }

    private func start(_ type: UInt16, flags: UInt16) -> MessageBuilder {
        sequence &+= 1
        return MessageBuilder(type: type, flags: Wire.request | Wire.ack | flags, sequence: sequence)
    }

    /// Sends `message` and reads replies with its sequence number until the acknowledgement (or,
    /// for a dump, NLMSG_DONE); each data message goes to `handle`. A negative acknowledgement throws.
    private func exchange(
        _ message: MessageBuilder, operation: String, dump: Bool = false,
        handle: (ReceivedMessage) throws(NetlinkError) -> Void = { _ throws(NetlinkError) in }
    ) throws(NetlinkError) {
        let bytes = message.finish()
        let sequence = ByteReader(bytes: bytes[...]).integer(UInt32.self, at: 8) ?? 0
        do { try socket.send(bytes) } catch { throw .system(error) }
        while true {
            let datagram: [UInt8]
            do { datagram = try socket.receive() } catch { throw .system(error) }
            guard let messages = ReceivedMessage.split(datagram) else { throw .malformedReply("\(operation): bad message length") }
            for reply in messages where reply.sequence == sequence {
                switch reply.type {
                case Wire.messageDone:
                    if dump { return }
                case Wire.messageError:
                    let reader = ByteReader(bytes: reply.payload)
                    guard let error = reader.integer(Int32.self, at: 0) else { throw .malformedReply("\(operation): short error message") }
                    if error == 0 {
                        if !dump { return }
                        continue
                    }
                    throw .kernel(operation: operation, errno: -error, message: Self.extendedAckMessage(reply))
                default:
                    try handle(reply)
                }
            }
        }
    }

    /// NLMSGERR_ATTR_MSG from an extended acknowledgement (NETLINK_EXT_ACK), if the kernel sent one.
    static func extendedAckMessage(_ reply: ReceivedMessage) -> String? {
        guard reply.flags & Wire.ackTLVs != 0 else { return nil }
        let reader = ByteReader(bytes: reply.payload)
        // struct nlmsgerr: int error, then the request's header (and, unless capped, its payload).
        var offset = 4 + Wire.headerLength
        if reply.flags & Wire.capped == 0 {
            guard let length = reader.integer(UInt32.self, at: 4) else { return nil }
            offset = 4 + ((Int(length) + 3) & ~3)
        }
        guard offset <= reply.payload.count else { return nil }
        let tlvs = parseAttributes(reply.payload.dropFirst(offset))
        return tlvs[Wire.errorMessageAttribute].map(\.attributeString)
    }

    /// A link from an RTM_NEWLINK message (nil for other message types).
    static func decodeLink(_ reply: ReceivedMessage) throws(NetlinkError) -> Link? {
        guard reply.type == Wire.newLink else { return nil }
        let reader = ByteReader(bytes: reply.payload)
        guard let index = reader.integer(Int32.self, at: 4), let flags = reader.integer(UInt32.self, at: 8) else {
            throw .malformedReply("RTM_NEWLINK shorter than ifinfomsg")
        }
        let attributes = parseAttributes(reply.payload.dropFirst(Wire.ifinfoLength))
        guard let name = attributes[Wire.interfaceName]?.attributeString else { throw .malformedReply("link \(index) without IFLA_IFNAME") }
        var link = Link(
            index: index, name: name, kind: nil, masterIndex: nil, isUp: flags & Wire.flagUp != 0,
            hasCarrier: flags & Wire.flagLowerUp != 0, operationalState: .unknown, mtu: 0, address: nil, vlanFiltering: nil)
        if let value = attributes[Wire.mtu].flatMap({ ByteReader(bytes: $0).integer(UInt32.self, at: 0) }) { link.mtu = Int(value) }
        if let master = attributes[Wire.master].flatMap({ ByteReader(bytes: $0).integer(Int32.self, at: 0) }), master != 0 { link.masterIndex = master }
        if let state = attributes[Wire.operationalState]?.first { link.operationalState = Link.OperationalState(rawValue: state) ?? .unknown }
        if let address = attributes[Wire.address], !address.isEmpty {
            link.address = address.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
        }
        if let info = attributes[Wire.linkInfo] {
            let infoAttributes = parseAttributes(info)
            link.kind = infoAttributes[Wire.infoKind]?.attributeString
            if link.kind == "bridge", let data = infoAttributes[Wire.infoData] {
                link.vlanFiltering = parseAttributes(data)[Wire.bridgeVLANFiltering]?.first.map { $0 != 0 }
            }
        }
        return link
    }
}
