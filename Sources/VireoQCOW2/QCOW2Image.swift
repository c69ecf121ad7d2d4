import VireoSystem

/// A qcow2 image (versions 2 and 3) opened for reading, or reading and writing.
///
/// Metadata caching and write ordering:
/// - L2 tables and refcount blocks are cached (LRU) and written back lazily; the L1 table is held in
///   memory and its changed entries are written at ``flush()``.
/// - Refcount increments reach the disk, followed by a barrier, before any L2 table that points at the
///   newly allocated clusters is written; new guest data is covered by the same barrier. New L2 tables
///   reach the disk, followed by a barrier, before the L1 entries that point at them. A crash at any
///   point therefore leaves, at worst, leaked clusters (refcount higher than references), never a
///   reference to a cluster whose refcount is zero.
/// - Refcount blocks are only ever created write-through (block, barrier, refcount table entry) and the
///   refcount table only moves by writing a complete new table, a barrier, then the header fields.
///
/// Thread safety: every public method may be called from several threads at once. Metadata is
/// guarded by one mutex; reads, and overwrites of clusters the image alone owns, do their data I/O
/// outside it, holding `dataLifetime` shared so that no cluster they touch is freed or shared meanwhile.
public final class QCOW2Image: BlockImage, @unchecked Sendable {
    static let l1OffsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let l2OffsetMask: UInt64 = 0x00FF_FFFF_FFFF_FE00
    static let refcountTableOffsetMask: UInt64 = 0xFFFF_FFFF_FFFF_FE00
    static let copied: UInt64 = 1 << 63
    static let compressed: UInt64 = 1 << 62
    static let zeroFlag: UInt64 = 1
    /// Host offsets must fit in bits 9…55 of a table entry.
    static let maxHostOffset: UInt64 = 1 << 56

    let file: any HostFile
    public internal(set) var header: QCOW2Header
    public let isWritable: Bool
    /// The backing image (read-only), if the header names one.
    public let backing: (any BlockImage)?
    /// The backing file name resolved against this image's directory.
    public let backingPath: String?
    public var path: String { file.path }
    public var format: ImageFormat { .qcow2 }
    public var size: UInt64 {
        lock.lock()
        defer { lock.unlock() }
        return header.size
    }
    /// Serialises metadata (tables, caches, allocation); guest data I/O runs outside it.
    let lock = StorageMutex()
    /// Held shared by guest data I/O done outside `lock`, exclusively (briefly) before clusters are freed or shared.
    let dataLifetime = StorageRWLock()
    /// Clusters whose refcount drops once the metadata that stopped referencing them is on disk.
    var deferredDecrements: [UInt64] = []
    /// Where the next compressed cluster may be packed (host byte offset; 0: start a new cluster).
    var compressedCursor: UInt64 = 0

    let clusterBits: Int
    let clusterSize: Int
    let l2Entries: Int
    let refcountBits: Int
    let refcountBlockEntries: Int
    let options: ImageOptions

    var l1: [UInt64]
    var l1Dirty: Set<Int> = []
    var refcountTable: [UInt64]
    var l2Cache: MetadataCache<[UInt64]>
    var refcountCache: MetadataCache<[UInt8]>
    /// Host offsets of clusters holding metadata: guest data must never be written over them.
    var metadataClusters: Set<UInt64> = []
    /// Lowest cluster index that may be free.
    var freeHint: UInt64 = 0
    /// One past the highest cluster index allocated during this session (allocated clusters may not be written yet).
    var allocationEnd: UInt64 = 0
    var hostFileSize: UInt64
    /// Refcount increments or new data written since the last barrier: an L2 table must not be written before one.
    var needsBarrierBeforeL2 = false
    /// L2 tables written since the last barrier: L1 entries must not be written before one.
    var needsBarrierBeforeL1 = false
    var closed = false

    /// Opens a qcow2 image by path.
    public static func open(_ path: String, options: ImageOptions = ImageOptions()) throws(ImageError) -> QCOW2Image {
        var options = options
        options.format = .qcow2
        guard let image = try openImage(path, options: options) as? QCOW2Image else {
            throw ImageError(path, .invalid, "not a qcow2 image")
        }
        return image
    }

    /// Opens a qcow2 image on an already open host file (tests use a recording file). A backing file, if
    /// named, is opened by path relative to `file.path`.
    public convenience init(file: any HostFile, options: ImageOptions = ImageOptions()) throws(ImageError) {
        try self.init(file: file, options: options, chain: [ChainLink(path: file.path, device: 0, inode: 0)])
    }

    init(file: any HostFile, options: ImageOptions, chain: [ChainLink]) throws(ImageError) {
        self.file = file
        self.options = options
        let path = file.path
        let fileSize = try file.size()
        hostFileSize = fileSize
        var head = try file.read(at: 0, count: Int(min(fileSize, 1 << 21)))
        if head.count >= 24 {
            let bits = head.be32(20)
            if (9...21).contains(bits), head.count > 1 << bits { head.removeLast(head.count - (1 << bits)) }
        }
        let header = try QCOW2Header.parse(head, fileSize: fileSize, path: path)
        self.header = header
        clusterBits = Int(header.clusterBits)
        clusterSize = header.clusterSize
        l2Entries = clusterSize / 8
        refcountBits = header.refcountBits
        refcountBlockEntries = clusterSize * 8 / refcountBits
        l2Cache = MetadataCache(capacity: max(2, options.l2CacheBytes / clusterSize))
        refcountCache = MetadataCache(capacity: max(4, (256 << 10) / clusterSize))
        l1 = header.l1Size == 0 ? [] : try file.read(at: header.l1TableOffset, count: Int(header.l1Size) * 8).be64Entries()
        refcountTable = try file.read(
            at: header.refcountTableOffset, count: Int(header.refcountTableClusters) * clusterSize).be64Entries()
        allocationEnd = ceilDiv(fileSize, UInt64(clusterSize))

        if options.writable {
            if header.isCorrupt {
                throw ImageError(path, .readOnly, "image is marked corrupt (incompatible feature bit 1); it can only be opened read-only (repair with qemu-img check -r all)")
            }
        }
        isWritable = options.writable

        if let name = header.backingFile {
            let resolved = resolveBackingPath(name, relativeTo: path)
            backingPath = resolved
            var backingOptions = options
            backingOptions.writable = false
            switch header.backingFormat {
            case nil: backingOptions.format = nil
            case "qcow2": backingOptions.format = .qcow2
            case "raw": backingOptions.format = .raw
            case let other?:
                throw ImageError(path, .unsupported, "backing file format '\(other)' is not supported (only qcow2 and raw)")
            }
            do {
                backing = try openImage(resolved, options: backingOptions, chain: chain)
            } catch where error.kind == .backingChain {
                throw error
            } catch {
                throw ImageError(path, .backingChain, "cannot open backing file '\(name)': \(error.description)")
            }
        } else {
            backing = nil
            backingPath = nil
        }

        try collectMetadataClusters()
        if header.snapshotCount > 0 { rebuildMetadataClusters((try? readSnapshotTable()) ?? []) }
        if options.writable { try prepareForWriting() }
    }

    deinit {
        if isWritable && !closed { try? flushMetadata() }
    }

    func collectMetadataClusters() throws(ImageError) {
        let cs = UInt64(clusterSize)
        metadataClusters.insert(0)
        for i in 0..<ceilDiv(UInt64(header.l1Size) * 8, cs) { metadataClusters.insert(header.l1TableOffset + i * cs) }
        for i in 0..<UInt64(header.refcountTableClusters) { metadataClusters.insert(header.refcountTableOffset + i * cs) }
        for entry in refcountTable where entry & Self.refcountTableOffsetMask != 0 {
            metadataClusters.insert(entry & Self.refcountTableOffsetMask)
        }
        for entry in l1 where entry & Self.l1OffsetMask != 0 { metadataClusters.insert(entry & Self.l1OffsetMask) }
    }

    /// Honours the header on a write-open: a dirty image is checked first, autoclear bits are cleared.
    func prepareForWriting() throws(ImageError) {
        guard header.version == 3 else { return }
        if header.isDirty {
            let report = try check()
            if report.corruptions > 0 {
                throw ImageError(path, .invalid, "image has the dirty bit set and its refcounts are inconsistent (\(report.corruptions) errors); repair it with qemu-img check -r all")
            }
            header.incompatibleFeatures &= ~QCOW2Header.Incompatible.dirty
            try writeHost(.be64(header.incompatibleFeatures), at: 72)
            try barrier()
        }
        if header.autoclearFeatures != 0 {
            // We maintain none of the autoclear features (e.g. bitmaps): the spec says to clear them.
            header.autoclearFeatures = 0
            try writeHost(.be64(0), at: 88)
            try barrier()
        }
    }

    // MARK: Guest I/O

    /// One piece of a guest read, resolved under the metadata lock and performed outside it.
    enum ReadSegment {
        case host(UInt64, Int)
        case zero(Int)
        case backing(UInt64, Int)
        case compressed(UInt64, Int, within: Int, count: Int)
    }

    public func read(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try IOVectors.withBytes(of: &bytes) { (vectors) throws(ImageError) in try read(at: offset, into: vectors) }
        return bytes
    }

    /// Resolves the range through the L1/L2 tables (qcow2 spec, "Cluster mapping") under the metadata
    /// lock, then, outside it, reads each host-contiguous run of data clusters with one `preadv` straight
    /// into `data`; zero clusters are zeroed, unallocated ones come from the backing file (zeros without one).
    public func read(at offset: UInt64, into data: borrowing IOVectors) throws(ImageError) {
        lock.lock()
        let segments: [ReadSegment]
        do {
            try checkOpen()
            try checkGuestRange(offset, data.count)
            segments = try mapForRead(offset, data.count)
        } catch {
            lock.unlock()
            throw error
        }
        // Data clusters mapped above cannot be freed (and reused) until this shared hold ends.
        dataLifetime.lockShared()
        lock.unlock()
        defer { dataLifetime.unlock() }
        var position = 0
        for segment in segments {
            switch segment {
            case let .host(host, n):
                try data.withSlice(position..<(position + n)) { (piece) throws(ImageError) in try file.read(into: piece, at: host) }
                position += n
            case let .zero(n):
                data.zero(position..<(position + n))
                position += n
            case let .backing(guest, n):
                try data.withSlice(position..<(position + n)) { (piece) throws(ImageError) in try readBacking(at: guest, into: piece) }
                position += n
            case let .compressed(entry, guest, within, n):
                let cluster = try decompressCluster(entry, guestOffset: UInt64(guest))
                data.store(cluster[within..<(within + n)], at: position)
                position += n
            }
        }
    }

    /// Resolves a guest range into host reads, merging host-contiguous clusters. Caller holds the lock.
    func mapForRead(_ offset: UInt64, _ count: Int) throws(ImageError) -> [ReadSegment] {
        var segments: [ReadSegment] = []
        var position = offset
        var remaining = count
        while remaining > 0 {
            let cluster = position >> UInt64(clusterBits)
            let within = Int(position & UInt64(clusterSize - 1))
            let n = min(remaining, clusterSize - within)
            let entry = try l2Entry(guestCluster: cluster)
            let host = entry & Self.l2OffsetMask
            if entry & Self.compressed != 0 {
                segments.append(.compressed(entry, Int(position), within: within, count: n))
            } else if header.version == 3 && entry & Self.zeroFlag != 0 {
                if case let .zero(m)? = segments.last { segments[segments.count - 1] = .zero(m + n) } else { segments.append(.zero(n)) }
            } else if host != 0 {
                try checkDataCluster(host, guestOffset: position)
                let start = host + UInt64(within)
                if case let .host(h, m)? = segments.last, h + UInt64(m) == start {
                    segments[segments.count - 1] = .host(h, m + n)
                } else {
                    segments.append(.host(start, n))
                }
            } else {
                if case let .backing(p, m)? = segments.last { segments[segments.count - 1] = .backing(p, m + n) } else { segments.append(.backing(position, n)) }
            }
            position += UInt64(n)
            remaining -= n
        }
        return segments
    }

    public func write(_ bytes: [UInt8], at offset: UInt64) throws(ImageError) {
        try IOVectors.withBytes(bytes) { (vectors) throws(ImageError) in try write(from: vectors, at: offset) }
    }

    /// Maps the range cluster by cluster under the metadata lock (qcow2 spec, "Cluster mapping"): clusters
    /// this image alone owns are overwritten in place and unallocated ones whose untouched part reads as
    /// zeros get fresh clusters, both then written outside the lock with one `pwritev` per host-contiguous
    /// run straight from `data`; any other cluster (compressed, shared, with backing data) is copied and
    /// written under the lock.
    public func write(from data: borrowing IOVectors, at offset: UInt64) throws(ImageError) {
        lock.lock()
        var inPlace: [(host: UInt64, start: Int, end: Int)] = []
        var fresh: [FreshCluster] = []
        do throws(ImageError) {
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            try checkGuestRange(offset, data.count)
            var done = 0
            while done < data.count {
                let position = offset + UInt64(done)
                let within = Int(position & UInt64(clusterSize - 1))
                let n = min(data.count - done, clusterSize - within)
                let guestCluster = position >> UInt64(clusterBits)
                // Fast path: an allocated cluster this image alone owns is overwritten outside the lock.
                let entry = try l2Entry(guestCluster: guestCluster)
                let host = entry & Self.l2OffsetMask
                let l1Entry = l1[Int(guestCluster / UInt64(l2Entries))]
                if host != 0, entry & Self.copied != 0, entry & (Self.compressed | Self.zeroFlag) == 0,
                   l1Entry & Self.copied != 0, host % UInt64(clusterSize) == 0, !metadataClusters.contains(host) {
                    let start = host + UInt64(within)
                    if let last = inPlace.last, last.host + UInt64(last.end - last.start) == start, last.end == done {
                        inPlace[inPlace.count - 1].end = done + n
                    } else {
                        inPlace.append((start, done, done + n))
                    }
                } else if host == 0, entry & Self.compressed == 0, backing == nil || (header.version == 3 && entry & Self.zeroFlag != 0),
                          clusterSize >= PosixHostFile.directAlignment, l1Entry & Self.copied != 0 {
                    // Fast path: a new cluster whose untouched part reads as zeros gets its data written
                    // outside the lock, and the L2 entry set afterwards (see `commitFreshClusters`).
                    let newHost = try allocateCluster() * UInt64(clusterSize)
                    let neverWritten = newHost >= hostFileSize
                    hostFileSize = max(hostFileSize, newHost + UInt64(neverWritten ? within + n : clusterSize))
                    fresh.append(FreshCluster(guestCluster: guestCluster, host: newHost, l1Entry: l1Entry, l2Entry: entry,
                                              within: within, start: done, end: done + n, neverWritten: neverWritten))
                } else {
                    try writeCluster(guestCluster, within: within, data: data.bytes(done..<(done + n))[...])
                }
                done += n
            }
        } catch {
            lock.unlock()
            throw error
        }
        if inPlace.isEmpty && fresh.isEmpty {
            lock.unlock()
            return
        }
        dataLifetime.lockShared()
        lock.unlock()
        do throws(ImageError) {
            for piece in inPlace {
                try data.withSlice(piece.start..<piece.end) { (run) throws(ImageError) in try file.write(from: run, at: piece.host) }
            }
            // New clusters past the old end of the file (the rest reads as zeros already) and whole new
            // clusters take just the guest data, host-contiguous pieces in one write.
            var direct: [(host: UInt64, start: Int, end: Int)] = []
            for cluster in fresh where cluster.neverWritten || cluster.end - cluster.start == clusterSize {
                let at = cluster.host + UInt64(cluster.within)
                if let last = direct.last, last.host + UInt64(last.end - last.start) == at, last.end == cluster.start {
                    direct[direct.count - 1].end = cluster.end
                } else {
                    direct.append((at, cluster.start, cluster.end))
                }
            }
            for piece in direct {
                try data.withSlice(piece.start..<piece.end) { (run) throws(ImageError) in try file.write(from: run, at: piece.host) }
            }
            for cluster in fresh where !(cluster.neverWritten || cluster.end - cluster.start == clusterSize) {
                var full = [UInt8](repeating: 0, count: clusterSize)
                full.replaceSubrange(cluster.within..<(cluster.within + cluster.end - cluster.start), with: data.bytes(cluster.start..<cluster.end))
                try file.write(full[...], at: cluster.host)
            }
        } catch {
            dataLifetime.unlock()
            throw error  // clusters allocated for fresh data stay leaked, never referenced
        }
        dataLifetime.unlock()
        if !fresh.isEmpty { try commitFreshClusters(fresh, data) }
    }

    /// A guest cluster written through the fast allocation path: the host cluster already holds the
    /// data, the L2 entry is not set yet.
    struct FreshCluster {
        var guestCluster: UInt64
        var host: UInt64
        /// The L1 and L2 entries seen at allocation; the entry is set only if both are unchanged.
        var l1Entry: UInt64
        var l2Entry: UInt64
        var within: Int
        var start: Int
        var end: Int
        var neverWritten: Bool
    }

    /// Points the L2 entries at clusters whose data is written. The data went to the file before the
    /// entry changes, so the barrier before the L2 table's write-back covers it (crash: at worst a
    /// leak). If the mapping changed meanwhile (a racing write to the same cluster, a snapshot, a
    /// discard), the new cluster is freed and the write redone the ordinary way, under the lock.
    func commitFreshClusters(_ fresh: [FreshCluster], _ data: borrowing IOVectors) throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            let cs = UInt64(clusterSize)
            for cluster in fresh {
                let l1Index = Int(cluster.guestCluster / UInt64(l2Entries))
                let l2Offset = l1[l1Index] & Self.l1OffsetMask
                if l1[l1Index] == cluster.l1Entry, try l2Entry(guestCluster: cluster.guestCluster) == cluster.l2Entry {
                    try loadL2(l2Offset, l1Index: l1Index)
                    let index = Int(cluster.guestCluster % UInt64(l2Entries))
                    l2Cache.modify(l2Offset) { $0[index] = cluster.host | Self.copied }
                    needsBarrierBeforeL2 = true
                } else {
                    try setRefcount(cluster.host / cs, 0)
                    forgetFreedCluster(cluster.host / cs)
                    try writeCluster(cluster.guestCluster, within: cluster.within, data: data.bytes(cluster.start..<cluster.end)[...])
                }
            }
        }
    }

    public func flush() throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { return }
            try flushMetadata()
        }
    }

    /// Writes back every cached change in order, with barriers, then applies deferred refcount decrements.
    func flushMetadata() throws(ImageError) {
        try writeBackAllMetadata()
        try barrier()
        if !deferredDecrements.isEmpty {
            try applyDeferredDecrements()
            try writeBackRefcountBlocks()
            try barrier()
        }
    }

    public func close() throws(ImageError) {
        try locked { () throws(ImageError) in
            guard !closed else { return }
            if isWritable { try flushMetadata() }
            try backing?.close()
            closed = true
        }
    }

    /// Runs `body` with the metadata lock held.
    func locked<R>(_ body: () throws(ImageError) -> R) throws(ImageError) -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// Waits until no guest data I/O started outside the lock is in flight. Caller holds the lock; after
    /// this, clusters may be freed or shared without a concurrent read or write touching them.
    func quiesceDataIO() {
        dataLifetime.lockExclusive()
        dataLifetime.unlock()
    }

    func checkGuestRange(_ offset: UInt64, _ count: Int) throws(ImageError) {
        guard count >= 0 else { throw ImageError(path, .outOfRange, "negative access length \(count)") }
        try checkGuestRange(offset, UInt64(count))
    }

    func checkGuestRange(_ offset: UInt64, _ count: UInt64) throws(ImageError) {
        guard offset <= header.size, count <= header.size - offset else {
            throw ImageError(path, .outOfRange, "access of \(count) bytes at guest offset \(offset) is beyond the end of the disk (\(header.size) bytes)")
        }
    }

    func checkOpen() throws(ImageError) {
        if closed { throw ImageError(path, .invalidArgument, "image is closed") }
    }

    func readBacking(at offset: UInt64, count: Int) throws(ImageError) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        try IOVectors.withBytes(of: &bytes) { (vectors) throws(ImageError) in try readBacking(at: offset, into: vectors) }
        return bytes
    }

    /// Reads guest bytes this image does not allocate from the backing file; past its end (or without
    /// one) they read as zeros (qcow2 spec: a backing file smaller than the image reads as zeros beyond it).
    func readBacking(at offset: UInt64, into data: borrowing IOVectors) throws(ImageError) {
        guard let backing, offset < backing.size else { return data.zero(0..<data.count) }
        let available = Int(min(UInt64(data.count), backing.size - offset))
        try data.withSlice(0..<available) { (piece) throws(ImageError) in try backing.read(at: offset, into: piece) }
        if available < data.count { data.zero(available..<data.count) }
    }

    func checkDataCluster(_ host: UInt64, guestOffset: UInt64) throws(ImageError) {
        guard host % UInt64(clusterSize) == 0 else {
            throw ImageError(path, .invalid, "L2 entry for guest offset \(guestOffset) points to unaligned host offset \(hex(host))")
        }
    }

    /// The L2 entry of a guest cluster (0 when its L2 table is not allocated).
    func l2Entry(guestCluster: UInt64) throws(ImageError) -> UInt64 {
        let l1Index = Int(guestCluster / UInt64(l2Entries))
        let l2Offset = l1[l1Index] & Self.l1OffsetMask
        if l2Offset == 0 { return 0 }
        try loadL2(l2Offset, l1Index: l1Index)
        let index = Int(guestCluster % UInt64(l2Entries))
        return l2Cache.slots[l2Offset]!.value[index]
    }

    func loadL2(_ offset: UInt64, l1Index: Int) throws(ImageError) {
        if l2Cache.get(offset) != nil { return }
        guard offset % UInt64(clusterSize) == 0 else {
            throw ImageError(path, .invalid, "L1 entry \(l1Index) points to unaligned L2 table offset \(hex(offset))")
        }
        guard offset < hostFileSize, UInt64(clusterSize) <= hostFileSize - offset else {
            throw ImageError(path, .invalid, "L2 table offset \(hex(offset)) (L1 entry \(l1Index)) lies beyond the end of the file (\(hostFileSize) bytes)")
        }
        try makeRoomInL2Cache()
        l2Cache.insert(offset, try file.read(at: offset, count: clusterSize).be64Entries(), dirty: false)
    }

    func writeCluster(_ guestCluster: UInt64, within: Int, data: ArraySlice<UInt8>) throws(ImageError) {
        let cs = UInt64(clusterSize)
        let guestOffset = guestCluster << UInt64(clusterBits) + UInt64(within)
        let l1Index = Int(guestCluster / UInt64(l2Entries))
        let index = Int(guestCluster % UInt64(l2Entries))
        let l2Offset = try l2TableForWrite(l1Index, guestOffset: guestOffset)
        let entry = l2Cache.slots[l2Offset]!.value[index]
        let host = entry & Self.l2OffsetMask
        let zero = header.version == 3 && entry & Self.zeroFlag != 0
        let whole = within == 0 && data.count == clusterSize

        func setEntry(_ value: UInt64) throws(ImageError) {
            try loadL2(l2Offset, l1Index: l1Index)
            l2Cache.modify(l2Offset) { $0[index] = value }
        }
        /// Writes a complete new cluster and points the entry at it.
        func allocateAndWrite(_ full: [UInt8]) throws(ImageError) {
            let newHost = try allocateCluster() * cs
            try writeHost(full[...], at: newHost)
            needsBarrierBeforeL2 = true
            try setEntry(newHost | Self.copied)
        }

        if entry & Self.compressed != 0 {
            var full = try decompressCluster(entry, guestOffset: guestOffset)
            full.replaceSubrange(within..<(within + data.count), with: data)
            try allocateAndWrite(full)
            deferredDecrements += compressedClusters(entry)
            return
        }
        if host != 0 {
            try checkDataCluster(host, guestOffset: guestOffset)
            guard !metadataClusters.contains(host) else {
                throw ImageError(path, .invalid, "guest offset \(guestOffset) maps onto metadata at host offset \(hex(host)); refusing to write (image is corrupt)")
            }
            var owned = entry & Self.copied != 0
            if !owned { owned = try refcount(host / cs) == 1 }
            if owned {
                if zero {
                    // A preallocated zero cluster: write all of it, then drop the flag.
                    var full = [UInt8](repeating: 0, count: clusterSize)
                    full.replaceSubrange(within..<(within + data.count), with: data)
                    try writeHost(full[...], at: host)
                    needsBarrierBeforeL2 = true
                    try setEntry(host | Self.copied)
                } else {
                    try writeHost(data, at: host + UInt64(within))
                    if entry & Self.copied == 0 { try setEntry(host | Self.copied) }
                }
                return
            }
            // Shared with a snapshot: copy on write.
            var full: [UInt8]
            if whole {
                full = Array(data)
            } else {
                full = zero ? [UInt8](repeating: 0, count: clusterSize) : try file.read(at: host, count: clusterSize)
                full.replaceSubrange(within..<(within + data.count), with: data)
            }
            try allocateAndWrite(full)
            deferredDecrements.append(host / cs)
            return
        }

        // Allocate a cluster; copy what the write does not cover from the backing file (or zeros).
        if !whole && (zero || backing == nil) {
            let newHost = try allocateCluster() * cs
            if newHost >= hostFileSize {
                // Never written: past the end of the file the cluster reads as zeros already, so only the
                // guest data is written (the file may end inside this last cluster, as the spec allows).
                try writeHost(data, at: newHost + UInt64(within))
            } else {
                var full = [UInt8](repeating: 0, count: clusterSize)
                full.replaceSubrange(within..<(within + data.count), with: data)
                try writeHost(full[...], at: newHost)
            }
            needsBarrierBeforeL2 = true
            try setEntry(newHost | Self.copied)
            return
        }
        var full: [UInt8]
        if whole {
            full = Array(data)
        } else {
            full = zero ? [UInt8](repeating: 0, count: clusterSize)
                : try readBacking(at: guestCluster << UInt64(clusterBits), count: clusterSize)
            full.replaceSubrange(within..<(within + data.count), with: data)
        }
        try allocateAndWrite(full)
    }

    /// The L2 table for an L1 index, allocating an empty one if there is none and copying one shared with
    /// a snapshot. Leaves it cached.
    func l2TableForWrite(_ l1Index: Int, guestOffset: UInt64) throws(ImageError) -> UInt64 {
        let cs = UInt64(clusterSize)
        let entry = l1[l1Index]
        let offset = entry & Self.l1OffsetMask
        if offset != 0 {
            if entry & Self.copied == 0 {
                if try refcount(offset / cs) == 1 {
                    l1[l1Index] = offset | Self.copied
                    l1Dirty.insert(l1Index)
                } else {
                    try loadL2(offset, l1Index: l1Index)
                    let table = l2Cache.slots[offset]!.value
                    let newOffset = try allocateCluster() * cs
                    try makeRoomInL2Cache()
                    l2Cache.insert(newOffset, table, dirty: true)
                    metadataClusters.insert(newOffset)
                    l1[l1Index] = newOffset | Self.copied
                    l1Dirty.insert(l1Index)
                    deferredDecrements.append(offset / cs)
                    return newOffset
                }
            }
            try loadL2(offset, l1Index: l1Index)
            return offset
        }
        let newOffset = try allocateCluster() * cs
        try makeRoomInL2Cache()
        l2Cache.insert(newOffset, [UInt64](repeating: 0, count: l2Entries), dirty: true)
        metadataClusters.insert(newOffset)
        l1[l1Index] = newOffset | Self.copied
        l1Dirty.insert(l1Index)
        return newOffset
    }

    /// Host clusters (indices) a compressed L2 entry's data touches.
    func compressedClusters(_ entry: UInt64) -> [UInt64] {
        let (offset, length) = compressedExtent(entry)
        let cs = UInt64(clusterSize)
        return Array((offset / cs)...((offset + length - 1) / cs))
    }

    /// Sector-aligned host start and length of a compressed cluster's data.
    func compressedExtent(_ entry: UInt64) -> (offset: UInt64, length: UInt64) {
        let shift = UInt64(62 - (clusterBits - 8))
        let hostOffset = entry & ((1 << shift) - 1)
        let sectors = ((entry & ((1 << 62) - 1)) >> shift) + 1
        return (hostOffset & ~511, sectors * 512)
    }

    /// Drops refcounts whose references are gone from the on-disk metadata (call after it is written).
    func applyDeferredDecrements() throws(ImageError) {
        let list = deferredDecrements
        deferredDecrements = []
        var quiesced = false
        for cluster in list {
            let count = try refcount(cluster)
            guard count > 0 else { continue }
            if count == 1 && !quiesced {
                quiesceDataIO()
                quiesced = true
            }
            try setRefcount(cluster, count - 1)
            if count == 1 { forgetFreedCluster(cluster) }
        }
    }

    /// A cluster whose refcount reached zero: it is no longer metadata, and no cached table lives there.
    func forgetFreedCluster(_ cluster: UInt64) {
        let offset = cluster * UInt64(clusterSize)
        if compressedCursor / UInt64(clusterSize) == cluster { compressedCursor = 0 }
        metadataClusters.remove(offset)
        l2Cache.remove(offset)
    }

    // MARK: Host writes and ordering

    func writeHost(_ bytes: ArraySlice<UInt8>, at offset: UInt64) throws(ImageError) {
        try file.write(bytes, at: offset)
        hostFileSize = max(hostFileSize, offset + UInt64(bytes.count))
    }

    func writeHost(_ bytes: [UInt8], at offset: UInt64) throws(ImageError) {
        try writeHost(bytes[...], at: offset)
    }

    func barrier() throws(ImageError) {
        try file.sync()
        needsBarrierBeforeL2 = false
        needsBarrierBeforeL1 = false
    }

    func makeRoomInL2Cache() throws(ImageError) {
        while l2Cache.isFull, let victim = l2Cache.victim {
            if l2Cache.isDirty(victim) { try writeBackL2(victim) }
            l2Cache.remove(victim)
        }
    }

    func writeBackL2(_ offset: UInt64) throws(ImageError) {
        try writeBackRefcountBlocks()
        if needsBarrierBeforeL2 { try barrier() }
        try writeHost([UInt8](be64Entries: l2Cache.slots[offset]!.value), at: offset)
        l2Cache.markClean(offset)
        needsBarrierBeforeL1 = true
    }

    func writeBackRefcountBlocks() throws(ImageError) {
        for key in refcountCache.dirtyKeys {
            try writeHost(refcountCache.slots[key]!.value, at: key)
            refcountCache.markClean(key)
        }
    }

    func writeBackAllMetadata() throws(ImageError) {
        try writeBackRefcountBlocks()
        for key in l2Cache.dirtyKeys { try writeBackL2(key) }
        if !l1Dirty.isEmpty {
            if needsBarrierBeforeL2 || needsBarrierBeforeL1 { try barrier() }
            for index in l1Dirty.sorted() {
                try writeHost(.be64(l1[index]), at: header.l1TableOffset + UInt64(index) * 8)
            }
            l1Dirty.removeAll()
        }
    }
}
