#if canImport(Glibc)
import Glibc
#endif

/// An internal snapshot: a frozen copy of the L1 table sharing clusters with the active image.
public struct QCOW2Snapshot: Sendable, Equatable {
    /// The unique ID string (qemu numbers them 1, 2, …).
    public var id: String
    public var name: String
    public var l1TableOffset: UInt64
    public var l1Size: UInt32
    public var dateSeconds: UInt32
    public var dateNanoseconds: UInt32
    /// Guest clock at the snapshot, in nanoseconds.
    public var vmClockNanoseconds: UInt64
    /// Bytes of saved VM state (RAM and devices) stored with the snapshot; 0 for a disk-only snapshot.
    public var vmStateSize: UInt64
    /// Virtual disk size when the snapshot was taken (version 3 extra data; nil if absent).
    public var diskSize: UInt64?
    /// Instruction count (record/replay); nil when not recorded.
    public var icount: UInt64?
    /// Extra data as stored, kept so entries written by others round-trip.
    var extraData: [UInt8]

    /// Bytes this entry takes in the snapshot table.
    var serializedSize: Int { (40 + extraData.count + id.utf8.count + name.utf8.count + 7) / 8 * 8 }

    func serialized(version: UInt32) -> [UInt8] {
        var extra = extraData
        if version == 3 && extra.count < 16 { extra += [UInt8](repeating: 0, count: 16 - extra.count) }
        if extra.count >= 8 { extra.setBE64(vmStateSize, at: 0) }
        if extra.count >= 16 { extra.setBE64(diskSize ?? 0, at: 8) }
        if extra.count >= 24 { extra.setBE64(icount ?? UInt64.max, at: 16) }
        var out = [UInt8](repeating: 0, count: 40)
        out.setBE64(l1TableOffset, at: 0)
        out.setBE32(l1Size, at: 8)
        out.setBE16(UInt16(id.utf8.count), at: 12)
        out.setBE16(UInt16(name.utf8.count), at: 14)
        out.setBE32(dateSeconds, at: 16)
        out.setBE32(dateNanoseconds, at: 20)
        out.setBE64(vmClockNanoseconds, at: 24)
        out.setBE32(UInt32(truncatingIfNeeded: vmStateSize), at: 32)
        out.setBE32(UInt32(extra.count), at: 36)
        out += extra + Array(id.utf8) + Array(name.utf8)
        out += [UInt8](repeating: 0, count: (8 - out.count % 8) % 8)
        return out
    }
}

extension QCOW2Image {
    /// Reads and validates the snapshot table named by the header.
    func readSnapshotTable() throws(ImageError) -> [QCOW2Snapshot] {
        var result: [QCOW2Snapshot] = []
        var position = header.snapshotsOffset
        let fileSize = hostFileSize
        for n in 0..<Int(header.snapshotCount) {
            guard position + 40 <= fileSize else {
                throw ImageError(path, .invalid, "snapshot table entry \(n) lies beyond the end of the file")
            }
            let fixed = try file.read(at: position, count: 40)
            let extraSize = Int(fixed.be32(36))
            let idLength = Int(fixed.be16(12))
            let nameLength = Int(fixed.be16(14))
            guard extraSize <= 1024 else { throw ImageError(path, .invalid, "snapshot \(n) has \(extraSize) bytes of extra data (limit 1024)") }
            let rest = try file.read(at: position + 40, count: extraSize + idLength + nameLength)
            let extra = Array(rest[0..<extraSize])
            let l1Size = fixed.be32(8)
            let l1Offset = fixed.be64(0)
            guard UInt64(l1Size) * 8 <= QCOW2Header.maxL1Bytes, l1Offset % UInt64(clusterSize) == 0,
                  l1Offset + UInt64(l1Size) * 8 <= fileSize else {
                throw ImageError(path, .invalid, "snapshot \(n) has an invalid L1 table (offset \(hex(l1Offset)), \(l1Size) entries)")
            }
            let snapshot = QCOW2Snapshot(
                id: String(decoding: rest[extraSize..<(extraSize + idLength)], as: UTF8.self),
                name: String(decoding: rest[(extraSize + idLength)...], as: UTF8.self),
                l1TableOffset: l1Offset, l1Size: l1Size,
                dateSeconds: fixed.be32(16), dateNanoseconds: fixed.be32(20), vmClockNanoseconds: fixed.be64(24),
                vmStateSize: extraSize >= 8 ? extra.be64(0) : UInt64(fixed.be32(32)),
                diskSize: extraSize >= 16 ? extra.be64(8) : nil,
                icount: extraSize >= 24 && extra.be64(16) != UInt64.max ? extra.be64(16) : nil,
                extraData: extra)
            result.append(snapshot)
            position += UInt64(snapshot.serializedSize)
        }
        return result
    }

    /// The image's internal snapshots, in table order.
    public func snapshots() throws(ImageError) -> [QCOW2Snapshot] {
        try locked { () throws(ImageError) in
            try checkOpen()
            return try readSnapshotTable()
        }
    }

    /// Creates an internal snapshot of the current disk state. `vmStateSize` records the size of VM
    /// state saved with it (none yet: disk-only snapshots use 0).
    @discardableResult
    public func createSnapshot(name: String, vmStateSize: UInt64 = 0, vmClockNanoseconds: UInt64 = 0) throws(ImageError) -> QCOW2Snapshot {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            guard refcountBits > 1 else { throw ImageError(path, .unsupported, "snapshots need refcounts wider than 1 bit") }
            guard !name.isEmpty, name.utf8.count < 65536 else { throw ImageError(path, .invalidArgument, "invalid snapshot name") }
            var table = try readSnapshotTable()
            if table.contains(where: { $0.name == name }) {
                throw ImageError(path, .invalidArgument, "a snapshot named '\(name)' already exists")
            }
            guard table.count < Int(QCOW2Header.maxSnapshots) else { throw ImageError(path, .unsupported, "too many snapshots") }
            quiesceDataIO()
            try flushMetadata()

            // A copy of the L1 table, then every cluster it reaches gains a reference.
            let cs = UInt64(clusterSize)
            let l1Bytes = [UInt8](be64Entries: l1.map { $0 & ~Self.copied })
            var l1Offset: UInt64 = 0
            if !l1.isEmpty {
                l1Offset = try allocateContiguous(ceilDiv(UInt64(l1Bytes.count), cs)) * cs
                try writeHost(l1Bytes, at: l1Offset)
            }
            try adjustTree(l1, by: 1)
            try updateCopiedFlags()
            try flushMetadata()

            let maxID = table.compactMap { UInt64($0.id) }.max() ?? 0
            var now = timespec()
            clock_gettime(CLOCK_REALTIME, &now)
            let snapshot = QCOW2Snapshot(
                id: String(maxID + 1), name: name, l1TableOffset: l1Offset, l1Size: UInt32(l1.count),
                dateSeconds: UInt32(truncatingIfNeeded: now.tv_sec), dateNanoseconds: UInt32(now.tv_nsec),
                vmClockNanoseconds: vmClockNanoseconds, vmStateSize: vmStateSize, diskSize: header.size, icount: nil,
                extraData: [UInt8](repeating: 0, count: header.version == 3 ? 24 : 0))
            table.append(snapshot)
            try writeSnapshotTable(table)
            rebuildMetadataClusters(table)
            return snapshot
        }
    }

    /// Deletes the snapshot whose ID or name is `idOrName`, releasing the clusters only it used.
    public func deleteSnapshot(_ idOrName: String) throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            var table = try readSnapshotTable()
            guard let index = Self.findSnapshot(table, idOrName) else {
                throw ImageError(path, .invalidArgument, "snapshot '\(idOrName)' not found")
            }
            quiesceDataIO()
            try flushMetadata()
            let snapshot = table.remove(at: index)
            try writeSnapshotTable(table)
            let cs = UInt64(clusterSize)
            let l1Entries = snapshot.l1Size == 0 ? []
                : try file.read(at: snapshot.l1TableOffset, count: Int(snapshot.l1Size) * 8).be64Entries()
            try adjustTree(l1Entries, by: -1)
            if snapshot.l1Size > 0 {
                let first = snapshot.l1TableOffset / cs
                for c in first..<(first + ceilDiv(UInt64(snapshot.l1Size) * 8, cs)) { try adjustRefcount(c, by: -1) }
            }
            try updateCopiedFlags()
            try flushMetadata()
            rebuildMetadataClusters(table)
        }
    }

    /// Reverts the disk to the snapshot whose ID or name is `idOrName` (the snapshot stays).
    public func applySnapshot(_ idOrName: String) throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            let table = try readSnapshotTable()
            guard let index = Self.findSnapshot(table, idOrName) else {
                throw ImageError(path, .invalidArgument, "snapshot '\(idOrName)' not found")
            }
            let snapshot = table[index]
            // The disk takes the snapshot's size again (as qemu does), so the L1 table may have to grow.
            let targetSize = snapshot.diskSize ?? header.size
            guard targetSize <= UInt64(Int64.max) else {
                throw ImageError(path, .invalid, "snapshot '\(idOrName)' has an invalid disk size \(targetSize)")
            }
            let needed = max(UInt64(snapshot.l1Size), QCOW2Header.l1EntriesNeeded(size: targetSize, clusterBits: header.clusterBits))
            guard needed * 8 <= QCOW2Header.maxL1Bytes else {
                throw ImageError(path, .invalid, "snapshot '\(idOrName)' needs an L1 table beyond 32 MiB")
            }
            quiesceDataIO()
            try flushMetadata()
            if needed > UInt64(header.l1Size) { try growL1Table(to: needed) }
            var newL1 = snapshot.l1Size == 0 ? []
                : try file.read(at: snapshot.l1TableOffset, count: Int(snapshot.l1Size) * 8).be64Entries()
            newL1 = newL1.map { $0 & ~Self.copied } + [UInt64](repeating: 0, count: Int(header.l1Size - snapshot.l1Size))
            // References first (on disk before the L1 switch), then the switch, then release the old tree.
            try adjustTree(newL1, by: 1)
            try writeBackRefcountBlocks()
            try barrier()
            let oldL1 = l1
            try writeHost([UInt8](be64Entries: newL1), at: header.l1TableOffset)
            try barrier()
            l1 = newL1
            l1Dirty.removeAll()
            try adjustTree(oldL1, by: -1)
            if targetSize != header.size {
                try writeHost(.be64(targetSize), at: 24)
                try barrier()
                header.size = targetSize
            }
            try updateCopiedFlags()
            try flushMetadata()
            rebuildMetadataClusters(table)
        }
    }

    static func findSnapshot(_ table: [QCOW2Snapshot], _ idOrName: String) -> Int? {
        table.firstIndex { $0.id == idOrName } ?? table.firstIndex { $0.name == idOrName }
    }

    /// Writes `table` to new clusters, switches the header to it, and frees the old table.
    func writeSnapshotTable(_ table: [QCOW2Snapshot]) throws(ImageError) {
        let cs = UInt64(clusterSize)
        var bytes: [UInt8] = []
        for snapshot in table { bytes += snapshot.serialized(version: header.version) }
        var offset: UInt64 = 0
        if !bytes.isEmpty {
            offset = try allocateContiguous(ceilDiv(UInt64(bytes.count), cs)) * cs
            try writeHost(bytes, at: offset)
        }
        try writeBackRefcountBlocks()
        try barrier()
        let oldOffset = header.snapshotsOffset
        let oldCount = header.snapshotCount
        let oldBytes = oldCount == 0 ? 0 : try readSnapshotTable().reduce(0) { $0 + $1.serializedSize }
        var fields = [UInt8](repeating: 0, count: 12)
        fields.setBE32(UInt32(table.count), at: 0)
        fields.setBE64(offset, at: 4)
        try writeHost(fields, at: 60)
        try barrier()
        header.snapshotCount = UInt32(table.count)
        header.snapshotsOffset = offset
        if oldCount > 0 && oldBytes > 0 {
            for c in (oldOffset / cs)..<((oldOffset + UInt64(oldBytes) - 1) / cs + 1) { try adjustRefcount(c, by: -1) }
        }
    }

    /// Adds `delta` to the refcount of every L2 table and data cluster reachable from `l1Entries`
    /// (each reference counted, as a consistency check counts them).
    func adjustTree(_ l1Entries: [UInt64], by delta: Int) throws(ImageError) {
        let cs = UInt64(clusterSize)
        for (i, entry) in l1Entries.enumerated() {
            let l2Offset = entry & Self.l1OffsetMask
            if l2Offset == 0 { continue }
            try loadL2(l2Offset, l1Index: i)
            let table = l2Cache.slots[l2Offset]!.value
            for l2Entry in table {
                if l2Entry & Self.compressed != 0 {
                    for c in compressedClusters(l2Entry) { try adjustRefcount(c, by: delta) }
                } else if l2Entry & Self.l2OffsetMask != 0 {
                    try adjustRefcount((l2Entry & Self.l2OffsetMask) / cs, by: delta)
                }
            }
            try adjustRefcount(l2Offset / cs, by: delta)
        }
    }

    /// Changes one cluster's refcount by `delta`, forgetting the cluster when it becomes free.
    func adjustRefcount(_ cluster: UInt64, by delta: Int) throws(ImageError) {
        let tableIndex = Int(cluster / UInt64(refcountBlockEntries))
        if try refcountBlockOffset(tableIndex) == 0 {
            guard delta > 0 else { return }
            try ensureRefcountBlock(tableIndex)
        }
        let current = try refcount(cluster)
        let maximum: UInt64 = refcountBits == 64 ? UInt64.max : (1 << UInt64(refcountBits)) - 1
        if delta < 0 {
            let drop = UInt64(-delta)
            guard current >= drop else {
                throw ImageError(path, .invalid, "refcount of cluster \(cluster) would drop below zero (image is corrupt)")
            }
            try setRefcount(cluster, current - drop)
            if current == drop { forgetFreedCluster(cluster) }
        } else if delta > 0 {
            guard maximum - current >= UInt64(delta) else {
                throw ImageError(path, .unsupported, "refcount of cluster \(cluster) would exceed \(maximum) (\(refcountBits)-bit refcounts)")
            }
            try setRefcount(cluster, current + UInt64(delta))
            allocationEnd = max(allocationEnd, cluster + 1)
        }
    }

    /// Sets QCOW_OFLAG_COPIED on active L1 and L2 entries exactly where the refcount is 1.
    func updateCopiedFlags() throws(ImageError) {
        let cs = UInt64(clusterSize)
        for i in l1.indices {
            let l2Offset = l1[i] & Self.l1OffsetMask
            if l2Offset == 0 { continue }
            let wanted = try refcount(l2Offset / cs) == 1 ? l2Offset | Self.copied : l2Offset
            if l1[i] != wanted {
                l1[i] = wanted
                l1Dirty.insert(i)
            }
            try loadL2(l2Offset, l1Index: i)
            let table = l2Cache.slots[l2Offset]!.value
            for (j, entry) in table.enumerated() where entry & Self.compressed == 0 {
                let host = entry & Self.l2OffsetMask
                if host == 0 { continue }
                let fixed = try refcount(host / cs) == 1 ? entry | Self.copied : entry & ~Self.copied
                if fixed != entry {
                    try loadL2(l2Offset, l1Index: i)
                    l2Cache.modify(l2Offset) { $0[j] = fixed }
                }
            }
        }
    }

    /// Recomputes the set of clusters guest writes must never touch.
    func rebuildMetadataClusters(_ table: [QCOW2Snapshot]) {
        metadataClusters = []
        try? collectMetadataClusters()
        let cs = UInt64(clusterSize)
        if header.snapshotCount > 0 {
            let bytes = table.reduce(0) { $0 + UInt64($1.serializedSize) }
            for c in (header.snapshotsOffset / cs)..<((header.snapshotsOffset + max(1, bytes) - 1) / cs + 1) { metadataClusters.insert(c * cs) }
        }
        for snapshot in table where snapshot.l1Size > 0 {
            for i in 0..<ceilDiv(UInt64(snapshot.l1Size) * 8, cs) { metadataClusters.insert(snapshot.l1TableOffset + i * cs) }
        }
    }

    /// Allocates `count` consecutive clusters (refcount 1) and returns the first index.
    func allocateContiguous(_ count: UInt64) throws(ImageError) -> UInt64 {
        if count == 1 { return try allocateCluster() }
        var start = try findFreeCluster()
        search: while true {
            for c in start..<(start + count) where try refcount(c) != 0 {
                start = c + 1
                continue search
            }
            for c in start..<(start + count) {
                let tableIndex = Int(c / UInt64(refcountBlockEntries))
                if try refcountBlockOffset(tableIndex) == 0 {
                    try ensureRefcountBlock(tableIndex)
                    continue search
                }
            }
            for c in start..<(start + count) { try setRefcount(c, 1) }
            allocationEnd = max(allocationEnd, start + count)
            return start
        }
    }
}
