/// Netlink and rtnetlink wire constants (uapi `linux/netlink.h`, `linux/rtnetlink.h`,
/// `linux/if_link.h`, `linux/if_bridge.h`); the C shim checks the structure sizes they imply.
enum Wire {
    static let headerLength = 16  // struct nlmsghdr
    static let ifinfoLength = 16  // struct ifinfomsg

    // nlmsg_type
    static let messageError: UInt16 = 2  // NLMSG_ERROR
    static let messageDone: UInt16 = 3  // NLMSG_DONE
    static let newLink: UInt16 = 16  // RTM_NEWLINK
    static let deleteLink: UInt16 = 17  // RTM_DELLINK
    static let getLink: UInt16 = 18  // RTM_GETLINK
    static let setLink: UInt16 = 19  // RTM_SETLINK

    // nlmsg_flags
    static let request: UInt16 = 0x1  // NLM_F_REQUEST
    static let ack: UInt16 = 0x4  // NLM_F_ACK
    static let dump: UInt16 = 0x300  // NLM_F_ROOT | NLM_F_MATCH
    static let exclusive: UInt16 = 0x200  // NLM_F_EXCL
    static let create: UInt16 = 0x400  // NLM_F_CREATE
    static let capped: UInt16 = 0x100  // NLM_F_CAPPED (on an NLMSG_ERROR)
    static let ackTLVs: UInt16 = 0x200  // NLM_F_ACK_TLVS (on an NLMSG_ERROR)
    static let errorMessageAttribute: UInt16 = 1  // NLMSGERR_ATTR_MSG

    // Address families in ifi_family.
    static let familyUnspecified: UInt8 = 0  // AF_UNSPEC
    static let familyBridge: UInt8 = 7  // AF_BRIDGE

    // ifi_flags (linux/if.h)
    static let flagUp: UInt32 = 0x1  // IFF_UP
    static let flagLowerUp: UInt32 = 0x10000  // IFF_LOWER_UP

    // IFLA_* link attributes
    static let address: UInt16 = 1  // IFLA_ADDRESS
    static let interfaceName: UInt16 = 3  // IFLA_IFNAME
    static let mtu: UInt16 = 4  // IFLA_MTU
    static let master: UInt16 = 10  // IFLA_MASTER
    static let operationalState: UInt16 = 16  // IFLA_OPERSTATE
    static let linkInfo: UInt16 = 18  // IFLA_LINKINFO
    static let addressFamilySpecific: UInt16 = 26  // IFLA_AF_SPEC
    static let infoKind: UInt16 = 1  // IFLA_INFO_KIND
    static let infoData: UInt16 = 2  // IFLA_INFO_DATA
    static let bridgeVLANFiltering: UInt16 = 7  // IFLA_BR_VLAN_FILTERING
    static let bridgeVLANInfo: UInt16 = 2  // IFLA_BRIDGE_VLAN_INFO
    static let nested: UInt16 = 0x8000  // NLA_F_NESTED
    static let attributeTypeMask: UInt16 = 0x3FFF  // ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
}

/// Builds one netlink message field by field in host byte order (netlink's; little-endian on x86-64), attributes
/// padded to 4 bytes (`NLA_ALIGN`).
struct MessageBuilder {
    private(set) var bytes: [UInt8] = []

    init(type: UInt16, flags: UInt16, sequence: UInt32) {
        append(UInt32(0))  // nlmsg_len, patched in ``finish()``
        append(type)
        append(flags)
        append(sequence)
        append(UInt32(0))  // nlmsg_pid: the kernel fills in ours
    }

    mutating func append<T: FixedWidthInteger>(_ value: T) {
        for index in 0..<MemoryLayout<T>.size { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * index))) }
    }

    /// struct ifinfomsg.
    mutating func appendInterfaceInfo(family: UInt8 = Wire.familyUnspecified, index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) {
        append(family)
        append(UInt8(0))
        append(UInt16(0))  // ifi_type
        append(index)
        append(flags)
        append(change)
    }

    mutating func attribute(_ type: UInt16, _ payload: [UInt8]) {
        append(UInt16(4 + payload.count))
        append(type)
        bytes += payload
        pad()
    }

    mutating func attribute(_ type: UInt16, string: String) { attribute(type, Array(string.utf8) + [0]) }
    mutating func attribute(_ type: UInt16, u8 value: UInt8) { attribute(type, [value]) }
    mutating func attribute(_ type: UInt16, u32 value: UInt32) {
        attribute(type, (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) })
    }

    /// A nested attribute whose contents `body` appends.
    mutating func nested(_ type: UInt16, _ body: (inout MessageBuilder) -> Void) {
        let start = bytes.count
        append(UInt16(0))
        append(type | Wire.nested)
        body(&self)
        let length = UInt16(bytes.count - start)
        bytes[start] = UInt8(length & 0xFF)
        bytes[start + 1] = UInt8(length >> 8)
        pad()
    }

    private mutating func pad() {
        while bytes.count % 4 != 0 { bytes.append(0) }
    }

    func finish() -> [UInt8] {
        var out = bytes
        let length = UInt32(out.count)
        for index in 0..<4 { out[index] = UInt8(truncatingIfNeeded: length >> (8 * UInt32(index))) }
        return out
    }
}

/// Reads little-endian integers from a byte slice without trapping: out-of-range reads are nil.
struct ByteReader {
    let bytes: ArraySlice<UInt8>

    func integer<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        let start = bytes.startIndex + offset
        guard offset >= 0, start + MemoryLayout<T>.size <= bytes.endIndex else { return nil }
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value |= T(truncatingIfNeeded: bytes[start + index]) << (8 * index) }
        return value
    }
}

/// One received netlink message: its header fields and payload.
struct ReceivedMessage {
    var type: UInt16
    var flags: UInt16
    var sequence: UInt32
    var payload: ArraySlice<UInt8>

    /// Splits a datagram into messages; nil if a length field points outside it.
    static func split(_ datagram: [UInt8]) -> [ReceivedMessage]? {
        var messages: [ReceivedMessage] = []
        var offset = 0
        let reader = ByteReader(bytes: datagram[...])
        while offset + Wire.headerLength <= datagram.count {
            guard let length = reader.integer(UInt32.self, at: offset).map(Int.init), length >= Wire.headerLength,
                  offset + length <= datagram.count,
                  let type = reader.integer(UInt16.self, at: offset + 4), let flags = reader.integer(UInt16.self, at: offset + 6),
                  let sequence = reader.integer(UInt32.self, at: offset + 8)
            else { return nil }
            messages.append(ReceivedMessage(type: type, flags: flags, sequence: sequence, payload: datagram[(offset + Wire.headerLength)..<(offset + length)]))
            offset += (length + 3) & ~3
        }
        return messages
    }
}

/// The attributes in a byte range (`struct rtattr` list): type (flags masked off) → payload; the
/// first occurrence of a type wins. Malformed trailing bytes end the list.
func parseAttributes(_ bytes: ArraySlice<UInt8>) -> [UInt16: ArraySlice<UInt8>] {
    var attributes: [UInt16: ArraySlice<UInt8>] = [:]
    let reader = ByteReader(bytes: bytes)
    var offset = 0
    while let length = reader.integer(UInt16.self, at: offset).map(Int.init), let type = reader.integer(UInt16.self, at: offset + 2) {
        guard length >= 4, offset + length <= bytes.count else { break }
        let start = bytes.startIndex + offset
        let key = type & Wire.attributeTypeMask
        if attributes[key] == nil { attributes[key] = bytes[(start + 4)..<(start + length)] }
        offset += (length + 3) & ~3
    }
    return attributes
}

extension ArraySlice<UInt8> {
    /// A NUL-terminated string attribute.
    var attributeString: String { String(decoding: prefix { $0 != 0 }, as: UTF8.self) }
}
