/// One `--net tap=NAME[,mac=52:54:00:xx:xx:xx]`: a virtio-net device on a host tap.
public struct NetConfig: Sendable, Equatable {
    public var tap: String
    public var mac: [UInt8]

    public init(tap: String, mac: [UInt8]) {
        self.tap = tap
        self.mac = mac
    }

    /// Parses the option; without `mac=` a random locally administered unicast address is chosen.
    public static func parse(_ text: String) throws(ConfigError) -> NetConfig {
        var tap: String?
        var mac: [UInt8]?
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw .invalid("--net: expected key=value, got '\(item)'") }
            switch parts[0] {
            case "tap":
                guard !parts[1].isEmpty, parts[1].utf8.count < 16 else { throw .invalid("--net: tap name must be 1 to 15 bytes, got '\(parts[1])'") }
                tap = parts[1]
            case "mac":
                guard let value = parseMAC(parts[1]) else { throw .invalid("--net: invalid MAC address '\(parts[1])' (expected six hex bytes like 52:54:00:12:34:56)") }
                guard value[0] & 1 == 0 else { throw .invalid("--net: MAC address '\(parts[1])' is multicast") }
                mac = value
            default: throw .invalid("--net: unknown key '\(parts[0])' (tap, mac)")
            }
        }
        guard let tap else { throw .invalid("--net needs tap=NAME") }
        return NetConfig(tap: tap, mac: mac ?? randomMAC())
    }

    static func parseMAC(_ text: String) -> [UInt8]? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard part.count == 2, let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }

    /// A random locally administered (bit 1 set) unicast (bit 0 clear) address.
    public static func randomMAC() -> [UInt8] {
        var generator = SystemRandomNumberGenerator()
        var bytes = (0..<6).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes[0] = (bytes[0] & 0xFC) | 0x02
        return bytes
    }

    public static func format(_ mac: [UInt8]) -> String {
        mac.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined(separator: ":")
    }
}
