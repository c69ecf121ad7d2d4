import CVireoLinux
#if canImport(Glibc)
import Glibc
#endif

/// A NETLINK_ROUTE socket connected to the kernel (rtnetlink, `man 7 rtnetlink`): whole messages
/// in, whole messages out; building and parsing them is `VireoNetlink`'s job.
public final class NetlinkSocket: Sendable {
    public let descriptor: FileDescriptor

    /// Opens the socket in the network namespace whose file is `namespacePath`
    /// (`/run/netns/NAME`, `/proc/PID/ns/net`), or in the caller's when nil.
    public init(namespacePath: String? = nil) throws(SystemError) {
        let fd = try retryingInterrupts("socket(AF_NETLINK, NETLINK_ROUTE)\(namespacePath.map { " in \($0)" } ?? "")") {
            unsafe vireo_netlink_route_open(namespacePath)
        }
        descriptor = FileDescriptor(adopting: fd)
        FrameChannel.setReceiveTimeout(fd, milliseconds: 5000)
    }

    /// Sends one datagram (one or more netlink messages).
    public func send(_ bytes: [UInt8]) throws(SystemError) {
        let sent = try retryingInterrupts("send netlink") {
            unsafe bytes.withUnsafeBytes { unsafe Glibc.send(descriptor.rawValue, $0.baseAddress, $0.count, 0) }
        }
        guard sent == bytes.count else { throw SystemError("send netlink (short)", errno: EMSGSIZE) }
    }

    /// Receives one datagram (up to 64 KiB; dumps arrive as several). Times out after 5 s (EAGAIN).
    public func receive() throws(SystemError) -> [UInt8] {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let got = try retryingInterrupts("recv netlink") {
            unsafe buffer.withUnsafeMutableBytes { unsafe Glibc.recv(descriptor.rawValue, $0.baseAddress, $0.count, 0) }
        }
        buffer.removeLast(buffer.count - got)
        return buffer
    }
}

/// Persistent tap devices (`ip tuntap add … mode tap`): tun devices cannot be created over rtnetlink.
public enum PersistentTap {
    /// Creates tap `name` (IFF_TAP|IFF_NO_PI, TUNSETPERSIST) in the namespace at `namespacePath`
    /// (nil: the caller's). It lives until deleted (rtnetlink `RTM_DELLINK` removes it).
    public static func create(name: String, namespacePath: String? = nil) throws(SystemError) {
        _ = try retryingInterrupts("create tap \(name)") { unsafe vireo_tap_create_persistent(name, namespacePath) }
    }
}
