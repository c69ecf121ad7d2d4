import VireoSystem

/// The VM's run state shared by the vCPU threads, the control socket and the main thread.
///
/// One `WaitableState` holds it so that "pause, then wait until every vCPU is parked" and
/// "wait for the exit reason" are condition waits, not polling loops.
final class Lifecycle: Sendable {
    struct State: Sendable {
        var runState: VMRunState = .created
        /// vCPUs currently parked outside `KVM_RUN` because the VM is paused.
        var parked = 0
        /// vCPU threads still in their run loop (started and not yet returned).
        var activeVCPUs = 0
        /// Why the VM is paused (nil unless `runState == .paused`).
        var pauseReason: PauseReason?
        /// Set once, by the first stop request.
        var exit: VMExit?
    }

    let state = WaitableState(State())

    func requestExit(_ reason: VMExit) {
        state.update { state in
            if state.exit == nil {
                state.exit = reason
                state.runState = .stopping
            }
        }
    }

    func waitForExitRequest() -> VMExit {
        state.wait { $0.exit != nil }.exit ?? .failed("no exit reason")
    }

    /// Runs `kick` until every vCPU is in the state `done` describes, repeating it every 50 ms: a kick
    /// that lands while a guest spins without exits was seen to stay unnoticed inside `KVM_RUN` on a PVM
    /// host, and a repeat costs nothing. Pause (all parked) and exit (all returned) both wait this way.
    func kickUntil(_ done: (State) -> Bool, kick: () -> Void) {
        repeat { kick() } while state.wait(until: done, timeout: 0.05) == nil
    }

    /// Called by a vCPU thread between `KVM_RUN`s: returns false when the thread should end,
    /// and blocks while the VM is paused.
    func vcpuMayRun() -> Bool {
        var parked = false
        defer {
            if parked { state.update { $0.parked -= 1 } }
        }
        while true {
            let snapshot = state.current
            if snapshot.exit != nil { return false }
            if snapshot.runState != .paused { return true }
            if !parked {
                parked = true
                state.update { $0.parked += 1 }
            }
            _ = state.wait { $0.runState != .paused || $0.exit != nil }
        }
    }
}
