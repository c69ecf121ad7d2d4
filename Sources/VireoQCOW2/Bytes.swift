/// Big-endian field access on byte arrays (qcow2 stores every integer big-endian).
extension Array where Element == UInt8 {
    func be16(_ at: Int) -> UInt16 { UInt16(self[at]) << 8 | UInt16(self[at + 1]) }
    func be32(_ at: Int) -> UInt32 {
        var v: UInt32 = 0
        for i in 0..<4 { v = v << 8 | UInt32(self[at + i]) }
        return v
    }
    func be64(_ at: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(self[at + i]) }
        return v
    }
    mutating func setBE16(_ value: UInt16, at: Int) {
        self[at] = UInt8(truncatingIfNeeded: value >> 8)
        self[at + 1] = UInt8(truncatingIfNeeded: value)
    }
    mutating func setBE32(_ value: UInt32, at: Int) {
        for i in 0..<4 { self[at + i] = UInt8(truncatingIfNeeded: value >> (24 - 8 * UInt32(i))) }
    }
    mutating func setBE64(_ value: UInt64, at: Int) {
        for i in 0..<8 { self[at + i] = UInt8(truncatingIfNeeded: value >> (56 - 8 * UInt64(i))) }
    }

    static func be64(_ value: UInt64) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 8)
        bytes.setBE64(value, at: 0)
        return bytes
    }

    /// Decodes consecutive big-endian 64-bit entries (L1, L2 and refcount tables).
    func be64Entries() -> [UInt64] {
        (0..<(count / 8)).map { be64($0 * 8) }
    }

    init(be64Entries entries: [UInt64]) {
        self = [UInt8](repeating: 0, count: entries.count * 8)
        for (i, e) in entries.enumerated() { setBE64(e, at: i * 8) }
    }
}
