/// A 48-bit IEEE 802 MAC address, stored in the low 48 bits of a `UInt64` (first octet most significant).
public struct MACAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64

    public init(rawValue: UInt64) {
        self.rawValue = rawValue & 0xFFFF_FFFF_FFFF
    }

    public init(_ b0: UInt8, _ b1: UInt8, _ b2: UInt8, _ b3: UInt8, _ b4: UInt8, _ b5: UInt8) {
        var value: UInt64 = 0
        for byte in [b0, b1, b2, b3, b4, b5] { value = value << 8 | UInt64(byte) }
        self.init(rawValue: value)
    }

    /// Parses `aa:bb:cc:dd:ee:ff` (or `-` separated); nil if malformed.
    public init?(_ text: String) {
        let parts = text.split(whereSeparator: { $0 == ":" || $0 == "-" })
        guard parts.count == 6 else { return nil }
        var value: UInt64 = 0
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            value = value << 8 | UInt64(byte)
        }
        self.init(rawValue: value)
    }

    /// Reads six octets at `offset` of `bytes`; the caller has checked the length.
    init(reading bytes: ArraySlice<UInt8>, at offset: Int) {
        let base = bytes.startIndex + offset
        var value: UInt64 = 0
        for index in base..<(base + 6) { value = value << 8 | UInt64(bytes[index]) }
        self.rawValue = value
    }

    public static let broadcast = MACAddress(rawValue: 0xFFFF_FFFF_FFFF)
    public static let zero = MACAddress(rawValue: 0)

    /// The I/G bit: set for group (multicast and broadcast) addresses.
    public var isMulticast: Bool { rawValue & 0x0100_0000_0000 != 0 }
    public var isBroadcast: Bool { rawValue == 0xFFFF_FFFF_FFFF }

    public var octets: [UInt8] { (0..<6).map { UInt8(truncatingIfNeeded: rawValue >> UInt64(40 - 8 * $0)) } }

    public var description: String {
        octets.map { byte in
            let hex = String(byte, radix: 16)
            return byte < 16 ? "0" + hex : hex
        }.joined(separator: ":")
    }

    public static func < (lhs: MACAddress, rhs: MACAddress) -> Bool { lhs.rawValue < rhs.rawValue }
}
