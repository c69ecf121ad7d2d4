@testable import VireoSwitch

/// Frame builders shared by the unit and namespace tests.
enum Frames {
    static func mac(_ last: UInt8, prefix: UInt8 = 0x02) -> MACAddress { MACAddress(prefix, 0, 0, 0, 0, last) }

    /// An Ethernet frame: dst, src, optional 802.1Q tag, EtherType, `payload` zero bytes (or the given bytes).
    static func make(dst: MACAddress, src: MACAddress, vid: UInt16? = nil, pcp: UInt8 = 0, etherType: UInt16 = 0x0800, payloadLength: Int = 46, payload: [UInt8]? = nil) -> [UInt8] {
        var bytes = dst.octets + src.octets
        if let vid {
            let tci = UInt16(pcp) << 13 | vid
            bytes += [0x81, 0x00, UInt8(tci >> 8), UInt8(tci & 0xFF)]
        }
        bytes += [UInt8(etherType >> 8), UInt8(etherType & 0xFF)]
        bytes += payload ?? (0..<payloadLength).map { UInt8(truncatingIfNeeded: $0) }
        return bytes
    }
}
