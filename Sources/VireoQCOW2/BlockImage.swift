import VireoSystem

/// A virtual disk: guest-visible bytes `0..<size`, whatever the format on the host.
///
/// This is what the VMM's block devices use. Implementations are thread-safe: several threads may
/// read, write and flush one image concurrently (overlapping writes land in some order, as on a disk).
public protocol BlockImage: AnyObject, Sendable {
    /// The image's path as given when it was opened.
    var path: String { get }
    var format: ImageFormat { get }
    /// Virtual disk size in bytes.
    var size: UInt64 { get }
    var isWritable: Bool { get }
    /// Reads `count` guest bytes at `offset`; the range must lie within `0..<size`.
    func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8]
    /// Writes guest bytes at `offset`; the range must lie within `0..<size`.
    func write(_ bytes: [UInt8], at offset: UInt64) throws(ImageError)
    /// Reads `vectors.count` guest bytes at `offset` straight into `vectors` (zero-copy for raw and qcow2
    /// images: `preadv` into guest buffers); the range must lie within `0..<size`.
    func read(at offset: UInt64, into vectors: borrowing IOVectors) throws(ImageError)
    /// Writes all of `vectors` at `offset` (`pwritev` from guest buffers); the range must lie within `0..<size`.
    func write(from vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError)
    /// Makes every write completed before the call durable (metadata included).
    func flush() throws(ImageError)
    /// The guest no longer needs `length` bytes at `offset`: the image may release their host space;
    /// they read as zeros afterwards.
    func discard(at offset: UInt64, length: UInt64) throws(ImageError)
    /// Makes `length` bytes at `offset` read as zeros; `unmap` lets the image release their host space.
    func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws(ImageError)
    /// Flushes and releases the image; later calls fail.
    func close() throws(ImageError)
}

public enum ImageFormat: String, Sendable, CaseIterable {
    case qcow2
    case raw
}

/// Options for opening an image.
public struct ImageOptions: Sendable {
    public var writable: Bool
    /// Format of the top image; nil probes the file (qcow2 magic, else raw).
    public var format: ImageFormat?
    /// Bytes of L2 tables each qcow2 image in the chain keeps in memory (at least two tables).
    public var l2CacheBytes: Int
    /// Longest backing chain accepted (a guard against runaway recursion, not a format limit).
    public var maxChainDepth: Int
    /// Bypass the host page cache (`O_DIRECT`, qemu's cache=none) for every file of the chain.
    public var directIO = false
    /// Skip flushes (qemu's cache=unsafe): no durability, for output that is redone after a host crash.
    public var ignoreFlushes = false

    public init(writable: Bool = false, format: ImageFormat? = nil, l2CacheBytes: Int = 1 << 20, maxChainDepth: Int = 256,
                directIO: Bool = false) {
        self.directIO = directIO
        self.writable = writable
        self.format = format
        self.l2CacheBytes = l2CacheBytes
        self.maxChainDepth = maxChainDepth
    }
}

extension BlockImage {
    /// Default for formats without a vectored path: through `read(at:count:)`, 1 MiB at a time.
    public func read(at offset: UInt64, into vectors: borrowing IOVectors) throws(ImageError) {
        try checkRange(offset, vectors.count)
        try vectors.fill { (done, count) throws(ImageError) in try read(at: offset + UInt64(done), count: count) }
    }

    /// Default for formats without a vectored path: through `write(_:at:)`, 1 MiB at a time.
    public func write(from vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        try checkRange(offset, vectors.count)
        try vectors.forEachChunk { (done, bytes) throws(ImageError) in try write(bytes, at: offset + UInt64(done)) }
    }

    /// Default for formats that cannot release space: the range is written with zeros.
    public func discard(at offset: UInt64, length: UInt64) throws(ImageError) {
        try writeZeroBytes(at: offset, length: length)
    }

    /// Default for formats that cannot release space: the range is written with zeros.
    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws(ImageError) {
        try writeZeroBytes(at: offset, length: length)
    }

    /// Writes zeros, in 1 MiB pieces.
    func writeZeroBytes(at offset: UInt64, length: UInt64) throws(ImageError) {
        var done: UInt64 = 0
        while done < length {
            let count = Int(min(length - done, 1 << 20))
            try write([UInt8](repeating: 0, count: count), at: offset + done)
            done += UInt64(count)
        }
    }

    func checkRange(_ offset: UInt64, _ count: Int) throws(ImageError) {
        guard count >= 0, offset <= size, UInt64(count) <= size - offset else {
            throw ImageError(path, .outOfRange, "access of \(count) bytes at guest offset \(offset) is beyond the end of the disk (\(size) bytes)")
        }
    }
}

/// Opens an image of either format, with its backing chain.
public func openImage(_ path: String, options: ImageOptions = ImageOptions()) throws(ImageError) -> any BlockImage {
    try openImage(path, options: options, chain: [])
}

struct ChainLink {
    var path: String
    var device: UInt64
    var inode: UInt64
}

func openImage(_ path: String, options: ImageOptions, chain: [ChainLink]) throws(ImageError) -> any BlockImage {
    let file = try PosixHostFile(path: path, writable: options.writable, direct: options.directIO,
                                 ignoresFlushes: options.ignoreFlushes && options.writable)
    let status = try file.status()
    if let earlier = chain.firstIndex(where: { $0.device == status.device && $0.inode == status.inode }) {
        let names = chain[earlier...].map(\.path) + [path]
        throw ImageError(chain[0].path, .backingChain, "backing chain has a cycle: \(names.joined(separator: " -> "))")
    }
    if chain.count >= options.maxChainDepth {
        throw ImageError(chain[0].path, .backingChain, "backing chain is deeper than \(options.maxChainDepth) images (at \(path))")
    }
    let link = ChainLink(path: path, device: status.device, inode: status.inode)
    let format: ImageFormat
    if let given = options.format { format = given } else { format = try probeFormat(file) }
    switch format {
    case .raw:
        return RawImage(file: file, writable: options.writable)
    case .qcow2:
        return try QCOW2Image(file: file, options: options, chain: chain + [link])
    }
}

func probeFormat(_ file: any HostFile) throws(ImageError) -> ImageFormat {
    let size = try file.size()
    guard size >= 4 else { return .raw }
    return try file.read(at: 0, count: 4) == QCOW2Header.magicBytes ? .qcow2 : .raw
}

/// Resolves a backing file name the way QEMU does: relative names are relative to the directory of the overlay.
public func resolveBackingPath(_ backing: String, relativeTo overlay: String) -> String {
    if backing.hasPrefix("/") { return backing }
    guard let slash = overlay.lastIndex(of: "/") else { return backing }
    return String(overlay[...slash]) + backing
}

/// A raw image: the file is the disk.
/// Thread safety: pread/pwrite need no lock; only open/closed state is shared.
public final class RawImage: BlockImage, @unchecked Sendable {
    let file: any HostFile
    public let isWritable: Bool
    public let size: UInt64
    public var path: String { file.path }
    public var format: ImageFormat { .raw }
    var closed = false

    public init(file: any HostFile, writable: Bool) {
        self.file = file
        self.isWritable = writable
        self.size = (try? file.size()) ?? 0
    }

    public static func open(_ path: String, writable: Bool = false) throws(ImageError) -> RawImage {
        RawImage(file: try PosixHostFile(path: path, writable: writable), writable: writable)
    }

    public static func create(_ path: String, size: UInt64) throws(ImageError) {
        let file = try PosixHostFile(path: path, writable: true, create: true)
        try file.truncate(to: size)
        try file.sync()
    }

    public func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] {
        try checkOpen()
        try checkRange(offset, count)
        return try file.read(at: offset, count: count)
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws(ImageError) {
        try checkOpen()
        guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
        try checkRange(offset, bytes.count)
        try file.write(bytes[...], at: offset)
    }

    /// `preadv` at the guest offset: the file is the disk.
    public func read(at offset: UInt64, into vectors: borrowing IOVectors) throws(ImageError) {
        try checkOpen()
        try checkRange(offset, vectors.count)
        try file.read(into: vectors, at: offset)
    }

    /// `pwritev` at the guest offset.
    public func write(from vectors: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        try checkOpen()
        guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
        try checkRange(offset, vectors.count)
        try file.write(from: vectors, at: offset)
    }

    public func flush() throws(ImageError) {
        try checkOpen()
        if isWritable { try file.sync() }
    }

    /// Punches a hole in the file (`fallocate(PUNCH_HOLE|KEEP_SIZE)`), so the host space is freed.
    public func discard(at offset: UInt64, length: UInt64) throws(ImageError) {
        try writeZeroes(at: offset, length: length, unmap: true)
    }

    /// With `unmap`, punches a hole; otherwise writes zeros, keeping the space allocated (as a later
    /// write into it must not fail for lack of space).
    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool) throws(ImageError) {
        try checkOpen()
        guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
        guard length <= UInt64(Int.max) else { throw ImageError(path, .outOfRange, "zero range of \(length) bytes is too long") }
        try checkRange(offset, Int(length))
        if unmap {
            try file.deallocate(at: offset, length: length)
        } else {
            try writeZeroBytes(at: offset, length: length)
        }
    }

    public func close() throws(ImageError) {
        guard !closed else { return }
        if isWritable { try file.sync() }
        closed = true
    }

    func checkOpen() throws(ImageError) {
        if closed { throw ImageError(path, .invalidArgument, "image is closed") }
    }
}
