import CVireoLinux
import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// A QEMU process started with posix_spawn in its own process group, so the whole group can be killed,
/// with stdout and stderr joined on one pipe. Every live child is registered so that an interrupt of the
/// calling process (SIGINT/SIGTERM/SIGHUP, see `ChildProcess.installInterruptHandlers`) kills it too.
public final class ChildProcess: @unchecked Sendable {
    public let pid: pid_t
    /// Read end of the output pipe, or -1 when output is inherited.
    public let outputFD: Int32
    public let ownsProcessGroup: Bool
    private let lock = NSLock()
    private var exitStatus: Int32?

    private init(pid: pid_t, outputFD: Int32, ownsProcessGroup: Bool) {
        self.pid = pid; self.outputFD = outputFD; self.ownsProcessGroup = ownsProcessGroup
    }

    public enum Termination: Sendable, Equatable, CustomStringConvertible {
        case exited(Int32)
        case signaled(Int32)
        public var description: String {
            switch self {
            case .exited(let code): "status \(code)"
            case .signaled(let signal): "signal \(signal)"
            }
        }
    }

    /// - Parameters:
    ///   - captureOutput: join stdout+stderr on a pipe (stdin from /dev/null); otherwise inherit all three.
    ///   - newProcessGroup: put the child in a new process group (not for interactive, terminal-owning runs).
    public static func spawn(_ executable: String, _ arguments: [String], captureOutput: Bool = true, newProcessGroup: Bool = true) throws -> ChildProcess {
        var fds: [Int32] = [-1, -1]
        if captureOutput {
            guard pipe(&fds) == 0 else { throw LabError.io("pipe: errno \(errno)") }
            for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if captureOutput {
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
            posix_spawn_file_actions_adddup2(&actions, fds[1], 2)
        }
        // Nothing beyond stdio: a QEMU that inherited another thread's pipe end (a test's `Pipe` for a
        // child's stdin, say) would keep that pipe open for as long as the lab host runs.
        guard vireo_spawn_close_from(&actions, 3) == 0 else { throw LabError.io("posix_spawn_file_actions_addclosefrom_np: errno \(errno)") }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var emptyMask = sigset_t()
        sigemptyset(&emptyMask)
        posix_spawnattr_setsigmask(&attributes, &emptyMask)
        var flags = Int32(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK)
        if newProcessGroup {
            flags |= Int32(POSIX_SPAWN_SETPGROUP)
            posix_spawnattr_setpgroup(&attributes, 0)
        }
        posix_spawnattr_setflags(&attributes, Int16(flags))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        if captureOutput { close(fds[1]) }
        guard rc == 0 else {
            if captureOutput { close(fds[0]) }
            throw LabError.io("posix_spawn \(executable): error \(rc)")
        }
        let child = ChildProcess(pid: pid, outputFD: captureOutput ? fds[0] : -1, ownsProcessGroup: newProcessGroup)
        Self.registry.withLock { _ = $0.insert(pid) }
        return child
    }

    /// Non-blocking check; reaps the child when it has exited.
    public func poll() -> Termination? {
        lock.lock(); defer { lock.unlock() }
        if let status = exitStatus { return Self.decode(status) }
        var status: Int32 = 0
        let rc = waitpid(pid, &status, WNOHANG)
        if rc == pid {
            exitStatus = status
            Self.registry.withLock { _ = $0.remove(pid) }
            return Self.decode(status)
        }
        return nil
    }

    /// Blocks until the child exits.
    public func wait() -> Termination {
        while true {
            if let termination = poll() { return termination }
            usleep(20_000)
        }
    }

    /// SIGTERM to the group (or the process), SIGKILL after `grace` seconds, then reap. Safe to call twice.
    @discardableResult
    public func terminate(grace: Double = 2) -> Termination {
        if let done = poll() { closeOutput(); return done }
        let target = ownsProcessGroup ? -pid : pid
        kill(target, SIGTERM)
        let deadline = Date().addingTimeInterval(grace)
        while Date() < deadline {
            if let done = poll() { kill(target, SIGKILL); closeOutput(); return done }
            usleep(20_000)
        }
        kill(target, SIGKILL)
        let done = wait()
        closeOutput()
        return done
    }

    public func closeOutput() {
        lock.lock(); defer { lock.unlock() }
        if outputFD >= 0, !outputClosed { close(outputFD); outputClosed = true }
    }
    private var outputClosed = false

    /// Whether a process with this pid still exists (zombies count as gone once reaped).
    public var isAlive: Bool { poll() == nil && kill(pid, 0) == 0 }

    static func decode(_ status: Int32) -> Termination {
        let signal = status & 0x7f
        return signal == 0 ? .exited((status >> 8) & 0xff) : .signaled(signal)
    }

    // MARK: Interrupts

    static let registry = Mutex<Set<pid_t>>([])
    private static let handlersInstalled = Mutex<[any DispatchSourceSignal]>([])

    /// Kills every registered child's process group and exits with 128+signal when the process is interrupted.
    public static func installInterruptHandlers() {
        handlersInstalled.withLock { sources in
            guard sources.isEmpty else { return }
            for sig in [SIGINT, SIGTERM, SIGHUP] {
                signal(sig, SIG_IGN)
                let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
                source.setEventHandler {
                    killAll()
                    exit(128 + sig)
                }
                source.resume()
                sources.append(source)
            }
        }
    }

    /// SIGKILLs every live child (and its group) and reaps it.
    public static func killAll() {
        let pids = registry.withLock { $0 }
        for pid in pids {
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
        registry.withLock { $0.subtract(pids) }
    }
}
