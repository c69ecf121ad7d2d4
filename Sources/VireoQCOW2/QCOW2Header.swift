/// A qcow2 header (versions 2 and 3) with its extensions, parsed from untrusted bytes and validated.
///
/// Field layout follows QEMU's `docs/interop/qcow2.txt`; every integer is big-endian.
public struct QCOW2Header: Sendable, Equatable {
    public static let magicBytes: [UInt8] = [0x51, 0x46, 0x49, 0xFB]  // "QFI\xfb"

    /// Incompatible feature bits.
    public enum Incompatible {
        public static let dirty: UInt64 = 1 << 0
        public static let corrupt: UInt64 = 1 << 1
        public static let externalDataFile: UInt64 = 1 << 2
        public static let compressionType: UInt64 = 1 << 3
        public static let extendedL2: UInt64 = 1 << 4
        static let known: UInt64 = 0x1F
    }

    /// Compatible feature bits.
    public enum Compatible {
        public static let lazyRefcounts: UInt64 = 1 << 0
    }

    /// Header extension types.
    enum Extension {
        static let end: UInt32 = 0
        static let backingFormat: UInt32 = 0xE279_2ACA
        static let featureNameTable: UInt32 = 0x6803_F857
        static let bitmaps: UInt32 = 0x2385_2875
        static let fullDiskEncryption: UInt32 = 0x0537_BE77
        static let externalDataFile: UInt32 = 0x4441_5441
    }

    public struct FeatureName: Sendable, Equatable {
        /// 0 incompatible, 1 compatible, 2 autoclear.
        public var type: UInt8
        public var bit: UInt8
        public var name: String
    }

    /// Largest L1 table accepted (QEMU's limit too): 32 MiB of entries.
    public static let maxL1Bytes: UInt64 = 32 << 20
    /// Largest refcount table accepted: 8 MiB.
    public static let maxRefcountTableBytes: UInt64 = 8 << 20
    public static let maxSnapshots: UInt32 = 65536

    public var version: UInt32
    public var backingFileOffset: UInt64
    public var backingFileSize: UInt32
    public var clusterBits: UInt32
    public var size: UInt64
    public var cryptMethod: UInt32
    public var l1Size: UInt32
    public var l1TableOffset: UInt64
    public var refcountTableOffset: UInt64
    public var refcountTableClusters: UInt32
    public var snapshotCount: UInt32
    public var snapshotsOffset: UInt64
    public var incompatibleFeatures: UInt64
    public var compatibleFeatures: UInt64
    public var autoclearFeatures: UInt64
    public var refcountOrder: UInt32
    public var headerLength: UInt32
    public var compressionType: UInt8

    public var backingFile: String?
    public var backingFormat: String?
    public var featureNames: [FeatureName]
    /// Types of extensions present that this implementation does not interpret.
    public var otherExtensions: [UInt32]

    public var clusterSize: Int { 1 << Int(clusterBits) }
    public var refcountBits: Int { 1 << Int(refcountOrder) }
    public var isDirty: Bool { incompatibleFeatures & Incompatible.dirty != 0 }
    public var isCorrupt: Bool { incompatibleFeatures & Incompatible.corrupt != 0 }
    public var lazyRefcounts: Bool { compatibleFeatures & Compatible.lazyRefcounts != 0 }

    /// L1 entries needed to map `size` bytes with `clusterBits` clusters (nil on overflow).
    static func l1EntriesNeeded(size: UInt64, clusterBits: UInt32) -> UInt64 {
        let bytesPerL2 = UInt64(1) << (2 * UInt64(clusterBits) - 3)  // clusters per L2 table × cluster size
        return ceilDiv(size, bytesPerL2)
    }

    func featureName(type: UInt8, bit: Int) -> String? {
        featureNames.first { $0.type == type && Int($0.bit) == bit }?.name
    }

    /// Parses and validates the header at the start of `head` (the first cluster of the file, or all of it
    /// if shorter). `fileSize` bounds every table offset.
    static func parse(_ head: [UInt8], fileSize: UInt64, path: String) throws(ImageError) -> QCOW2Header {
        func fail(_ message: String) -> ImageError { ImageError(path, .invalid, message) }
        func unsupported(_ message: String) -> ImageError { ImageError(path, .unsupported, message) }

        guard head.count >= 72 else { throw fail("file is too small to be a qcow2 image (\(fileSize) bytes)") }
        guard Array(head[0..<4]) == magicBytes else {
            throw fail("not a qcow2 image (magic \(hex(head.be32(0))), expected 0x514649fb)")
        }
        let version = head.be32(4)
        guard version == 2 || version == 3 else { throw unsupported("qcow2 version \(version) is not supported (only 2 and 3)") }
        let clusterBits = head.be32(20)
        guard (9...21).contains(clusterBits) else { throw fail("cluster_bits \(clusterBits) is outside 9…21") }
        let clusterSize = UInt64(1) << UInt64(clusterBits)

        var header = QCOW2Header(
            version: version, backingFileOffset: head.be64(8), backingFileSize: head.be32(16),
            clusterBits: clusterBits, size: head.be64(24), cryptMethod: head.be32(32),
            l1Size: head.be32(36), l1TableOffset: head.be64(40),
            refcountTableOffset: head.be64(48), refcountTableClusters: head.be32(56),
            snapshotCount: head.be32(60), snapshotsOffset: head.be64(64),
            incompatibleFeatures: 0, compatibleFeatures: 0, autoclearFeatures: 0,
            refcountOrder: 4, headerLength: 72, compressionType: 0,
            backingFile: nil, backingFormat: nil, featureNames: [], otherExtensions: [])

        if version == 3 {
            guard head.count >= 104 else { throw fail("file is too small for a version 3 header (\(fileSize) bytes)") }
            header.incompatibleFeatures = head.be64(72)
            header.compatibleFeatures = head.be64(80)
            header.autoclearFeatures = head.be64(88)
            header.refcountOrder = head.be32(96)
            header.headerLength = head.be32(100)
            guard header.headerLength >= 104, header.headerLength % 8 == 0 else {
                throw fail("header_length \(header.headerLength) is invalid (at least 104 and a multiple of 8)")
            }
            guard UInt64(header.headerLength) <= clusterSize, Int(header.headerLength) <= head.count else {
                throw fail("header_length \(header.headerLength) exceeds the first cluster or the file")
            }
            if header.headerLength > 104 { header.compressionType = head[104] }
        }
        guard header.refcountOrder <= 6 else { throw fail("refcount_order \(header.refcountOrder) is outside 0…6") }
        guard header.cryptMethod == 0 else {
            throw unsupported("encrypted images (crypt_method \(header.cryptMethod)) are not supported")
        }

        // Extensions live between the header and the backing file name (or the end of the first cluster).
        let extensionsEnd = Int(header.backingFileOffset != 0 && header.backingFileOffset < UInt64(head.count)
            ? header.backingFileOffset : UInt64(head.count))
        var position = Int(header.headerLength)
        while position + 8 <= extensionsEnd {
            let type = head.be32(position)
            let length = Int(head.be32(position + 4))
            let dataStart = position + 8
            guard length <= extensionsEnd - dataStart else {
                throw fail("header extension \(hex(type)) at byte \(position) is \(length) bytes long and overruns the header area")
            }
            if type == Extension.end { break }
            let data = Array(head[dataStart..<(dataStart + length)])
            switch type {
            case Extension.backingFormat:
                header.backingFormat = String(decoding: data.prefix { $0 != 0 }, as: UTF8.self)
            case Extension.featureNameTable:
                for entry in 0..<(length / 48) {
                    let e = Array(data[(entry * 48)..<(entry * 48 + 48)])
                    let name = String(decoding: e[2...].prefix { $0 != 0 }, as: UTF8.self)
                    header.featureNames.append(FeatureName(type: e[0], bit: e[1], name: name))
                }
            case Extension.fullDiskEncryption:
                throw unsupported("encrypted images (full disk encryption header extension) are not supported")
            default:
                header.otherExtensions.append(type)
            }
            position = dataStart + (length + 7) / 8 * 8
        }

        let unknown = header.incompatibleFeatures & ~Incompatible.known
        if unknown != 0 {
            let bit = unknown.trailingZeroBitCount
            let name = header.featureName(type: 0, bit: bit).map { " (\($0))" } ?? ""
            throw unsupported("unsupported incompatible feature bit \(bit)\(name); refusing to open")
        }
        if header.incompatibleFeatures & Incompatible.externalDataFile != 0 {
            throw unsupported("images with an external data file (incompatible feature bit 2) are not supported")
        }
        if header.incompatibleFeatures & Incompatible.extendedL2 != 0 {
            throw unsupported("images with extended L2 entries / subclusters (incompatible feature bit 4) are not supported")
        }
        if header.incompatibleFeatures & Incompatible.compressionType == 0, header.compressionType != 0 {
            throw fail("compression type \(header.compressionType) set without the compression type feature bit")
        }

        // Virtual size and L1 table.
        guard header.size <= UInt64(Int64.max) else { throw fail("virtual size \(header.size) is too large") }
        let needed = l1EntriesNeeded(size: header.size, clusterBits: clusterBits)
        guard UInt64(header.l1Size) * 8 <= maxL1Bytes else {
            throw fail("L1 table of \(header.l1Size) entries exceeds the \(maxL1Bytes >> 20) MiB limit")
        }
        guard UInt64(header.l1Size) >= needed else {
            throw fail("L1 table of \(header.l1Size) entries is too small for the virtual size \(header.size) (needs \(needed))")
        }
        if header.l1Size > 0 {
            try checkTable("L1 table", offset: header.l1TableOffset, bytes: UInt64(header.l1Size) * 8,
                           clusterSize: clusterSize, fileSize: fileSize, path: path)
        }

        // Refcount table.
        guard header.refcountTableClusters > 0 else { throw fail("refcount table has no clusters") }
        let refcountTableBytes = UInt64(header.refcountTableClusters) * clusterSize
        guard refcountTableBytes <= maxRefcountTableBytes else {
            throw fail("refcount table of \(header.refcountTableClusters) clusters exceeds the \(maxRefcountTableBytes >> 20) MiB limit")
        }
        try checkTable("refcount table", offset: header.refcountTableOffset, bytes: refcountTableBytes,
                       clusterSize: clusterSize, fileSize: fileSize, path: path)

        // Snapshot table (only its location is checked here).
        guard header.snapshotCount <= maxSnapshots else { throw fail("\(header.snapshotCount) snapshots exceed the limit of \(maxSnapshots)") }
        if header.snapshotCount > 0 {
            try checkTable("snapshot table", offset: header.snapshotsOffset, bytes: UInt64(header.snapshotCount) * 40,
                           clusterSize: clusterSize, fileSize: fileSize, path: path)
        }

        // Backing file name.
        if header.backingFileOffset != 0 {
            guard header.backingFileSize > 0, header.backingFileSize <= 1023 else {
                throw fail("backing file name length \(header.backingFileSize) is outside 1…1023")
            }
            let end = header.backingFileOffset + UInt64(header.backingFileSize)
            guard header.backingFileOffset >= UInt64(header.headerLength), end <= clusterSize, end <= UInt64(head.count) else {
                throw fail("backing file name at \(hex(header.backingFileOffset)) (\(header.backingFileSize) bytes) lies outside the header cluster")
            }
            let bytes = Array(head[Int(header.backingFileOffset)..<Int(end)])
            guard let name = String(validating: bytes, as: UTF8.self), !name.contains("\0") else {
                throw fail("backing file name is not valid UTF-8")
            }
            header.backingFile = name
        }
        return header
    }

    static func checkTable(_ what: String, offset: UInt64, bytes: UInt64, clusterSize: UInt64, fileSize: UInt64, path: String) throws(ImageError) {
        guard offset % clusterSize == 0, offset != 0 else {
            throw ImageError(path, .invalid, "\(what) offset \(hex(offset)) is not a nonzero multiple of the cluster size (\(clusterSize))")
        }
        guard offset < fileSize, bytes <= fileSize - offset else {
            throw ImageError(path, .invalid, "\(what) offset \(hex(offset)) (\(bytes) bytes) lies beyond the end of the file (\(fileSize) bytes)")
        }
    }

    /// Serializes a header for a new image (version 3 with a 112-byte header, or version 2), followed by
    /// its extensions and backing file name; the result fits in the first cluster.
    func serialized() -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(version == 3 ? headerLength : 72))
        out.replaceSubrange(0..<4, with: Self.magicBytes)
        out.setBE32(version, at: 4)
        out.setBE64(backingFileOffset, at: 8)
        out.setBE32(backingFileSize, at: 16)
        out.setBE32(clusterBits, at: 20)
        out.setBE64(size, at: 24)
        out.setBE32(cryptMethod, at: 32)
        out.setBE32(l1Size, at: 36)
        out.setBE64(l1TableOffset, at: 40)
        out.setBE64(refcountTableOffset, at: 48)
        out.setBE32(refcountTableClusters, at: 56)
        out.setBE32(snapshotCount, at: 60)
        out.setBE64(snapshotsOffset, at: 64)
        if version == 3 {
            out.setBE64(incompatibleFeatures, at: 72)
            out.setBE64(compatibleFeatures, at: 80)
            out.setBE64(autoclearFeatures, at: 88)
            out.setBE32(refcountOrder, at: 96)
            out.setBE32(headerLength, at: 100)
            if headerLength > 104 { out[104] = compressionType }
        }
        func appendExtension(_ type: UInt32, _ data: [UInt8]) {
            var ext = [UInt8](repeating: 0, count: 8)
            ext.setBE32(type, at: 0)
            ext.setBE32(UInt32(data.count), at: 4)
            ext += data
            ext += [UInt8](repeating: 0, count: (8 - data.count % 8) % 8)
            out += ext
        }
        if let backingFormat { appendExtension(Extension.backingFormat, Array(backingFormat.utf8)) }
        if version == 3 {
            var table: [UInt8] = []
            for feature in featureNames {
                var entry = [UInt8](repeating: 0, count: 48)
                entry[0] = feature.type
                entry[1] = feature.bit
                entry.replaceSubrange(2..<(2 + min(46, feature.name.utf8.count)), with: feature.name.utf8.prefix(46))
                table += entry
            }
            if !table.isEmpty { appendExtension(Extension.featureNameTable, table) }
        }
        out += [UInt8](repeating: 0, count: 8)  // end of extensions
        return out
    }

    static let standardFeatureNames: [FeatureName] = [
        FeatureName(type: 0, bit: 0, name: "dirty bit"),
        FeatureName(type: 0, bit: 1, name: "corrupt bit"),
        FeatureName(type: 0, bit: 2, name: "external data file"),
        FeatureName(type: 0, bit: 3, name: "compression type"),
        FeatureName(type: 0, bit: 4, name: "extended L2 entries"),
        FeatureName(type: 1, bit: 0, name: "lazy refcounts"),
        FeatureName(type: 2, bit: 0, name: "bitmaps"),
        FeatureName(type: 2, bit: 1, name: "raw external data"),
    ]
}
