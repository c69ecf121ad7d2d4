/// The result of a consistency check, in the terms `qemu-img check` uses.
public struct CheckReport: Sendable, Equatable {
    /// References to clusters whose refcount is too low, bad offsets, wrong COPIED flags: data at risk.
    public var corruptions = 0
    /// Clusters whose refcount is higher than their references: wasted space only.
    public var leaks = 0
    /// One line per finding, worded like qemu-img (`ERROR cluster 5 refcount=0 reference=1`, `Leaked cluster 7 refcount=1 reference=0`).
    public var messages: [String] = []
    /// Guest clusters with data in this image (not counting zero clusters or the backing file).
    public var allocatedClusters: UInt64 = 0
    public var totalClusters: UInt64 = 0
    public var fragmentedClusters: UInt64 = 0
    public var compressedClusters: UInt64 = 0
    /// One past the last host byte of a cluster with a nonzero refcount.
    public var imageEndOffset: UInt64 = 0
    /// Leaked clusters (index) and the number of references each really has.
    var leakedClusters: [UInt64: UInt64] = [:]
    /// Errors outside the refcount structures and the COPIED flags (bad L1/L2/snapshot entries), which
    /// a refcount rebuild cannot repair.
    var tableErrors = 0
    /// Every cluster's references from the header, L1/L2 and snapshot tables (refcount structures not
    /// counted): what a refcount rebuild writes.
    var referencesOutsideRefcounts: [UInt32] = []
    /// The refcount structures themselves are broken, or a cluster in use has refcount 0: only a
    /// rebuild repairs that (qemu-img then refuses `-r leaks` and fails the check).
    var needsRefcountRebuild = false

    public var isClean: Bool { corruptions == 0 && leaks == 0 }

    /// The exit status `qemu-img check` would use: 0 clean, 2 corruptions, 3 leaks only.
    public var exitCode: Int32 { corruptions > 0 ? 2 : leaks > 0 ? 3 : 0 }

    /// A summary like qemu-img's human output.
    public var summary: String {
        var lines = messages
        if !messages.isEmpty { lines.append("") }
        if isClean { lines.append("No errors were found on the image.") }
        if corruptions > 0 {
            lines.append("\(corruptions) errors were found on the image.")
            lines.append("Data may be corrupted, or further writes to the image may corrupt it.")
        }
        if leaks > 0 {
            if corruptions > 0 { lines.append("") }
            lines.append("\(leaks) leaked clusters were found on the image.")
            lines.append("This means waste of disk space, but no harm to data.")
        }
        func percent(_ part: UInt64, _ whole: UInt64) -> String {
            let basisPoints = whole == 0 ? 0 : part * 10000 / whole
            let fraction = basisPoints % 100
            return "\(basisPoints / 100).\(fraction < 10 ? "0" : "")\(fraction)%"
        }
        lines.append("\(allocatedClusters)/\(totalClusters) = \(percent(allocatedClusters, totalClusters)) allocated, "
            + "\(percent(fragmentedClusters, allocatedClusters)) fragmented, \(percent(compressedClusters, allocatedClusters)) compressed clusters")
        lines.append("Image end offset: \(imageEndOffset)")
        return lines.joined(separator: "\n")
    }
}

extension QCOW2Image {
    /// Recomputes every cluster's references from the header, L1/L2 tables, refcount structures and
    /// snapshot tables, and compares them with the stored refcounts (reading the file, after a flush).
    public func check() throws(ImageError) -> CheckReport {
        if isWritable && !closed { try flush() }
        let cs = UInt64(clusterSize)
        let fileSize = try file.size()
        let clusterCount = Int(ceilDiv(fileSize, cs))
        var references = [UInt32](repeating: 0, count: clusterCount)
        var report = CheckReport()
        report.totalClusters = ceilDiv(header.size, cs)

        var inTables = true
        func error(_ message: String) {
            report.corruptions += 1
            report.messages.append("ERROR " + message)
            if inTables { report.tableErrors += 1 }
        }
        @discardableResult
        func reference(_ offset: UInt64, _ length: UInt64, _ what: String) -> Bool {
            guard length > 0 else { return true }
            let first = offset / cs
            let (sum, overflow) = offset.addingReportingOverflow(length - 1)
            guard !overflow, sum / cs < UInt64(clusterCount) else {
                error("\(what) at \(hex(offset)) lies beyond the end of the image (\(fileSize) bytes)")
                return false
            }
            for c in Int(first)...Int(sum / cs) where references[c] < UInt32.max { references[c] += 1 }
            return true
        }

        var copiedChecks: [(offset: UInt64, copied: Bool, what: String)] = []
        var nextContiguous: UInt64? = nil

        func countL1(offset: UInt64, entries: Int, active: Bool) throws(ImageError) {
            guard entries > 0 else { return }
            guard reference(offset, UInt64(entries) * 8, active ? "L1 table" : "snapshot L1 table") else { return }
            let table = try file.read(at: offset, count: entries * 8).be64Entries()
            for (i, entry) in table.enumerated() {
                let l2Offset = entry & Self.l1OffsetMask
                if l2Offset == 0 { continue }
                guard l2Offset % cs == 0 else {
                    error("L2 table offset \(hex(l2Offset)) in L1 entry \(i) is not cluster aligned")
                    continue
                }
                guard reference(l2Offset, cs, "L2 table") else { continue }
                if active { copiedChecks.append((l2Offset, entry & Self.copied != 0, "L2 table")) }
                let l2 = try file.read(at: l2Offset, count: clusterSize).be64Entries()
                for l2Entry in l2 {
                    if l2Entry & Self.compressed != 0 {
                        let shift = UInt64(62 - (clusterBits - 8))
                        let hostOffset = l2Entry & ((1 << shift) - 1)
                        let sectors = ((l2Entry & ((1 << 62) - 1)) >> shift) + 1
                        if active {
                            report.allocatedClusters += 1
                            report.compressedClusters += 1
                        }
                        reference(hostOffset & ~511, sectors * 512, "compressed cluster")
                        nextContiguous = nil
                        continue
                    }
                    let host = l2Entry & Self.l2OffsetMask
                    if host == 0 { continue }
                    guard host % cs == 0 else {
                        error("data cluster offset \(hex(host)) in L2 table \(hex(l2Offset)) is not cluster aligned")
                        continue
                    }
                    if active {
                        report.allocatedClusters += 1
                        if let expected = nextContiguous, expected != host { report.fragmentedClusters += 1 }
                        nextContiguous = host + cs
                    }
                    if reference(host, cs, "data cluster"), active {
                        copiedChecks.append((host, l2Entry & Self.copied != 0, "data cluster"))
                    }
                }
            }
        }

        reference(0, cs, "header")
        try countL1(offset: header.l1TableOffset, entries: Int(header.l1Size), active: true)

        // Internal snapshots: the table, and every snapshot's L1/L2/data clusters.
        if header.snapshotCount > 0 {
            var position = header.snapshotsOffset
            for n in 0..<Int(header.snapshotCount) {
                guard position + 40 <= fileSize else {
                    error("snapshot table entry \(n) lies beyond the end of the image")
                    break
                }
                let fixed = try file.read(at: position, count: 40)
                let extra = UInt64(fixed.be32(36))
                let length = (40 + extra + UInt64(fixed.be16(12)) + UInt64(fixed.be16(14)) + 7) / 8 * 8
                position += length
                let l1Entries = UInt64(fixed.be32(8))
                guard l1Entries * 8 <= QCOW2Header.maxL1Bytes, fixed.be64(0) % cs == 0 else {
                    error("snapshot \(n) has an invalid L1 table (offset \(hex(fixed.be64(0))), \(l1Entries) entries)")
                    continue
                }
                try countL1(offset: fixed.be64(0), entries: Int(l1Entries), active: false)
            }
            reference(header.snapshotsOffset, position - header.snapshotsOffset, "snapshot table")
        }

        // Refcount structures (counted last, so a rebuild can start from the references without them).
        report.referencesOutsideRefcounts = references
        inTables = false
        let tableBytes = UInt64(header.refcountTableClusters) * cs
        if !reference(header.refcountTableOffset, tableBytes, "refcount table") { report.needsRefcountRebuild = true }
        let table = try file.read(at: header.refcountTableOffset, count: Int(tableBytes)).be64Entries()
        var blocks: [Int: UInt64] = [:]
        for (i, entry) in table.enumerated() {
            let offset = entry & Self.refcountTableOffsetMask
            if offset == 0 { continue }
            guard offset % cs == 0 else {
                error("refcount block offset \(hex(offset)) in refcount table entry \(i) is not cluster aligned")
                report.needsRefcountRebuild = true
                continue
            }
            if reference(offset, cs, "refcount block \(i)") {
                blocks[i] = offset
            } else {
                report.needsRefcountRebuild = true
            }
        }

        // Compare with the stored refcounts.
        let perBlock = refcountBlockEntries
        var stored = [UInt64](repeating: 0, count: clusterCount)
        var highest: UInt64? = nil
        for index in blocks.keys.sorted() {
            let block = try file.read(at: blocks[index]!, count: clusterSize)
            for k in 0..<perBlock {
                let refcount = Self.refcountEntry(block, k, bits: refcountBits)
                let cluster = index * perBlock + k
                // Like qemu-img, refcounts past the end of the file are not counted (nothing there to leak).
                guard cluster < clusterCount else { break }
                stored[cluster] = refcount
                if refcount > 0 { highest = UInt64(cluster) }
            }
        }
        for cluster in 0..<clusterCount where stored[cluster] != UInt64(references[cluster]) {
            let line = "cluster \(cluster) refcount=\(stored[cluster]) reference=\(references[cluster])"
            if stored[cluster] < UInt64(references[cluster]) {
                error(line)
                report.needsRefcountRebuild = report.needsRefcountRebuild || stored[cluster] == 0
            } else {
                report.leaks += 1
                report.messages.append("Leaked " + line)
                report.leakedClusters[UInt64(cluster)] = UInt64(references[cluster])
            }
        }
        for item in copiedChecks {
            let refcount = stored[Int(item.offset / cs)]
            if (refcount == 1) != item.copied {
                error("OFLAG_COPIED \(item.what): offset=\(hex(item.offset)) refcount=\(refcount)")
            }
        }
        report.imageEndOffset = highest.map { ($0 + 1) * cs } ?? 0
        return report
    }
}

/// What `check -r` repairs, as in `qemu-img check -r leaks|all`.
public enum RepairMode: String, Sendable {
    /// Leaked clusters only (refcounts higher than the references): never touches data in use.
    case leaks
    /// Also corruptions in the refcount structures (refcounts too low, broken refcount table or
    /// blocks, wrong COPIED flags), by rebuilding all refcounts from a full walk of the metadata.
    case all
}

/// The outcome of a repair: the check before it and what was fixed.
public struct RepairResult: Sendable {
    public var before: CheckReport
    public var leaksFixed = 0
    public var corruptionsFixed = 0
}

extension QCOW2Image {
    /// Repairs what `mode` covers (`qemu-img check -r`); leaks are repaired in both modes, as qemu-img
    /// does. Nothing is touched when an L1/L2/snapshot entry could not be followed (the references are
    /// then unknown); such corruptions stay for the caller to report.
    public func repair(_ mode: RepairMode) throws(ImageError) -> RepairResult {
        guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
        let before = try check()
        var result = RepairResult(before: before)
        guard before.tableErrors == 0 else { return result }
        if before.needsRefcountRebuild && mode == .leaks {
            throw ImageError(path, .invalid, "the refcount structures need to be rebuilt: repair with -r all")
        }
        if before.corruptions > 0 && mode == .all {
            try locked { () throws(ImageError) in
                quiesceDataIO()
                try rebuildRefcounts(before.referencesOutsideRefcounts)
            }
            result.corruptionsFixed = before.corruptions
            result.leaksFixed = before.leaks
        } else if before.leaks > 0 {
            result.leaksFixed = try repairLeaks().repaired
        }
        return result
    }

    /// Writes a complete new refcount table and refcount blocks past the end of the file, holding
    /// `references` (one count per existing cluster) plus the new structures themselves, then points
    /// the header at it (qcow2 spec, "Host cluster management"). Until the header switch the old
    /// structures stay in force, so a crash leaves the image as it was; afterwards the old refcount
    /// clusters are simply free. COPIED flags are then made to match the new refcounts.
    func rebuildRefcounts(_ references: [UInt32]) throws(ImageError) {
        let cs = UInt64(clusterSize)
        let perBlock = UInt64(refcountBlockEntries)
        let maximum: UInt64 = refcountBits == 64 ? UInt64.max : (1 << UInt64(refcountBits)) - 1
        if let worst = references.max(), UInt64(worst) > maximum {
            throw ImageError(path, .unsupported, "a cluster has \(worst) references, more than \(refcountBits)-bit refcounts hold")
        }
        try flushMetadata()
        let start = UInt64(references.count)
        var blockCount: UInt64 = 0
        var tableClusters: UInt64 = 0
        while true {
            let covered = start + blockCount + tableClusters
            let blocksNeeded = ceilDiv(covered, perBlock)
            let clustersNeeded = max(1, ceilDiv(blocksNeeded * 8, cs))
            if blocksNeeded == blockCount && clustersNeeded == tableClusters { break }
            blockCount = blocksNeeded
            tableClusters = clustersNeeded
        }
        guard tableClusters * cs <= QCOW2Header.maxRefcountTableBytes else {
            throw ImageError(path, .unsupported, "the rebuilt refcount table would exceed \(QCOW2Header.maxRefcountTableBytes) bytes")
        }
        let total = start + blockCount + tableClusters
        var table = [UInt64](repeating: 0, count: Int(tableClusters * cs / 8))
        for b in 0..<blockCount {
            var block = [UInt8](repeating: 0, count: clusterSize)
            for k in 0..<perBlock {
                let cluster = b * perBlock + k
                guard cluster < total else { break }
                let value = cluster < start ? UInt64(references[Int(cluster)]) : 1
                if value > 0 { Self.setRefcountEntry(&block, Int(k), bits: refcountBits, value) }
            }
            let offset = (start + b) * cs
            try writeHost(block, at: offset)
            table[Int(b)] = offset
        }
        let tableOffset = (start + blockCount) * cs
        try writeHost([UInt8](be64Entries: table), at: tableOffset)
        try barrier()
        var fields = [UInt8](repeating: 0, count: 12)
        fields.setBE64(tableOffset, at: 0)
        fields.setBE32(UInt32(tableClusters), at: 8)
        try writeHost(fields, at: 48)
        try barrier()

        header.refcountTableOffset = tableOffset
        header.refcountTableClusters = UInt32(tableClusters)
        refcountTable = table
        refcountCache = MetadataCache(capacity: refcountCache.capacity)
        freeHint = 0
        allocationEnd = total
        rebuildMetadataClusters(try readSnapshotTable())
        try updateCopiedFlags()
        try flushMetadata()
    }
}

extension QCOW2Image {
    /// Sets the refcount of every leaked cluster to its real number of references (`qemu-img check
    /// -r leaks`). Returns the report before the repair and the number of clusters repaired.
    public func repairLeaks() throws(ImageError) -> (before: CheckReport, repaired: Int) {
        guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
        let before = try check()
        // Leaks are known exactly unless an L1/L2/snapshot entry could not be followed.
        guard before.tableErrors == 0 else { return (before, 0) }
        try locked { () throws(ImageError) in
            quiesceDataIO()
            for (cluster, references) in before.leakedClusters.sorted(by: { $0.key < $1.key }) {
                guard try refcountBlockOffset(Int(cluster / UInt64(refcountBlockEntries))) != 0 else { continue }
                try setRefcount(cluster, references)
                if references == 0 { forgetFreedCluster(cluster) }
            }
            try flushMetadata()
        }
        return (before, before.leakedClusters.count)
    }
}
