import Foundation
import Testing

/// Admission control, metrics, onboot and graceful shutdown through a real vireod.
@Suite(.serialized) struct OperationsTests {
    static var canStartVMs: Bool { kvmUsable || FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64") }

    @Test func memoryAdmissionFromTheConfigFile() async throws {
        let daemon = try DaemonHarness()
        // DATA_DIR/vireod.json is read when /etc/vireo/vireod.json does not exist; --config names it explicitly.
        let config = daemon.dataDirectory + "/limits.json"
        _ = FileManager.default.createFile(atPath: config, contents: Data(#"{"memory_overcommit": 0.0001, "cpu_overcommit": 2}"#.utf8))
        daemon.extraArguments = ["--config", config]
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "100", "memory": "64", "engine": "qemu"]).data)
        let start = try await daemon.request("POST", "/nodes/testnode/qemu/100/status/start")
        let status = try await daemon.waitTask(start.data)
        let exit = status["exitstatus"] as? String ?? ""
        #expect(exit.hasPrefix("cannot start VM 100: committed guest memory would be 64 MiB, above the node's limit"), "\(exit)")
        #expect(exit.contains("memory_overcommit 0.0001"))
        #expect(try await daemon.vmStatus(100)["status"] as? String == "stopped")
        let metrics = try await daemon.rawGet("/metrics")
        #expect(metrics.status == 200 && metrics.text.contains("vireo_node_memory_overcommit_ratio 0.0001"), "\(metrics.text)")
    }

    @Test func aBadConfigFileStopsVireodWithItsReason() async throws {
        let daemon = try DaemonHarness()
        let config = daemon.dataDirectory + "/bad.json"
        _ = FileManager.default.createFile(atPath: config, contents: Data(#"{"memory_overcommit": -1}"#.utf8))
        let (status, output) = try runProgram(DaemonHarness.vireod, ["--config", config, "--data-dir", daemon.dataDirectory, "--listen", "127.0.0.1:0"])
        defer { daemon.shutdown() }
        #expect(status != 0 && output.contains("memory_overcommit must be a number above 0"), "\(output)")
    }

    @Test(.enabled(if: canStartVMs)) func cpuOvercommitWarnsAndMetricsReportTheVM() async throws {
        let daemon = try DaemonHarness()
        daemon.extraArguments = ["--cpu-overcommit", "0.01"]
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        var params = try #require(daemon.startableVM())
        params["vmid"] = "100"
        params["name"] = "metered"
        _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu", params).data)
        let start = try await daemon.request("POST", "/nodes/testnode/qemu/100/status/start")
        let status = try await daemon.waitTask(start.data)
        let log = try await daemon.taskLog(start.data)
        #expect(status["exitstatus"] as? String == "WARNINGS: 1", "\(log)")
        #expect(log.contains { $0.hasPrefix("WARN: CPU overcommit: 1 vCPUs committed") })
        #expect(log.last == "TASK WARNINGS: 1")

        let current = try await daemon.vmStatus(100)
        #expect(current["status"] as? String == "running")
        #expect((current["mem"] as? Int ?? 0) > 0)
        #expect(current["cpu"] is NSNumber && current["diskread"] is NSNumber)
        #expect(current["maxmem"] as? Int == Int(params["memory"]!)! * 1_048_576)
        let resources = try #require(try await daemon.request("GET", "/cluster/resources", ["type": "vm"]).data as? [[String: Any]])
        #expect((resources.first?["mem"] as? Int ?? 0) > 0 && resources.first?["uptime"] is Int)

        let metrics = try await daemon.rawGet("/metrics")
        #expect(metrics.status == 200)
        let engine = params["engine"]!
        let labels = "{vmid=\"100\",name=\"metered\",engine=\"\(engine)\"}"
        #expect(metrics.text.contains("vireo_vm_up\(labels) 1\n"), "\(metrics.text)")
        #expect(metrics.text.contains("vireo_node_committed_memory_bytes \(Int(params["memory"]!)! * 1_048_576)\n"))
        #expect(metrics.text.contains("vireo_node_committed_vcpus 1\n"))
        #expect(metrics.text.contains("# TYPE vireo_vm_cpu_seconds_total counter"))
        let resident = metrics.text.split(separator: "\n").first { $0.hasPrefix("vireo_vm_resident_bytes\(labels) ") }
        #expect((resident?.split(separator: " ").last.flatMap { Int($0) } ?? 0) > 0)
        // Without credentials: 401; a token without Sys.Audit: 403.
        daemon.ticket = nil
        #expect(try await daemon.rawGet("/metrics").status == 401)
        try await daemon.login()
        _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu/100/status/stop").data)
    }

    /// `balloon`/`ballooninfo` in status/current and vireo_vm_balloon_actual_bytes are asked of each
    /// engine (vireo-vmm's control socket `balloon`, QEMU's `query-balloon`); an engine that does not
    /// answer (stopped with SIGSTOP) leaves them out but does not hold the status up; `balloon: 0`
    /// means no balloon device, as in Proxmox.
    @Test(.enabled(if: canStartVMs)) func balloonSizeIsAskedOfTheEngine() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        var configs: [[String: String]] = []
        if kvmUsable { configs.append(["engine": "vireo", "raw": daemon.spinGuest()]) }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64") { configs.append(["engine": "qemu"]) }
        for (offset, config) in configs.enumerated() {
            let vmid = 200 + offset, engine = config["engine"]!
            let create = try await daemon.request("POST", "/nodes/testnode/qemu", config.merging([
                "vmid": "\(vmid)", "name": "ballooned", "memory": "64", "balloon": "32", "start": "1",
            ]) { _, new in new })
            let started = try await daemon.waitTask(create.data)
            let log = try await daemon.taskLog(create.data)
            #expect(started["exitstatus"] as? String == "OK", "\(log)")
            let device = engine == "vireo" ? " --balloon 32" : " -device virtio-balloon-pci,id=balloon0"
            #expect(log.contains { $0.hasPrefix("exec:") && $0.contains(device) }, "\(log)")
            if engine == "qemu" { #expect(log.contains("balloon target 32 MiB"), "\(log)") }
            #expect(try await daemon.request("GET", "/nodes/testnode/qemu/\(vmid)/config").data.flatMap { ($0 as? [String: Any])?["balloon"] as? Int } == 32)

            // Neither guest has a balloon driver: the balloon holds nothing and leaves all 64 MiB.
            let current = try await daemon.vmStatus(vmid)
            #expect(current["balloon"] as? Int == 64 << 20, "\(engine): \(current)")
            #expect(current["nics"] == nil, "no NIC on a bridge, no per-NIC counters")
            let info = current["ballooninfo"] as? [String: Any]
            #expect(info?["actual"] as? Int == 64 << 20 && info?["max_mem"] as? Int == 64 << 20, "\(engine): \(current)")
            // No driver, no report: the guest's figures are left out, not made up.
            #expect(info?["free_mem"] == nil && info?["last_update"] == nil && current["freemem"] == nil, "\(engine): \(current)")
            let metrics = try await daemon.rawGet("/metrics").text
            let labels = "{vmid=\"\(vmid)\",name=\"ballooned\",engine=\"\(engine)\"}"
            #expect(metrics.contains("vireo_vm_balloon_actual_bytes\(labels) \(64 << 20)\n"), "\(metrics)")
            #expect(metrics.contains("vireo_vm_balloon_bytes\(labels) \(32 << 20)\n"))

            let pid = try #require(current["pid"] as? Int)
            kill(Int32(pid), SIGSTOP)
            let hung = try? await daemon.vmStatus(vmid)
            let hungMetrics = try? await daemon.rawGet("/metrics").text
            kill(Int32(pid), SIGCONT)
            #expect(hung?["status"] as? String == "running" && hung?["balloon"] == nil && hung?["ballooninfo"] == nil, "\(engine): \(String(describing: hung))")
            #expect(hungMetrics?.contains("vireo_vm_up\(labels) 1\n") == true && hungMetrics?.contains("vireo_vm_balloon_actual_bytes\(labels)") == false)
            _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu/\(vmid)/status/stop").data)

            #expect(try await daemon.request("PUT", "/nodes/testnode/qemu/\(vmid)/config", ["balloon": "0"]).status == 200)
            let restart = try await daemon.request("POST", "/nodes/testnode/qemu/\(vmid)/status/start")
            #expect(try await daemon.waitTask(restart.data)["exitstatus"] as? String == "OK")
            #expect(!(try await daemon.taskLog(restart.data)).contains { $0.contains("--balloon") || $0.contains("virtio-balloon") })
            let unballooned = try await daemon.vmStatus(vmid)
            #expect(unballooned["status"] as? String == "running" && unballooned["ballooninfo"] == nil, "\(engine): \(unballooned)")
            _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu/\(vmid)/status/stop").data)
        }
    }

    @Test(.enabled(if: canStartVMs)) func onbootVMsStartAndSIGTERMLeavesVMsRunning() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        try await daemon.login()
        var params = try #require(daemon.startableVM())
        params["vmid"] = "100"
        params["onboot"] = "1"
        _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu", params).data)
        #expect(try await daemon.vmStatus(100)["status"] as? String == "stopped")

        // SIGTERM: a graceful exit. Then a "host reboot" (the boot marker removed): onboot starts VM 100.
        try await daemon.terminate()
        #expect(daemon.daemonLog().contains("vireod stopped; VMs keep running"))
        try FileManager.default.removeItem(atPath: daemon.dataDirectory + "/run/onboot.bootid")
        try await daemon.start()
        try await daemon.login()
        try await waitUntil("onboot starts VM 100", timeout: 60) { try await daemon.vmStatus(100)["status"] as? String == "running" }
        let pid = try #require(try await daemon.vmStatus(100)["pid"] as? Int)

        // SIGTERM with the VM running: vireod exits, the VM does not.
        try await daemon.terminate()
        #expect(processAlive(pid))
        // Restarted in the same boot: no second onboot start; the running VM is re-adopted.
        try await daemon.start()
        try await daemon.login()
        #expect(try await daemon.vmStatus(100)["pid"] as? Int == pid)
        let tasks = try #require(try await daemon.request("GET", "/nodes/testnode/tasks").data as? [[String: Any]])
        #expect(tasks.filter { $0["type"] as? String == "qmstart" }.count == 1)
        _ = try await daemon.waitTask(try await daemon.request("POST", "/nodes/testnode/qemu/100/status/stop").data)
        #expect(!processAlive(pid))
    }
}
