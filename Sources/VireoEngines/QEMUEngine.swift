import Foundation
import VireoSystem

/// Runs a VM under `qemu-system-x86_64`, driven through QMP on a unix socket.
public struct QEMUEngine: VMEngine {
    public let name = "qemu"
    public let executable: String
    public let accelerator: Accelerator

    public enum Accelerator: String, Sendable {
        case kvm, tcg
    }

    public init(executable: String? = nil, accelerator: Accelerator? = nil) {
        self.executable = executable ?? locateExecutable("qemu-system-x86_64", environment: "VIREO_QEMU") ?? "qemu-system-x86_64"
        self.accelerator = accelerator ?? QEMUEngine.detectAccelerator()
    }

    /// KVM only where the CPU has VT-x/AMD-V and /dev/kvm is not PVM's (which cannot run ordinary guests at speed).
    public static func detectAccelerator(cpuinfo: String? = ProcessControl.readSmallFile("/proc/cpuinfo"),
                                         pvmLoaded: Bool = FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm"),
                                         kvmDevice: Bool = FileManager.default.isWritableFile(atPath: "/dev/kvm")) -> Accelerator {
        guard kvmDevice, !pvmLoaded, let cpuinfo else { return .tcg }
        let flags = cpuinfo.split(separator: "\n").first { $0.hasPrefix("flags") } ?? ""
        let words = Set(flags.split(separator: " ").map(String.init))
        return words.contains("vmx") || words.contains("svm") ? .kvm : .tcg
    }

    /// QEMU's command line for `spec` (pure: unit-tested).
    /// `bridges` says what each NIC's `bridge=` resolved to (by NIC index): those NICs use the tap
    /// vireod made for them (`tap{vmid}i{index}`), the others user-mode networking.
    public func arguments(for spec: VMSpec, qmp: String, serial: String, vnc: String? = nil, bridges: [Int: HostNetwork.Bridge] = [:]) -> [String] {
        var arguments = [
            "-name", "\(spec.name),debug-threads=on",
            "-machine", "pc,accel=\(accelerator.rawValue)",
            "-m", "\(spec.memoryMiB)",
            "-smp", "\(spec.cores * spec.sockets),sockets=\(spec.sockets),cores=\(spec.cores)",
            "-nodefaults", "-no-user-config",
            "-qmp", "unix:\(qmp),server=on,wait=off",
            "-serial", "unix:\(serial),server=on,wait=off",
        ]
        if accelerator == .kvm { arguments += ["-cpu", "host"] }
        arguments += vnc.map { ["-vnc", "unix:\($0)", "-vga", "std"] } ?? ["-display", "none"]
        if let kernel = spec.kernel {
            arguments += ["-kernel", kernel]
            if let initrd = spec.initrd { arguments += ["-initrd", initrd] }
            if let cmdline = spec.cmdline { arguments += ["-append", cmdline] }
        }
        for nic in spec.nics {
            let model = ["virtio": "virtio-net-pci", "e1000": "e1000", "rtl8139": "rtl8139", "vmxnet3": "vmxnet3"][nic.model] ?? "virtio-net-pci"
            let netdev = bridges[nic.index] == nil
                ? "user,id=net\(nic.index)" : "tap,id=net\(nic.index),ifname=\(nic.tapName(vmid: spec.vmid)),script=no,downscript=no"
            arguments += ["-netdev", netdev, "-device", "\(model),netdev=net\(nic.index),mac=\(nic.mac),romfile="]
        }
        arguments += diskArguments(spec.disks.filter { $0.volume.hasPrefix("/") })
        // As Proxmox's qemu-server adds it; the target is set over QMP once QEMU runs.
        if spec.balloonTargetMiB != nil { arguments += ["-device", "virtio-balloon-pci,id=balloon0"] }
        return arguments
    }

    /// Disks as Proxmox's qemu-server attaches them: `virtioN` as virtio-blk, `ideN` on the
    /// built-in IDE controller (index N; `media=cdrom` read-only), `scsiN` as scsi-hd on one
    /// virtio-scsi-pci HBA (`scsihw0`, SCSI id N), `sataN` as ide-hd on an AHCI controller (port N).
    func diskArguments(_ disks: [VMSpec.Disk]) -> [String] {
        var arguments: [String] = []
        if disks.contains(where: { $0.bus == "scsi" }) { arguments += ["-device", "virtio-scsi-pci,id=scsihw0"] }
        if disks.contains(where: { $0.bus == "sata" }) { arguments += ["-device", "ahci,id=ahci0"] }
        for disk in disks {
            let format = disk.media == .cdrom ? "raw" : (disk.volume.hasSuffix(".qcow2") ? "qcow2" : "raw")
            let readOnly = disk.media == .cdrom ? ",readonly=on" : ""
            let drive = "file=\(disk.volume),format=\(format)\(readOnly),id=drive-\(disk.key)"
            switch disk.bus {
            case "virtio":
                arguments += ["-drive", "\(drive),if=virtio"]
            case "ide":
                // Proxmox's `ide2: local:iso/x.iso,media=cdrom`: a read-only CD-ROM at the key's IDE slot.
                arguments += ["-drive", "file=\(disk.volume),if=ide,index=\(disk.index),media=\(disk.media.rawValue)\(readOnly),format=\(format),id=drive-\(disk.key)"]
            case "scsi":
                let device = disk.media == .cdrom ? "scsi-cd" : "scsi-hd"
                arguments += ["-drive", "\(drive),if=none", "-device", "\(device),bus=scsihw0.0,scsi-id=\(disk.index),drive=drive-\(disk.key),id=\(disk.key)"]
            default:
                let device = disk.media == .cdrom ? "ide-cd" : "ide-hd"
                arguments += ["-drive", "\(drive),if=none", "-device", "\(device),bus=ahci0.\(disk.index),drive=drive-\(disk.key),id=\(disk.key)"]
            }
        }
        return arguments
    }

    public func start(_ spec: VMSpec, runDirectory: String, log: EngineLog) async throws -> VMProcess {
        let qmpPath = runDirectory + "/qmp.sock", serial = runDirectory + "/serial.sock"
        if accelerator == .tcg {
            // Not PVE's "WARN:" prefix: that turns exitstatus into "WARNINGS: n", which Ansible 10.x treats as failure.
            log("warning: KVM is not usable on this host (no vmx/svm, or a PVM /dev/kvm): running under TCG, slowly")
        }
        let bridges = try HostNetwork().plumb(spec, forTapHolder: true, log: log)
        for disk in spec.disks where !disk.volume.hasPrefix("/") {
            log("note: \(disk.key): '\(disk.volume)' is not a file the control plane could resolve; disk not attached")
        }
        let process = try await launch(executable: executable, arguments: arguments(for: spec, qmp: qmpPath, serial: serial, bridges: bridges),
                                       runDirectory: runDirectory, socket: qmpPath, serial: serial, log: log)
        do {
            _ = try await qmp(process, "query-status")
        } catch {
            await kill(process, log: log)
            throw EngineError("QMP handshake failed: \(error)")
        }
        if spec.balloonTargetMiB != nil {
            // As qemu-server does: the driver reports its statistics every 2 s (read with `guest-stats`).
            _ = try? await qmp(process, "qom-set", arguments: #"{"path":"/machine/peripheral/balloon0","property":"guest-stats-polling-interval","value":2}"#)
        }
        if let target = spec.balloonTargetMiB, target < spec.memoryMiB {
            do {
                _ = try await qmp(process, "balloon", arguments: #"{"value":\#(target << 20)}"#)
                log("balloon target \(target) MiB")
            } catch {
                log("warning: cannot set the balloon target to \(target) MiB: \(error)")
            }
        }
        return process
    }

    /// One QMP exchange on a fresh connection: greeting, qmp_capabilities, then `command` with
    /// `arguments` (a JSON object), each read and write bounded by `timeout`.
    private func qmp(_ process: VMProcess, _ command: String, arguments: String? = nil,
                     timeout: Duration = .seconds(5)) async throws -> [String: Any] {
        let path = process.controlSocket
        let request = #"{"execute":"\#(command)""# + (arguments.map { #","arguments":\#($0)"# } ?? "") + "}"
        let reply = try await offPool { () -> [String: AnySendable] in
            let socket = try LineSocket(path: path, timeout: timeout)
            let greeting = try socket.receive()
            guard greeting["QMP"] != nil else { throw EngineError("no QMP greeting on \(path)") }
            _ = try socket.command(#"{"execute":"qmp_capabilities"}"#)
            return try socket.command(request).mapValues { AnySendable($0) }
        }
        return reply.mapValues(\.value)
    }

    public func stop(_ process: VMProcess, timeout: Duration, log: EngineLog) async throws {
        guard process.isAlive else { return }
        do { _ = try await qmp(process, "quit") } catch { log("QMP quit: \(error)") }
        if await waitForExit(process, timeout: timeout) { return }
        await kill(process, log: log)
    }

    public func shutdown(_ process: VMProcess, timeout: Duration, log: EngineLog) async throws -> Bool {
        guard process.isAlive else { return true }
        _ = try await qmp(process, "system_powerdown")
        return await waitForExit(process, timeout: timeout)
    }

    public func pause(_ process: VMProcess) async throws { _ = try await qmp(process, "stop") }
    public func resume(_ process: VMProcess) async throws { _ = try await qmp(process, "cont") }

    public func status(_ process: VMProcess) async -> VMRunState {
        guard process.isAlive else { return .stopped }
        guard let reply = try? await qmp(process, "query-status"), let body = reply["return"] as? [String: Any] else { return .running }
        return (body["status"] as? String) == "paused" ? .paused : .running
    }

    public func stats(_ process: VMProcess) async throws -> [String: Int] {
        let reply = try await qmp(process, "query-status")
        let running = ((reply["return"] as? [String: Any])?["running"] as? Bool) ?? false
        return ["running": running ? 1 : 0]
    }

    /// `query-balloon`'s `actual` is already what the balloon leaves the guest.
    public func balloon(_ process: VMProcess, memoryMiB: Int, guestStatistics: Bool, timeout: Duration) async throws -> BalloonInfo {
        let reply = try await qmp(process, "query-balloon", timeout: timeout)
        guard let actual = ((reply["return"] as? [String: Any])?["actual"] as? NSNumber)?.intValue else {
            throw EngineError("query-balloon reply has no actual: \(reply)")
        }
        guard guestStatistics else { return BalloonInfo(actual: actual, maxMemory: memoryMiB << 20) }
        // The driver's statistics (a second exchange); a QEMU that cannot say leaves them out, the sizes stand.
        let stats = try? await qmp(process, "qom-get", arguments: #"{"path":"/machine/peripheral/balloon0","property":"guest-stats"}"#, timeout: timeout)
        return BalloonInfo(actual: actual, maxMemory: memoryMiB << 20, guestStatistics: Self.guestStatistics(fromGuestStats: stats ?? [:]))
    }

    /// QEMU's `guest-stats` reply (`{"stats":{"stat-free-memory":N,…},"last-update":T}`, -1 for a
    /// statistic the driver did not report) under Proxmox's `ballooninfo` names.
    static func guestStatistics(fromGuestStats reply: [String: Any]) -> [String: Int] {
        guard let body = reply["return"] as? [String: Any], let stats = body["stats"] as? [String: Any] else { return [:] }
        var values: [String: Any] = [:]
        for (key, value) in stats where key.hasPrefix("stat-") { values[String(key.dropFirst(5))] = value }
        return BalloonInfo.guestStatistics(values, lastUpdate: (body["last-update"] as? NSNumber)?.intValue ?? 0)
    }
}
