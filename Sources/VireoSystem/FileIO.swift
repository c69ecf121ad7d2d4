import CVireoLinux
#if canImport(Glibc)
import Glibc
#endif

/// What `fstat(2)` says about an open file, reduced to what storage code needs.
public struct FileStatus: Sendable, Equatable {
    /// Size in bytes (for a block device: the device size, via `lseek(SEEK_END)`).
    public var size: UInt64
    /// Bytes actually allocated on the host (`st_blocks * 512`).
    public var allocatedBytes: UInt64
    public var device: UInt64
    public var inode: UInt64
    public var isRegularFile: Bool
    public var isBlockDevice: Bool
}

/// Positioned I/O and durability for image files. Keeps the pointer work of pread/pwrite here,
/// so storage layers above stay in safe Swift.
extension FileDescriptor {
    /// Reads up to `count` bytes at `offset`, retrying short reads; fewer bytes only at end of file.
    public func pread(count: Int, at offset: UInt64) throws(SystemError) -> [UInt8] {
        precondition(count >= 0)
        var failure: SystemError? = nil
        // Read straight into uninitialised storage: no zero fill of a buffer about to be overwritten.
        let buffer = unsafe [UInt8](unsafeUninitializedCapacity: count) { raw, initialized in
            var done = 0
            while done < count {
                let got = unsafe Glibc.pread(rawValue, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if got < 0 {
                    if errno == EINTR { continue }
                    failure = SystemError("pread \(count) bytes at \(offset)", errno: errno)
                    break
                }
                if got == 0 { break }
                done += got
            }
            initialized = done
        }
        if let failure { throw failure }
        return buffer
    }

    /// Writes every byte of `bytes` at `offset`, retrying short writes and EINTR.
    public func pwriteAll(_ bytes: ArraySlice<UInt8>, at offset: UInt64) throws(SystemError) {
        var done = 0
        let count = bytes.count
        while done < count {
            let written = unsafe bytes.withUnsafeBytes { raw in
                unsafe Glibc.pwrite(rawValue, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
            }
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemError("pwrite \(count) bytes at \(offset)", errno: errno)
            }
            done += written
        }
    }

    public func pwriteAll(_ bytes: [UInt8], at offset: UInt64) throws(SystemError) {
        try pwriteAll(bytes[...], at: offset)
    }

    /// `fsync(2)`: data and metadata reach stable storage.
    public func sync() throws(SystemError) {
        _ = try retryingInterrupts("fsync") { Glibc.fsync(rawValue) }
    }

    /// `ftruncate(2)`.
    public func truncate(to size: UInt64) throws(SystemError) {
        _ = try retryingInterrupts("ftruncate to \(size)") { Glibc.ftruncate(rawValue, off_t(size)) }
    }

    /// `fallocate(2)` with `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`: the range is deallocated on the
    /// host and reads as zeros; the file size stays. Throws EOPNOTSUPP where the file system cannot do it.
    public func punchHole(at offset: UInt64, length: UInt64) throws(SystemError) {
        guard length > 0 else { return }
        _ = try retryingInterrupts("fallocate(PUNCH_HOLE) \(length) bytes at \(offset)") {
            vireo_punch_hole(rawValue, Int64(offset), Int64(length))
        }
    }

    /// `fstat(2)`, with the size of block devices taken from `lseek(SEEK_END)`.
    public func status() throws(SystemError) -> FileStatus {
        var info = stat()
        _ = try retryingInterrupts("fstat") { unsafe fstat(rawValue, &info) }
        let type = info.st_mode & S_IFMT
        var size = UInt64(max(0, info.st_size))
        if type == S_IFBLK {
            let end = try retryingInterrupts("lseek(SEEK_END)") { lseek(rawValue, 0, SEEK_END) }
            size = UInt64(end)
        }
        return FileStatus(
            size: size, allocatedBytes: UInt64(max(0, info.st_blocks)) * 512,
            device: UInt64(info.st_dev), inode: UInt64(info.st_ino),
            isRegularFile: type == S_IFREG, isBlockDevice: type == S_IFBLK)
    }
}

/// A plain mutual-exclusion lock (pthread mutex) for storage metadata.
@safe
public final class StorageMutex: @unchecked Sendable {
    // SAFETY: `@safe` because the mutex pointer is private, allocated and initialised in init,
    // destroyed and freed only in deinit, and never escapes.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)

    public init() { unsafe pthread_mutex_init(mutex, nil) }

    deinit {
        unsafe pthread_mutex_destroy(mutex)
        unsafe mutex.deallocate()
    }

    public func lock() { unsafe pthread_mutex_lock(mutex) }
    public func unlock() { unsafe pthread_mutex_unlock(mutex) }
}

/// A readers-writer lock (pthread rwlock): many shared holders or one exclusive holder.
@safe
public final class StorageRWLock: @unchecked Sendable {
    // SAFETY: as for `StorageMutex`: private pointer, initialised in init, destroyed in deinit.
    private let rwlock = UnsafeMutablePointer<pthread_rwlock_t>.allocate(capacity: 1)

    public init() { unsafe pthread_rwlock_init(rwlock, nil) }

    deinit {
        unsafe pthread_rwlock_destroy(rwlock)
        unsafe rwlock.deallocate()
    }

    public func lockShared() { unsafe pthread_rwlock_rdlock(rwlock) }
    public func lockExclusive() { unsafe pthread_rwlock_wrlock(rwlock) }
    public func unlock() { unsafe pthread_rwlock_unlock(rwlock) }
}

/// `O_DIRECT` (Glibc does not export it to Swift): I/O bypasses the page cache; buffers, offsets and
/// lengths must be aligned to the device's logical block size.
#if arch(x86_64) || arch(i386)
public let openDirectFlag: Int32 = 0o40000
#else
public let openDirectFlag: Int32 = 0o200000
#endif

extension FileDescriptor {
    /// Reads up to `count` bytes at `offset` through an `alignment`-aligned buffer (for `O_DIRECT`);
    /// `offset` and `count` must be multiples of `alignment`. Fewer bytes only at end of file.
    public func preadAligned(count: Int, at offset: UInt64, alignment: Int) throws(SystemError) -> [UInt8] {
        var memory: UnsafeMutableRawPointer? = nil
        guard unsafe posix_memalign(&memory, alignment, max(count, alignment)) == 0, let buffer = unsafe memory else {
            throw SystemError("posix_memalign \(count) bytes", errno: ENOMEM)
        }
        defer { unsafe free(buffer) }
        var done = 0
        while done < count {
            let got = unsafe Glibc.pread(rawValue, buffer + done, count - done, off_t(offset) + off_t(done))
            if got < 0 {
                if errno == EINTR { continue }
                throw SystemError("pread \(count) bytes at \(offset)", errno: errno)
            }
            if got == 0 { break }
            done += got
        }
        return unsafe [UInt8](UnsafeRawBufferPointer(start: buffer, count: done))
    }

    /// Writes `bytes` at `offset` from an `alignment`-aligned copy (for `O_DIRECT`); `offset` and the
    /// length must be multiples of `alignment`.
    public func pwriteAligned(_ bytes: ArraySlice<UInt8>, at offset: UInt64, alignment: Int) throws(SystemError) {
        let count = bytes.count
        var memory: UnsafeMutableRawPointer? = nil
        guard unsafe posix_memalign(&memory, alignment, max(count, alignment)) == 0, let buffer = unsafe memory else {
            throw SystemError("posix_memalign \(count) bytes", errno: ENOMEM)
        }
        defer { unsafe free(buffer) }
        unsafe bytes.withUnsafeBytes { raw in
            if count > 0 { unsafe buffer.copyMemory(from: raw.baseAddress!, byteCount: count) }
        }
        var done = 0
        while done < count {
            let written = unsafe Glibc.pwrite(rawValue, buffer + done, count - done, off_t(offset) + off_t(done))
            if written < 0 {
                if errno == EINTR { continue }
                throw SystemError("pwrite \(count) bytes at \(offset)", errno: errno)
            }
            done += written
        }
    }
}
