#if canImport(Glibc)
import Glibc
#endif
import CVireoLinux

/// An epoll instance (epoll(7)): the I/O thread waits on it for ioeventfds and its stop event, the
/// switch's event loop for its ports. Each registered descriptor carries a caller-chosen 64-bit
/// token that `wait` returns, with the ready event bits where the caller wants them (hang-ups).
public final class Epoll: Sendable {
    /// EPOLLIN.
    public static let readable = UInt32(EPOLLIN.rawValue)
    /// EPOLLHUP | EPOLLRDHUP | EPOLLERR: the peer went away.
    public static let hangup = UInt32(EPOLLHUP.rawValue) | UInt32(EPOLLRDHUP.rawValue) | UInt32(EPOLLERR.rawValue)

    public let descriptor: FileDescriptor

    /// `epoll_create1(EPOLL_CLOEXEC)`.
    public init() throws(SystemError) {
        let fd = try retryingInterrupts("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }
        descriptor = FileDescriptor(adopting: fd)
    }

    /// `epoll_ctl(EPOLL_CTL_ADD)` for `events` (default: readability) of `fd`.
    public func add(_ fd: Int32, token: UInt64, events: UInt32 = Epoll.readable) throws(SystemError) {
        // SAFETY: epoll_event holds the epoll_data_t union (which has a pointer member); only its u64 is used.
        var event = unsafe epoll_event()
        unsafe event.events = events
        unsafe event.data.u64 = token
        _ = try retryingInterrupts("epoll_ctl add \(fd)") { unsafe epoll_ctl(descriptor.rawValue, EPOLL_CTL_ADD, fd, &event) }
    }

    /// `epoll_ctl(EPOLL_CTL_DEL)`.
    public func remove(_ fd: Int32) throws(SystemError) {
        var event = unsafe epoll_event()
        _ = try retryingInterrupts("epoll_ctl del \(fd)") { unsafe epoll_ctl(descriptor.rawValue, EPOLL_CTL_DEL, fd, &event) }
    }

    /// `epoll_wait`: the tokens of the ready descriptors (retrying EINTR); -1 waits forever.
    public func wait(maxEvents: Int = 32, timeoutMilliseconds: Int32 = -1) throws(SystemError) -> [UInt64] {
        // SAFETY: as in add(_:token:), the union is only read through its u64 member.
        var events = unsafe [epoll_event](repeating: epoll_event(), count: maxEvents)
        let count = try retryingInterrupts("epoll_wait") {
            unsafe events.withUnsafeMutableBufferPointer { unsafe epoll_wait(descriptor.rawValue, $0.baseAddress, Int32($0.count), timeoutMilliseconds) }
        }
        return unsafe events.prefix(Int(count)).map { unsafe $0.data.u64 }
    }

    /// `epoll_wait` for event loops: fills `ready` with (token, event bits) of up to `max`
    /// descriptors; an interrupted wait (a signal) returns with `ready` empty.
    public func wait(into ready: inout [(token: UInt64, events: UInt32)], max: Int = 64, timeoutMilliseconds timeout: Int32) throws(SystemError) {
        ready.removeAll(keepingCapacity: true)
        // SAFETY: as in add(_:token:events:), the union is only read through its u64 member.
        var events = unsafe [epoll_event](repeating: epoll_event(), count: max)
        let count = unsafe events.withUnsafeMutableBufferPointer { unsafe epoll_wait(descriptor.rawValue, $0.baseAddress, Int32($0.count), timeout) }
        if count < 0 {
            if errno == EINTR { return }
            throw SystemError("epoll_wait", errno: errno)
        }
        for index in 0..<Int(count) { unsafe ready.append((events[index].data.u64, events[index].events)) }
    }
}

extension EventFD {
    /// Resets the counter without blocking (for a non-blocking eventfd that epoll reported readable);
    /// returns 0 when it was already zero.
    public func drain() -> UInt64 {
        var value: UInt64 = 0
        let got = unsafe Glibc.read(descriptor.rawValue, &value, 8)
        return got == 8 ? value : 0
    }
}
