import VireoSystem

/// A failure talking to KVM. Ioctl failures name the ioctl and carry the errno, like
/// firecracker's `VmError::SetUserMemoryRegion`, so a log line says exactly what was refused.
public enum KVMError: Error, CustomStringConvertible, Equatable, Sendable {
    case ioctl(String, errno: Int32)
    case open(String, errno: Int32)
    case unsupportedAPIVersion(Int32)
    case missingCapability(String)
    case invalidArgument(String)

    init(_ error: SystemError) { self = .ioctl(error.operation, errno: error.errno) }

    public var errno: Int32? {
        switch self {
        case .ioctl(_, let errno), .open(_, let errno): errno
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .ioctl(let name, let errno): "\(name) failed: \(SystemError.message(for: errno)) (errno \(errno))"
        case .open(let path, let errno): "cannot open \(path): \(SystemError.message(for: errno)) (errno \(errno))"
        case .unsupportedAPIVersion(let version): "KVM API version \(version) is not the stable version 12"
        case .missingCapability(let name): "KVM lacks the required capability \(name)"
        case .invalidArgument(let why): why
        }
    }
}

/// Issues one ioctl, retrying on EINTR, and converts failure into ``KVMError``.
@inline(__always)
func kvmCall(_ name: StaticString, _ call: () -> Int32) throws(KVMError) -> Int32 {
    do {
        return try retryingInterrupts(name.description, call)
    } catch {
        throw KVMError(error)
    }
}
