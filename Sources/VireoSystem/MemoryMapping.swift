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

    /// Alignment that lets the kernel back the mapping with transparent huge pages.
    public static let hugePageSize = 2 << 20

    /// Maps `size` bytes. With `hugePages`, the mapping starts on a 2 MiB boundary and is advised
    /// `MADV_HUGEPAGE`, as QEMU does for guest RAM: the guest's nested page tables can then map 2 MiB
    /// at a time, so first touches of guest memory fault 512 times less often (a Linux boot
    /// otherwise spends most of its exits populating 4 KiB pages).
    public init(size: Int, noReserve: Bool = true, hugePages: Bool = false) throws(SystemError) {
        precondition(size > 0, "mapping size must be positive")
        var flags = MAP_PRIVATE | MAP_ANONYMOUS
        if noReserve { flags |= MAP_NORESERVE }
        let slack = hugePages ? Self.hugePageSize : 0
        let reserved = unsafe mmap(nil, size + slack, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let reserved = unsafe reserved, unsafe reserved != MAP_FAILED else {
            throw SystemError("mmap \(size) bytes", errno: errno)
        }
        var address = unsafe reserved
        if hugePages {
            // Trim the over-allocation so the mapping is exactly [aligned, aligned + size).
            let start = UInt(bitPattern: reserved)
            let aligned = (start + UInt(slack) - 1) & ~UInt(slack - 1)
            let head = Int(aligned - start)
            if head > 0 { _ = unsafe munmap(reserved, head) }
            let tail = slack - head
            if tail > 0 { _ = unsafe munmap(reserved + head + size, tail) }
            unsafe address = reserved + head
            // Advice only: a kernel without THP leaves the mapping on 4 KiB pages, which still works.
            _ = unsafe madvise(address, size, MADV_HUGEPAGE)
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
