/// Compressed clusters (deflate): reading.
extension QCOW2Image {
    /// The guest cluster a compressed L2 entry describes, decompressed.
    func decompressCluster(_ entry: UInt64, guestOffset: UInt64) throws(ImageError) -> [UInt8] {
        throw ImageError(path, .unsupported, "compressed clusters are not supported yet (guest offset \(guestOffset))")
    }
}
