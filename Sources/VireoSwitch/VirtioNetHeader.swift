/// Offloads a virtio-net path can carry, a VMM's `NetBackend` or a switch port (virtio 1.2
/// §5.1.6.2, §5.1.6.4): packets whose header asks for a checksum to be completed
/// (`VIRTIO_NET_HDR_F_NEEDS_CSUM`) or a GSO super-frame to be segmented (`gso_type` TCPv4/TCPv6,
/// with the ECN bit). The same header travels through taps (`IFF_VNET_HDR`) and the switch's
/// `vm:` ports, so it lives here, below both the devices and the switch.
public struct NetOffloads: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Partial checksums (`csum_start`/`csum_offset`).
    public static let checksum = NetOffloads(rawValue: 1 << 0)
    /// TCP over IPv4 segmentation (`VIRTIO_NET_HDR_GSO_TCPV4`).
    public static let tso4 = NetOffloads(rawValue: 1 << 1)
    /// TCP over IPv6 segmentation (`VIRTIO_NET_HDR_GSO_TCPV6`).
    public static let tso6 = NetOffloads(rawValue: 1 << 2)
    /// TSO frames with congestion-experienced bits (`VIRTIO_NET_HDR_GSO_ECN`).
    public static let tsoECN = NetOffloads(rawValue: 1 << 3)
    public static let all: NetOffloads = [.checksum, .tso4, .tso6, .tsoECN]
}

/// `struct virtio_net_hdr_v1` (virtio 1.2 §5.1.6), the 12 little-endian bytes before every frame:
/// flags u8, gso_type u8, hdr_len le16, gso_size le16, csum_start le16, csum_offset le16,
/// num_buffers le16. Decoded field by field; every value a guest (or backend) wrote is checked by
/// ``validate(frameLength:allowed:)`` before anything acts on it.
public struct VirtioNetHeader: Equatable, Sendable {
    public static let length = 12
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start` to the end, stored at `csum_start + csum_offset`.
    public static let flagNeedsChecksum: UInt8 = 1
    /// `VIRTIO_NET_HDR_F_DATA_VALID` (receive only, with VIRTIO_NET_F_GUEST_CSUM).
    public static let flagDataValid: UInt8 = 2
    public static let gsoNone: UInt8 = 0
    public static let gsoTCPv4: UInt8 = 1
    public static let gsoUDP: UInt8 = 3
    public static let gsoTCPv6: UInt8 = 4
    public static let gsoECN: UInt8 = 0x80
    /// Ethernet header length: a checksum cannot start before the network header.
    static let ethernetHeader = 14

    public var flags: UInt8 = 0
    public var gsoType: UInt8 = 0
    public var headerLength: UInt16 = 0
    public var gsoSize: UInt16 = 0
    public var checksumStart: UInt16 = 0
    public var checksumOffset: UInt16 = 0
    public var numBuffers: UInt16 = 0

    public init() {}

    /// Decodes the first 12 bytes of `packet`; nil when it is shorter.
    public init?(_ packet: [UInt8]) { self.init(packet[...]) }

    /// Decodes the first 12 bytes of `packet`; nil when it is shorter.
    public init?(_ packet: ArraySlice<UInt8>) {
        guard packet.count >= Self.length else { return nil }
        let base = packet.startIndex
        func le16(_ at: Int) -> UInt16 { UInt16(packet[base + at]) | UInt16(packet[base + at + 1]) << 8 }
        flags = packet[base]
        gsoType = packet[base + 1]
        headerLength = le16(2)
        gsoSize = le16(4)
        checksumStart = le16(6)
        checksumOffset = le16(8)
        numBuffers = le16(10)
    }

    public var bytes: [UInt8] {
        var result: [UInt8] = []
        append(to: &result)
        return result
    }

    /// Appends the 12 encoded bytes to `output`.
    public func append(to output: inout [UInt8]) {
        output.append(flags)
        output.append(gsoType)
        for value in [headerLength, gsoSize, checksumStart, checksumOffset, numBuffers] {
            output.append(UInt8(value & 0xFF))
            output.append(UInt8(value >> 8))
        }
    }

    /// Why a header was refused; the frame is dropped and counted.
    public enum Problem: Error, Equatable, Sendable {
        /// A flag other than NEEDS_CSUM (and DATA_VALID, on receive) is set.
        case unknownFlags(UInt8)
        /// NEEDS_CSUM without the checksum offload (§5.1.6.2.1: flags must then be zero).
        case checksumNotNegotiated
        /// `csum_start` before the end of the Ethernet header, or the 2-byte checksum field past the frame.
        case checksumOutsideFrame(start: UInt16, offset: UInt16)
        /// A `gso_type` that is not NONE, TCPV4 or TCPV6 (UDP fragmentation is not offered).
        case unknownGSOType(UInt8)
        /// A GSO type (or the ECN bit) whose offload was not negotiated.
        case gsoNotNegotiated(UInt8)
        /// GSO without NEEDS_CSUM (§5.1.6.2.1; DATA_VALID will do on receive), or with `gso_size` zero.
        case gsoWithoutChecksumOrSize
        /// `hdr_len` beyond the frame.
        case headerLengthOutsideFrame(UInt16)
    }

    /// Checks the header against the frame it precedes (`frameLength` bytes after the header) and
    /// the offloads negotiated for this direction (§5.1.6.2.1 for transmit, §5.1.6.4.1 for
    /// receive). `dataValidAllowed` accepts DATA_VALID (receive with GUEST_CSUM).
    public func validate(frameLength: Int, allowed: NetOffloads, dataValidAllowed: Bool = false) -> Problem? {
        let knownFlags = Self.flagNeedsChecksum | (dataValidAllowed ? Self.flagDataValid : 0)
        guard flags & ~knownFlags == 0 else { return .unknownFlags(flags) }
        let needsChecksum = flags & Self.flagNeedsChecksum != 0
        if needsChecksum {
            guard allowed.contains(.checksum) else { return .checksumNotNegotiated }
            guard Int(checksumStart) >= Self.ethernetHeader,
                  Int(checksumStart) + Int(checksumOffset) + 2 <= frameLength else {
                return .checksumOutsideFrame(start: checksumStart, offset: checksumOffset)
            }
        }
        let base = gsoType & ~Self.gsoECN
        switch base {
        case Self.gsoNone:
            guard gsoType & Self.gsoECN == 0 else { return .unknownGSOType(gsoType) }
            return nil
        case Self.gsoTCPv4: guard allowed.contains(.tso4) else { return .gsoNotNegotiated(gsoType) }
        case Self.gsoTCPv6: guard allowed.contains(.tso6) else { return .gsoNotNegotiated(gsoType) }
        default: return .unknownGSOType(gsoType)
        }
        if gsoType & Self.gsoECN != 0, !allowed.contains(.tsoECN) { return .gsoNotNegotiated(gsoType) }
        // A received GSO frame may instead carry DATA_VALID (a GRO'd frame whose checksum was verified).
        let checksumCovered = needsChecksum || (dataValidAllowed && flags & Self.flagDataValid != 0)
        guard checksumCovered, gsoSize > 0 else { return .gsoWithoutChecksumOrSize }
        guard Int(headerLength) <= frameLength else { return .headerLengthOutsideFrame(headerLength) }
        return nil
    }
}

/// On a `vm:` port in offload mode every message is a virtio-net header and a frame, except one
/// of exactly the header's length: that is the peer announcing which offloads it accepts from
/// then on (``NetOffloads`` bits in the first byte, the other eleven zero). A VMM sends one
/// whenever its guest's receive features change (driver start, device reset); until the first,
/// the switch sends it nothing that needs an offload. A frame is never that short (14 bytes at least).
public enum OffloadAnnouncement {
    public static func message(_ offloads: NetOffloads) -> [UInt8] {
        [offloads.rawValue] + [UInt8](repeating: 0, count: VirtioNetHeader.length - 1)
    }

    /// The announced offloads if `message` is an announcement; nil for anything else.
    public static func decode(_ message: ArraySlice<UInt8>) -> NetOffloads? {
        guard message.count == VirtioNetHeader.length, message.dropFirst().allSatisfy({ $0 == 0 }) else { return nil }
        return NetOffloads(rawValue: message[message.startIndex]).intersection(.all)
    }
}
