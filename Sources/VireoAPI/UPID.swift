/// A Proxmox task id: `UPID:node:PID:PSTART:STARTTIME:type:id:user:`.
///
/// PID and STARTTIME are 8 uppercase hex digits (STARTTIME in epoch seconds), PSTART 8 or 9; the
/// trailing colon is required (proxmoxer splits it into 9 segments).
public struct UPID: Hashable, Sendable, CustomStringConvertible {
    public var node: String
    public var pid: Int
    public var pstart: UInt64
    public var startTime: Int
    public var type: String
    public var id: String
    public var user: String

    public init(node: String, pid: Int, pstart: UInt64, startTime: Int, type: String, id: String, user: String) {
        self.node = node; self.pid = pid; self.pstart = pstart; self.startTime = startTime
        self.type = type; self.id = id; self.user = user
    }

    public var description: String {
        "UPID:\(node):\(Self.hex(UInt64(pid), 8)):\(Self.hex(pstart, 8)):\(Self.hex(UInt64(startTime), 8)):\(type):\(id):\(user):"
    }

    /// Parses a UPID; nil when it does not have the nine colon-separated parts or a hex field is not hex.
    public init?(_ text: String) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 9, parts[0] == "UPID", parts[8].isEmpty,
              let pid = Int(parts[2], radix: 16), let pstart = UInt64(parts[3], radix: 16),
              let start = Int(parts[4], radix: 16), !parts[1].isEmpty, !parts[5].isEmpty else { return nil }
        self.init(node: parts[1], pid: pid, pstart: pstart, startTime: start, type: parts[5], id: parts[6], user: parts[7])
    }

    private static func hex(_ value: UInt64, _ width: Int) -> String {
        let digits = String(value, radix: 16, uppercase: true)
        return String(repeating: "0", count: max(0, width - digits.count)) + digits
    }
}
