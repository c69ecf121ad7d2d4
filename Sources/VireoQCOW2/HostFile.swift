import VireoSystem

#if canImport(Glibc)
import Glibc
#endif

/// The host file under an image: positioned reads and writes, durability, size.
///
/// The engine only talks to its file through this protocol, so tests can substitute a file that
/// records every write and barrier and replays a simulated power cut.
public protocol HostFile: AnyObject {
    /// The path errors name.
    var path: String { get }
    /// Reads `count` bytes at `offset`; bytes past the end of the file read as zeros.
    func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8]
    func write(_ bytes: ArraySlice<UInt8>, at offset: UInt64) throws(ImageError)
    /// Reads `vectors.count` bytes at `offset` straight into `vectors`; bytes past the end of the file read as zeros.
    /// The default goes through `read(at:count:)`.
    func read(into vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError)
    /// Writes all of `vectors` at `offset`. The default goes through `write(_:at:)`.
    func write(from vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError)
    /// A durability barrier: everything written before it is on stable storage when it returns.
    func sync() throws(ImageError)
    func size() throws(ImageError) -> UInt64
    func truncate(to size: UInt64) throws(ImageError)
    /// Deallocates `length` bytes at `offset` on the host; they read as zeros afterwards and the size stays.
    /// The default writes zeros (for files that cannot punch holes).
    func deallocate(at offset: UInt64, length: UInt64) throws(ImageError)
}

extension HostFile {
    public func read(into vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        try readByCopy(into: vectors, at: offset)
    }

    public func write(from vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        try writeByCopy(from: vectors, at: offset)
    }

    /// The vectored read through the array API, 1 MiB at a time.
    func readByCopy(into vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        try vectors.fill { (done, count) throws(ImageError) in try read(at: offset + UInt64(done), count: count) }
    }

    /// The vectored write through the array API, 1 MiB at a time.
    func writeByCopy(from vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        try vectors.forEachChunk { (done, bytes) throws(ImageError) in try write(bytes[...], at: offset + UInt64(done)) }
    }

    public func deallocate(at offset: UInt64, length: UInt64) throws(ImageError) {
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(length - done, 1 << 20))
            try write([UInt8](repeating: 0, count: count)[...], at: offset + done)
            done += UInt64(count)
        }
    }
}

/// A regular file or block device opened with `open(2)`.
public final class PosixHostFile: HostFile {
    public let path: String
    let descriptor: FileDescriptor
    public let writable: Bool
    /// Opened with `O_DIRECT` (cache mode "none"): I/O goes through aligned bounce buffers, and writes
    /// that do not cover whole 4 KiB blocks read, modify and write the blocks around them.
    public let direct: Bool
    /// Flushes are skipped (qemu's cache=unsafe, what `qemu-img convert` writes with by default): for
    /// files that are thrown away if the host crashes.
    public let ignoresFlushes: Bool
    static let directAlignment = 4096
    /// Orders `O_DIRECT` read-modify-writes of partial blocks against other writes to the same blocks.
    let directWriteLocks = RegionLocks()

    public init(path: String, writable: Bool, create: Bool = false, direct: Bool = false, ignoresFlushes: Bool = false) throws(ImageError) {
        self.path = path
        self.writable = writable
        self.direct = direct
        self.ignoresFlushes = ignoresFlushes
        var flags = writable ? O_RDWR : O_RDONLY
        if create { flags |= O_CREAT | O_TRUNC }
        if direct { flags |= openDirectFlag }
        do {
            descriptor = try FileDescriptor.open(path, flags: flags, mode: 0o644)
        } catch {
            throw ImageError(path, .io, "cannot open: \(SystemError.message(for: error.errno))")
        }
    }

    public func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] {
        if direct { return try readDirect(at: offset, count: count) }
        var bytes: [UInt8]
        do { bytes = try descriptor.pread(count: count, at: offset) } catch { throw ImageError(path, error) }
        if bytes.count < count { bytes.append(contentsOf: repeatElement(0, count: count - bytes.count)) }
        return bytes
    }

    public func write(_ bytes: ArraySlice<UInt8>, at offset: UInt64) throws(ImageError) {
        if direct { return try writeDirect(bytes, at: offset) }
        do { try descriptor.pwriteAll(bytes, at: offset) } catch { throw ImageError(path, error) }
    }

    /// `preadv` straight into `vectors`. Under `O_DIRECT` that needs a block-aligned offset and block-aligned
    /// buffers; otherwise (a guest buffer of 512 bytes, say) the read goes through the aligned bounce buffers.
    public func read(into vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        if direct && !isDirectAligned(vectors, offset) { return try readByCopy(into: vectors, at: offset) }
        let got: Int
        do { got = try descriptor.preadv(into: vectors, at: offset) } catch { throw ImageError(path, error) }
        // End of file: the rest reads as zeros. (Under O_DIRECT a file ending inside a block reads short
        // at its end, which is the end of file too.)
        if got < vectors.count { vectors.zero(got..<vectors.count) }
    }

    /// `pwritev` straight from `vectors`; under `O_DIRECT` only when aligned (else through `write(_:at:)`,
    /// which reads, patches and writes back partial blocks), holding the blocks' lock stripes shared as
    /// whole-block writes do.
    public func write(from vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        if vectors.count == 0 { return }
        guard direct else {
            do { try descriptor.pwritevAll(vectors, at: offset) } catch { throw ImageError(path, error) }
            return
        }
        guard isDirectAligned(vectors, offset) else { return try writeByCopy(from: vectors, at: offset) }
        try directWriteLocks.holding(offset..<(offset + UInt64(vectors.count)), exclusive: false) { () throws(ImageError) in
            do throws(SystemError) { try descriptor.pwritevAll(vectors, at: offset) } catch { throw ImageError(path, error) }
        }
    }

    func isDirectAligned(_ vectors: borrowing IOVectors, _ offset: UInt64) -> Bool {
        offset % UInt64(Self.directAlignment) == 0 && vectors.isAligned(to: Self.directAlignment)
    }

    func readDirect(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] {
        let a = UInt64(Self.directAlignment)
        let start = offset / a * a
        let end = (offset + UInt64(count) + a - 1) / a * a
        var bytes: [UInt8]
        do { bytes = try descriptor.preadAligned(count: Int(end - start), at: start, alignment: Int(a)) } catch { throw ImageError(path, error) }
        if bytes.count < Int(end - start) { bytes.append(contentsOf: repeatElement(0, count: Int(end - start) - bytes.count)) }
        if start == offset && bytes.count == count { return bytes }
        return Array(bytes[Int(offset - start)..<(Int(offset - start) + count)])
    }

    /// An `O_DIRECT` write. One that covers only part of its first or last block reads those blocks,
    /// patches them and writes the whole span back, holding the blocks' lock stripes exclusively so
    /// that no other write to those blocks lands between the read and the write-back (it would be
    /// undone); writes of whole blocks hold their stripes shared and still run in parallel.
    func writeDirect(_ bytes: ArraySlice<UInt8>, at offset: UInt64) throws(ImageError) {
        if bytes.isEmpty { return }
        let a = UInt64(Self.directAlignment)
        let start = offset / a * a
        let end = (offset + UInt64(bytes.count) + a - 1) / a * a
        let headPartial = start != offset
        let tailPartial = end != offset + UInt64(bytes.count)
        try directWriteLocks.holding(start..<end, exclusive: headPartial || tailPartial) { () throws(ImageError) in
            if !headPartial && !tailPartial {
                do throws(SystemError) { try descriptor.pwriteAligned(bytes, at: offset, alignment: Int(a)) } catch { throw ImageError(path, error) }
                return
            }
            let span = Int(end - start)
            var block = [UInt8](repeating: 0, count: span)
            if headPartial { block.replaceSubrange(0..<Int(a), with: try readDirect(at: start, count: Int(a))) }
            if tailPartial && (span > Int(a) || !headPartial) {
                block.replaceSubrange((span - Int(a))..<span, with: try readDirect(at: end - a, count: Int(a)))
            }
            block.replaceSubrange(Int(offset - start)..<(Int(offset - start) + bytes.count), with: bytes)
            do throws(SystemError) { try descriptor.pwriteAligned(block[...], at: start, alignment: Int(a)) } catch { throw ImageError(path, error) }
        }
    }

    public func sync() throws(ImageError) {
        if ignoresFlushes { return }
        do { try descriptor.sync() } catch { throw ImageError(path, error) }
    }

    public func size() throws(ImageError) -> UInt64 {
        try status().size
    }

    public func status() throws(ImageError) -> FileStatus {
        do { return try descriptor.status() } catch { throw ImageError(path, error) }
    }

    public func truncate(to size: UInt64) throws(ImageError) {
        do { try descriptor.truncate(to: size) } catch { throw ImageError(path, error) }
    }

    /// Punches a hole (`fallocate(PUNCH_HOLE|KEEP_SIZE)`); where the file system cannot (EOPNOTSUPP), writes zeros.
    public func deallocate(at offset: UInt64, length: UInt64) throws(ImageError) {
        do {
            try descriptor.punchHole(at: offset, length: length)
        } catch where error.errno == EOPNOTSUPP {
            var done: UInt64 = 0
            while done < length {
                let count = Int(min(length - done, 1 << 20))
                try write([UInt8](repeating: 0, count: count)[...], at: offset + done)
                done += UInt64(count)
            }
        } catch {
            throw ImageError(path, error)
        }
    }
}

/// Striped readers-writer locks over 64 KiB regions of a file: a range's regions map onto stripes
/// (region index modulo the stripe count), taken in ascending stripe order so that two holders never
/// wait on each other in a cycle.
final class RegionLocks {
    static let regionBits: UInt64 = 16
    let stripes = (0..<64).map { _ in StorageRWLock() }

    /// Runs `body` holding the stripes of every region `range` touches, exclusively or shared.
    func holding<R, E: Error>(_ range: Range<UInt64>, exclusive: Bool, _ body: () throws(E) -> R) throws(E) -> R {
        let n = UInt64(stripes.count)
        let firstRegion = range.lowerBound >> Self.regionBits
        let regions = ((range.upperBound - 1) >> Self.regionBits) - firstRegion + 1
        let first = Int(firstRegion % n), count = Int(min(n, regions))
        func covered(_ stripe: Int) -> Bool { (stripe - first + stripes.count) % stripes.count < count }
        for stripe in stripes.indices where covered(stripe) {
            if exclusive { stripes[stripe].lockExclusive() } else { stripes[stripe].lockShared() }
        }
        defer { for stripe in stripes.indices.reversed() where covered(stripe) { stripes[stripe].unlock() } }
        return try body()
    }
}
