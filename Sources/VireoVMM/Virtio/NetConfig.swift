import VireoSwitch

/// One `--net`: a virtio-net device on a host tap (`tap=NAME`) or on a port of a Vireo switch
/// (`switch=NAME[,tag=N | ,trunk=A,B-C[,native=N]][,port=NAME][,dir=DIR]`), with `mac=`.
public struct NetConfig: Sendable, Equatable {
    /// Where the NIC's frames go.
    public enum Attachment: Sendable, Equatable {
        case tap(String)
        case switchPort(SwitchAttachment)
    }

    public var attachment: Attachment
    public var mac: [UInt8]

    public init(attachment: Attachment, mac: [UInt8]) {
        self.attachment = attachment
        self.mac = mac
    }

    public init(tap: String, mac: [UInt8]) {
        self.init(attachment: .tap(tap), mac: mac)
    }

    /// Parses the option; without `mac=` a random locally administered unicast address is chosen.
    /// With `switch=`, the port options (`tag`, `trunk`, `native`, `tpid`, `tunnel`, `mtu`, `mac-limit`,
    /// `flood-limit`, `offload`) are those of `vireo-switchd --port`, and in `trunk=10,20` items
    /// without `=` continue the list; the port is named `port=` or else after the MAC address, and
    /// is in offload mode (the guest's checksum and TSO offloads cross the switch) unless `offload=off`.
    public static func parse(_ text: String) throws(ConfigError) -> NetConfig {
        var tap: String?
        var switchName: String?
        var portName: String?
        var directory = SwitchAttachment.defaultDirectory
        var portOptions: [String] = []
        var continuesPortOption = false
        var mac: [UInt8]?
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 1, continuesPortOption, !parts[0].isEmpty {
                portOptions.append(parts[0])
                continue
            }
            guard parts.count == 2 else { throw .invalid("--net: expected key=value, got '\(item)'") }
            continuesPortOption = false
            switch parts[0] {
            case "tap":
                guard !parts[1].isEmpty, parts[1].utf8.count < 16 else { throw .invalid("--net: tap name must be 1 to 15 bytes, got '\(parts[1])'") }
                tap = parts[1]
            case "switch":
                guard !parts[1].isEmpty, parts[1].utf8.count <= 32, parts[1].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
                    throw .invalid("--net: switch name must be 1-32 ASCII letters, digits, '-', '_' or '.', got '\(parts[1])'")
                }
                switchName = parts[1]
            case "port": portName = parts[1]
            case "dir":
                guard parts[1].hasPrefix("/") else { throw .invalid("--net: dir must be an absolute path, got '\(parts[1])'") }
                directory = parts[1]
            case "tag", "trunk", "native", "tpid", "tunnel", "mtu", "mac-limit", "flood-limit", "offload":
                portOptions.append(String(item))
                continuesPortOption = parts[0] == "trunk"
            case "mac":
                guard let value = parseMAC(parts[1]) else { throw .invalid("--net: invalid MAC address '\(parts[1])' (expected six hex bytes like 52:54:00:12:34:56)") }
                guard value[0] & 1 == 0 else { throw .invalid("--net: MAC address '\(parts[1])' is multicast") }
                mac = value
            default: throw .invalid("--net: unknown key '\(parts[0])' (tap, switch, port, dir, tag, trunk, native, tpid, tunnel, mtu, mac-limit, flood-limit, offload, mac)")
            }
        }
        let address = mac ?? randomMAC()
        switch (tap, switchName) {
        case (let tap?, nil):
            guard portName == nil, portOptions.isEmpty, directory == SwitchAttachment.defaultDirectory else {
                throw .invalid("--net: port, dir, tag, trunk and other port options need switch=NAME")
            }
            return NetConfig(tap: tap, mac: address)
        case (nil, let switchName?):
            // Offload mode unless asked otherwise: the guest's checksum and TSO offloads cross the switch.
            let spec = (["vm:\(portName ?? SwitchAttachment.defaultPortName(mac: address))", "offload=on"] + portOptions).joined(separator: ",")
            let port: PortConfig
            do { port = try PortConfig.parse(spec) } catch { throw .invalid("--net switch=\(switchName): \(error)") }
            return NetConfig(attachment: .switchPort(SwitchAttachment(switchName: switchName, directory: directory, port: port)), mac: address)
        case (nil, nil): throw .invalid("--net needs tap=NAME or switch=NAME")
        case (_?, _?): throw .invalid("--net: tap= and switch= exclude each other")
        }
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
