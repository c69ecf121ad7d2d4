import CVireoLinux
#if canImport(Glibc)
import Glibc
#endif

/// Processes the control plane launches and watches: VMMs that run in a session of their own and
/// outlive the daemon that started them.
public enum ProcessControl {
    /// glibc's `POSIX_SPAWN_SETSID` (not exported by every Glibc module map).
    private static let spawnSetSID: Int32 = 0x80

    /// Starts `executable` with `arguments` in a new session (`posix_spawn` with `POSIX_SPAWN_SETSID`),
    /// stdin from /dev/null, stdout and stderr appended to `logPath`, an empty signal mask and
    /// default dispositions for SIGPIPE/SIGTERM/SIGINT/SIGHUP (the daemon's runtime may ignore or block them).
    /// Returns the child's pid; the caller reaps it with ``reap(_:)``.
    public static func spawnDetached(executable: String, arguments: [String], logPath: String) throws(SystemError) -> Int32 {
        var attributes = posix_spawnattr_t()
        guard unsafe posix_spawnattr_init(&attributes) == 0 else { throw SystemError("posix_spawnattr_init", errno: errno) }
        defer { _ = unsafe posix_spawnattr_destroy(&attributes) }  // SAFETY: initialised above
        var actions = unsafe posix_spawn_file_actions_t()
        guard unsafe posix_spawn_file_actions_init(&actions) == 0 else { throw SystemError("posix_spawn_file_actions_init", errno: errno) }
        defer { _ = unsafe posix_spawn_file_actions_destroy(&actions) }

        var emptyMask = sigset_t()
        unsafe sigemptyset(&emptyMask)
        var defaults = sigset_t()
        unsafe sigemptyset(&defaults)
        for signal in [SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD] { unsafe sigaddset(&defaults, signal) }
        _ = unsafe posix_spawnattr_setsigmask(&attributes, &emptyMask)
        _ = unsafe posix_spawnattr_setsigdefault(&attributes, &defaults)
        let flags = spawnSetSID | Int32(POSIX_SPAWN_SETSIGMASK) | Int32(POSIX_SPAWN_SETSIGDEF)
        _ = unsafe posix_spawnattr_setflags(&attributes, Int16(flags))

        _ = unsafe posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        _ = unsafe posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o640)
        _ = unsafe posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Nothing else of ours goes with it: a VM must not hold the daemon's listening socket, database or
        // logs (a restarted vireod could not take its port back while an old VM kept the socket open).
        guard unsafe vireo_spawn_close_from(&actions, 3) == 0 else { throw SystemError("posix_spawn_file_actions_addclosefrom_np", errno: errno) }

        let argv = unsafe ([executable] + arguments).map { unsafe strdup($0) }
        defer { for unsafe pointer in unsafe argv { unsafe free(pointer) } }
        var argvNull = unsafe argv + [nil]
        var pid: pid_t = 0
        // SAFETY: argvNull is a NULL-terminated array of strdup'd C strings alive until after the call;
        // environ is the process environment, inherited as is.
        let result = unsafe argvNull.withUnsafeMutableBufferPointer { buffer in
            unsafe posix_spawn(&pid, executable, &actions, &attributes, buffer.baseAddress!, environ)
        }
        guard result == 0 else { throw SystemError("posix_spawn \(executable)", errno: result) }
        return pid
    }

    /// Reaps `pid` if it is an exited child of this process (`waitpid(WNOHANG)`).
    /// Returns the exit code (or 128+signal) when it was reaped now, nil otherwise (still running, or not our child).
    public static func reap(_ pid: Int32) -> Int32? {
        var status: Int32 = 0
        let result = unsafe waitpid(pid, &status, WNOHANG)
        guard result == pid else { return nil }
        if status & 0x7f == 0 { return (status >> 8) & 0xff }
        return 128 + (status & 0x7f)
    }

    /// Sends `signal` to `pid`; false when there is no such process.
    @discardableResult
    public static func signal(_ pid: Int32, _ signal: Int32) -> Bool {
        kill(pid, signal) == 0
    }

    /// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), nil when
    /// the process does not exist or is a zombie (exited, not yet reaped).
    public static func startTime(of pid: Int32) -> UInt64? {
        guard let text = readSmallFile("/proc/\(pid)/stat") else { return nil }
        // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
        guard let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3); the start time is field 22, i.e. fields[19].
        guard fields.count > 19, fields[0] != "Z", fields[0] != "X" else { return nil }
        return UInt64(fields[19])
    }

    /// True when `pid` exists, is not a zombie, and started at `startTime` (so the pid was not reused).
    public static func isAlive(_ pid: Int32, startTime: UInt64) -> Bool {
        guard pid > 0 else { return false }
        return self.startTime(of: pid) == startTime
    }

    /// Reads a small text file (procfs, sysfs) in one go; nil when it cannot be opened.
    public static func readSmallFile(_ path: String, limit: Int = 1 << 20) -> String? {
        let fd = unsafe open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { _ = close(fd) }
        var data: [UInt8] = []
        while data.count < limit, let chunk = RawDescriptorIO.readSome(fd, max: 65536) { data += chunk }
        return String(decoding: data, as: UTF8.self)
    }

    /// Sets receive and send timeouts on a socket (SO_RCVTIMEO / SO_SNDTIMEO).
    public static func setSocketTimeout(_ fd: Int32, seconds: Double) {
        var interval = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - Double(Int(seconds))) * 1_000_000))
        let size = socklen_t(MemoryLayout<timeval>.size)
        _ = unsafe setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &interval, size)
        _ = unsafe setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &interval, size)
    }
}
