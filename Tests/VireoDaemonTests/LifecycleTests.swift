import Foundation
import Testing

/// VM lifecycle through a real vireod: the vireo engine (vireo-vmm with a 2-byte raw guest), the QEMU
/// engine under TCG with Debian's cloud kernel, daemon crashes, and proxmoxer.
@Suite(.serialized) struct LifecycleTests {
    @Test(.enabled(if: kvmUsable)) func vireoEngineLifecycle() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        let create = try await daemon.request("POST", "/nodes/testnode/qemu",
                                              ["vmid": "300", "name": "spin", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest() + ",mode=real"])
        #expect(try await daemon.waitTask(create.data)["exitstatus"] as? String == "OK")

        let start = try await daemon.request("POST", "/nodes/testnode/qemu/300/status/start")
        let started = try await daemon.waitTask(start.data)
        let startLog = try await daemon.taskLog(start.data)
        #expect(started["exitstatus"] as? String == "OK", "\(startLog)")
        var status = try await daemon.vmStatus(300)
        #expect(status["status"] as? String == "running")
        let pid = try #require(status["pid"] as? Int)
        #expect(processAlive(pid))
        // The VM's sessions is its own: it is not in vireod's process group.
        #expect(getsid(Int32(pid)) == Int32(pid))

        #expect(try await daemon.request("DELETE", "/nodes/testnode/qemu/300").status == 500)  // running
        _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu/300/status/suspend").data)
        #expect(try await daemon.vmStatus(300)["qmpstatus"] as? String == "paused")
        _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu/300/status/resume").data)
        #expect(try await daemon.vmStatus(300)["qmpstatus"] as? String == "running")

        let stop = try await daemon.request("POST", "/nodes/testnode/qemu/300/status/stop")
        #expect(try await daemon.waitTask(stop.data)["exitstatus"] as? String == "OK")
        #expect(try await daemon.taskLog(stop.data).last == "TASK OK")
        status = try await daemon.vmStatus(300)
        #expect(status["status"] as? String == "stopped")
        #expect(!processAlive(pid))

        let destroy = try await daemon.request("DELETE", "/nodes/testnode/qemu/300")
        #expect(try await daemon.waitTask(destroy.data)["exitstatus"] as? String == "OK")
        #expect(try await daemon.request("GET", "/nodes/testnode/qemu/300/config").status == 500)
    }

    @Test(.enabled(if: kvmUsable)) func vmsOutliveAKilledDaemonAndAreReadopted() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        for vmid in [400, 401] {
            let create = try await daemon.request("POST", "/nodes/testnode/qemu",
                                                  ["vmid": "\(vmid)", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest(), "start": "1"])
            #expect(try await daemon.waitTask(create.data)["exitstatus"] as? String == "OK")
        }
        let pid = try #require(try await daemon.vmStatus(400)["pid"] as? Int)
        let other = try #require(try await daemon.vmStatus(401)["pid"] as? Int)

        try await daemon.kill9()
        #expect(processAlive(pid))
        kill(Int32(other), SIGKILL)  // this one ends while vireod is down

        try await daemon.start()
        try await daemon.login()  // the signing key persisted, but log in afresh anyway
        #expect(try await daemon.vmStatus(400)["status"] as? String == "running")
        try await waitUntil("vireod notices VM 401 is gone", timeout: 60) {
            try await daemon.vmStatus(401)["status"] as? String == "stopped"
        }
        let stop = try await daemon.request("POST", "/nodes/testnode/qemu/400/status/stop")
        #expect(try await daemon.waitTask(stop.data)["exitstatus"] as? String == "OK")
        try await waitUntil("VM 400 (pid \(pid)) ends", timeout: 60) { !processAlive(pid) }
        #expect(try await daemon.vmStatus(400)["status"] as? String == "stopped")
    }

    @Test(.enabled(if: kvmUsable)) func aVMThatExitsOnItsOwnIsRecorded() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        let create = try await daemon.request("POST", "/nodes/testnode/qemu",
                                              ["vmid": "500", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest(), "start": "1"])
        _ = try await daemon.waitTask(create.data)
        let pid = try #require(try await daemon.vmStatus(500)["pid"] as? Int)
        kill(Int32(pid), SIGTERM)  // vireo-vmm exits with code 4
        // The monitor reaps its child and records the exit code (4: stopped by a signal).
        try await waitUntil("VM 500 is recorded as exited", timeout: 60) {
            try await daemon.vmStatus(500)["vireo-lastexit"] as? String == "exited with code 4"
        }
        #expect(try await daemon.vmStatus(500)["status"] as? String == "stopped")
    }

    static var cloudKernel: String? {
        let boot = (try? FileManager.default.contentsOfDirectory(atPath: "/boot")) ?? []
        return boot.filter { $0.hasPrefix("vmlinuz-") && $0.hasSuffix("-cloud-amd64") }.sorted().last.map { "/boot/" + $0 }
    }

    @Test(.enabled(if: cloudKernel != nil && FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")))
    func qemuEngineBootsTheCloudKernel() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        let kernel = try #require(Self.cloudKernel)
        var params = ["vmid": "600", "name": "debian", "memory": "256", "cores": "1", "engine": "qemu", "kernel": kernel,
                      "cmdline": "console=ttyS0 panic=-1", "net0": "virtio"]
        let initrd = kernel.replacingOccurrences(of: "vmlinuz-", with: "initrd.img-")
        if FileManager.default.fileExists(atPath: initrd) { params["initrd"] = initrd }
        _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu", params).data)
        let start = try await daemon.request("POST", "/nodes/testnode/qemu/600/status/start")
        let started = try await daemon.waitTask(start.data)
        let log = try await daemon.taskLog(start.data)
        #expect(started["exitstatus"] as? String == "OK", "\(log)")
        #expect(log.contains { $0.contains("qemu-system-x86_64") && $0.contains("-kernel \(kernel)") })
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        if !cpuinfo.contains(" vmx") && !cpuinfo.contains(" svm") {
            #expect(log.contains { $0.contains("running under TCG") })
            #expect(log.contains { $0.contains("accel=tcg") })
        }
        let status = try await daemon.vmStatus(600)
        #expect(status["status"] as? String == "running")
        let pid = try #require(status["pid"] as? Int)
        let stop = try await daemon.request("POST", "/nodes/testnode/qemu/600/status/stop")
        #expect(try await daemon.waitTask(stop.data)["exitstatus"] as? String == "OK")
        #expect(!processAlive(pid))
        _ = try await daemon.waitTask(try await daemon.request("DELETE", "/nodes/testnode/qemu/600").data)
    }

    @Test(.enabled(if: kvmUsable)) func proxmoxerDrivesALifecycleUnchanged() async throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("proxmoxer_lifecycle.py").path
        let check = Process()
        check.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        check.arguments = ["python3", "-c", "import proxmoxer, requests"]
        check.standardError = FileHandle.nullDevice
        try check.run()
        check.waitUntilExit()
        try #require(check.terminationStatus == 0, "proxmoxer is not installed: run scripts/setup-host")

        // vireod's default: HTTPS with its self-signed certificate; the script passes verify_ssl=False.
        let daemon = try DaemonHarness(tls: true)
        try await daemon.start()
        defer { daemon.shutdown() }
        let (status, text) = try runProgram("/usr/bin/env", ["python3", script, daemon.hostPort, DaemonHarness.password, daemon.spinGuest()])
        #expect(status == 0, "\(text)")
    }
}
