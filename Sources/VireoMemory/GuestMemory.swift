import VireoSystem

/// One contiguous range of guest-physical memory backed by an anonymous host mapping.
public struct GuestRegion: Sendable {
    public let start: GuestAddress
    public let size: UInt64
    @usableFromInline let mapping: AnonymousMapping

    /// One past the last byte of the region.
    public var end: UInt64 { start.raw + size }

    /// The host address of the region's first byte; handed to KVM_SET_USER_MEMORY_REGION.
    public var hostAddress: UInt64 { unsafe UInt64(UInt(bitPattern: mapping.base)) }

    @usableFromInline func contains(_ address: GuestAddress) -> Bool { address.raw >= start.raw && address.raw < end }
}

/// The guest's physical RAM: every access from the VMM and its devices goes through here.
///
/// This is the one place where Vireo dereferences host pointers into guest memory. Each access
/// is checked to lie within a single region; a guest-supplied address outside RAM or a length
/// that crosses a region's end becomes a ``GuestMemoryError``, never a host crash. Accesses
/// copy bytes (no references into guest memory escape), because the guest may change them at any time.
public final class GuestMemory: Sendable {
    public let regions: [GuestRegion]

    /// Creates guest RAM from `(start, size)` ranges. Ranges must be non-empty, page-aligned and non-overlapping.
    public init(ranges: [(start: GuestAddress, size: UInt64)]) throws {
        var regions: [GuestRegion] = []
        for range in ranges.sorted(by: { $0.start < $1.start }) {
            guard range.size > 0, range.size % 4096 == 0, range.start.raw % 4096 == 0 else {
                throw GuestMemoryError.invalidLayout("region at \(range.start) of \(range.size) bytes is not page-aligned")
            }
            guard range.start.checkedAdding(range.size) != nil else {
                throw GuestMemoryError.invalidLayout("region at \(range.start) wraps the address space")
            }
            if let last = regions.last, last.end > range.start.raw {
                throw GuestMemoryError.invalidLayout("regions at \(last.start) and \(range.start) overlap")
            }
            guard let size = Int(exactly: range.size) else {
                throw GuestMemoryError.invalidLayout("region size \(range.size) too large for this host")
            }
            regions.append(GuestRegion(start: range.start, size: range.size, mapping: try AnonymousMapping(size: size, hugePages: true)))
        }
        self.regions = regions
    }

    /// Total bytes of RAM.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// Finds the region holding `[address, address + length)` and the offset of `address` in it.
    @usableFromInline func locate(_ address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> (GuestRegion, Int) {
        guard let region = regions.first(where: { $0.contains(address) }) else {
            throw .invalidAddress(address)
        }
        let offset = address.raw - region.start.raw
        let (last, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, last <= region.size else { throw .outOfBounds(address, length: length) }
        return (region, Int(offset))
    }

    /// Whether `[address, address + length)` is wholly inside one region.
    public func isValid(_ address: GuestAddress, length: UInt64) -> Bool {
        (try? locate(address, length: length)) != nil
    }

    /// Copies `bytes` into guest memory at `address`. Inlinable, so the copy is specialized for the
    /// caller's collection (unspecialized, it went byte by byte through protocol witnesses).
    @inlinable
    public func write(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws(GuestMemoryError) {
        let (region, offset) = try locate(address, length: UInt64(bytes.count))
        // SAFETY: locate() proved [offset, offset + count) lies inside the region's mapping.
        let destination = unsafe UnsafeMutableRawBufferPointer(start: region.mapping.base + offset, count: bytes.count)
        unsafe destination.copyBytes(from: bytes)
    }

    /// Copies `count` bytes out of guest memory at `address`.
    public func read(count: Int, at address: GuestAddress) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .outOfBounds(address, length: 0) }
        let (region, offset) = try locate(address, length: UInt64(count))
        // SAFETY: locate() proved [offset, offset + count) lies inside the region's mapping.
        let source = unsafe UnsafeRawBufferPointer(start: region.mapping.base + offset, count: count)
        return unsafe Array(source)
    }

    /// Appends `count` bytes of guest memory at `address` to `bytes`: one copy, no intermediate
    /// array (a packet gathered from several descriptors).
    public func read(count: Int, at address: GuestAddress, appendingTo bytes: inout [UInt8]) throws(GuestMemoryError) {
        guard count >= 0 else { throw .outOfBounds(address, length: 0) }
        let (region, offset) = try locate(address, length: UInt64(count))
        // SAFETY: locate() proved [offset, offset + count) lies inside the region's mapping.
        unsafe bytes.append(contentsOf: UnsafeRawBufferPointer(start: region.mapping.base + offset, count: count))
    }

    /// Runs `body` with host I/O vectors over the guest ranges `ranges` (in order), for zero-copy block
    /// I/O: `preadv`/`pwritev` move bytes straight between a file and guest buffers. Every range must lie
    /// wholly inside one region (else nothing runs and the error names the first bad range); the vectors
    /// live only for the call. As with a device's DMA, the guest may change the bytes while they move;
    /// nothing in the VMM interprets them.
    public func withIOVectors<R>(
        _ ranges: [(address: GuestAddress, length: UInt64)], _ body: (borrowing IOVectors) -> R
    ) throws(GuestMemoryError) -> R {
        var segments: [UnsafeMutableRawBufferPointer] = unsafe []
        unsafe segments.reserveCapacity(ranges.count)
        for range in ranges where range.length > 0 {
            let (region, offset) = try locate(range.address, length: range.length)
            // SAFETY: locate() proved [offset, offset + length) lies inside the region's mapping, which
            // lives as long as `self` (and so for the whole call).
            unsafe segments.append(UnsafeMutableRawBufferPointer(start: region.mapping.base + offset, count: Int(range.length)))
        }
        return body(unsafe IOVectors(unsafeSegments: segments))
    }

    /// Fills `[address, address + count)` with zeros.
    public func zero(count: Int, at address: GuestAddress) throws(GuestMemoryError) {
        let (region, offset) = try locate(address, length: UInt64(count))
        // SAFETY: bounds checked by locate().
        unsafe (region.mapping.base + offset).initializeMemory(as: UInt8.self, repeating: 0, count: count)
    }

    /// Reads a little-endian integer (x86 byte order) at `address`. Inlinable (as is
    /// ``writeInteger(_:at:)``) so each caller gets it specialized: virtqueue rings and descriptors
    /// are read through these on every request.
    @inlinable
    public func readInteger<T: FixedWidthInteger>(_: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let size = MemoryLayout<T>.size
        let (region, offset) = try locate(address, length: UInt64(size))
        // SAFETY: bounds checked by locate(); loadUnaligned tolerates any alignment the guest chose.
        return unsafe T(littleEndian: (region.mapping.base + offset).loadUnaligned(as: T.self))
    }

    /// Writes a little-endian integer at `address`.
    @inlinable
    public func writeInteger<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let size = MemoryLayout<T>.size
        let (region, offset) = try locate(address, length: UInt64(size))
        // SAFETY: bounds checked by locate(); storeBytes(toByteOffset:) is unaligned-safe for trivial types.
        unsafe (region.mapping.base + offset).storeBytes(of: value.littleEndian, as: T.self)
    }

    /// Returns the pages of `[address, address + length)` to the host (`MADV_DONTNEED`): they read back as zeros.
    /// Used by the balloon; only whole pages inside one region are discarded.
    public func discard(_ address: GuestAddress, length: UInt64) throws {
        let (region, offset) = try locate(address, length: length)
        try region.mapping.discard(offset: offset, length: Int(length))
    }
}
