/// Creating new qcow2 images.
extension QCOW2Image {
    /// Creates (or truncates and replaces) a qcow2 image at `path`.
    ///
    /// - Parameters:
    ///   - size: virtual size in bytes, rounded up to a multiple of 512 like qemu-img; nil takes the backing image's size.
    ///   - clusterSize: 512 B … 2 MiB, a power of two.
    ///   - backing: backing file name as it will be stored (relative names are resolved against the
    ///     new image's directory, like QEMU); the file must exist.
    ///   - backingFormat: recorded in the header; nil probes the backing file and records what it is.
    ///   - refcountBits: 1, 2, 4, 8, 16, 32 or 64 (version 2 allows only 16).
    ///   - version: 3 (qemu's compat=1.1) or 2 (compat=0.10).
    public static func create(
        _ path: String, size: UInt64?, clusterSize: Int = 65536, backing: String? = nil,
        backingFormat: ImageFormat? = nil, refcountBits: Int = 16, version: UInt32 = 3, lazyRefcounts: Bool = false,
        preallocation: Preallocation = .off
    ) throws(ImageError) {
        func bad(_ message: String) -> ImageError { ImageError(path, .invalidArgument, message) }
        guard clusterSize.nonzeroBitCount == 1, (512...(2 << 20)).contains(clusterSize) else {
            throw bad("cluster size \(clusterSize) must be a power of two between 512 and 2097152")
        }
        guard refcountBits.nonzeroBitCount == 1, refcountBits <= 64 else {
            throw bad("refcount width \(refcountBits) must be a power of two up to 64")
        }
        guard version == 2 || version == 3 else { throw bad("qcow2 version \(version) is not supported (2 or 3)") }
        guard version == 3 || refcountBits == 16 else { throw bad("version 2 images require 16-bit refcounts") }
        guard version == 3 || !lazyRefcounts else { throw bad("lazy refcounts need a version 3 image") }

        var virtualSize = size
        var recordedFormat = backingFormat
        if let backing {
            guard !backing.isEmpty, backing.utf8.count <= 1023 else { throw bad("backing file name must be 1…1023 bytes") }
            let resolved = resolveBackingPath(backing, relativeTo: path)
            let image: any BlockImage
            do {
                image = try openImage(resolved, options: ImageOptions(writable: false, format: backingFormat))
            } catch {
                throw ImageError(path, .backingChain, "cannot open backing file '\(backing)': \(error.description)")
            }
            if virtualSize == nil { virtualSize = image.size }
            recordedFormat = image.format
            try image.close()
        }
        guard var virtualSize else { throw bad("an image size is required without a backing file") }
        // QEMU's block layer counts in 512-byte sectors; like qemu-img, round the size up.
        virtualSize = (virtualSize + 511) / 512 * 512
        guard virtualSize <= UInt64(Int64.max) else { throw bad("size \(virtualSize) is too large") }

        let clusterBits = UInt32(clusterSize.trailingZeroBitCount)
        let cs = UInt64(clusterSize)
        let l1Entries = QCOW2Header.l1EntriesNeeded(size: virtualSize, clusterBits: clusterBits)
        guard l1Entries * 8 <= QCOW2Header.maxL1Bytes else {
            throw bad("size \(virtualSize) needs an L1 table beyond 32 MiB with \(clusterSize)-byte clusters; use bigger clusters")
        }
        let l1Clusters = max(1, ceilDiv(l1Entries * 8, cs))
        let perBlock = cs * 8 / UInt64(refcountBits)
        var tableClusters: UInt64 = 1
        var blockCount: UInt64 = 1
        while true {
            let total = 1 + tableClusters + blockCount + l1Clusters
            let neededBlocks = ceilDiv(total, perBlock)
            let neededTable = ceilDiv(neededBlocks * 8, cs)
            if neededBlocks <= blockCount && neededTable <= tableClusters { break }
            blockCount = max(blockCount, neededBlocks)
            tableClusters = max(tableClusters, neededTable)
        }
        guard tableClusters * cs <= QCOW2Header.maxRefcountTableBytes else {
            throw bad("the refcount table would exceed 8 MiB; use bigger clusters or wider refcounts")
        }
        let tableOffset = cs
        let blocksOffset = tableOffset + tableClusters * cs
        let l1Offset = blocksOffset + blockCount * cs
        let totalClusters = 1 + tableClusters + blockCount + l1Clusters

        var header = QCOW2Header(
            version: version, backingFileOffset: 0, backingFileSize: 0, clusterBits: clusterBits,
            size: virtualSize, cryptMethod: 0, l1Size: UInt32(l1Entries), l1TableOffset: l1Offset,
            refcountTableOffset: tableOffset, refcountTableClusters: UInt32(tableClusters),
            snapshotCount: 0, snapshotsOffset: 0, incompatibleFeatures: 0,
            compatibleFeatures: lazyRefcounts ? QCOW2Header.Compatible.lazyRefcounts : 0, autoclearFeatures: 0,
            refcountOrder: UInt32(refcountBits.trailingZeroBitCount), headerLength: version == 3 ? 112 : 72,
            compressionType: 0, backingFile: nil, backingFormat: backing == nil ? nil : recordedFormat?.rawValue,
            featureNames: version == 3 ? QCOW2Header.standardFeatureNames : [], otherExtensions: [])
        let nameLength = backing?.utf8.count ?? 0
        if header.serialized().count + nameLength > clusterSize { header.featureNames = [] }
        var headerCluster = header.serialized()
        if let backing {
            header.backingFileOffset = UInt64(headerCluster.count)
            header.backingFileSize = UInt32(nameLength)
            headerCluster = header.serialized() + Array(backing.utf8)
        }
        guard headerCluster.count <= clusterSize else { throw bad("the header and backing file name do not fit in one \(clusterSize)-byte cluster") }
        headerCluster += [UInt8](repeating: 0, count: clusterSize - headerCluster.count)

        var table = [UInt64](repeating: 0, count: Int(tableClusters * cs / 8))
        for i in 0..<blockCount { table[Int(i)] = blocksOffset + i * cs }
        var blocks = [UInt8](repeating: 0, count: Int(blockCount * cs))
        let blockSize = clusterSize
        for cluster in 0..<totalClusters {
            let block = Int(cluster / perBlock)
            var bytes = Array(blocks[(block * blockSize)..<((block + 1) * blockSize)])
            setRefcountEntry(&bytes, Int(cluster % perBlock), bits: refcountBits, 1)
            blocks.replaceSubrange((block * blockSize)..<((block + 1) * blockSize), with: bytes)
        }

        let file = try PosixHostFile(path: path, writable: true, create: true)
        try file.write(headerCluster[...], at: 0)
        try file.write([UInt8](be64Entries: table)[...], at: tableOffset)
        try file.write(blocks[...], at: blocksOffset)
        try file.truncate(to: totalClusters * cs)
        try file.sync()
        if preallocation != .off {
            let image = try QCOW2Image.open(path, options: ImageOptions(writable: true, format: .qcow2))
            try image.preallocate(preallocation)
            try image.close()
        }
    }
}

/// Creates an image of either format (raw ignores the qcow2-only parameters and must not have a backing file).
public func createImage(
    _ path: String, format: ImageFormat, size: UInt64?, clusterSize: Int = 65536, backing: String? = nil,
    backingFormat: ImageFormat? = nil, refcountBits: Int = 16, version: UInt32 = 3
) throws(ImageError) {
    switch format {
    case .qcow2:
        try QCOW2Image.create(path, size: size, clusterSize: clusterSize, backing: backing, backingFormat: backingFormat,
                              refcountBits: refcountBits, version: version)
    case .raw:
        guard backing == nil else { throw ImageError(path, .invalidArgument, "raw images cannot have a backing file") }
        guard let size else { throw ImageError(path, .invalidArgument, "an image size is required") }
        try RawImage.create(path, size: size)
    }
}
