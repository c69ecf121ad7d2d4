import Foundation
import VireoSystem

/// Runs a VM under Vireo's own VMM: one `vireo-vmm` process per VM, driven through its control
/// socket (`status`, `pause`, `resume`, `powerdown`, `stop`, `stats`, `balloon`; one JSON reply per line).
public struct VireoEngine: VMEngine {
    public let name = "vireo"
    public let executable: String

    /// `executable` defaults to `$VIREO_VMM`, else the `vireo-vmm` next to the running binary, else PATH.
    public init(executable: String? = nil) {
        self.executable = executable ?? locateExecutable("vireo-vmm", environment: "VIREO_VMM") ?? "vireo-vmm"
    }

    /// vireo-vmm's arguments for `spec` (pure: unit-tested). `bridges` says what each NIC's
    /// `bridge=` resolved to (by NIC index); NICs without one are left out.
    public func arguments(for spec: VMSpec, control: String, serial: String,
                          bridges: [Int: HostNetwork.Bridge] = [:], switchDirectory: String = SwitchAttachmentDefaults.directory) throws -> [String] {
        var arguments: [String]
        if let raw = spec.raw {
            arguments = ["--raw", raw.path, "--raw-mode", raw.mode.rawValue]
        } else if let kernel = spec.kernel {
            arguments = ["--kernel", kernel]
            if let initrd = spec.initrd { arguments += ["--initrd", initrd] }
            if let cmdline = spec.cmdline { arguments += ["--cmdline", cmdline] }
        } else {
            throw EngineError("engine vireo needs 'kernel' or 'raw' in the VM config")
        }
        arguments += ["--cpus", String(spec.cores * spec.sockets), "--memory", "\(spec.memoryMiB)M",
                      "--serial", "unix:" + serial, "--control", "unix:" + control]
        // Statistics polled every 2 s, as qemu-server asks of QEMU (`guest-stats-polling-interval`).
        if let inflation = spec.balloonInflationMiB { arguments += ["--balloon", "\(inflation),stats=2"] }
        for nic in spec.nics {
            switch bridges[nic.index] {
            case .vireoSwitch(let name):
                let tag = nic.tag.map { ",tag=\($0)" } ?? ""
                arguments += ["--net", "switch=\(name)\(tag),mac=\(nic.mac.lowercased()),dir=\(switchDirectory)"]
            case .linux:
                arguments += ["--net", "tap=\(nic.tapName(vmid: spec.vmid)),mac=\(nic.mac.lowercased())"]
            case nil:
                break
            }
        }
        return arguments
    }

    public func start(_ spec: VMSpec, runDirectory: String, log: EngineLog) async throws -> VMProcess {
        let control = runDirectory + "/control.sock", serial = runDirectory + "/serial.sock"
        let network = HostNetwork()
        let bridges = try network.plumb(spec, forTapHolder: false, log: log)
        let arguments = try arguments(for: spec, control: control, serial: serial, bridges: bridges, switchDirectory: network.switchDirectory)
        if !spec.disks.isEmpty { log("note: the vireo engine does not attach disk devices yet") }
        return try await launch(executable: executable, arguments: arguments, runDirectory: runDirectory,
                                socket: control, serial: serial, log: log)
    }

    private func control(_ process: VMProcess, _ command: String, timeout: Duration = .seconds(5)) async throws -> [String: Any] {
        let path = process.controlSocket
        let reply = try await offPool { () -> [String: AnySendable] in
            let socket = try LineSocket(path: path, timeout: timeout)
            return (try socket.command(command)).mapValues { AnySendable($0) }
        }
        return reply.mapValues(\.value)
    }

    public func stop(_ process: VMProcess, timeout: Duration, log: EngineLog) async throws {
        guard process.isAlive else { return }
        do { _ = try await control(process, "stop") } catch { log("control socket: \(error)") }
        if await waitForExit(process, timeout: timeout) { return }
        await kill(process, log: log)
    }

    public func shutdown(_ process: VMProcess, timeout: Duration, log: EngineLog) async throws -> Bool {
        guard process.isAlive else { return true }
        // The ACPI power button (as Proxmox's `qm shutdown` and QEMU's system_powerdown): the guest
        // shuts down and powers off, which ends vireo-vmm. A guest that ignores it runs on.
        _ = try await control(process, "powerdown")
        return await waitForExit(process, timeout: timeout)
    }

    public func pause(_ process: VMProcess) async throws { _ = try await control(process, "pause") }
    public func resume(_ process: VMProcess) async throws { _ = try await control(process, "resume") }

    public func status(_ process: VMProcess) async -> VMRunState {
        guard process.isAlive else { return .stopped }
        guard let reply = try? await control(process, "status"), let body = reply["return"] as? [String: Any] else { return .running }
        return (body["state"] as? String) == "paused" ? .paused : .running
    }

    public func stats(_ process: VMProcess) async throws -> [String: Int] {
        let reply = try await control(process, "stats")
        return ((reply["return"] as? [String: Any]) ?? [:]).compactMapValues { ($0 as? NSNumber)?.intValue }
    }

    /// The control socket's `balloon` gives the balloon's own size (`actual_mib`, what it holds).
    /// The statistics come in the same reply, so `guestStatistics` costs nothing here.
    public func balloon(_ process: VMProcess, memoryMiB: Int, guestStatistics: Bool, timeout: Duration) async throws -> BalloonInfo {
        try Self.balloonInfo(fromReply: try await control(process, "balloon", timeout: timeout), memoryMiB: memoryMiB)
    }

    /// The `balloon` control reply as ``BalloonInfo``: `actual_mib` is what the balloon holds;
    /// `stats` (with `stats_updated`) what the guest's driver last reported, once it has.
    static func balloonInfo(fromReply reply: [String: Any], memoryMiB: Int) throws -> BalloonInfo {
        guard let body = reply["return"] as? [String: Any], let held = (body["actual_mib"] as? NSNumber)?.intValue else {
            throw EngineError("vireo-vmm's balloon reply has no actual_mib: \(reply)")
        }
        let statistics = BalloonInfo.guestStatistics(body["stats"] as? [String: Any] ?? [:], lastUpdate: (body["stats_updated"] as? NSNumber)?.intValue ?? 0)
        return BalloonInfo(actual: (memoryMiB - held) << 20, maxMemory: memoryMiB << 20, guestStatistics: statistics)
    }
}

/// Carries a JSON value out of a detached thread (JSONSerialization values are immutable Foundation objects).
struct AnySendable: @unchecked Sendable {
    let value: Any
    init(_ value: Any) { self.value = value }
}
