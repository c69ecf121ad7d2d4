#if canImport(Glibc)
import Glibc
#endif

/// An anonymous, private memory mapping, unmapped when released.
///
/// Guest RAM uses `MAP_NORESERVE`: the host commits pages only when the guest touches them,
/// so a 4 GiB guest that uses 100 MiB costs 100 MiB.
@safe
public final class AnonymousMapping: @unchecked Sendable {
    // SAFETY: `@safe` because this class owns the mapping: `base` comes from a successful mmap of
    // exactly `size` bytes, is never reassigned, and is unmapped only in deinit; `discard`
    // bounds-checks its range against `size`. Concurrent access to the bytes is the
    // guest-memory layer's concern (it is shared with the guest anyway).
    public let base: UnsafeMutableRawPointer
    public let size: Int

    public init(size: Int, noReserve: Bool = true) throws(SystemError) {
        precondition(size > 0, "mapping size must be positive")
        var flags = MAP_PRIVATE | MAP_ANONYMOUS
        if noReserve { flags |= MAP_NORESERVE }
        let address = unsafe mmap(nil, size, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let address = unsafe address, unsafe address != MAP_FAILED else {
            throw SystemError("mmap \(size) bytes", errno: errno)
        }
        unsafe self.base = address
        self.size = size
    }

    /// Tells the kernel the range is no longer needed: its pages are freed and read back as zeros.
    public func discard(offset: Int, length: Int) throws(SystemError) {
        precondition(offset >= 0 && length >= 0 && offset + length <= size)
        _ = try retryingInterrupts("madvise(MADV_DONTNEED)") { unsafe madvise(base + offset, length, MADV_DONTNEED) }
    }

    deinit {
        _ = unsafe munmap(base, size)
    }
}
