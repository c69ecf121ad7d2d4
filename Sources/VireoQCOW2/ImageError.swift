import VireoSystem
#if canImport(Glibc)
import Glibc
#endif

/// Every failure of the storage layer: which image, what kind of problem, and a sentence saying what is wrong.
///
/// `description` reads like `disk.qcow2: L1 table offset 0x50000 lies beyond the end of the file (196608 bytes)`.
public struct ImageError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Kind: Sendable, Equatable {
        /// A system call failed (the message carries the errno text).
        case io
        /// The image is not a valid image of its format: a bad header, table or entry.
        case invalid
        /// Valid, but uses something this implementation does not do (yet).
        case unsupported
        /// A write on an image opened read-only, or one that must not be written (marked corrupt).
        case readOnly
        /// A guest access outside the virtual disk.
        case outOfRange
        /// A backing chain problem: a cycle, too deep, a missing file.
        case backingChain
        /// A bad argument to create/open.
        case invalidArgument
    }

    public let path: String
    public let kind: Kind
    public let message: String
    /// The errno of the failed system call behind an `.io` error, when there is one.
    public let errno: Int32?

    public init(_ path: String, _ kind: Kind, _ message: String, errno: Int32? = nil) {
        self.path = path
        self.kind = kind
        self.message = message
        self.errno = errno
    }

    init(_ path: String, _ error: SystemError) {
        self.init(path, .io, error.description, errno: error.errno)
    }

    /// The host file system is full (ENOSPC) or the user's quota is spent (EDQUOT): the condition
    /// QEMU's `werror=enospc` stops the VM for, because freeing space on the host fixes it.
    public var isOutOfSpace: Bool { errno == ENOSPC || errno == EDQUOT }

    public var description: String { "\(path): \(message)" }
}

func hex(_ value: some BinaryInteger) -> String { "0x" + String(value, radix: 16) }

func ceilDiv(_ a: UInt64, _ b: UInt64) -> UInt64 { a == 0 ? 0 : (a - 1) / b + 1 }
