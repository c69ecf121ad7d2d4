/// A port's identity inside one switch. Stable while the port exists; a removed port's ID may be reused.
public struct PortID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: Int
    public init(_ rawValue: Int) { self.rawValue = rawValue }
    public var description: String { "\(rawValue)" }
    public static func < (lhs: PortID, rhs: PortID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// How a port maps frames to VLANs.
public enum PortMode: Equatable, Sendable, CustomStringConvertible {
    /// Untagged in and out; every frame belongs to `vlan`. The tag is inserted/stripped at the trunk edge.
    case access(vlan: UInt16)
    /// Tagged frames of the `allowed` VLANs; untagged frames belong to `native` (dropped if nil) and
    /// frames of `native` leave untagged.
    case trunk(allowed: VLANSet, native: UInt16?)

    /// Does this port carry `vlan`?
    public func carries(_ vlan: UInt16) -> Bool {
        switch self {
        case .access(let access): access == vlan
        case .trunk(let allowed, let native): native == vlan || allowed.contains(vlan)
        }
    }

    /// The VID to send `vlan` with on this port: nil means untagged.
    public func egressTag(for vlan: UInt16) -> UInt16? {
        switch self {
        case .access: nil
        case .trunk(_, let native): native == vlan ? nil : vlan
        }
    }

    public var description: String {
        switch self {
        case .access(let vlan): "access vlan \(vlan)"
        case .trunk(let allowed, let native): "trunk \(allowed)" + (native.map { " native \($0)" } ?? "")
        }
    }
}

/// What backs a port in the data plane.
public enum PortKind: String, Sendable, CaseIterable {
    /// A tap device the switch opens (`/dev/net/tun`, IFF_TAP|IFF_NO_PI).
    case tap
    /// A host interface, through an AF_PACKET raw socket.
    case uplink
    /// A VM NIC: a SOCK_SEQPACKET unix socket, one frame per message (after a virtio-net header
    /// in offload mode).
    case vm
}

/// A port's configuration: the typed form of `tap:NAME,tag=10` / `uplink:eth0,trunk=10,20,native=1`.
public struct PortConfig: Equatable, Sendable {
    public var kind: PortKind
    public var name: String
    public var mode: PortMode
    /// Largest payload accepted (bytes after the Ethernet header and tag).
    public var mtu: Int
    /// Most MAC addresses this port may own in the learning table.
    public var macLimit: Int
    /// Most flooded frames (broadcast, multicast, unknown unicast) per second accepted from this
    /// port, with a one-second burst; nil for no limit (storm control).
    public var floodLimit: Int?
    /// Whether frames cross the port with a virtio-net header (virtio 1.2 §5.1.6), so checksum and
    /// TCP segmentation offloads pass through: `offload=on|off`. Taps and uplinks default to on (the
    /// kernel accepts super-frames and hands them over: `IFF_VNET_HDR`, `PACKET_VNET_HDR`), VM ports
    /// to off (plain frames, for peers that predate it). Off, frames leave the port finished
    /// (checksummed, cut to segments) by the switch; an uplink still reads the host's partial
    /// frames with their header either way.
    public var offload: Bool
    /// The TPID of the tags this port's VLANs travel in (`tpid=8100|88a8`): 0x8100, 802.1Q C-tags
    /// (the default), or 0x88A8, 802.1ad S-tags: a provider port, where the outer S-tag names the
    /// VLAN and any C-tag inside it is the customer's, carried as payload (QinQ).
    public var tagType: UInt16
    /// A customer port of a provider bridge (`tunnel=on`, with `tag=`; 802.1ad §15.4's
    /// C-tagged service interface, "dot1q-tunnel" elsewhere): every frame belongs to the port's VLAN
    /// whatever tags it carries, which are kept as payload, so a customer's own VLANs cross an S-tag
    /// port inside the service VLAN and come out as they went in.
    public var tunnel: Bool

    /// Whether `kind` ports carry offloads unless told otherwise.
    public static func offloadsByDefault(_ kind: PortKind) -> Bool { kind != .vm }

    public static let defaultMTU = 1500
    public static let defaultMACLimit = 256

    public init(
        kind: PortKind, name: String, mode: PortMode = .access(vlan: 1), mtu: Int = defaultMTU, macLimit: Int = defaultMACLimit,
        floodLimit: Int? = nil, offload: Bool? = nil, tagType: UInt16 = VLAN.customerTPID, tunnel: Bool = false
    ) {
        self.offload = offload ?? Self.offloadsByDefault(kind)
        self.tagType = tagType
        self.tunnel = tunnel
        self.kind = kind
        self.name = name
        self.mode = mode
        self.mtu = mtu
        self.macLimit = macLimit
        self.floodLimit = floodLimit
    }
}

/// A rejected port specification, with the reason in words.
public struct PortSpecError: Error, Equatable, Sendable, CustomStringConvertible {
    public let spec: String
    public let reason: String
    public var description: String { "invalid port '\(spec)': \(reason)" }
}

extension PortConfig {
    /// Parses `KIND:NAME[,tag=N[,tunnel=on] | ,trunk=A,B-C[,native=N]][,tpid=8100|88a8][,mtu=N][,mac-limit=N][,flood-limit=N][,offload=on|off]`.
    ///
    /// In `trunk=10,20,30`, items without `=` continue the list of the key before them.
    /// Without `tag` or `trunk` a port is an access port of VLAN 1.
    public static func parse(_ spec: String) throws(PortSpecError) -> PortConfig {
        func fail(_ reason: String) -> PortSpecError { PortSpecError(spec: spec, reason: reason) }
        guard let colon = spec.firstIndex(of: ":") else { throw fail("expected KIND:NAME (kinds: tap, uplink, vm)") }
        guard let kind = PortKind(rawValue: String(spec[..<colon])) else { throw fail("unknown port kind '\(spec[..<colon])' (kinds: tap, uplink, vm)") }
        let items = spec[spec.index(after: colon)...].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        guard let name = items.first, !name.isEmpty else { throw fail("missing name") }
        guard name.utf8.count <= 15, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }), name.allSatisfy(\.isASCII) else {
            throw fail("name must be 1-15 ASCII letters, digits, '-', '_' or '.'")
        }
        var options: [(key: String, values: [String])] = []
        for item in items.dropFirst() {
            if let equals = item.firstIndex(of: "=") {
                options.append((String(item[..<equals]), [String(item[item.index(after: equals)...])]))
            } else if !options.isEmpty {
                options[options.count - 1].values.append(item)
            } else {
                throw fail("unexpected '\(item)'")
            }
        }
        func vid(_ text: String) throws(PortSpecError) -> UInt16 {
            guard let value = UInt16(text), VLAN.isValid(value) else { throw fail("VLAN '\(text)' is not in 1-4094") }
            return value
        }
        func number(_ values: [String], _ key: String, in range: ClosedRange<Int>) throws(PortSpecError) -> Int {
            guard values.count == 1, let value = Int(values[0]), range.contains(value) else { throw fail("\(key) must be in \(range.lowerBound)-\(range.upperBound)") }
            return value
        }
        var tag: UInt16?
        var allowed: VLANSet?
        var native: UInt16?
        var config = PortConfig(kind: kind, name: name)
        for (key, values) in options {
            switch key {
            case "tag":
                guard values.count == 1 else { throw fail("tag takes one VLAN") }
                tag = try vid(values[0])
            case "trunk":
                var set = VLANSet()
                for value in values {
                    let bounds = value.split(separator: "-", omittingEmptySubsequences: false).map(String.init)
                    if bounds.count == 2 {
                        let low = try vid(bounds[0]), high = try vid(bounds[1])
                        guard low <= high else { throw fail("empty VLAN range '\(value)'") }
                        for id in low...high { set.insert(id) }
                    } else {
                        set.insert(try vid(value))
                    }
                }
                allowed = set
            case "native":
                guard values.count == 1 else { throw fail("native takes one VLAN") }
                native = try vid(values[0])
            case "mtu":
                config.mtu = try number(values, key, in: 68...65535)
            case "mac-limit":
                config.macLimit = try number(values, key, in: 0...65536)
            case "flood-limit":
                config.floodLimit = try number(values, key, in: 1...100_000_000)
            case "offload":
                guard values.count == 1, values[0] == "on" || values[0] == "off" else { throw fail("offload is on or off") }
                config.offload = values[0] == "on"
            case "tunnel":
                guard values.count == 1, values[0] == "on" || values[0] == "off" else { throw fail("tunnel is on or off") }
                config.tunnel = values[0] == "on"
            case "tpid":
                switch values.count == 1 ? values[0].lowercased() : "" {
                case "8100", "0x8100": config.tagType = VLAN.customerTPID
                case "88a8", "0x88a8": config.tagType = VLAN.serviceTPID
                default: throw fail("tpid is 8100 (802.1Q C-tags) or 88a8 (802.1ad S-tags)")
                }
            default:
                throw fail("unknown option '\(key)' (options: tag, trunk, native, tpid, tunnel, mtu, mac-limit, flood-limit, offload)")
            }
        }
        if config.tunnel, tag == nil { throw fail("tunnel=on needs tag= (the service VLAN its frames join)") }
        switch (tag, allowed, native) {
        case (let tag?, nil, nil): config.mode = .access(vlan: tag)
        case (nil, let allowed?, let native): config.mode = .trunk(allowed: allowed, native: native)
        case (nil, nil, nil): config.mode = .access(vlan: 1)
        case (nil, nil, .some): throw fail("native needs trunk=")
        default: throw fail("tag and trunk exclude each other")
        }
        return config
    }

    /// The canonical spec string (parses back to the same config).
    public var spec: String {
        var text = "\(kind.rawValue):\(name)"
        switch mode {
        case .access(let vlan): text += ",tag=\(vlan)"
        case .trunk(let allowed, let native):
            text += ",trunk=\(allowed)"
            if let native { text += ",native=\(native)" }
        }
        if mtu != PortConfig.defaultMTU { text += ",mtu=\(mtu)" }
        if macLimit != PortConfig.defaultMACLimit { text += ",mac-limit=\(macLimit)" }
        if let floodLimit { text += ",flood-limit=\(floodLimit)" }
        if tunnel { text += ",tunnel=on" }
        if tagType != VLAN.customerTPID { text += ",tpid=\(String(tagType, radix: 16))" }
        if offload != Self.offloadsByDefault(kind) { text += ",offload=\(offload ? "on" : "off")" }
        return text
    }
}

/// Per-port traffic counters.
public struct PortCounters: Equatable, Sendable {
    public var rxPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var txBytes: UInt64 = 0
    /// Of `rxPackets`, those the kernel forwarded on the switch's behalf (``KernelFastPath``).
    public var kernelPackets: UInt64 = 0
    /// Frames whose source address was not learned because the port reached its MAC limit.
    public var unlearnedSources: UInt64 = 0
    /// Drops by ``DropReason`` raw value.
    public private(set) var drops: [UInt64] = Array(repeating: 0, count: DropReason.allCases.count)

    public init() {}

    public subscript(drop reason: DropReason) -> UInt64 { drops[reason.rawValue] }
    public var totalDrops: UInt64 { drops.reduce(0, +) }

    public mutating func countDrop(_ reason: DropReason) { drops[reason.rawValue] &+= 1 }
}
