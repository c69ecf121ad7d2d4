#if canImport(Glibc)
import Glibc
#endif

/// An owned file descriptor, closed exactly once when its owner goes away.
///
/// `~Copyable` makes double-close and use-after-close compile-time errors; handles that need
/// sharing (a VM fd used by several vCPU threads) wrap it in a class.
public struct FileDescriptor: ~Copyable, Sendable {
    public let rawValue: Int32

    public init(adopting rawValue: Int32) {
        self.rawValue = rawValue
    }

    /// Opens `path` with `open(2)`.
    public static func open(_ path: String, flags: Int32, mode: mode_t = 0o644) throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("open \(path)") { unsafe Glibc.open(path, flags | O_CLOEXEC, mode) }
        return FileDescriptor(adopting: fd)
    }

    deinit {
        _ = Glibc.close(rawValue)
    }

    /// Writes all of `bytes`, retrying short writes.
    public func writeAll(_ bytes: some Collection<UInt8>) throws(SystemError) {
        let array = Array(bytes)
        var offset = 0
        while offset < array.count {
            let written = unsafe array.withUnsafeBytes { buffer in
                unsafe Glibc.write(rawValue, buffer.baseAddress! + offset, buffer.count - offset)
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemError("write", errno: errno)
            }
            offset += written
        }
    }

    /// Reads up to `count` bytes; an empty result means end of file.
    public func read(upTo count: Int) throws(SystemError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: count)
        var got = -1
        repeat {
            got = unsafe buffer.withUnsafeMutableBytes { raw in unsafe Glibc.read(rawValue, raw.baseAddress, raw.count) }
        } while got < 0 && errno == EINTR
        if got < 0 { throw SystemError("read", errno: errno) }
        buffer.removeLast(count - got)
        return buffer
    }

    /// Gives the descriptor up without closing it.
    public consuming func release() -> Int32 {
        let fd = rawValue
        discard self
        return fd
    }
}
