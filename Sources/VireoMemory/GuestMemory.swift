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
@safe public final class GuestMemory: @unchecked Sendable {
    // SAFETY: `@unchecked` for `spans`, written once in `init` and only read after; each points
    // into a mapping that `regions` keeps alive for as long as this object lives.
    public let regions: [GuestRegion]

    /// Each region's guest range and host address as plain values, what every access looks up:
    /// going through ``GuestRegion`` cost a retain and a release of its mapping per access
    /// (18 % of `virtio-bench`'s time, each ring index and descriptor read being one access).
    @usableFromInline @unsafe struct HostSpan {
        @usableFromInline let start: UInt64
        @usableFromInline let size: UInt64
        @usableFromInline let base: UnsafeMutableRawPointer
    }
    @usableFromInline let spans: UnsafeMutableBufferPointer<HostSpan>

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
        unsafe spans = .allocate(capacity: regions.count)
        for (index, region) in regions.enumerated() {
            unsafe (spans.baseAddress! + index).initialize(to: HostSpan(start: region.start.raw, size: region.size, base: region.mapping.base))
        }
    }

    deinit { unsafe spans.deallocate() }

    /// Total bytes of RAM.
    public var totalSize: UInt64 { regions.reduce(0) { $0 + $1.size } }

    /// Finds the region holding `[address, address + length)` and the offset of `address` in it.
    func locate(_ address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> (GuestRegion, Int) {
        guard let region = regions.first(where: { $0.contains(address) }) else {
            throw .invalidAddress(address)
        }
        let offset = address.raw - region.start.raw
        let (last, overflow) = offset.addingReportingOverflow(length)
        guard !overflow, last <= region.size else { throw .outOfBounds(address, length: length) }
        return (region, Int(offset))
    }

    /// The host address of guest `address` once `[address, address + length)` is known to lie
    /// inside one region; the check every accessor below makes before touching memory.
    @usableFromInline @unsafe
    func hostAddress(_ address: GuestAddress, length: UInt64) throws(GuestMemoryError) -> UnsafeMutableRawPointer {
        for index in 0..<(unsafe spans.count) {
            let span = unsafe spans[index]
            let (start, size) = unsafe (span.start, span.size)
            guard address.raw >= start, address.raw - start < size else { continue }
            let offset = address.raw - start
            let (last, overflow) = offset.addingReportingOverflow(length)
            guard !overflow, last <= size else { throw .outOfBounds(address, length: length) }
            return unsafe span.base + Int(offset)
        }
        throw .invalidAddress(address)
    }

    /// Whether `[address, address + length)` is wholly inside one region.
    public func isValid(_ address: GuestAddress, length: UInt64) -> Bool {
        unsafe (try? hostAddress(address, length: length)) != nil
    }

    /// Copies `bytes` into guest memory at `address`. Inlinable, so the copy is specialized for the
    /// caller's collection (unspecialized, it went byte by byte through protocol witnesses).
    @inlinable
    public func write(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws(GuestMemoryError) {
        // SAFETY: hostAddress() proved [address, address + count) lies inside one region's mapping.
        let destination = unsafe UnsafeMutableRawBufferPointer(start: try hostAddress(address, length: UInt64(bytes.count)), count: bytes.count)
        unsafe destination.copyBytes(from: bytes)
    }

    /// Copies `count` bytes out of guest memory at `address`.
    public func read(count: Int, at address: GuestAddress) throws(GuestMemoryError) -> [UInt8] {
        guard count >= 0 else { throw .outOfBounds(address, length: 0) }
        // SAFETY: hostAddress() proved [address, address + count) lies inside one region's mapping.
        let source = unsafe UnsafeRawBufferPointer(start: try hostAddress(address, length: UInt64(count)), count: count)
        return unsafe Array(source)
    }

    /// Appends `count` bytes of guest memory at `address` to `bytes`: one copy, no intermediate
    /// array (a packet gathered from several descriptors).
    public func read(count: Int, at address: GuestAddress, appendingTo bytes: inout [UInt8]) throws(GuestMemoryError) {
        guard count >= 0 else { throw .outOfBounds(address, length: 0) }
        // SAFETY: hostAddress() proved [address, address + count) lies inside one region's mapping.
        unsafe bytes.append(contentsOf: UnsafeRawBufferPointer(start: try hostAddress(address, length: UInt64(count)), count: count))
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
            // SAFETY: hostAddress() proved the range lies inside one region's mapping, which lives as
            // long as `self` (and so for the whole call).
            unsafe segments.append(UnsafeMutableRawBufferPointer(start: try hostAddress(range.address, length: range.length), count: Int(range.length)))
        }
        return body(unsafe IOVectors(unsafeSegments: segments))
    }

    /// Fills `[address, address + count)` with zeros.
    public func zero(count: Int, at address: GuestAddress) throws(GuestMemoryError) {
        // SAFETY: bounds checked by hostAddress().
        unsafe try hostAddress(address, length: UInt64(count)).initializeMemory(as: UInt8.self, repeating: 0, count: count)
    }

    /// Reads a little-endian integer (x86 byte order) at `address`. Inlinable (as is
    /// ``writeInteger(_:at:)``) so each caller gets it specialized: virtqueue rings and descriptors
    /// are read through these on every request.
    @inlinable
    public func readInteger<T: FixedWidthInteger>(_: T.Type = T.self, at address: GuestAddress) throws(GuestMemoryError) -> T {
        let size = MemoryLayout<T>.size
        // SAFETY: bounds checked by hostAddress(); loadUnaligned tolerates any alignment the guest chose.
        return unsafe T(littleEndian: try hostAddress(address, length: UInt64(size)).loadUnaligned(as: T.self))
    }

    /// Writes a little-endian integer at `address`.
    @inlinable
    public func writeInteger<T: FixedWidthInteger>(_ value: T, at address: GuestAddress) throws(GuestMemoryError) {
        let size = MemoryLayout<T>.size
        // SAFETY: bounds checked by hostAddress(); storeBytes is unaligned-safe for trivial types.
        unsafe try hostAddress(address, length: UInt64(size)).storeBytes(of: value.littleEndian, as: T.self)
    }

    /// Returns the pages of `[address, address + length)` to the host (`MADV_DONTNEED`): they read back as zeros.
    /// Used by the balloon; only whole pages inside one region are discarded.
    public func discard(_ address: GuestAddress, length: UInt64) throws {
        let (region, offset) = try locate(address, length: length)
        try region.mapping.discard(offset: offset, length: Int(length))
    }
}
