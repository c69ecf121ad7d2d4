#if canImport(Glibc)
import Glibc
#endif

/// Host memory for one vectored read or write: a list of `struct iovec` ranges for `preadv(2)` /
/// `pwritev(2)`, seen as one byte stream of `count` bytes.
///
/// Only the layers allowed to hold pointers create one (guest memory, after validating the guest's
/// ranges; or an array's storage), and only for the duration of a closure: the type is `~Copyable`
/// and is handed out `borrowing`, so it cannot outlive the memory it points into. Storage code above
/// uses the safe operations below, which bounds-check every range.
@safe
public struct IOVectors: ~Copyable {
    // SAFETY: `@safe` because the creator guarantees (see `init(unsafeSegments:readOnly:)`) that every
    // segment is host memory valid for the value's lifetime, writable unless `isReadOnly`; the
    // accessors below only touch bytes inside a segment.
    private let segments: [UnsafeMutableRawBufferPointer]
    /// Total bytes.
    public let count: Int
    /// The memory may only be read (it backs the bytes of a write).
    public let isReadOnly: Bool

    /// Largest vector count one `preadv`/`pwritev` call takes (`IOV_MAX` on Linux).
    static let maxVectorsPerCall = 1024

    /// - Parameter unsafeSegments: host memory valid (and, unless `readOnly`, writable) for as long as
    ///   the value lives; empty segments are dropped.
    @unsafe
    public init(unsafeSegments: [UnsafeMutableRawBufferPointer], readOnly: Bool = false) {
        unsafe segments = unsafe unsafeSegments.filter { unsafe !$0.isEmpty }
        count = unsafe segments.reduce(0) { $0 + $1.count }
        isReadOnly = readOnly
    }

    /// Runs `body` with vectors over the storage of `bytes` (the array API of images, on top of the vectored one).
    public static func withBytes<R, E: Error>(
        of bytes: inout [UInt8], _ body: (borrowing IOVectors) throws(E) -> R
    ) throws(E) -> R {
        // withUnsafeMutableBytes rethrows untyped errors; carry the typed outcome out instead.
        let outcome = unsafe bytes.withUnsafeMutableBytes { raw in
            Swift.Result { () throws(E) -> R in try body(unsafe IOVectors(unsafeSegments: [raw])) }
        }
        return try outcome.get()
    }

    /// Runs `body` with read-only vectors over `bytes` (no copy), for writing them out.
    public static func withBytes<R, E: Error>(
        _ bytes: [UInt8], _ body: (borrowing IOVectors) throws(E) -> R
    ) throws(E) -> R {
        let outcome = unsafe bytes.withUnsafeBytes { raw in
            // SAFETY: read-only: `store`, `zero` and `preadv` refuse it; it is only ever the source of a write.
            Swift.Result { () throws(E) -> R in
                try body(unsafe IOVectors(unsafeSegments: [UnsafeMutableRawBufferPointer(mutating: raw)], readOnly: true))
            }
        }
        return try outcome.get()
    }

    /// Whether every segment starts on and spans a multiple of `alignment` bytes (`O_DIRECT`'s rule for buffers).
    public func isAligned(to alignment: Int) -> Bool {
        unsafe segments.allSatisfy { segment in
            UInt(bitPattern: segment.baseAddress) % UInt(alignment) == 0 && segment.count % alignment == 0
        }
    }

    /// Runs `body` with the vectors for bytes `range` of this stream.
    public func withSlice<R, E: Error>(_ range: Range<Int>, _ body: (borrowing IOVectors) throws(E) -> R) throws(E) -> R {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "slice \(range) of \(count) bytes")
        if range == 0..<count { return try body(self) }
        return try body(unsafe IOVectors(unsafeSegments: unsafe pieces(range), readOnly: isReadOnly))
    }

    /// A copy of bytes `range` of the stream.
    public func bytes(_ range: Range<Int>) -> [UInt8] {
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "bytes \(range) of \(count)")
        var result: [UInt8] = []
        result.reserveCapacity(range.count)
        for unsafe piece in unsafe pieces(range) { unsafe result.append(contentsOf: UnsafeRawBufferPointer(piece)) }
        return result
    }

    /// All bytes of the stream.
    public var bytes: [UInt8] { bytes(0..<count) }

    /// Copies `bytes` into the stream at `offset`.
    public func store(_ bytes: some Collection<UInt8>, at offset: Int) {
        precondition(!isReadOnly, "store into read-only vectors")
        precondition(offset >= 0 && bytes.count <= count - offset, "store of \(bytes.count) bytes at \(offset) of \(count)")
        var rest = bytes[...]
        for unsafe piece in unsafe pieces(offset..<(offset + bytes.count)) {
            unsafe piece.copyBytes(from: rest.prefix(piece.count))
            rest = rest.dropFirst(piece.count)
        }
    }

    /// Copies `source` into the stream at `offset`, segment by segment (`memcpy`): for host memory
    /// this layer holds (a shared ring's record), where ``store(_:at:)`` would go byte by byte.
    @unsafe
    func copy(from source: UnsafeRawBufferPointer, at offset: Int) {
        precondition(!isReadOnly, "copy into read-only vectors")
        precondition(offset >= 0 && source.count <= count - offset, "copy of \(source.count) bytes at \(offset) of \(count)")
        var done = 0
        for unsafe piece in unsafe pieces(offset..<(offset + source.count)) {
            unsafe piece.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[done..<(done + piece.count)]))
            done += piece.count
        }
    }

    /// Fills bytes `range` of the stream with zeros.
    public func zero(_ range: Range<Int>) {
        precondition(!isReadOnly, "zero read-only vectors")
        precondition(range.lowerBound >= 0 && range.upperBound <= count, "zero \(range) of \(count)")
        for unsafe piece in unsafe pieces(range) { unsafe piece.initializeMemory(as: UInt8.self, repeating: 0) }
    }

    /// Fills the stream from `read(offset, count)`, which returns the `count` bytes for stream offset
    /// `offset`; at most `chunk` bytes at a time (for paths that go through arrays).
    public func fill<E: Error>(chunk: Int = 1 << 20, from read: (_ offset: Int, _ count: Int) throws(E) -> [UInt8]) throws(E) {
        var done = 0
        while done < count {
            let length = min(count - done, chunk)
            store(try read(done, length), at: done)
            done += length
        }
    }

    /// Hands the stream to `write(offset, bytes)` as copies of at most `chunk` bytes.
    public func forEachChunk<E: Error>(chunk: Int = 1 << 20, _ write: (_ offset: Int, _ bytes: [UInt8]) throws(E) -> Void) throws(E) {
        var done = 0
        while done < count {
            let length = min(count - done, chunk)
            try write(done, bytes(done..<(done + length)))
            done += length
        }
    }

    /// The segments' parts that hold bytes `range` of the stream (the range is within `0..<count`).
    @unsafe
    private func pieces(_ range: Range<Int>) -> [UnsafeMutableRawBufferPointer] {
        var result: [UnsafeMutableRawBufferPointer] = unsafe []
        var segmentStart = 0
        for unsafe segment in unsafe segments {
            let segmentEnd = segmentStart + segment.count
            defer { segmentStart = segmentEnd }
            if segmentEnd <= range.lowerBound { continue }
            if segmentStart >= range.upperBound { break }
            let from = max(range.lowerBound, segmentStart) - segmentStart
            let to = min(range.upperBound, segmentEnd) - segmentStart
            unsafe result.append(UnsafeMutableRawBufferPointer(rebasing: unsafe segment[from..<to]))
        }
        return unsafe result
    }

    /// The `iovec`s for the stream from byte `offset` on, at most `maxVectorsPerCall` of them.
    @unsafe
    func iovecs(from offset: Int) -> [iovec] {
        var list: [iovec] = unsafe []
        for unsafe piece in unsafe pieces(offset..<count).prefix(Self.maxVectorsPerCall) {
            unsafe list.append(iovec(iov_base: piece.baseAddress, iov_len: piece.count))
        }
        return unsafe list
    }
}

extension IOVectors {
    /// Runs `body` with the `iovec`s of `prefix` followed by the whole stream (a packet's header
    /// and its frame in guest memory, for one `writev(2)` or ring record); nil, running nothing,
    /// when they are more than one call takes.
    @unsafe
    func withIOVecs<R>(after prefix: ArraySlice<UInt8>, _ body: ([iovec]) -> R) -> R? {
        var list = unsafe iovecs(from: 0)
        guard unsafe list.count < Self.maxVectorsPerCall, unsafe list.reduce(0, { unsafe $0 + $1.iov_len }) == count else { return nil }
        return unsafe prefix.withUnsafeBytes { head in
            unsafe list.insert(iovec(iov_base: UnsafeMutableRawPointer(mutating: head.baseAddress), iov_len: head.count), at: 0)
            return unsafe body(list)
        }
    }
}

/// Vectored positioned I/O: the zero-copy path between image files and guest memory.
extension FileDescriptor {
    /// `preadv(2)` into all of `vectors` at `offset`, retrying short reads and EINTR.
    /// Returns the bytes read: fewer than `vectors.count` only at end of file (the rest is left untouched).
    public func preadv(into vectors: borrowing IOVectors, at offset: UInt64) throws(SystemError) -> Int {
        precondition(!vectors.isReadOnly, "read into read-only vectors")
        var done = 0
        while done < vectors.count {
            let list = unsafe vectors.iovecs(from: done)
            let got = unsafe list.withUnsafeBufferPointer { unsafe Glibc.preadv(rawValue, $0.baseAddress, Int32($0.count), off_t(offset) + off_t(done)) }
            if got < 0 {
                if errno == EINTR { continue }
                throw SystemError("preadv \(vectors.count) bytes at \(offset)", errno: errno)
            }
            if got == 0 { break }
            done += got
        }
        return done
    }

    /// `pwritev(2)` of all of `vectors` at `offset`, retrying short writes and EINTR.
    public func pwritevAll(_ vectors: borrowing IOVectors, at offset: UInt64) throws(SystemError) {
        var done = 0
        while done < vectors.count {
            let list = unsafe vectors.iovecs(from: done)
            let written = unsafe list.withUnsafeBufferPointer { unsafe Glibc.pwritev(rawValue, $0.baseAddress, Int32($0.count), off_t(offset) + off_t(done)) }
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemError("pwritev \(vectors.count) bytes at \(offset)", errno: errno)
            }
            done += written
        }
    }
}
