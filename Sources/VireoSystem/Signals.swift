#if canImport(Glibc)
import Glibc
#endif

/// Synchronous handling of termination signals: block them in every thread, and let one thread
/// `sigwait` for them, so a SIGTERM becomes an orderly VM stop rather than an abrupt exit.
public enum TerminationSignals {
    public static let handled: [Int32] = [SIGTERM, SIGINT, SIGHUP]

    /// Blocks the signals in the calling thread; threads created afterwards inherit the mask.
    public static func block() {
        var set = sigset_t()
        unsafe sigemptyset(&set)
        for signal in handled { unsafe sigaddset(&set, signal) }
        _ = unsafe pthread_sigmask(SIG_BLOCK, &set, nil)
    }

    /// Ignores SIGPIPE for the whole process, so a peer closing a socket (a serial console client going
    /// away) is an EPIPE from write(2) rather than the end of the process.
    public static func ignoreBrokenPipes() {
        _ = signal(SIGPIPE, SIG_IGN)
    }

    /// Waits for one of the signals and returns it.
    public static func wait() -> Int32 {
        var set = sigset_t()
        unsafe sigemptyset(&set)
        for signal in handled { unsafe sigaddset(&set, signal) }
        var received: Int32 = 0
        while unsafe sigwait(&set, &received) != 0 {}
        return received
    }

    public static func name(_ signal: Int32) -> String {
        switch signal {
        case SIGTERM: "SIGTERM"
        case SIGINT: "SIGINT"
        case SIGHUP: "SIGHUP"
        default: "signal \(signal)"
        }
    }
}
