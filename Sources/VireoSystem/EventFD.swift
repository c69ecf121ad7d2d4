#if canImport(Glibc)
import Glibc
#endif
import CVireoLinux

/// A Linux eventfd: a counter other threads (or KVM, via irqfd/ioeventfd) signal.
public final class EventFD: @unchecked Sendable {
    // SAFETY: eventfd reads and writes are atomic in the kernel; the fd is immutable.
    public let descriptor: FileDescriptor

    public init(nonBlocking: Bool = false) throws(SystemError) {
        let flags = Int32(EFD_CLOEXEC) | (nonBlocking ? Int32(EFD_NONBLOCK) : 0)
        let fd = try retryingInterrupts("eventfd") { eventfd(0, flags) }
        descriptor = FileDescriptor(adopting: fd)
    }

    public var rawValue: Int32 { descriptor.rawValue }

    public func signal(_ value: UInt64 = 1) throws(SystemError) {
        var value = value
        _ = try retryingInterrupts("eventfd write") { unsafe Glibc.write(descriptor.rawValue, &value, 8) }
    }

    /// Waits for the counter to become non-zero and returns it, resetting it to zero.
    public func wait() throws(SystemError) -> UInt64 {
        var value: UInt64 = 0
        _ = try retryingInterrupts("eventfd read") { unsafe Glibc.read(descriptor.rawValue, &value, 8) }
        return value
    }
}
