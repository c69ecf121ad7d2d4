import Foundation
import VireoSystem

/// What an engine needs to run a VM, already validated by the control plane.
public struct VMSpec: Sendable, Equatable {
    public var vmid: Int
    public var name: String
    public var memoryMiB: Int
    public var cores: Int
    public var sockets: Int
    public var kernel: String?
    public var initrd: String?
    public var cmdline: String?
    /// A flat binary for `vireo-vmm --raw` (tiny test and teaching guests).
    public var raw: RawImage?
    public var nics: [NIC]
    public var disks: [Disk]
    /// A virtio-balloon and the guest memory it should leave the guest, MiB (Proxmox's `balloon`:
    /// `memory` when the config has none); nil: no balloon device (`balloon: 0`).
    public var balloonTargetMiB: Int?

    public struct RawImage: Sendable, Equatable {
        public enum Mode: String, Sendable { case real, long }
        public var path: String
        public var mode: Mode
        public init(path: String, mode: Mode) { self.path = path; self.mode = mode }
    }

    public struct NIC: Sendable, Equatable {
        public var index: Int
        public var model: String
        public var mac: String
        /// `bridge=`: a Vireo switch or a Linux bridge (``HostNetwork/resolve(bridge:)``); nil: user-mode networking.
        public var bridge: String?
        /// `tag=`: the NIC's VLAN.
        public var tag: Int?
        public init(index: Int, model: String, mac: String, bridge: String? = nil, tag: Int? = nil) {
            self.index = index; self.model = model; self.mac = mac; self.bridge = bridge; self.tag = tag
        }

        /// The tap a NIC on a bridge uses, named as Proxmox names it (`tap{vmid}i{index}`).
        public func tapName(vmid: Int) -> String { "tap\(vmid)i\(index)" }
    }

    public struct Disk: Sendable, Equatable {
        public enum Media: String, Sendable { case disk, cdrom }
        public var key: String
        public var bus: String
        /// The image file (the control plane resolves volume ids), or the volume id it could not resolve.
        public var volume: String
        public var media: Media
        public init(key: String, bus: String, volume: String, media: Media = .disk) {
            self.key = key; self.bus = bus; self.volume = volume; self.media = media
        }

        /// The slot within its bus: `ide2` → 2.
        public var index: Int { Int(key.drop { !$0.isNumber }) ?? 0 }
    }

    public init(vmid: Int, name: String, memoryMiB: Int, cores: Int, sockets: Int, kernel: String? = nil, initrd: String? = nil,
                cmdline: String? = nil, raw: RawImage? = nil, nics: [NIC] = [], disks: [Disk] = [], balloonTargetMiB: Int? = nil) {
        self.vmid = vmid; self.name = name; self.memoryMiB = memoryMiB; self.cores = cores; self.sockets = sockets
        self.kernel = kernel; self.initrd = initrd; self.cmdline = cmdline; self.raw = raw; self.nics = nics; self.disks = disks
        self.balloonTargetMiB = balloonTargetMiB
    }

    /// What the balloon should hold at start: the memory above the target, MiB.
    public var balloonInflationMiB: Int? { balloonTargetMiB.map { max(0, memoryMiB - $0) } }
}

/// A running VM process as the control plane records it, enough to find it again after a daemon restart.
public struct VMProcess: Codable, Sendable, Equatable {
    public var engine: String
    public var pid: Int32
    /// Start time in clock ticks since boot (/proc/PID/stat field 22): tells the VM from a reused pid.
    public var startTicks: UInt64
    /// QMP socket (qemu) or control socket (vireo).
    public var controlSocket: String
    public var serialSocket: String
    /// Wall-clock start, epoch seconds.
    public var startedAt: Int

    public init(engine: String, pid: Int32, startTicks: UInt64, controlSocket: String, serialSocket: String, startedAt: Int) {
        self.engine = engine; self.pid = pid; self.startTicks = startTicks
        self.controlSocket = controlSocket; self.serialSocket = serialSocket; self.startedAt = startedAt
    }

    /// True while the recorded process is alive (and not a reused pid).
    public var isAlive: Bool { ProcessControl.isAlive(pid, startTime: startTicks) }
}

/// A running VM's balloon as Proxmox's qemu-server reports it (`ballooninfo` in `status/current`,
/// the `query-balloon` reply of Proxmox's QEMU): sizes in bytes.
public struct BalloonInfo: Sendable, Equatable {
    /// The memory the balloon leaves the guest: `maxMemory` − the balloon's size.
    public var actual: Int
    /// The guest memory the VM was started with.
    public var maxMemory: Int
    /// What the guest's balloon driver last reported (virtio 1.2 §5.5.6.3), under Proxmox's
    /// `ballooninfo` names: `free_mem`, `total_mem`, `mem_swapped_in`, `mem_swapped_out` (bytes),
    /// `major_page_faults`, `minor_page_faults`, `last_update` (seconds since the epoch). Empty
    /// until the driver has reported (a guest without one never does).
    public var guestStatistics: [String: Int]

    public init(actual: Int, maxMemory: Int, guestStatistics: [String: Int] = [:]) {
        self.actual = actual
        self.maxMemory = maxMemory
        self.guestStatistics = guestStatistics
    }

    /// Proxmox's names for the virtio-balloon statistics (by the VMMs' names for them: vireo-vmm's
    /// tag names, QEMU's `guest-stats` keys without their `stat-` prefix, which are the same).
    static let proxmoxNames = [
        "free-memory": "free_mem", "total-memory": "total_mem", "swap-in": "mem_swapped_in", "swap-out": "mem_swapped_out",
        "major-faults": "major_page_faults", "minor-faults": "minor_page_faults",
    ]

    /// Keeps the statistics Proxmox reports, renamed; a negative value (QEMU's "not reported") is left out.
    static func guestStatistics(_ values: [String: Any], lastUpdate: Int) -> [String: Int] {
        guard lastUpdate > 0 else { return [:] }
        var result = ["last_update": lastUpdate]
        for (name, value) in values {
            guard let proxmoxName = proxmoxNames[name], let number = (value as? NSNumber)?.int64Value, number >= 0 else { continue }
            result[proxmoxName] = Int(number)
        }
        return result
    }
}

public enum VMRunState: String, Sendable, Codable {
    case running, paused, stopped
}

public struct EngineError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Task-log sink: engines report what they decided (accelerator, skipped devices) line by line.
public typealias EngineLog = @Sendable (String) -> Void

/// The one interface the control plane drives; nothing above it knows which engine runs a VM.
public protocol VMEngine: Sendable {
    var name: String { get }
    /// Starts the VM in its own session so it outlives the daemon; `runDirectory` holds its sockets and log.
    func start(_ spec: VMSpec, runDirectory: String, log: EngineLog) async throws -> VMProcess
    /// Ends the VM now (QMP quit / control `stop`, then SIGKILL after `timeout`).
    func stop(_ process: VMProcess, timeout: Duration, log: EngineLog) async throws
    /// Asks the guest to power off; returns false when it is still running after `timeout`.
    func shutdown(_ process: VMProcess, timeout: Duration, log: EngineLog) async throws -> Bool
    func pause(_ process: VMProcess) async throws
    func resume(_ process: VMProcess) async throws
    func status(_ process: VMProcess) async -> VMRunState
    func stats(_ process: VMProcess) async throws -> [String: Int]
    /// The balloon's size now, for a VM started with `memoryMiB` of guest memory, and with
    /// `guestStatistics` what the guest's driver last reported (an engine may need another round
    /// trip for those); throws when the VM has no balloon or does not answer within `timeout`.
    func balloon(_ process: VMProcess, memoryMiB: Int, guestStatistics: Bool, timeout: Duration) async throws -> BalloonInfo
}

extension VMEngine {
    /// Waits until the process is gone, polling /proc (the VM may not be our child); true if it ended in time.
    func waitForExit(_ process: VMProcess, timeout: Duration) async -> Bool {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while clock.now < deadline {
            _ = ProcessControl.reap(process.pid)
            if !process.isAlive { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        _ = ProcessControl.reap(process.pid)
        return !process.isAlive
    }

    /// Sends SIGKILL if the process is still alive and waits for it to go.
    func kill(_ process: VMProcess, log: EngineLog) async {
        guard process.isAlive else { return }
        log("killing pid \(process.pid)")
        ProcessControl.signal(process.pid, SIGKILL)
        _ = await waitForExit(process, timeout: .seconds(5))
    }

    /// Spawns `executable` detached and waits until it listens on `socket`.
    func launch(executable: String, arguments: [String], runDirectory: String, socket: String, serial: String,
                log: EngineLog) async throws -> VMProcess {
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        for path in [socket, serial] { try? FileManager.default.removeItem(atPath: path) }
        let logPath = runDirectory + "/\(name).log"
        log("exec: " + ([executable] + arguments).joined(separator: " "))
        let pid = try ProcessControl.spawnDetached(executable: executable, arguments: arguments, logPath: logPath)
        let clock = ContinuousClock()
        // Generous: a loaded host (CI running builds and nested guests side by side) can take seconds
        // to start a process; an engine that fails exits, and that is noticed at once below.
        let deadline = clock.now + .seconds(60)
        var ticks: UInt64?
        while clock.now < deadline {
            if ticks == nil { ticks = ProcessControl.startTime(of: pid) }
            if let ticks, Self.listens(socket) {
                return VMProcess(engine: name, pid: pid, startTicks: ticks, controlSocket: socket, serialSocket: serial,
                                 startedAt: Int(Date().timeIntervalSince1970))
            }
            if let code = ProcessControl.reap(pid) {
                let output = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw EngineError("\(name) exited with code \(code) at start: \(output.suffix(800).trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        ProcessControl.signal(pid, SIGKILL)
        _ = ProcessControl.reap(pid)
        throw EngineError("\(name) did not open its control socket \(socket) within 60 s")
    }

    /// Whether something accepts connections on the unix socket `path`: its file appears at
    /// bind(2), before listen(2), and a connection in between is refused.
    static func listens(_ path: String) -> Bool {
        do {
            _ = try UnixSocket.connect(path: path)
            return true
        } catch {
            return false
        }
    }
}

/// Finds a helper binary: an environment override, else next to the running executable, else on PATH.
public func locateExecutable(_ name: String, environment variable: String) -> String? {
    if let path = ProcessInfo.processInfo.environment[variable], !path.isEmpty { return path }
    if let me = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
        let candidate = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}
