#if canImport(Glibc)
import Glibc
#endif
import CVireoLinux

/// A joinable OS thread. vCPUs need real threads (one blocked in `KVM_RUN` each), which Swift
/// concurrency's cooperative pool must not be used for.
public final class OSThread: @unchecked Sendable {
    // SAFETY: `handle` is written once by pthread_create before any other access and only read after.
    private var handle = pthread_t()
    private let started = ConditionLatch()

    private final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }

    /// Starts `body` on a new thread named `name` (Linux limits names to 15 bytes).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        let box = unsafe Unmanaged.passRetained(Box { [started] in
            started.open()
            body()
        })
        let result = unsafe pthread_create(&handle, nil, { argument in
            let box = unsafe Unmanaged<AnyObject>.fromOpaque(argument!).takeRetainedValue() as! Box
            box.body()
            return nil
        }, box.toOpaque())
        guard result == 0 else {
            unsafe box.release()
            throw SystemError("pthread_create \(name)", errno: result)
        }
        _ = unsafe vireo_set_thread_name(UInt(handle), String(name.prefix(15)))
        started.wait()
    }

    /// Sends the vCPU kick signal to the thread (see `vireo_install_kick_handler`).
    public func kick() {
        _ = vireo_kick_thread(UInt(handle))
    }

    public func join() {
        _ = pthread_join(handle, nil)
    }

    /// Installs the process-wide no-op handler for the kick signal; call once before starting vCPUs.
    public static func installKickHandler() throws(SystemError) {
        guard vireo_install_kick_handler() == 0 else { throw SystemError("sigaction(kick signal)", errno: errno) }
    }

    /// Makes the kick signal deliverable on the calling thread, whatever mask it inherited.
    public static func unblockKickSignal() {
        _ = vireo_unblock_kick_signal()
    }
}

/// A one-shot gate: `wait()` blocks until some thread calls `open()`.
public final class ConditionLatch: Sendable {
    private let isOpen = WaitableState(false)

    public init() {}

    public func open() { isOpen.update { $0 = true } }

    public func wait() { _ = isOpen.wait { $0 } }
}

/// A mutex-protected value with a condition variable, for state that threads wait on
/// (a vCPU parked while the VM is paused waits for the state to change).
@safe
public final class WaitableState<Value: Sendable>: @unchecked Sendable {
    // SAFETY: `@safe` because the mutex and condition pointers are private, allocated and
    // initialised in init, destroyed and freed only in deinit, and never escape. `value` is only
    // touched with the mutex held.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var value: Value

    public init(_ initial: Value) {
        value = initial
        unsafe pthread_mutex_init(mutex, nil)
        unsafe pthread_cond_init(condition, nil)
    }

    deinit {
        unsafe pthread_mutex_destroy(mutex)
        unsafe pthread_cond_destroy(condition)
        unsafe mutex.deallocate()
        unsafe condition.deallocate()
    }

    /// Runs `body` on the value under the lock and wakes every waiter.
    @discardableResult
    public func update<R>(_ body: (inout Value) -> R) -> R {
        unsafe pthread_mutex_lock(mutex)
        defer {
            unsafe pthread_cond_broadcast(condition)
            unsafe pthread_mutex_unlock(mutex)
        }
        return body(&value)
    }

    public var current: Value {
        unsafe pthread_mutex_lock(mutex)
        defer { unsafe pthread_mutex_unlock(mutex) }
        return value
    }

    /// Blocks until `predicate` holds, then returns the value.
    public func wait(until predicate: (Value) -> Bool) -> Value {
        unsafe pthread_mutex_lock(mutex)
        defer { unsafe pthread_mutex_unlock(mutex) }
        while !predicate(value) { unsafe pthread_cond_wait(condition, mutex) }
        return value
    }

    /// Blocks until `predicate` holds or `seconds` have passed (`pthread_cond_timedwait` on
    /// CLOCK_REALTIME); returns the value, or nil on timeout.
    public func wait(until predicate: (Value) -> Bool, timeout seconds: Double) -> Value? {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let whole = Int(max(0, seconds))
        var nanoseconds = now.tv_nsec + Int(max(0, seconds - Double(whole)) * 1e9)
        var deadline = timespec(tv_sec: now.tv_sec + whole + nanoseconds / 1_000_000_000, tv_nsec: 0)
        nanoseconds %= 1_000_000_000
        deadline.tv_nsec = nanoseconds
        unsafe pthread_mutex_lock(mutex)
        defer { unsafe pthread_mutex_unlock(mutex) }
        while !predicate(value) {
            if unsafe pthread_cond_timedwait(condition, mutex, &deadline) == ETIMEDOUT { return predicate(value) ? value : nil }
        }
        return value
    }
}
