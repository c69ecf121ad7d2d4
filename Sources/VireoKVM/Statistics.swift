import CVireoLinux
import VireoSystem
#if canImport(Glibc)
import Glibc
#endif

/// Reader for KVM's binary statistics file (`Documentation/virt/kvm/api.rst`, KVM_GET_STATS_FD):
/// a header, then descriptors naming each counter, then the values. Used by `vireo-vmm --print-stats`
/// to show, for instance, that a guest ran natively (`insn_emulation` near zero).
enum KVMStatistics {
    static func read(descriptor: borrowing FileDescriptor) throws(KVMError) -> [String: UInt64] {
        try read(rawDescriptor: descriptor.rawValue)
    }

    /// Reads the statistics file `descriptor` with pread(2) only, so one descriptor serves any
    /// number of reads from any thread.
    static func read(rawDescriptor descriptor: Int32) throws(KVMError) -> [String: UInt64] {
        func pread(_ count: Int, at offset: Int) throws(KVMError) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: count)
            let got = unsafe bytes.withUnsafeMutableBytes { unsafe Glibc.pread(descriptor, $0.baseAddress, count, off_t(offset)) }
            guard got == count else { throw .ioctl("read KVM statistics", errno: got < 0 ? errno : EIO) }
            return bytes
        }
        let header = try pread(24, at: 0)
        guard let nameSize = header.littleEndianInteger(UInt32.self, at: 4),
              let count = header.littleEndianInteger(UInt32.self, at: 8),
              let descriptorsOffset = header.littleEndianInteger(UInt32.self, at: 16),
              let dataOffset = header.littleEndianInteger(UInt32.self, at: 20),
              count < 4096, nameSize < 1024 else { return [:] }
        let descriptorSize = 16 + Int(nameSize)
        let descriptors = try pread(descriptorSize * Int(count), at: Int(descriptorsOffset))
        var result: [String: UInt64] = [:]
        for index in 0..<Int(count) {
            let base = index * descriptorSize
            guard let size = descriptors.littleEndianInteger(UInt16.self, at: base + 6),
                  let offset = descriptors.littleEndianInteger(UInt32.self, at: base + 8), size >= 1 else { continue }
            let nameBytes = descriptors[(base + 16)..<(base + descriptorSize)].prefix { $0 != 0 }
            let name = String(decoding: nameBytes, as: UTF8.self)
            let value = try pread(8, at: Int(dataOffset) + Int(offset))
            result[name] = value.littleEndianInteger(UInt64.self, at: 0) ?? 0
        }
        return result
    }
}

extension Array<UInt8> {
    fileprivate func littleEndianInteger<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        guard offset >= 0, offset + MemoryLayout<T>.size <= count else { return nil }
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value |= T(self[offset + index]) << (8 * index) }
        return value
    }
}
