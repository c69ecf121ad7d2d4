import Testing
@testable import VireoEngines

@Suite struct EngineCommandLineTests {
    let spec = VMSpec(vmid: 100, name: "web", memoryMiB: 256, cores: 2, sockets: 1, kernel: "/boot/vmlinuz", initrd: "/boot/initrd",
                      cmdline: "console=ttyS0", nics: [.init(index: 0, model: "virtio", mac: "BC:24:11:00:00:01")],
                      disks: [.init(key: "scsi0", bus: "scsi", volume: "local-lvm:8"), .init(key: "virtio1", bus: "virtio", volume: "/img/a.qcow2")])

    @Test func qemuCommandLineUnderTCG() {
        let arguments = QEMUEngine(executable: "/usr/bin/qemu", accelerator: .tcg).arguments(for: spec, qmp: "/r/qmp.sock", serial: "/r/serial.sock")
        let line = arguments.joined(separator: " ")
        #expect(line.contains("-machine pc,accel=tcg"))
        #expect(!line.contains("-cpu host"))
        #expect(line.contains("-m 256"))
        #expect(line.contains("-smp 2,sockets=1,cores=2"))
        #expect(line.contains("-qmp unix:/r/qmp.sock,server=on,wait=off"))
        #expect(line.contains("-serial unix:/r/serial.sock,server=on,wait=off"))
        #expect(line.contains("-display none"))
        #expect(line.contains("-kernel /boot/vmlinuz -initrd /boot/initrd -append console=ttyS0"))
        #expect(line.contains("virtio-net-pci,netdev=net0,mac=BC:24:11:00:00:01"))
        // Only volumes that are paths are attached; storage ids wait for the storage layer.
        #expect(line.contains("file=/img/a.qcow2,format=qcow2,id=drive-virtio1,if=virtio"))
        #expect(!line.contains("local-lvm"))
    }

    @Test func qemuUsesKVMAndHostCPUWhenAvailable() {
        let line = QEMUEngine(executable: "q", accelerator: .kvm).arguments(for: spec, qmp: "q", serial: "s", vnc: "/r/vnc.sock").joined(separator: " ")
        #expect(line.contains("accel=kvm"))
        #expect(line.contains("-cpu host"))
        #expect(line.contains("-vnc unix:/r/vnc.sock"))
    }

    @Test func acceleratorDetection() {
        let vmx = "processor : 0\nflags : fpu vme vmx sse\n"
        #expect(QEMUEngine.detectAccelerator(cpuinfo: vmx, pvmLoaded: false, kvmDevice: true) == .kvm)
        #expect(QEMUEngine.detectAccelerator(cpuinfo: vmx, pvmLoaded: true, kvmDevice: true) == .tcg)
        #expect(QEMUEngine.detectAccelerator(cpuinfo: vmx, pvmLoaded: false, kvmDevice: false) == .tcg)
        #expect(QEMUEngine.detectAccelerator(cpuinfo: "flags : fpu sse\n", pvmLoaded: false, kvmDevice: true) == .tcg)
    }

    @Test func vireoCommandLine() throws {
        let engine = VireoEngine(executable: "/bin/vireo-vmm")
        let kernel = try engine.arguments(for: spec, control: "/r/c.sock", serial: "/r/s.sock")
        #expect(kernel == ["--kernel", "/boot/vmlinuz", "--initrd", "/boot/initrd", "--cmdline", "console=ttyS0", "--cpus", "2",
                           "--memory", "256M", "--serial", "unix:/r/s.sock", "--control", "unix:/r/c.sock"])
        var raw = spec
        raw.raw = .init(path: "/t/spin.bin", mode: .long)
        #expect(try engine.arguments(for: raw, control: "c", serial: "s").prefix(4) == ["--raw", "/t/spin.bin", "--raw-mode", "long"])
        var nothing = spec
        nothing.kernel = nil
        #expect(throws: EngineError.self) { try engine.arguments(for: nothing, control: "c", serial: "s") }
    }

    /// Proxmox's `balloon`: a target below `memory` is what the balloon should leave the guest;
    /// vireo-vmm's `--balloon` takes what the balloon should hold instead.
    @Test func aBalloonIsADeviceOnBothCommandLines() throws {
        var ballooned = spec
        ballooned.balloonTargetMiB = 192
        let qemu = QEMUEngine(executable: "q", accelerator: .tcg)
        #expect(qemu.arguments(for: ballooned, qmp: "q", serial: "s").joined(separator: " ").hasSuffix(" -device virtio-balloon-pci,id=balloon0"))
        #expect(!qemu.arguments(for: spec, qmp: "q", serial: "s").contains { $0.contains("balloon") })
        let vireo = VireoEngine(executable: "v")
        #expect(try vireo.arguments(for: ballooned, control: "c", serial: "s").suffix(2) == ["--balloon", "64,stats=2"])
        #expect(try !vireo.arguments(for: spec, control: "c", serial: "s").contains("--balloon"))
    }

    /// The guest's balloon statistics reach `ballooninfo` under Proxmox's names from either engine:
    /// vireo-vmm's `balloon` reply, QEMU's `guest-stats` (where -1 means "not reported"); nothing
    /// before the driver has reported.
    @Test func guestBalloonStatisticsTakeProxmoxNames() throws {
        let reply: [String: Any] = ["return": [
            "target_mib": 64, "actual_mib": 64, "stats_generation": 3, "stats_updated": 1_700_000_000,
            "stats": ["free-memory": 100 << 20, "total-memory": 190 << 20, "swap-in": 0, "swap-out": 4096,
                      "major-faults": 7, "minor-faults": 900, "available-memory": 150 << 20],
        ] as [String: Any]]
        let info = try VireoEngine.balloonInfo(fromReply: reply, memoryMiB: 256)
        #expect(info.actual == 192 << 20 && info.maxMemory == 256 << 20)
        #expect(info.guestStatistics == ["free_mem": 100 << 20, "total_mem": 190 << 20, "mem_swapped_in": 0, "mem_swapped_out": 4096,
                                         "major_page_faults": 7, "minor_page_faults": 900, "last_update": 1_700_000_000])
        let silent = try VireoEngine.balloonInfo(fromReply: ["return": ["target_mib": 0, "actual_mib": 0]], memoryMiB: 256)
        #expect(silent.guestStatistics.isEmpty && silent.actual == 256 << 20)
        #expect(throws: EngineError.self) { try VireoEngine.balloonInfo(fromReply: ["error": "no balloon"], memoryMiB: 256) }

        let qom: [String: Any] = ["return": [
            "stats": ["stat-free-memory": 5_000_000, "stat-total-memory": 9_000_000, "stat-swap-in": -1, "stat-swap-out": -1,
                      "stat-major-faults": 2, "stat-minor-faults": 30, "stat-disk-caches": 1_000],
            "last-update": 1_700_000_100,
        ] as [String: Any]]
        #expect(QEMUEngine.guestStatistics(fromGuestStats: qom) == ["free_mem": 5_000_000, "total_mem": 9_000_000, "major_page_faults": 2,
                                                                   "minor_page_faults": 30, "last_update": 1_700_000_100])
        #expect(QEMUEngine.guestStatistics(fromGuestStats: ["return": ["stats": ["stat-free-memory": -1], "last-update": 0] as [String: Any]]).isEmpty)
    }

    @Test func vireoEngineLaunchesAndStopsARawGuest() async throws {
        let engine = VireoEngine()
        guard FileManager.default.isExecutableFile(atPath: engine.executable),
              FileManager.default.isWritableFile(atPath: "/dev/kvm") else { return }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vireo-engine-\(UUID().uuidString.prefix(8))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        _ = FileManager.default.createFile(atPath: directory + "/spin.bin", contents: Data([0xEB, 0xFE]))
        let guest = VMSpec(vmid: 1, name: "spin", memoryMiB: 16, cores: 1, sockets: 1, raw: .init(path: directory + "/spin.bin", mode: .real))
        let process = try await engine.start(guest, runDirectory: directory, log: { _ in })
        #expect(process.isAlive)
        #expect(await engine.status(process) == .running)
        try await engine.pause(process)
        #expect(await engine.status(process) == .paused)
        try await engine.resume(process)
        try await engine.stop(process, timeout: .seconds(5), log: { _ in })
        #expect(!process.isAlive)
        #expect(await engine.status(process) == .stopped)
    }
}

import Foundation

@Suite struct QEMUCDROMTests {
    @Test func scsiAndSataDisksSitOnTheirControllers() {
        let spec = VMSpec(vmid: 100, name: "d", memoryMiB: 256, cores: 1, sockets: 1,
                          disks: [.init(key: "scsi1", bus: "scsi", volume: "/p/b.qcow2"), .init(key: "sata0", bus: "sata", volume: "/p/c.raw")])
        let line = QEMUEngine(executable: "q", accelerator: .tcg).arguments(for: spec, qmp: "q", serial: "s").joined(separator: " ")
        #expect(line.contains("-device virtio-scsi-pci,id=scsihw0"))
        #expect(line.contains("-drive file=/p/b.qcow2,format=qcow2,id=drive-scsi1,if=none -device scsi-hd,bus=scsihw0.0,scsi-id=1,drive=drive-scsi1,id=scsi1"))
        #expect(line.contains("-device ahci,id=ahci0"))
        #expect(line.contains("-drive file=/p/c.raw,format=raw,id=drive-sata0,if=none -device ide-hd,bus=ahci0.0,drive=drive-sata0,id=sata0"))
    }

    @Test func cdromIsAReadOnlyIDEDriveAtItsSlot() {
        let spec = VMSpec(vmid: 100, name: "iso", memoryMiB: 256, cores: 1, sockets: 1,
                          disks: [.init(key: "ide2", bus: "ide", volume: "/pool/template/iso/x.iso", media: .cdrom)])
        let line = QEMUEngine(executable: "q", accelerator: .tcg).arguments(for: spec, qmp: "q", serial: "s").joined(separator: " ")
        #expect(line.contains("file=/pool/template/iso/x.iso,if=ide,index=2,media=cdrom,readonly=on,format=raw,id=drive-ide2"))
    }
}
