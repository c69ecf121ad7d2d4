/// Why a VM stopped; each has a distinct, documented process exit code (`vireo-vmm --help`,
/// README "Exit codes") so a supervisor can tell a guest power-off from a crash.
public enum VMExit: Equatable, Sendable, CustomStringConvertible {
    /// The guest powered off (ACPI S5, or a halted boot processor).
    case poweredOff
    /// The guest asked for a reboot (ACPI reset register, i8042 reset line). The supervisor restarts it.
    case rebootRequested
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    case tripleFault
    /// The VMM was asked to stop: a signal (SIGTERM, SIGINT) or its control socket.
    case stopped(String)
    /// KVM or the VMM failed; the message says what.
    case failed(String)

    public var exitCode: Int32 {
        switch self {
        case .poweredOff: 0
        case .failed: 1
        case .rebootRequested: 2
        case .tripleFault: 3
        case .stopped: 4
        }
    }

    public var description: String {
        switch self {
        case .poweredOff: "guest powered off"
        case .rebootRequested: "guest requested a reboot"
        case .tripleFault: "guest triple-faulted (CPU shutdown)"
        case .stopped(let why): "stopped: \(why)"
        case .failed(let why): "VMM failure: \(why)"
        }
    }
}

/// What the VM is doing, as the control socket and the control plane report it.
public enum VMRunState: String, Sendable {
    case created, running, paused, stopping, stopped
}

/// Why a paused VM is paused.
public enum PauseReason: Sendable, Equatable {
    /// The control socket's `pause`.
    case requested
    /// virtio-blk disk `disk` (0 is /dev/vda) could not write because the host file system is full
    /// (`werror=enospc`): the request is held and retried on resume.
    case outOfSpace(disk: Int, errno: Int32, message: String)
}
