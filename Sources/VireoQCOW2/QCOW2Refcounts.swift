/// Refcount access and cluster allocation.
extension QCOW2Image {
    static func refcountEntry(_ block: [UInt8], _ index: Int, bits: Int) -> UInt64 {
        switch bits {
        case 1, 2, 4:
            let bit = index * bits
            return UInt64(block[bit / 8] >> UInt8(bit % 8)) & ((1 << UInt64(bits)) - 1)
        case 8: return UInt64(block[index])
        case 16: return UInt64(block.be16(index * 2))
        case 32: return UInt64(block.be32(index * 4))
        default: return block.be64(index * 8)
        }
    }

    static func setRefcountEntry(_ block: inout [UInt8], _ index: Int, bits: Int, _ value: UInt64) {
        switch bits {
        case 1, 2, 4:
            let bit = index * bits
            let mask = UInt8((1 << bits) - 1) << UInt8(bit % 8)
            block[bit / 8] = block[bit / 8] & ~mask | (UInt8(truncatingIfNeeded: value) << UInt8(bit % 8)) & mask
        case 8: block[index] = UInt8(truncatingIfNeeded: value)
        case 16: block.setBE16(UInt16(truncatingIfNeeded: value), at: index * 2)
        case 32: block.setBE32(UInt32(truncatingIfNeeded: value), at: index * 4)
        default: block.setBE64(value, at: index * 8)
        }
    }

    /// Offset of the refcount block for refcount table index `index`, or 0 when there is none.
    func refcountBlockOffset(_ index: Int) throws(ImageError) -> UInt64 {
        guard index < refcountTable.count else { return 0 }
        let offset = refcountTable[index] & Self.refcountTableOffsetMask
        guard offset % UInt64(clusterSize) == 0 else {
            throw ImageError(path, .invalid, "refcount table entry \(index) points to unaligned refcount block offset \(hex(offset))")
        }
        return offset
    }

    func loadRefcountBlock(_ offset: UInt64) throws(ImageError) {
        if refcountCache.get(offset) != nil { return }
        guard offset < hostFileSize, UInt64(clusterSize) <= hostFileSize - offset else {
            throw ImageError(path, .invalid, "refcount block offset \(hex(offset)) lies beyond the end of the file (\(hostFileSize) bytes)")
        }
        try makeRoomInRefcountCache()
        refcountCache.insert(offset, try file.read(at: offset, count: clusterSize), dirty: false)
    }

    func makeRoomInRefcountCache() throws(ImageError) {
        while refcountCache.isFull, let victim = refcountCache.victim {
            if refcountCache.isDirty(victim) {
                try writeHost(refcountCache.slots[victim]!.value, at: victim)
            }
            refcountCache.remove(victim)
        }
    }

    /// The refcount of a host cluster (by index); clusters no refcount block covers have refcount 0.
    func refcount(_ cluster: UInt64) throws(ImageError) -> UInt64 {
        let tableIndex = cluster / UInt64(refcountBlockEntries)
        guard tableIndex < UInt64(refcountTable.count) else { return 0 }
        let block = try refcountBlockOffset(Int(tableIndex))
        if block == 0 { return 0 }
        try loadRefcountBlock(block)
        let index = Int(cluster % UInt64(refcountBlockEntries))
        return Self.refcountEntry(refcountCache.slots[block]!.value, index, bits: refcountBits)
    }

    /// Sets a refcount in an existing refcount block (in the cache; written back before dependent L2 tables).
    func setRefcount(_ cluster: UInt64, _ value: UInt64) throws(ImageError) {
        let tableIndex = Int(cluster / UInt64(refcountBlockEntries))
        let block = try refcountBlockOffset(tableIndex)
        precondition(block != 0, "setRefcount without a refcount block")
        try loadRefcountBlock(block)
        let index = Int(cluster % UInt64(refcountBlockEntries))
        let bits = refcountBits
        refcountCache.modify(block) { Self.setRefcountEntry(&$0, index, bits: bits, value) }
        needsBarrierBeforeL2 = true
        if value == 0 { freeHint = min(freeHint, cluster) }
    }

    func findFreeCluster() throws(ImageError) -> UInt64 {
        var cluster = freeHint
        while try refcount(cluster) != 0 { cluster += 1 }
        freeHint = cluster
        guard (cluster + 1) * UInt64(clusterSize) <= Self.maxHostOffset else {
            throw ImageError(path, .unsupported, "image file would grow beyond the largest host offset qcow2 can address")
        }
        return cluster
    }

    /// Allocates one cluster (refcount 1) and returns its index.
    func allocateCluster() throws(ImageError) -> UInt64 {
        while true {
            let cluster = try findFreeCluster()
            let tableIndex = Int(cluster / UInt64(refcountBlockEntries))
            if try refcountBlockOffset(tableIndex) != 0 {
                try setRefcount(cluster, 1)
                freeHint = cluster + 1
                allocationEnd = max(allocationEnd, cluster + 1)
                return cluster
            }
            try ensureRefcountBlock(tableIndex)
        }
    }

    /// Creates the refcount block for refcount table index `tableIndex` (growing the table if needed).
    func ensureRefcountBlock(_ tableIndex: Int) throws(ImageError) {
        while true {
            if tableIndex >= refcountTable.count {
                try growRefcountTable(minEntries: tableIndex + 1)
                continue
            }
            if try refcountBlockOffset(tableIndex) != 0 { return }
            let cluster = try findFreeCluster()
            let ownIndex = Int(cluster / UInt64(refcountBlockEntries))
            var block = [UInt8](repeating: 0, count: clusterSize)
            if ownIndex == tableIndex {
                // The new block describes itself.
                Self.setRefcountEntry(&block, Int(cluster % UInt64(refcountBlockEntries)), bits: refcountBits, 1)
            } else if try refcountBlockOffset(ownIndex) != 0 {
                try setRefcount(cluster, 1)
            } else {
                try ensureRefcountBlock(ownIndex)
                continue
            }
            let offset = cluster * UInt64(clusterSize)
            try writeHost(block, at: offset)
            try writeBackRefcountBlocks()
            try barrier()
            refcountTable[tableIndex] = offset
            try writeHost(.be64(offset), at: header.refcountTableOffset + UInt64(tableIndex) * 8)
            try makeRoomInRefcountCache()
            refcountCache.insert(offset, block, dirty: false)
            metadataClusters.insert(offset)
            freeHint = max(freeHint, cluster + 1)
            allocationEnd = max(allocationEnd, cluster + 1)
            return
        }
    }

    /// Moves the refcount table to a bigger one at the end of the file, together with the refcount blocks
    /// that the new area itself needs: written completely, barrier, then the header is switched.
    func growRefcountTable(minEntries: Int) throws(ImageError) {
        let cs = UInt64(clusterSize)
        let perBlock = UInt64(refcountBlockEntries)
        let oldCount = refcountTable.count
        var start = max(allocationEnd, ceilDiv(hostFileSize, cs))
        while true {
            var tableClusters: UInt64 = 1
            var blockCount: UInt64 = 0
            var missing: [Int] = []
            while true {
                let end = start + tableClusters + blockCount
                let entries = max(UInt64(minEntries), ceilDiv(end, perBlock), UInt64(oldCount))
                let neededClusters = ceilDiv(entries * 8, cs)
                missing = []
                for index in Int(start / perBlock)...Int((end - 1) / perBlock) where try refcountBlockOffset(index) == 0 {
                    missing.append(index)
                }
                if neededClusters <= tableClusters && UInt64(missing.count) <= blockCount { break }
                tableClusters = max(tableClusters, neededClusters)
                blockCount = max(blockCount, UInt64(missing.count))
            }
            let end = start + tableClusters + UInt64(missing.count)
            var busy: UInt64? = nil
            for cluster in start..<end where try refcount(cluster) != 0 { busy = cluster }
            if let busy {
                start = busy + 1
                continue
            }
            guard tableClusters * cs <= QCOW2Header.maxRefcountTableBytes else {
                throw ImageError(path, .unsupported, "refcount table would exceed the \(QCOW2Header.maxRefcountTableBytes >> 20) MiB limit")
            }
            var newTable = refcountTable
            newTable += [UInt64](repeating: 0, count: Int(tableClusters * cs / 8) - oldCount)
            var blocks: [(tableIndex: Int, cluster: UInt64, bytes: [UInt8])] = []
            for (i, index) in missing.enumerated() {
                let cluster = start + tableClusters + UInt64(i)
                newTable[index] = cluster * cs
                blocks.append((index, cluster, [UInt8](repeating: 0, count: clusterSize)))
            }
            for cluster in start..<end {
                let index = Int(cluster / perBlock)
                if let j = blocks.firstIndex(where: { $0.tableIndex == index }) {
                    Self.setRefcountEntry(&blocks[j].bytes, Int(cluster % perBlock), bits: refcountBits, 1)
                } else {
                    try setRefcount(cluster, 1)
                }
            }
            for block in blocks { try writeHost(block.bytes, at: block.cluster * cs) }
            try writeHost([UInt8](be64Entries: newTable), at: start * cs)
            try writeBackRefcountBlocks()
            try barrier()
            var fields = [UInt8](repeating: 0, count: 12)
            fields.setBE64(start * cs, at: 0)
            fields.setBE32(UInt32(tableClusters), at: 8)
            try writeHost(fields, at: 48)
            try barrier()

            let oldOffset = header.refcountTableOffset
            let oldClusters = UInt64(header.refcountTableClusters)
            header.refcountTableOffset = start * cs
            header.refcountTableClusters = UInt32(tableClusters)
            refcountTable = newTable
            for i in 0..<oldClusters { metadataClusters.remove(oldOffset + i * cs) }
            for i in 0..<tableClusters { metadataClusters.insert((start + i) * cs) }
            for block in blocks {
                try makeRoomInRefcountCache()
                refcountCache.insert(block.cluster * cs, block.bytes, dirty: false)
                metadataClusters.insert(block.cluster * cs)
            }
            allocationEnd = max(allocationEnd, end)
            for i in 0..<oldClusters { try setRefcount(oldOffset / cs + i, 0) }
            return
        }
    }
}
