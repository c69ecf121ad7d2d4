import CVireoLinux
#if canImport(Glibc)
import Glibc
#endif

/// Stream sockets in the unix domain: the VMM's control socket and serial-console socket.
public enum UnixSocket {
    /// Creates a listening socket at `path`, replacing a stale socket file left by a dead process.
    public static func listen(path: String, backlog: Int32 = 8) throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("socket(AF_UNIX)") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let owned = FileDescriptor(adopting: fd)
        var address = try makeAddress(path)
        _ = unsafe unlink(path)
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        _ = try retryingInterrupts("bind \(path)") {
            unsafe withUnsafePointer(to: &address) { unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe bind(fd, $0, length) } }
        }
        _ = try retryingInterrupts("listen \(path)") { Glibc.listen(fd, backlog) }
        return owned
    }

    /// Connects to the socket at `path`.
    public static func connect(path: String) throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("socket(AF_UNIX)") { socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        let owned = FileDescriptor(adopting: fd)
        var address = try makeAddress(path)
        let length = socklen_t(MemoryLayout<sockaddr_un>.size)
        _ = try retryingInterrupts("connect \(path)") {
            unsafe withUnsafePointer(to: &address) { unsafe $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { unsafe Glibc.connect(fd, $0, length) } }
        }
        return owned
    }

    /// Accepts one connection.
    public static func accept(_ listener: borrowing FileDescriptor) throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("accept") { vireo_accept_cloexec(listener.rawValue) }
        return FileDescriptor(adopting: fd)
    }

    private static func makeAddress(_ path: String) throws(SystemError) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard bytes.count < capacity else { throw SystemError("socket path \(path) longer than \(capacity - 1) bytes", errno: ENAMETOOLONG) }
        unsafe withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (index, byte) in bytes.enumerated() { unsafe raw[index] = byte }
        }
        return address
    }
}

/// Puts a terminal into raw mode and restores it later (the serial console on stdio, like QEMU's `-nographic`).
public final class RawTerminal: @unchecked Sendable {
    // SAFETY: written once in init, read once in restore().
    private let fd: Int32
    private var saved = termios()

    public init?(fd: Int32) {
        guard isatty(fd) == 1 else { return nil }
        self.fd = fd
        guard unsafe tcgetattr(fd, &saved) == 0 else { return nil }
        var raw = saved
        unsafe cfmakeraw(&raw)
        raw.c_oflag |= tcflag_t(OPOST | ONLCR)  // keep "\n" → "\r\n" so host-side logs stay readable
        _ = unsafe tcsetattr(fd, TCSANOW, &raw)
    }

    public func restore() {
        _ = unsafe tcsetattr(fd, TCSANOW, &saved)
    }
}
