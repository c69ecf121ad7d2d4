#if canImport(Glibc)
import Glibc
#endif
import CVireoLinux

/// A Linux tap interface opened through /dev/net/tun (created when it does not exist) with
/// IFF_TAP | IFF_NO_PI | IFF_VNET_HDR: every frame read or written is preceded by a 12-byte
/// `virtio_net_hdr_v1` (TUNSETVNETHDRSZ). The descriptor is non-blocking.
public final class TapDevice: @unchecked Sendable {
    // SAFETY: the fd is immutable; read(2)/write(2) on a tap each move one whole frame atomically.
    public let descriptor: FileDescriptor
    public let name: String
    public static let vnetHeaderLength = Int(VIREO_TAP_VNET_HDR_LEN)

    /// TUNSETOFFLOAD bits.
    public struct Offloads: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        public static let checksum = Offloads(rawValue: vireo_tun_f_csum())
        public static let tso4 = Offloads(rawValue: vireo_tun_f_tso4())
        public static let tso6 = Offloads(rawValue: vireo_tun_f_tso6())
        public static let tsoECN = Offloads(rawValue: vireo_tun_f_tso_ecn())
    }

    public init(name: String, offloads: Offloads = []) throws(SystemError) {
        let fd = unsafe vireo_tap_open(name, offloads.rawValue)
        guard fd >= 0 else { throw SystemError("open tap \(name)", errno: errno) }
        descriptor = FileDescriptor(adopting: fd)
        self.name = name
    }

    public var rawValue: Int32 { descriptor.rawValue }

    public func setOffloads(_ offloads: Offloads) throws(SystemError) {
        guard vireo_tap_set_offload(descriptor.rawValue, offloads.rawValue) >= 0 else {
            throw SystemError("TUNSETOFFLOAD", errno: errno)
        }
    }

    /// Writes one frame (vnet header included). False when the kernel refused it (dropped).
    public func write(_ packet: [UInt8]) -> Bool { FrameChannel.write(descriptor.rawValue, packet) }

    /// Writes one frame: `header` (the vnet header), then the bytes of `frame` (guest memory),
    /// gathered by the kernel (`writev(2)`), so the VMM copies nothing. False when refused.
    public func write(header: [UInt8], frame: borrowing IOVectors) -> Bool {
        FrameChannel.write(descriptor.rawValue, header[...], frame)
    }

    /// Reads one frame (vnet header included) straight into `vectors` (a guest's receive
    /// buffers) with `readv(2)`; returns its length, or nil when none is waiting. A frame longer
    /// than `vectors` is cut short, as `read(2)` would cut it: pass room for the largest.
    public func read(into vectors: borrowing IOVectors) -> Int? {
        precondition(!vectors.isReadOnly, "read into read-only vectors")
        let got = unsafe vectors.withIOVecs(after: []) { list in
            while true {
                let got = unsafe list.withUnsafeBufferPointer { unsafe Glibc.readv(descriptor.rawValue, $0.baseAddress, Int32($0.count)) }
                if got >= 0 || errno != EINTR { return got }
            }
        }
        guard let got, got > 0 else { return nil }
        return got
    }

    /// Reads one frame (vnet header included) into `buffer` (up to its count); returns its
    /// length, or nil when none is waiting. Lets a caller reuse one buffer for every frame.
    public func read(into buffer: inout [UInt8]) -> Int? {
        while true {
            let got = unsafe buffer.withUnsafeMutableBytes { unsafe Glibc.read(descriptor.rawValue, $0.baseAddress, $0.count) }
            if got > 0 { return got }
            if got < 0, errno == EINTR { continue }
            return nil
        }
    }

    /// Reads one frame (vnet header included) of at most `maxLength` bytes into a new array, with
    /// no copy beyond the kernel's and no zeroing; nil when none is waiting.
    public func read(maxLength: Int = 65_562) -> [UInt8]? {
        while true {
            var failure: Int32 = 0
            let frame = unsafe [UInt8](unsafeUninitializedCapacity: maxLength) { buffer, initialized in
                let got = unsafe Glibc.read(descriptor.rawValue, buffer.baseAddress, buffer.count)
                if got < 0 { failure = errno }
                initialized = max(got, 0)
            }
            if !frame.isEmpty { return frame }
            if failure == EINTR { continue }
            return nil
        }
    }
}
