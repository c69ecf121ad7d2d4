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
