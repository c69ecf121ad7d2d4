#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A failed system call: which operation, and the errno it returned.
///
/// Every syscall Vireo makes funnels through ``retryingInterrupts(_:_:)``, so errors always
/// name the call that failed (`KVM_SET_USER_MEMORY_REGION: Invalid argument (errno 22)`).
public struct SystemError: Error, CustomStringConvertible, Equatable, Sendable {
    public let operation: String
    public let errno: Int32

    public init(_ operation: String, errno: Int32) {
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        "\(operation): \(SystemError.message(for: errno)) (errno \(errno))"
    }

    public static func message(for errno: Int32) -> String {
        guard let text = unsafe strerror(errno) else { return "unknown error" }
        return unsafe String(cString: text)
    }
}

/// The errno of the calling thread.
public var currentErrno: Int32 { errno }

/// Runs a syscall that returns -1 on failure, retrying on EINTR, and throws a ``SystemError``
/// naming `operation` otherwise. Returns the syscall's non-negative result.
@inline(__always)
public func retryingInterrupts<R: BinaryInteger>(_ operation: @autoclosure () -> String, _ call: () -> R) throws(SystemError) -> R {
    while true {
        let result = call()
        if result >= 0 { return result }
        let error = errno
        if error == EINTR { continue }
        throw SystemError(operation(), errno: error)
    }
}

/// Like ``retryingInterrupts(_:_:)`` but returns EINTR to the caller as an error: used by
/// `KVM_RUN`, where an interrupted call is how another thread asks the vCPU to stop.
@inline(__always)
public func once<R: BinaryInteger>(_ operation: @autoclosure () -> String, _ call: () -> R) throws(SystemError) -> R {
    let result = call()
    if result >= 0 { return result }
    throw SystemError(operation(), errno: errno)
}
