import CVireoLinux
#if canImport(Glibc)
import Glibc
#endif

/// I/O on descriptors the caller does not own (standard input/output, sockets shared between threads).
/// Keeps the pointer work of read(2)/write(2) inside VireoSystem.
public enum RawDescriptorIO {
    /// Writes every byte, retrying short writes and EINTR; false when the peer is gone or the write failed.
    @discardableResult
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = unsafe bytes.withUnsafeBytes { unsafe Glibc.write(fd, $0.baseAddress! + offset, $0.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                return false
            }
            offset += written
        }
        return true
    }

    /// Reads what is available (blocking for at least one byte); nil at end of file or on error.
    public static func readSome(_ fd: Int32, max: Int = 4096) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: max)
        while true {
            let got = unsafe buffer.withUnsafeMutableBytes { unsafe Glibc.read(fd, $0.baseAddress, $0.count) }
            if got > 0 { return Array(buffer.prefix(got)) }
            if got < 0, errno == EINTR { continue }
            return nil
        }
    }

    /// Accepts a connection on a listening socket; nil once the listener is shut down.
    public static func accept(_ listener: Int32) -> Int32? {
        while true {
            let fd = vireo_accept_cloexec(listener)
            if fd >= 0 { return fd }
            if errno == EINTR { continue }
            return nil
        }
    }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    /// Wakes threads blocked in accept/read on a socket (shutdown(2)), without closing it.
    public static func shutdown(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_RDWR)) }
}
