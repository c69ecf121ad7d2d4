/// Builds little-endian byte layouts (boot structures, ACPI tables) field by field.
///
/// Guest-visible structures are serialised explicitly rather than by reinterpreting Swift
/// structs, whose layout Swift does not guarantee.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 0) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public init(zeros count: Int) { bytes = [UInt8](repeating: 0, count: count) }

    public var count: Int { bytes.count }

    public mutating func append<T: FixedWidthInteger>(_ value: T) {
        unsafe withUnsafeBytes(of: value.littleEndian) { unsafe bytes.append(contentsOf: $0) }
    }

    public mutating func append(_ data: some Sequence<UInt8>) { bytes.append(contentsOf: data) }

    /// Appends `text` as ASCII, padded with `pad` or truncated to exactly `width` bytes.
    public mutating func append(ascii text: String, width: Int, pad: UInt8 = 0x20) {
        var field = Array(text.utf8.prefix(width))
        field += [UInt8](repeating: pad, count: width - field.count)
        bytes.append(contentsOf: field)
    }

    /// Overwrites the integer at `offset` (which must already exist).
    public mutating func set<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        unsafe withUnsafeBytes(of: value.littleEndian) { raw in
            for index in 0..<raw.count { unsafe bytes[offset + index] = raw[index] }
        }
    }

    public mutating func set(_ data: some Collection<UInt8>, at offset: Int) {
        bytes.replaceSubrange(offset..<(offset + data.count), with: data)
    }

    /// Pads with zeros up to a multiple of `alignment`.
    public mutating func align(to alignment: Int) {
        while bytes.count % alignment != 0 { bytes.append(0) }
    }
}

extension Collection<UInt8> {
    /// The byte that makes the 8-bit sum of the collection plus itself zero (ACPI, MP table checksums).
    public var checksumComplement: UInt8 {
        let sum = reduce(UInt8(0)) { $0 &+ $1 }
        return 0 &- sum
    }

    /// Reads a little-endian integer at `offset`, or nil if it does not fit. Inlinable, so callers
    /// in other modules get it specialized for their integer type (unspecialized, each byte went
    /// through protocol witnesses: the top of a virtqueue profile).
    @inlinable
    public func littleEndianInteger<T: FixedWidthInteger>(_: T.Type = T.self, at offset: Int) -> T? {
        let size = MemoryLayout<T>.size
        guard offset >= 0, offset + size <= count else { return nil }
        var value: T = 0
        var index = self.index(startIndex, offsetBy: offset)
        for shift in 0..<size {
            value |= T(self[index]) << (shift * 8)
            index = self.index(after: index)
        }
        return value
    }
}
