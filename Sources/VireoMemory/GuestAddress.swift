/// A guest-physical address. Distinct from host pointers and region offsets so the two cannot be mixed up;
/// arithmetic is checked and returns nil on overflow instead of trapping on guest-supplied values.
public struct GuestAddress: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var raw: UInt64

    public init(_ raw: UInt64) { self.raw = raw }

    public static func < (lhs: GuestAddress, rhs: GuestAddress) -> Bool { lhs.raw < rhs.raw }

    /// `self + offset`, or nil if it overflows.
    public func checkedAdding(_ offset: UInt64) -> GuestAddress? {
        let (sum, overflow) = raw.addingReportingOverflow(offset)
        return overflow ? nil : GuestAddress(sum)
    }

    /// `self - other`, or nil if `other` lies above `self`.
    public func checkedOffset(from other: GuestAddress) -> UInt64? {
        raw >= other.raw ? raw - other.raw : nil
    }

    public var description: String { "0x" + String(raw, radix: 16) }
}

/// Why a guest-memory access was refused.
public enum GuestMemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// No region contains the address.
    case invalidAddress(GuestAddress)
    /// The access starts inside a region but runs past its end (or past the top of the address space).
    case outOfBounds(GuestAddress, length: UInt64)
    /// A region overlaps another or has an invalid size.
    case invalidLayout(String)

    public var description: String {
        switch self {
        case .invalidAddress(let address): "guest address \(address) is not backed by memory"
        case .outOfBounds(let address, let length): "guest access of \(length) bytes at \(address) leaves its memory region"
        case .invalidLayout(let why): "invalid guest memory layout: \(why)"
        }
    }
}
