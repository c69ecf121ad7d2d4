import CZlib

/// Compressed clusters (raw deflate, qcow2 compression type 0): reading.
extension QCOW2Image {
    /// The guest cluster a compressed L2 entry describes, decompressed.
    func decompressCluster(_ entry: UInt64, guestOffset: UInt64) throws(ImageError) -> [UInt8] {
        guard header.compressionType == 0 else {
            throw ImageError(path, .unsupported, "compression type \(header.compressionType) (zstd) is not supported (guest offset \(guestOffset))")
        }
        let shift = UInt64(62 - (clusterBits - 8))
        let hostOffset = entry & ((1 << shift) - 1)
        let sectors = ((entry & ((1 << 62) - 1)) >> shift) + 1
        let length = Int(sectors * 512 - (hostOffset & 511))
        let input = try file.read(at: hostOffset, count: length)
        guard let output = inflateRaw(input, outputSize: clusterSize) else {
            throw ImageError(path, .invalid, "compressed cluster at host offset \(hex(hostOffset)) (guest offset \(guestOffset)) does not decompress")
        }
        return output
    }
}

/// Inflates raw deflate data (no zlib header) into exactly `outputSize` bytes; nil if the data is bad
/// or too short. Trailing input after the end of the stream is ignored (the sector padding).
func inflateRaw(_ input: [UInt8], outputSize: Int) -> [UInt8]? {
    var output = [UInt8](repeating: 0, count: outputSize)
    var stream = z_stream()
    guard inflateInit2_(&stream, -12, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
    defer { inflateEnd(&stream) }
    var source = input
    let result: Int32 = source.withUnsafeMutableBufferPointer { inBuffer in
        output.withUnsafeMutableBufferPointer { outBuffer in
            stream.next_in = inBuffer.baseAddress
            stream.avail_in = uInt(inBuffer.count)
            stream.next_out = outBuffer.baseAddress
            stream.avail_out = uInt(outBuffer.count)
            let status = inflate(&stream, Z_FINISH)
            stream.next_in = nil
            stream.next_out = nil
            return status
        }
    }
    // Like qemu: the stream may end exactly at the cluster end, or fill it with input left over.
    guard result == Z_STREAM_END || (result == Z_BUF_ERROR && stream.avail_out == 0), stream.avail_out == 0 else { return nil }
    return output
}

/// Deflates `input` as raw deflate (no zlib header); nil when the result would not be smaller than `limit`.
func deflateRaw(_ input: [UInt8], limit: Int) -> [UInt8]? {
    var stream = z_stream()
    guard deflateInit2_(&stream, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY,
                        ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else { return nil }
    defer { deflateEnd(&stream) }
    var source = input
    var output = [UInt8](repeating: 0, count: limit)
    let result: Int32 = source.withUnsafeMutableBufferPointer { inBuffer in
        output.withUnsafeMutableBufferPointer { outBuffer in
            stream.next_in = inBuffer.baseAddress
            stream.avail_in = uInt(inBuffer.count)
            stream.next_out = outBuffer.baseAddress
            stream.avail_out = uInt(outBuffer.count)
            let status = deflate(&stream, Z_FINISH)
            stream.next_in = nil
            stream.next_out = nil
            return status
        }
    }
    guard result == Z_STREAM_END else { return nil }
    return Array(output[0..<(limit - Int(stream.avail_out))])
}

extension QCOW2Image {
    /// Writes one whole guest cluster compressed (like `qemu-img convert -c`), packing compressed
    /// clusters together on the host. The cluster must be unallocated (or zero) in this image; data that
    /// does not compress is written normally.
    public func writeCompressed(_ data: [UInt8], cluster guestCluster: UInt64) throws(ImageError) {
        try locked { () throws(ImageError) in
            try checkOpen()
            guard isWritable else { throw ImageError(path, .readOnly, "image is opened read-only") }
            guard data.count == clusterSize else {
                throw ImageError(path, .invalidArgument, "compressed writes take exactly one cluster (\(clusterSize) bytes)")
            }
            let cs = UInt64(clusterSize)
            try checkGuestRange(guestCluster * cs, UInt64(min(cs, header.size - min(header.size, guestCluster * cs))))
            let l1Index = Int(guestCluster / UInt64(l2Entries))
            let index = Int(guestCluster % UInt64(l2Entries))
            let l2Offset = try l2TableForWrite(l1Index, guestOffset: guestCluster * cs)
            let existing = l2Cache.slots[l2Offset]!.value[index]
            guard existing & (Self.l2OffsetMask | Self.compressed) == 0, header.compressionType == 0,
                  let compressed = deflateRaw(data, limit: clusterSize - 512) else {
                try writeCluster(guestCluster, within: 0, data: data[...])
                return
            }
            // Place the compressed bytes: in the current partly used cluster, else a new one.
            var start = compressedCursor
            if start == 0 || start % cs + UInt64(compressed.count) > cs {
                start = try allocateCluster() * cs
            } else {
                try adjustRefcount(start / cs, by: 1)
            }
            try writeHost(compressed, at: start)
            compressedCursor = (start + UInt64(compressed.count) + 511) / 512 * 512
            if compressedCursor % cs == 0 { compressedCursor = 0 }
            needsBarrierBeforeL2 = true
            let shift = UInt64(62 - (clusterBits - 8))
            let extraSectors = (start + UInt64(compressed.count) - 1) / 512 - start / 512
            try loadL2(l2Offset, l1Index: l1Index)
            l2Cache.modify(l2Offset) { $0[index] = Self.compressed | (extraSectors << shift) | start }
        }
    }
}
