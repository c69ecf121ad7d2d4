/// 802.1Q VLAN identifiers. Valid VIDs for membership are 1...4094: 0 means "priority tag only"
/// and 4095 is reserved (IEEE 802.1Q-2018 §9.6, Table 9-2).
public enum VLAN {
    public static let validRange: ClosedRange<UInt16> = 1...4094
    /// TPID of a customer VLAN tag (C-tag).
    public static let customerTPID: UInt16 = 0x8100
    /// TPID of a service VLAN tag (S-tag, 802.1ad QinQ).
    public static let serviceTPID: UInt16 = 0x88A8
    /// A pre-standard QinQ TPID some switches still send.
    public static let legacyQinQTPID: UInt16 = 0x9100

    public static func isValid(_ vid: UInt16) -> Bool { validRange.contains(vid) }
}

/// A set of VLAN IDs as a 4096-bit bitmap: membership is one shift and one mask.
public struct VLANSet: Equatable, Sendable, Sequence, CustomStringConvertible {
    /// The bitmap, 64 words; VID v is bit v % 64 of word v / 64.
    private(set) var words: [UInt64] = Array(repeating: 0, count: 64)

    public init() {}

    public init(_ vids: some Sequence<UInt16>) {
        for vid in vids { insert(vid) }
    }

    public func contains(_ vid: UInt16) -> Bool {
        let index = Int(vid & 0xFFF)
        return words[index >> 6] & (1 << UInt64(index & 63)) != 0
    }

    public mutating func insert(_ vid: UInt16) {
        let index = Int(vid & 0xFFF)
        words[index >> 6] |= 1 << UInt64(index & 63)
    }

    public mutating func remove(_ vid: UInt16) {
        let index = Int(vid & 0xFFF)
        words[index >> 6] &= ~(1 << UInt64(index & 63))
    }

    public var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    public func makeIterator() -> some IteratorProtocol<UInt16> {
        (UInt16(0)...4095).lazy.filter { self.contains($0) }.makeIterator()
    }

    /// Compact form: `10,20-29,100`.
    public var description: String {
        var parts: [String] = []
        var start: UInt16? = nil
        var previous: UInt16 = 0
        for vid in self {
            if let first = start, vid == previous + 1 {
                previous = vid
                _ = first
                continue
            }
            if let first = start { parts.append(first == previous ? "\(first)" : "\(first)-\(previous)") }
            start = vid
            previous = vid
        }
        if let first = start { parts.append(first == previous ? "\(first)" : "\(first)-\(previous)") }
        return parts.joined(separator: ",")
    }
}
