import CVireoLinux
#if canImport(Glibc)
import Glibc
#endif

/// The descriptors a software switch moves frames through: tap devices, AF_PACKET raw sockets on
/// host interfaces, and unix sockets carrying one frame per message. All are non-blocking; the
/// pointer work of reading and writing frames stays here.
public enum FrameChannel {
    /// Opens a tap device (`/dev/net/tun`, IFF_TAP|IFF_NO_PI); returns the descriptor and sets
    /// `deviceName` to the device's name. The device exists as long as the descriptor is open (or
    /// longer, for a persistent tap). With `offload`, every frame read or written comes after a
    /// 12-byte virtio-net header and the kernel may hand over checksum-partial and TSO super-frames.
    public static func openTap(named name: String, offload: Bool = false, deviceName: inout String) throws(SystemError) -> FileDescriptor {
        var actual = [CChar](repeating: 0, count: Int(IFNAMSIZ) + 1)
        let fd = try retryingInterrupts("TUNSETIFF tap \(name)") { unsafe vireo_switch_tap_open(name, &actual, offload ? 1 : 0) }
        deviceName = unsafe actual.withUnsafeBufferPointer { unsafe String(cString: $0.baseAddress!) }
        return FileDescriptor(adopting: fd)
    }

    /// Opens an AF_PACKET raw socket on host interface `interface` (promiscuous; VLAN tags the
    /// kernel strips on receive are restored by ``receivePacket(_:into:headed:)``). With `headed`
    /// (PACKET_VNET_HDR), frames come and go after a 12-byte virtio-net header, as on an offload tap:
    /// a host interface hands over checksum-partial and TSO packets, which are only usable with it.
    public static func openPacketSocket(interface: String, headed: Bool = false) throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("AF_PACKET socket on \(interface)") { vireo_packet_open(interface, headed ? 1 : 0) }
        return FileDescriptor(adopting: fd)
    }

    /// A listening SOCK_SEQPACKET unix socket at `path` (one frame per message).
    public static func listenSeqPacket(path: String) throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("listen SOCK_SEQPACKET \(path)") { vireo_unix_listen(path, Int32(SOCK_SEQPACKET.rawValue)) }
        return FileDescriptor(adopting: fd)
    }

    /// A listening SOCK_STREAM unix socket at `path`, non-blocking.
    public static func listenStream(path: String) throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("listen \(path)") { vireo_unix_listen(path, Int32(SOCK_STREAM.rawValue)) }
        return FileDescriptor(adopting: fd)
    }

    /// Connects a (blocking) SOCK_SEQPACKET socket to `path`.
    public static func connectSeqPacket(path: String) throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("connect SOCK_SEQPACKET \(path)") { vireo_unix_connect(path, Int32(SOCK_SEQPACKET.rawValue)) }
        return FileDescriptor(adopting: fd)
    }

    /// Connects a non-blocking SOCK_SEQPACKET socket to `path`: a VMM's end of a switch's `vm:` port.
    public static func connectSeqPacketNonBlocking(path: String) throws(SystemError) -> FileDescriptor {
        let socket = try connectSeqPacket(path: path)
        let flags = try retryingInterrupts("fcntl F_GETFL") { fcntl(socket.rawValue, F_GETFL) }
        _ = try retryingInterrupts("fcntl F_SETFL O_NONBLOCK") { fcntl(socket.rawValue, F_SETFL, flags | O_NONBLOCK) }
        return socket
    }

    /// Makes descriptor number `fd` refer to what `replacement` refers to (`dup2(2)`), closing what
    /// `fd` referred to. Parking a hung-up socket on a descriptor that never becomes readable
    /// drops it from every epoll set watching it (epoll forgets a file once its last descriptor
    /// is closed), so a level-triggered watcher stops waking up without being told.
    public static func park(_ fd: Int32, on replacement: Int32) throws(SystemError) {
        _ = try retryingInterrupts("dup2 \(replacement) onto \(fd)") { dup2(replacement, fd) }
    }

    /// Accepts a connection, non-blocking; nil when none is pending.
    public static func accept(_ listener: Int32) throws(SystemError) -> FileDescriptor? {
        while true {
            let fd = vireo_accept_nonblocking(listener)
            if fd >= 0 { return FileDescriptor(adopting: fd) }
            switch errno {
            case EINTR: continue
            case EAGAIN, ECONNABORTED: return nil
            default: throw SystemError("accept", errno: errno)
            }
        }
    }

    /// Reads one frame (`read(2)`: tap devices, seqpacket sockets) into `buffer` from index 0.
    /// Returns the length; nil when nothing is ready (EAGAIN); 0 at end of stream.
    public static func read(_ fd: Int32, into buffer: inout [UInt8]) throws(SystemError) -> Int? {
        while true {
            let got = unsafe buffer.withUnsafeMutableBytes { unsafe Glibc.read(fd, $0.baseAddress, $0.count) }
            if got >= 0 { return got }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw SystemError("read frame", errno: errno)
            }
        }
    }

    /// Receives one frame from an AF_PACKET socket, 802.1Q tag restored (after its virtio-net
    /// header on a `headed` socket). nil when nothing is ready.
    public static func receivePacket(_ fd: Int32, into buffer: inout [UInt8], headed: Bool = false) throws(SystemError) -> Int? {
        while true {
            let got = unsafe buffer.withUnsafeMutableBytes { raw in
                let base = unsafe raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
                return unsafe headed ? vireo_packet_recv_headed(fd, base, raw.count) : vireo_packet_recv(fd, base, raw.count)
            }
            if got >= 0 { return Int(got) }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw SystemError("recvmsg AF_PACKET", errno: errno)
            }
        }
    }

    /// Writes one frame to a tap device or packet socket (`write(2)`); false if it would block or failed.
    public static func write(_ fd: Int32, _ frame: ArraySlice<UInt8>) -> Bool {
        while true {
            let written = unsafe frame.withUnsafeBytes { unsafe Glibc.write(fd, $0.baseAddress, $0.count) }
            if written >= 0 { return written == frame.count }
            if errno == EINTR { continue }
            return false
        }
    }

    /// Writes one frame to a tap device or packet socket (`write(2)`); false if it would block or failed.
    public static func write(_ fd: Int32, _ frame: [UInt8]) -> Bool { write(fd, frame[...]) }

    /// Writes one frame made of `first` and then the bytes of `rest` with one `writev(2)` (a frame
    /// forwarded from a ring where it lies, its headers from the switch's own copy); false if it
    /// would block or failed.
    public static func write(_ fd: Int32, _ first: ArraySlice<UInt8>, _ rest: borrowing IOVectors) -> Bool {
        let expected = first.count + rest.count
        let written = unsafe rest.withIOVecs(after: first) { list in
            while true {
                let written = unsafe list.withUnsafeBufferPointer { unsafe Glibc.writev(fd, $0.baseAddress, Int32($0.count)) }
                if written >= 0 || errno != EINTR { return written }
            }
        }
        guard let written else { return write(fd, (Array(first) + rest.bytes)[...]) }
        return written == expected
    }

    /// Sends a 12-byte virtio-net header and its frame on a `headed` packet socket; false if it
    /// would block or failed (the kernel refuses a header that does not fit the frame).
    public static func sendPacket(_ fd: Int32, headed message: ArraySlice<UInt8>) -> Bool {
        while true {
            let sent = unsafe message.withUnsafeBytes { raw in
                unsafe vireo_packet_send_headed(fd, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), raw.count)
            }
            if sent >= 0 { return sent == message.count }
            if errno == EINTR { continue }
            return false
        }
    }

    /// Sends one frame as one message on a unix socket, never blocking and never raising SIGPIPE.
    public static func sendMessage(_ fd: Int32, _ frame: [UInt8]) -> Bool { sendMessage(fd, frame[...]) }

    /// Sends one frame as one message on a unix socket, never blocking and never raising SIGPIPE.
    public static func sendMessage(_ fd: Int32, _ frame: ArraySlice<UInt8>) -> Bool {
        guard !frame.isEmpty else { return false }
        while true {
            let sent = unsafe frame.withUnsafeBytes { raw in
                unsafe vireo_send_message(fd, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), raw.count)
            }
            if sent >= 0 { return sent == frame.count }
            if errno == EINTR { continue }
            return false
        }
    }

    /// The most messages ``receiveBatch(_:into:slot:lengths:)`` and ``sendBatch(_:bytes:offsets:lengths:)`` move per call.
    public static let batchLimit = 64

    /// Receives up to `lengths.count` (at most ``batchLimit``) messages from a seqpacket or datagram
    /// socket with one `recvmmsg(2)`: message i lands in `arena` at `i * slot`, its length in
    /// `lengths[i]` (`slot` when truncated). Returns how many; nil when nothing is ready (EAGAIN).
    /// A zero length is the end of the stream.
    public static func receiveBatch(_ fd: Int32, into arena: inout [UInt8], slot: Int, lengths: inout [UInt32]) throws(SystemError) -> Int? {
        let count = min(lengths.count, batchLimit, slot > 0 ? arena.count / slot : 0)
        guard count > 0 else { return 0 }
        let got = unsafe arena.withUnsafeMutableBytes { raw in
            unsafe lengths.withUnsafeMutableBufferPointer { lengths in
                // SAFETY: `count` slots of `slot` bytes fit in `arena`, and `count` lengths in `lengths`.
                unsafe vireo_recv_batch(fd, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), slot, UInt32(count), lengths.baseAddress!)
            }
        }
        if got >= 0 { return Int(got) }
        if errno == EAGAIN { return nil }
        throw SystemError("recvmmsg", errno: errno)
    }

    /// Sends messages `bytes[offsets[i] ..< offsets[i] + lengths[i]]` (at most ``batchLimit``) with one
    /// `sendmmsg(2)`, never blocking nor raising SIGPIPE. Returns how many were sent (the first ones).
    public static func sendBatch(_ fd: Int32, bytes: [UInt8], offsets: [UInt32], lengths: [UInt32]) -> Int {
        let count = min(offsets.count, lengths.count, batchLimit)
        guard count > 0, zip(offsets, lengths).prefix(count).allSatisfy({ Int($0) + Int($1) <= bytes.count }) else { return 0 }
        let sent = unsafe bytes.withUnsafeBytes { raw in
            unsafe offsets.withUnsafeBufferPointer { offsets in
                unsafe lengths.withUnsafeBufferPointer { lengths in
                    // SAFETY: every message lies inside `bytes` (checked above); `count` entries in both arrays.
                    unsafe vireo_send_batch(fd, raw.baseAddress!.assumingMemoryBound(to: UInt8.self), offsets.baseAddress!, lengths.baseAddress!, UInt32(count))
                }
            }
        }
        return max(0, Int(sent))
    }

    /// Sets (or clears) `SO_RCVTIMEO` on a blocking socket: tests and clients that must not hang.
    public static func setReceiveTimeout(_ fd: Int32, milliseconds: Int) {
        var value = timeval(tv_sec: milliseconds / 1000, tv_usec: (milliseconds % 1000) * 1000)
        _ = unsafe setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &value, socklen_t(MemoryLayout<timeval>.size))
    }
}

/// SIGTERM/SIGINT/SIGHUP as a readable descriptor (signalfd), for event loops; SIGPIPE is ignored.
public enum TerminationSignalFD {
    public static func open() throws(SystemError) -> FileDescriptor {
        let fd = try retryingInterrupts("signalfd") { vireo_termination_signalfd() }
        return FileDescriptor(adopting: fd)
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
public func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    _ = unsafe clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}

/// Small file-system operations.
public enum FileSystem {
    /// `unlink(2)`, ignoring a missing file.
    public static func remove(_ path: String) {
        _ = unsafe unlink(path)
    }
}

extension FrameChannel {
    /// Writes all of `bytes` to a non-blocking stream socket, waiting (poll) up to `timeoutMilliseconds`
    /// in total for room; false if the peer is gone or too slow.
    public static func writeAll(_ fd: Int32, _ bytes: [UInt8], timeoutMilliseconds: Int32 = 1000) -> Bool {
        var offset = 0
        let deadline = monotonicNanoseconds() + UInt64(timeoutMilliseconds) * 1_000_000
        while offset < bytes.count {
            let written = unsafe bytes.withUnsafeBytes { raw in
                unsafe vireo_send_message(fd, raw.baseAddress!.assumingMemoryBound(to: UInt8.self) + offset, raw.count - offset)
            }
            if written >= 0 {
                offset += written
                continue
            }
            if errno == EINTR { continue }
            guard errno == EAGAIN else { return false }
            let now = monotonicNanoseconds()
            guard now < deadline else { return false }
            var waiter = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = unsafe poll(&waiter, 1, Int32((deadline - now) / 1_000_000) + 1)
        }
        return true
    }
}

extension FrameChannel {
    /// Waits up to `timeoutMilliseconds` for `fd` to become readable (or hung up); false on time-out.
    public static func waitReadable(_ fd: Int32, timeoutMilliseconds: Int32) -> Bool {
        var waiter = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while true {
            let ready = unsafe poll(&waiter, 1, timeoutMilliseconds)
            if ready < 0, errno == EINTR { continue }
            return ready > 0
        }
    }
}

/// The parent process's ID (`getppid(2)`): a child can notice that its parent has gone.
public func parentProcessID() -> Int32 { getppid() }
