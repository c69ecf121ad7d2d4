/// Resize, preallocation, backing file changes, commit and rebase.

/// How much of a new qcow2 image is allocated up front (qemu-img's `preallocation=`).
public enum Preallocation: String, Sendable, CaseIterable {
    /// Nothing: clusters are allocated on first write.
    case off
    /// L2 tables and data clusters are allocated (reading as zeros), the file is extended sparsely.
    case metadata
    /// As `metadata`, and every data cluster is written with zeros.
    case full
}

/// Reports progress of a long operation as a fraction in 0…1.
public typealias ProgressHandler = (Double) -> Void

extension QCOW2Image {
    /// Changes the virtual size. Growing may move the L1 table; shrinking is allowed only when no data
    /// cluster lies past the new end (zero clusters there are dropped).
    public func resize(to newSize: UInt64) throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            let cs = UInt64(clusterSize)
            guard newSize <= UInt64(Int64.max) else { throw ImageError(path, .invalidArgument, "size \(newSize) is too large") }
            if newSize < header.size {
                let firstGone = ceilDiv(newSize, cs)
                var cluster = firstGone
                let end = ceilDiv(header.size, cs)
                while cluster < end {
                    let l1Index = Int(cluster / UInt64(l2Entries))
                    if l1[l1Index] & Self.l1OffsetMask == 0 {
                        cluster = UInt64(l1Index + 1) * UInt64(l2Entries)
                        continue
                    }
                    if try l2Entry(guestCluster: cluster) & (Self.l2OffsetMask | Self.compressed) != 0 {
                        throw ImageError(path, .invalidArgument, "cannot shrink to \(newSize) bytes: guest offset \(cluster * cs) is allocated (discard it first)")
                    }
                    cluster += 1
                }
                // Zero-flagged entries past the end go too (the last, partial cluster keeps its data).
                if firstGone < end { try setClusters(firstGone..<end, zero: false, keepAllocation: false) }
            }
            try flushMetadata()
            let needed = QCOW2Header.l1EntriesNeeded(size: newSize, clusterBits: header.clusterBits)
            if needed > UInt64(header.l1Size) {
                guard needed * 8 <= QCOW2Header.maxL1Bytes else {
                    throw ImageError(path, .invalidArgument, "size \(newSize) needs an L1 table beyond 32 MiB")
                }
                try growL1Table(to: needed)
            }
            try writeHost(.be64(newSize), at: 24)
            try barrier()
            header.size = newSize
            try flushMetadata()
        }
    }

    /// Moves the active L1 table to new clusters with `entries` entries (the new ones empty): new table,
    /// barrier, header fields, barrier, then the old table's clusters are freed. Caller holds the lock.
    func growL1Table(to entries: UInt64) throws(ImageError) {
        let cs = UInt64(clusterSize)
        let newL1 = l1 + [UInt64](repeating: 0, count: Int(entries) - l1.count)
        let clusters = ceilDiv(entries * 8, cs)
        let offset = try allocateContiguous(clusters) * cs
        try writeHost([UInt8](be64Entries: newL1), at: offset)
        try writeBackRefcountBlocks()
        try barrier()
        var fields = [UInt8](repeating: 0, count: 12)
        fields.setBE32(UInt32(entries), at: 0)
        fields.setBE64(offset, at: 4)
        try writeHost(fields, at: 36)
        try barrier()
        let oldOffset = header.l1TableOffset
        let oldClusters = ceilDiv(UInt64(header.l1Size) * 8, cs)
        header.l1TableOffset = offset
        header.l1Size = UInt32(entries)
        l1 = newL1
        if oldClusters > 0 {
            for c in (oldOffset / cs)..<(oldOffset / cs + oldClusters) { try adjustRefcount(c, by: -1) }
        }
        rebuildMetadataClusters(try readSnapshotTable())
    }

    /// Allocates every guest cluster not yet allocated (metadata), writing zeros into them (full).
    public func preallocate(_ mode: Preallocation, progress: ProgressHandler? = nil) throws(ImageError) {
        guard mode != .off else { return }
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            let cs = UInt64(clusterSize)
            let total = ceilDiv(header.size, cs)
            let zeros = [UInt8](repeating: 0, count: clusterSize)
            for cluster in 0..<total {
                let l1Index = Int(cluster / UInt64(l2Entries))
                let index = Int(cluster % UInt64(l2Entries))
                let l2Offset = try l2TableForWrite(l1Index, guestOffset: cluster * cs)
                if l2Cache.slots[l2Offset]!.value[index] & Self.l2OffsetMask != 0 { continue }
                let host = try allocateCluster() * cs
                if mode == .full { try writeHost(zeros, at: host) }
                try loadL2(l2Offset, l1Index: l1Index)
                l2Cache.modify(l2Offset) { $0[index] = host | Self.copied }
                if let progress, cluster % 1024 == 0 { progress(Double(cluster) / Double(total)) }
            }
            try flushMetadata()
            // Clusters allocated but never written must read as zeros: extend the file over them.
            let end = allocationEnd * cs
            if try file.size() < end { try file.truncate(to: end) }
            hostFileSize = max(hostFileSize, end)
            try file.sync()
            progress?(1)
        }
    }

    /// Rewrites the header with a new backing file name and format (nil: no backing file). The caller
    /// is responsible for the guest view (see ``rebaseImage``); the image must be reopened to use it.
    public func setBackingFile(_ name: String?, format: ImageFormat?) throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            try flushMetadata()
            var newHeader = header
            newHeader.backingFileOffset = 0
            newHeader.backingFileSize = 0
            newHeader.backingFormat = name == nil ? nil : format?.rawValue
            var bytes = newHeader.serialized()
            if let name {
                guard !name.isEmpty, name.utf8.count <= 1023 else { throw ImageError(path, .invalidArgument, "invalid backing file name") }
                newHeader.backingFileOffset = UInt64(bytes.count)
                newHeader.backingFileSize = UInt32(name.utf8.count)
                bytes = newHeader.serialized() + Array(name.utf8)
            }
            guard bytes.count <= clusterSize else {
                throw ImageError(path, .invalidArgument, "the header and backing file name do not fit in one cluster")
            }
            bytes += [UInt8](repeating: 0, count: clusterSize - bytes.count)
            try writeHost(bytes, at: 0)
            try barrier()
            newHeader.backingFile = name
            header = newHeader
        }
    }

    /// Deallocates every cluster of this image so the backing file shows through (after a commit).
    public func makeEmpty() throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            let total = ceilDiv(header.size, UInt64(clusterSize))
            quiesceDataIO()
            try setClusters(0..<total, zero: false, keepAllocation: false)
            try flushMetadata()
        }
    }
}

/// Guest ranges where `image` itself (depth 0) defines the content: data, zero or compressed clusters.
public func ownRanges(_ image: any BlockImage) throws(ImageError) -> [MapEntry] {
    var map: [MapEntry] = []
    if let qcow = image as? QCOW2Image {
        try qcow.appendMap(start: 0, length: qcow.size, depth: 0, into: &map)
        return map.filter { $0.depth == 0 && $0.present }
    }
    return [MapEntry(start: 0, length: image.size, depth: 0, present: true, zero: false, data: true, offset: 0)]
}

/// Copies every range a qcow2 overlay defines into its backing image (`qemu-img commit`), then empties
/// the overlay unless `keepOverlay`. Returns the backing file's path.
@discardableResult
public func commitImage(_ path: String, keepOverlay: Bool = false, progress: ProgressHandler? = nil) throws(ImageError) -> String {
    let top = try QCOW2Image.open(path, options: ImageOptions(writable: !keepOverlay))
    guard let backingPath = top.backingPath, let oldBacking = top.backing else {
        throw ImageError(path, .invalidArgument, "image has no backing file to commit into")
    }
    let base = try openImage(backingPath, options: ImageOptions(writable: true, format: oldBacking.format))
    guard top.size <= base.size else {
        throw ImageError(path, .unsupported, "the image (\(top.size) bytes) is larger than its backing file (\(base.size) bytes); resize the backing file first")
    }
    let ranges = try ownRanges(top)
    let total = ranges.reduce(0) { $0 + $1.length }
    var done: UInt64 = 0
    let chunk: UInt64 = 4 << 20
    for range in ranges {
        var position = range.start
        while position < range.start + range.length {
            let n = min(chunk, range.start + range.length - position)
            if range.zero {
                try writeZeroes(base, at: position, length: n)
            } else {
                try base.write(try top.read(at: position, count: Int(n)), at: position)
            }
            position += n
            done += n
            progress?(Double(done) / Double(max(total, 1)))
        }
    }
    try base.close()
    if !keepOverlay { try top.makeEmpty() }
    try top.close()
    progress?(1)
    return backingPath
}

/// Zeroes a range of any image (qcow2: zero clusters; raw: written zeros).
public func writeZeroes(_ image: any BlockImage, at offset: UInt64, length: UInt64) throws(ImageError) {
    if let qcow = image as? QCOW2Image { return try qcow.writeZeroes(at: offset, length: length) }
    let chunk: UInt64 = 1 << 20
    var position = offset
    while position < offset + length {
        let n = min(chunk, offset + length - position)
        try image.write([UInt8](repeating: 0, count: Int(n)), at: position)
        position += n
    }
}

/// Changes a qcow2 image's backing file (`qemu-img rebase`). Safe mode (`unsafe: false`) first copies
/// into the image every range where the old and new backing chains differ, so the guest view is
/// unchanged; unsafe mode only rewrites the header. `backing` nil removes the backing file.
public func rebaseImage(
    _ path: String, backing: String?, backingFormat: ImageFormat?, unsafe: Bool = false, progress: ProgressHandler? = nil
) throws(ImageError) {
    let image = try QCOW2Image.open(path, options: ImageOptions(writable: true))
    var format = backingFormat
    if !unsafe {
        let newBacking: (any BlockImage)? = try backing.map { name throws(ImageError) in
            try openImage(resolveBackingPath(name, relativeTo: path), options: ImageOptions(format: backingFormat))
        }
        if format == nil { format = newBacking?.format }
        var map: [MapEntry] = []
        try image.appendMap(start: 0, length: image.size, depth: 0, into: &map)
        let inherited = map.filter { $0.depth > 0 || !$0.present }
        let total = inherited.reduce(0) { $0 + $1.length }
        var done: UInt64 = 0
        let chunk: UInt64 = UInt64(image.clusterSize) * max(1, UInt64((1 << 20) / image.clusterSize))
        for range in inherited {
            var position = range.start
            while position < range.start + range.length {
                // Whole clusters, so a partial-cluster copy never pulls other data from the new backing.
                let n = min(chunk, range.start + range.length - position)
                let old = try image.read(at: position, count: Int(n))
                var new = [UInt8](repeating: 0, count: Int(n))
                if let newBacking, position < newBacking.size {
                    let available = Int(min(n, newBacking.size - position))
                    new.replaceSubrange(0..<available, with: try newBacking.read(at: position, count: available))
                }
                if old != new {
                    let cs = image.clusterSize
                    for start in stride(from: 0, to: Int(n), by: cs) {
                        let end = min(Int(n), start + cs)
                        if old[start..<end] != new[start..<end] {
                            try image.write(Array(old[start..<end]), at: position + UInt64(start))
                        }
                    }
                }
                position += n
                done += n
                progress?(Double(done) / Double(max(total, 1)))
            }
        }
        try newBacking?.close()
    } else if format == nil, let backing {
        format = (try? openImage(resolveBackingPath(backing, relativeTo: path)))?.format
    }
    try image.setBackingFile(backing, format: format)
    try image.close()
    progress?(1)
}

/// Resizes an image of either format (`qemu-img resize`): qcow2 shrinking needs `shrink` and an unused tail.
public func resizeImage(_ path: String, to size: UInt64, shrink: Bool = false) throws(ImageError) {
    let image = try openImage(path, options: ImageOptions(writable: true))
    if size < image.size && !shrink {
        throw ImageError(path, .invalidArgument, "use --shrink to shrink an image (data past the new end would be lost)")
    }
    if let qcow = image as? QCOW2Image {
        try qcow.resize(to: size)
    } else {
        let file = try PosixHostFile(path: path, writable: true)
        try file.truncate(to: size)
        try file.sync()
    }
    try image.close()
}
