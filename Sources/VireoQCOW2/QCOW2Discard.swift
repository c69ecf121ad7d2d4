/// Discard, write-zeroes and allocation maps.

/// One run of guest bytes with the same allocation status, as `qemu-img map --output json` prints it.
public struct MapEntry: Sendable, Equatable {
    public var start: UInt64
    public var length: UInt64
    /// Which image of the chain holds the run (0 = the top image).
    public var depth: Int
    /// Whether some image of the chain (up to `depth`) defines the run.
    public var present: Bool
    /// Whether the run reads as zeros without reading data.
    public var zero: Bool
    /// Whether the run has data in a file.
    public var data: Bool
    public var compressed: Bool
    /// Host offset of the data in the file at `depth`, when it is stored there uncompressed.
    public var offset: UInt64?

    public init(start: UInt64, length: UInt64, depth: Int, present: Bool, zero: Bool, data: Bool, compressed: Bool = false, offset: UInt64? = nil) {
        self.start = start
        self.length = length
        self.depth = depth
        self.present = present
        self.zero = zero
        self.data = data
        self.compressed = compressed
        self.offset = offset
    }

    /// Whether `next` continues this run (same status, and contiguous on the host when there is an offset).
    func continues(with next: MapEntry) -> Bool {
        guard start + length == next.start, depth == next.depth, present == next.present, zero == next.zero,
              data == next.data, compressed == next.compressed else { return false }
        switch (offset, next.offset) {
        case (nil, nil): return true
        case let (a?, b?): return a + length == b
        default: return false
        }
    }

    /// The entry as a JSON object in qemu-img's key order (qemu 7.2's; `compressed` only when true).
    public var json: String {
        var text = "{ \"start\": \(start), \"length\": \(length), \"depth\": \(depth), \"present\": \(present), \"zero\": \(zero), \"data\": \(data)"
        if compressed { text += ", \"compressed\": true" }
        if let offset { text += ", \"offset\": \(offset)" }
        return text + "}"
    }
}

/// Appends `entry` to `map`, merging it into the last run when it continues it.
func appendMerging(_ map: inout [MapEntry], _ entry: MapEntry) {
    guard entry.length > 0 else { return }
    if let last = map.last, last.continues(with: entry) {
        map[map.count - 1].length += entry.length
    } else {
        map.append(entry)
    }
}

/// The allocation map of `0..<image.size` through the whole backing chain.
public func allocationMap(_ image: any BlockImage) throws(ImageError) -> [MapEntry] {
    var map: [MapEntry] = []
    try appendMap(image, start: 0, length: image.size, depth: 0, into: &map)
    return map
}

func appendMap(_ image: any BlockImage, start: UInt64, length: UInt64, depth: Int, into map: inout [MapEntry]) throws(ImageError) {
    if let qcow = image as? QCOW2Image {
        try qcow.appendMap(start: start, length: length, depth: depth, into: &map)
    } else {
        // A raw file: all data, at the same offset.
        appendMerging(&map, MapEntry(start: start, length: length, depth: depth, present: true, zero: false, data: true, offset: start))
    }
}

extension QCOW2Image {
    func appendMap(start: UInt64, length: UInt64, depth: Int, into map: inout [MapEntry]) throws(ImageError) {
        // Resolve this image's clusters under the lock; recurse into the backing file outside it.
        var pieces: [(entry: MapEntry, backing: Bool)] = []
        try locked { () throws(ImageError) in
            try checkOpen()
            let cs = UInt64(clusterSize)
            var position = start
            let end = start + length
            while position < end {
                let cluster = position / cs
                let n = min(end - position, cs - position % cs)
                let l2Entry = try l2Entry(guestCluster: cluster)
                let host = l2Entry & Self.l2OffsetMask
                var entry = MapEntry(start: position, length: n, depth: depth, present: true, zero: false, data: true)
                var fromBacking = false
                if l2Entry & Self.compressed != 0 {
                    entry.compressed = true
                } else if header.version == 3 && l2Entry & Self.zeroFlag != 0 {
                    entry.zero = true
                    entry.data = false
                    if host != 0 { entry.offset = host + position % cs }
                } else if host != 0 {
                    entry.offset = host + position % cs
                } else {
                    fromBacking = true
                }
                if let last = pieces.last, last.backing == fromBacking, fromBacking {
                    pieces[pieces.count - 1].entry.length += n
                } else {
                    pieces.append((entry, fromBacking))
                }
                position += n
            }
        }
        for piece in pieces {
            guard piece.backing else {
                appendMerging(&map, piece.entry)
                continue
            }
            let s = piece.entry.start
            let n = piece.entry.length
            if let backing, s < backing.size {
                let inside = min(n, backing.size - s)
                try VireoQCOW2.appendMap(backing, start: s, length: inside, depth: depth + 1, into: &map)
                if inside < n {
                    appendMerging(&map, MapEntry(start: s + inside, length: n - inside, depth: depth + 1, present: false, zero: true, data: false))
                }
            } else {
                appendMerging(&map, MapEntry(start: s, length: n, depth: backing == nil ? depth : depth + 1, present: false, zero: true, data: false))
            }
        }
    }

    /// Tells the image the guest no longer needs `length` bytes at `offset`: whole clusters in the range
    /// are released and read as zeros afterwards (a version 3 image marks them zero; a version 2 image
    /// deallocates them, or keeps them when it has a backing file). Partial clusters are left alone.
    public func discard(at offset: UInt64, length: UInt64) throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            try checkGuestRange(offset, length)
            let cs = UInt64(clusterSize)
            let first = ceilDiv(offset, cs)
            let end = (offset + length) / cs
            // The last cluster may be partial at the end of the disk: it counts as whole.
            let last = offset + length == header.size ? ceilDiv(header.size, cs) : end
            guard first < last else { return }
            if backing != nil && header.version == 2 { return }
            // Like qemu: a version 3 image marks discarded clusters zero; version 2 deallocates them.
            try setClusters(first..<last, zero: header.version == 3, keepAllocation: false)
            try flushMetadata()
        }
    }

    /// Makes `length` bytes at `offset` read as zeros. Whole clusters become zero clusters (version 3) or
    /// are deallocated (version 2 without a backing file); `unmap` also frees their host clusters (version 3
    /// otherwise keeps clusters this image owns allocated, for later in-place writes). The rest is written.
    public func writeZeroes(at offset: UInt64, length: UInt64, unmap: Bool = false) throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            try checkGuestRange(offset, length)
            let cs = UInt64(clusterSize)
            let end = offset + length
            var first = ceilDiv(offset, cs)
            var last = end == header.size ? ceilDiv(header.size, cs) : end / cs
            let canFlag = header.version == 3 || backing == nil
            if !canFlag || first >= last {
                first = 0
                last = 0
            }
            // Partial clusters (and everything on a version 2 image with a backing file) get zero bytes.
            var position = offset
            while position < end {
                let cluster = position / cs
                if cluster >= first && cluster < last {
                    position = last * cs
                    continue
                }
                let n = min(end - position, cs - position % cs)
                try writeCluster(cluster, within: Int(position % cs), data: [UInt8](repeating: 0, count: Int(n))[...])
                position += n
            }
            guard first < last else { return }
            try setClusters(first..<last, zero: header.version == 3, keepAllocation: !unmap && header.version == 3)
            if !deferredDecrements.isEmpty { try flushMetadata() }
        }
    }

    /// Points guest clusters at nothing (`zero`: the zero flag, else unallocated), freeing their host
    /// clusters unless `keepAllocation` and the image alone owns them. Caller holds the lock.
    func setClusters(_ clusters: Range<UInt64>, zero: Bool, keepAllocation: Bool) throws(ImageError) {
        let cs = UInt64(clusterSize)
        var cluster = clusters.lowerBound
        while cluster < clusters.upperBound {
            let l1Index = Int(cluster / UInt64(l2Entries))
            let tableEnd = min(clusters.upperBound, UInt64(l1Index + 1) * UInt64(l2Entries))
            if l1[l1Index] & Self.l1OffsetMask == 0 && !zero {
                cluster = tableEnd
                continue
            }
            let l2Offset = try l2TableForWrite(l1Index, guestOffset: cluster * cs)
            while cluster < tableEnd {
                let index = Int(cluster % UInt64(l2Entries))
                try loadL2(l2Offset, l1Index: l1Index)
                let entry = l2Cache.slots[l2Offset]!.value[index]
                let host = entry & Self.l2OffsetMask
                var newEntry: UInt64 = zero ? Self.zeroFlag : 0
                if entry & Self.compressed != 0 {
                    deferredDecrements += compressedClusters(entry)
                } else if host != 0 {
                    var owned = entry & Self.copied != 0
                    if !owned { owned = try refcount(host / cs) == 1 }
                    if keepAllocation && owned && !metadataClusters.contains(host) {
                        newEntry = host | Self.copied | Self.zeroFlag
                    } else {
                        deferredDecrements.append(host / cs)
                    }
                }
                if newEntry != entry { l2Cache.modify(l2Offset) { $0[index] = newEntry } }
                cluster += 1
            }
        }
    }
}
