import Foundation
import VireoTestSupport
import Testing
import VireoSwitch
import VireoSystem

/// `nodes/{node}/network` and `netN: …,bridge=NAME,tag=N` against a real vireod, a real
/// `vireo-switchd` and real Linux bridges (root; names are unique per run and removed afterwards).
@Suite(.serialized, .enabled(if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip"), "needs root and ip"))
struct NetworkTests {
    let tag = String(UInt32.random(in: 0x1000..<0xFFFF), radix: 16)

    @discardableResult
    static func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        try ChildCommand.run(arguments[0], Array(arguments.dropFirst()))
    }

    static func ipLink(_ name: String) throws -> [String: Any]? {
        let result = try run(["ip", "-j", "-d", "link", "show", name])
        guard result.status == 0 else { return nil }
        return (try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [[String: Any]])?.first
    }

    /// A `vireo-switchd` whose sockets live in the daemon's data directory (so the harness's
    /// cleanup ends it), made visible to vireod through `VIREO_SWITCH_DIR`.
    func startSwitch(_ daemon: DaemonHarness, name: String) async throws -> Process {
        let directory = daemon.dataDirectory + "/switches"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: DaemonHarness.productsDirectory + "/vireo-switchd")
        process.arguments = ["--name", name, "--socket-dir", directory, "--exit-with-parent", "--log-level", "warning"]
        let logPath = daemon.dataDirectory + "/switchd.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        process.standardOutput = FileHandle(forWritingAtPath: logPath)
        process.standardError = FileHandle(forWritingAtPath: logPath)
        try process.run()
        try await waitUntil("switch control socket (log: \(logPath))", timeout: 60) {
            FileManager.default.fileExists(atPath: "\(directory)/\(name).ctl") || !process.isRunning
        }
        #expect(process.isRunning, "\((try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "")")
        return process
    }

    /// Starts vireod seeing the test's switches (`VIREO_SWITCH_DIR`, set only while it starts).
    /// The NIC tests' node: a running Vireo switch `switchName`, vireod (logged in) that uses it, and a new
    /// Linux bridge `bridge` when given. Returns the switch's process, for the caller to terminate.
    func startNode(_ daemon: DaemonHarness, switchName: String, bridge: String? = nil) async throws -> Process {
        let switchProcess = try await startSwitch(daemon, name: switchName)
        do {
            try await startDaemon(daemon)
            try await daemon.login()
            if let bridge { try Self.run(["ip", "link", "add", bridge, "type", "bridge"]) }
        } catch {
            switchProcess.terminate()
            throw error
        }
        return switchProcess
    }

    func startDaemon(_ daemon: DaemonHarness) async throws {
        setenv("VIREO_SWITCH_DIR", daemon.dataDirectory + "/switches", 1)
        defer { unsetenv("VIREO_SWITCH_DIR") }
        try await daemon.start()
    }

    func rows(_ reply: DaemonHarness.Reply) -> [String: [String: Any]] {
        let list = reply.data as? [[String: Any]] ?? []
        return Dictionary(uniqueKeysWithValues: list.compactMap { row in (row["iface"] as? String).map { ($0, row) } })
    }

    @Test func bridgesAreListedCreatedAndDeletedInProxmoxShape() async throws {
        let daemon = try DaemonHarness()
        let bridge = "vt\(tag)br", port = "vt\(tag)p", switchName = "vt\(tag)sw"
        defer {
            daemon.shutdown()
            for link in [bridge, port] { _ = try? Self.run(["ip", "link", "del", link]) }
        }
        let switchProcess = try await startNode(daemon, switchName: switchName)
        defer { switchProcess.terminate() }
        try Self.run(["ip", "tuntap", "add", port, "mode", "tap"])

        let created = try await daemon.request("POST", "/nodes/testnode/network", ["iface": bridge, "type": "bridge", "bridge_ports": port])
        #expect(created.status == 200, "\(created.body)")
        let ip = try #require(try Self.ipLink(bridge))
        #expect((ip["linkinfo"] as? [String: Any])?["info_kind"] as? String == "bridge")
        #expect((ip["flags"] as? [String])?.contains("UP") == true)
        #expect(try Self.ipLink(port)?["master"] as? String == bridge)

        let all = rows(try await daemon.request("GET", "/nodes/testnode/network"))
        let row = try #require(all[bridge])
        #expect(row["type"] as? String == "bridge" && row["active"] as? Int == 1)
        #expect(row["bridge_ports"] as? String == port && row["bridge_vlan_aware"] as? Int == 0)
        let switchRow = try #require(all[switchName])
        #expect(switchRow["type"] as? String == "VireoSwitch" && switchRow["bridge_vlan_aware"] as? Int == 1)
        let bridgesOnly = rows(try await daemon.request("GET", "/nodes/testnode/network", ["type": "bridge"]))
        #expect(bridgesOnly[bridge] != nil && bridgesOnly[switchName] == nil)
        #expect(try await daemon.request("GET", "/nodes/testnode/network/\(bridge)").data as? [String: Any] != nil)

        // Mistakes are parameter errors; nothing is created.
        let duplicate = try await daemon.request("POST", "/nodes/testnode/network", ["iface": bridge, "type": "bridge"])
        #expect(duplicate.status == 400 && duplicate.errors["iface"]?.contains("already exists") == true, "\(duplicate.body)")
        let bond = try await daemon.request("POST", "/nodes/testnode/network", ["iface": "vt\(tag)b2", "type": "bond"])
        #expect(bond.status == 400 && bond.errors["type"] != nil)
        let missingPort = try await daemon.request("POST", "/nodes/testnode/network", ["iface": "vt\(tag)b2", "type": "bridge", "bridge_ports": "vt\(tag)none"])
        #expect(missingPort.status == 400 && missingPort.errors["bridge_ports"] != nil)
        #expect(try Self.ipLink("vt\(tag)b2") == nil)
        let vlanAware = try await daemon.request("POST", "/nodes/testnode/network", ["iface": "vt\(tag)b2", "type": "bridge", "bridge_vlan_aware": "1"])
        if vlanAware.status == 400 {
            #expect(vlanAware.errors["bridge_vlan_aware"]?.contains("CONFIG_BRIDGE_VLAN_FILTERING") == true, "\(vlanAware.body)")
        } else {
            #expect(vlanAware.status == 200)
            #expect(rows(try await daemon.request("GET", "/nodes/testnode/network"))["vt\(tag)b2"]?["bridge_vlan_aware"] as? Int == 1)
            #expect(try await daemon.request("DELETE", "/nodes/testnode/network/vt\(tag)b2").status == 200)
        }
        #expect(try await daemon.request("DELETE", "/nodes/testnode/network/\(switchName)").status == 400)

        #expect(try await daemon.request("DELETE", "/nodes/testnode/network/\(bridge)").status == 200)
        #expect(try Self.ipLink(bridge) == nil)
        #expect(try Self.ipLink(port)?["master"] == nil, "the port is released, not deleted")
        #expect(try await daemon.request("DELETE", "/nodes/testnode/network/\(bridge)").status == 500)
    }

    @Test func vmNICsJoinTheSwitchAndTheLinuxBridge() async throws {
        let daemon = try DaemonHarness()
        let bridge = "vt\(tag)br", switchName = "vt\(tag)sw", vmid = 700
        let tap = "tap\(vmid)i1"
        defer {
            daemon.shutdown()
            for link in [bridge, tap] { _ = try? Self.run(["ip", "link", "del", link]) }
        }
        let switchProcess = try await startNode(daemon, switchName: switchName, bridge: bridge)
        defer { switchProcess.terminate() }

        let badTag = try await daemon.request("POST", "/nodes/testnode/qemu", ["vmid": "\(vmid)", "net0": "virtio=52:54:00:12:34:56,bridge=\(switchName),tag=5000"])
        #expect(badTag.status == 400 && badTag.errors["net0"]?.contains("VLAN") == true, "\(badTag.body)")

        let create = try await daemon.request("POST", "/nodes/testnode/qemu", [
            "vmid": "\(vmid)", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest() + ",mode=real",
            "net0": "virtio=52:54:00:12:34:56,bridge=\(switchName),tag=10", "net1": "virtio=52:54:00:12:34:57,bridge=\(bridge)", "start": "1",
        ])
        #expect(create.status == 200, "\(create.body)")
        let status = try await daemon.waitTask(create.data)
        let startLog = try await daemon.taskLog(create.data)
        #expect(status["exitstatus"] as? String == "OK", "\(startLog)")

        // net0: a vm: port on the switch, VLAN 10, with vireo-vmm connected.
        let control = daemon.dataDirectory + "/switches/\(switchName).ctl"
        let reply = try SwitchControlClient(path: control).request("ports")
        let ports = (try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any])?["ports"] as? [[String: Any]] ?? []
        let port = ports.first { $0["name"] as? String == "vm525400123456" }
        #expect(port?["vlan"] as? Int == 10 && port?["connected"] as? Bool == true, "\(reply)")
        // net1: tap{vmid}i1 on the Linux bridge.
        #expect(try Self.ipLink(tap)?["master"] as? String == bridge)
        let log = try await daemon.taskLog(create.data).joined(separator: "\n")
        #expect(log.contains("tap \(tap) on Linux bridge \(bridge)"), "\(log)")

        // Stopping the VM removes its tap and its switch port; starting it again plumbs them afresh.
        func switchPorts() throws -> [String: [String: Any]] {
            let reply = try SwitchControlClient(path: control).request("ports")
            let ports = (try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any])?["ports"] as? [[String: Any]] ?? []
            return Dictionary(uniqueKeysWithValues: ports.compactMap { port in (port["name"] as? String).map { ($0, port) } })
        }
        let stop = try await daemon.request("POST", "/nodes/testnode/qemu/\(vmid)/status/stop")
        #expect(try await daemon.waitTask(stop.data)["exitstatus"] as? String == "OK")
        #expect(try Self.ipLink(tap) == nil)
        #expect(try switchPorts()["vm525400123456"] == nil)
        let restart = try await daemon.request("POST", "/nodes/testnode/qemu/\(vmid)/status/start")
        #expect(try await daemon.waitTask(restart.data)["exitstatus"] as? String == "OK")
        #expect(try Self.ipLink(tap)?["master"] as? String == bridge)
        #expect(try switchPorts()["vm525400123456"]?["connected"] as? Bool == true)
        // A VMM killed behind vireod's back leaves a stale port and a tap: they go when vireod notices.
        let pid = try #require(try await daemon.vmStatus(vmid)["pid"] as? Int)
        kill(Int32(pid), SIGKILL)
        try await waitUntil("vireod removes the killed VM's tap and port", timeout: 30) {
            let tapGone = try Self.ipLink(tap) == nil
            let portGone = try switchPorts()["vm525400123456"] == nil
            return tapGone && portGone
        }
        let destroy = try await daemon.request("DELETE", "/nodes/testnode/qemu/\(vmid)")
        #expect(try await daemon.waitTask(destroy.data)["exitstatus"] as? String == "OK")
        #expect(try Self.ipLink(tap) == nil)
        #expect(try switchPorts()["vm525400123456"] == nil)

        let missing = try await daemon.request("POST", "/nodes/testnode/qemu", [
            "vmid": "\(vmid + 1)", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest(), "net0": "virtio,bridge=vt\(tag)none", "start": "1",
        ])
        // A bridge that does not exist (configs written for Proxmox say vmbr0) is a task warning, and a problem for `net check`.
        #expect(try await daemon.waitTask(missing.data)["exitstatus"] as? String == "OK")
        let missingLog = try await daemon.taskLog(missing.data).joined()
        #expect(missingLog.contains("warning: net0: bridge 'vt\(tag)none' does not exist"), "\(missingLog)")
        let path = try await daemon.request("GET", "/nodes/testnode/qemu/\(vmid + 1)/network-path").data as? [[String: Any]]
        #expect((path?.first?["problems"] as? [[String: Any]])?.first?["code"] as? String == "no-bridge")
    }

    func problems(_ daemon: DaemonHarness, _ vmid: Int, _ net: String) async throws -> [String] {
        let paths = try await daemon.request("GET", "/nodes/testnode/qemu/\(vmid)/network-path").data as? [[String: Any]] ?? []
        let path = paths.first { $0["net"] as? String == net } ?? [:]
        return (path["problems"] as? [[String: Any]] ?? []).compactMap { $0["code"] as? String }.sorted()
    }

    @Test func networkPathShowsWhatIsolatesANIC() async throws {
        let daemon = try DaemonHarness()
        let switchName = "vt\(tag)sw", bridge = "vt\(tag)br", uplink = "vt\(tag)u", peer = "vt\(tag)v", vmid = 710
        defer {
            daemon.shutdown()
            for link in [bridge, uplink, "tap\(vmid)i1"] { _ = try? Self.run(["ip", "link", "del", link]) }
        }
        let switchProcess = try await startNode(daemon, switchName: switchName, bridge: bridge)
        defer { switchProcess.terminate() }
        let control = SwitchControlClient(path: daemon.dataDirectory + "/switches/\(switchName).ctl")
        let create = try await daemon.request("POST", "/nodes/testnode/qemu", [
            "vmid": "\(vmid)", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest() + ",mode=real",
            "net0": "virtio=52:54:00:aa:00:01,bridge=\(switchName),tag=10", "net1": "virtio=52:54:00:aa:00:02,bridge=\(bridge)", "start": "1",
        ])
        #expect(try await daemon.waitTask(create.data)["exitstatus"] as? String == "OK")

        let paths = try await daemon.request("GET", "/nodes/testnode/qemu/\(vmid)/network-path").data as? [[String: Any]] ?? []
        let net0 = try #require(paths.first { $0["net"] as? String == "net0" })
        #expect(net0["type"] as? String == "VireoSwitch" && net0["port"] as? String == "vm525400aa0001" && net0["vlan"] as? Int == 10)
        #expect(try await problems(daemon, vmid, "net0") == ["no-uplink"])
        // The Linux bridge is down and has only the VM's tap.
        #expect(try await problems(daemon, vmid, "net1") == ["bridge-down", "no-uplink"])

        // An uplink that is down and carries the wrong VLAN.
        try Self.run(["ip", "link", "add", uplink, "type", "veth", "peer", "name", peer])
        _ = try control.request("add-port uplink:\(uplink),trunk=20")
        #expect(try await problems(daemon, vmid, "net0") == ["uplink-down", "vlan-not-on-uplink"])
        try Self.run(["ip", "link", "set", peer, "up"])
        try Self.run(["ip", "link", "set", uplink, "up"])
        #expect(try await problems(daemon, vmid, "net0") == ["vlan-not-on-uplink"])
        try control.removePort(named: uplink)
        _ = try control.request("add-port uplink:\(uplink),trunk=10,20")
        #expect(try await problems(daemon, vmid, "net0") == [])

        // Another port using the NIC's MAC address in its VLAN.
        _ = try control.request("add-port vm:fake,tag=10")
        let fake = try FrameChannel.connectSeqPacket(path: daemon.dataDirectory + "/switches/\(switchName)-fake.sock")
        let frame: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x52, 0x54, 0x00, 0xAA, 0x00, 0x01, 0x08, 0x00] + [UInt8](repeating: 0, count: 46)
        #expect(FrameChannel.sendMessage(fake.rawValue, frame))
        try await waitUntil("the switch learns the fake port's address", timeout: 60) {
            (try? await problems(daemon, vmid, "net0")) == ["mac-conflict"]
        }

        // `vireo net check` prints the path and the problem, and fails.
        let cli = Process()
        cli.executableURL = URL(fileURLWithPath: DaemonHarness.productsDirectory + "/vireo")
        cli.arguments = ["net", "check", "\(vmid)"]
        var environment = ProcessInfo.processInfo.environment
        environment["VIREO_URL"] = daemon.base
        environment["VIREO_PASSWORD"] = DaemonHarness.password
        cli.environment = environment
        let pipe = Pipe()
        cli.standardOutput = pipe
        cli.standardError = pipe
        try cli.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        cli.waitUntilExit()
        #expect(cli.terminationStatus == 1, "\(output)")
        #expect(output.contains("VM \(vmid) net0 52:54:00:aa:00:01 → port vm525400aa0001 (VLAN 10) → VireoSwitch \(switchName) → uplink \(uplink) (up, trunk 10,20)"), "\(output)")
        #expect(output.contains("problem mac-conflict: 52:54:00:aa:00:01 is also in use on switch port fake (VLAN 10)"), "\(output)")
        #expect(output.contains("problem bridge-down"), "\(output)")

        // What a misbehaving guest sends is refused at its own port, and said so: a second NIC's port
        // (as its VMM would create it, in offload mode) sends a VLAN-tagged frame on its access port
        // and a virtio-net header with an unknown flag.
        let guestPort = "vm525400aa0009"
        let other = try await daemon.request("POST", "/nodes/testnode/qemu", [
            "vmid": "\(vmid + 2)", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest(),
            "net0": "virtio=52:54:00:aa:00:09,bridge=\(switchName),tag=10",
        ])
        #expect(try await daemon.waitTask(other.data)["exitstatus"] as? String == "OK")
        _ = try control.request("add-port vm:\(guestPort),tag=10,offload=on")
        let guest = try FrameChannel.connectSeqPacket(path: daemon.dataDirectory + "/switches/\(switchName)-\(guestPort).sock")
        let plainHeader = [UInt8](repeating: 0, count: 12)
        let source: [UInt8] = [0x52, 0x54, 0x00, 0xAA, 0x00, 0x09]
        let tagged = plainHeader + [UInt8](repeating: 0xFF, count: 6) + source + [0x81, 0x00, 0x00, 0x14, 0x08, 0x00] + [UInt8](repeating: 0, count: 46)
        var unknownFlag = plainHeader
        unknownFlag[0] = 0x80
        let untagged = unknownFlag + [UInt8](repeating: 0xFF, count: 6) + source + [0x08, 0x00] + [UInt8](repeating: 0, count: 46)
        #expect(FrameChannel.sendMessage(guest.rawValue, tagged) && FrameChannel.sendMessage(guest.rawValue, untagged))
        try await waitUntil("the switch counts both drops", timeout: 60) {
            (try? await problems(daemon, vmid + 2, "net0")) == ["bad-offload", "tagged-on-access"]
        }
        let guestPaths = try await daemon.request("GET", "/nodes/testnode/qemu/\(vmid + 2)/network-path").data as? [[String: Any]] ?? []
        let messages = (guestPaths.first?["problems"] as? [[String: Any]] ?? []).compactMap { $0["message"] as? String }
        #expect(messages.contains { $0.contains(guestPort) && $0.contains("tagged") }, "\(messages)")
    }

    /// `netin`/`netout` (and the /metrics network families) are the VM's NICs' traffic from the
    /// guest's point of view, as Proxmox reports it: here frames the host sends into the VM's tap
    /// on a Linux bridge and into its port on a Vireo switch (the spinning guest sends nothing).
    @Test(.enabled(if: kvmUsable)) func vmTrafficIsReportedAsProxmoxReportsIt() async throws {
        let daemon = try DaemonHarness()
        let bridge = "vt\(tag)br", switchName = "vt\(tag)sw", vmid = 740
        let tap = "tap\(vmid)i0", vmPort = "vm525400dd0001"
        defer {
            daemon.shutdown()
            for link in [bridge, tap] { _ = try? Self.run(["ip", "link", "del", link]) }
        }
        let switchProcess = try await startNode(daemon, switchName: switchName, bridge: bridge)
        defer { switchProcess.terminate() }
        let control = SwitchControlClient(path: daemon.dataDirectory + "/switches/\(switchName).ctl")
        let create = try await daemon.request("POST", "/nodes/testnode/qemu", [
            "vmid": "\(vmid)", "name": "chatty", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest() + ",mode=real",
            "net0": "virtio=52:54:00:dd:00:00,bridge=\(bridge)", "net1": "virtio=52:54:00:dd:00:01,bridge=\(switchName),tag=10", "start": "1",
        ])
        let started = try await daemon.waitTask(create.data)
        let startLog = try await daemon.taskLog(create.data)
        #expect(started["exitstatus"] as? String == "OK", "\(startLog)")

        // Broadcast frames into the tap (the host transmits what the guest receives) and, from another
        // port of the switch, into the VM's port.
        func frame(from source: UInt8) -> [UInt8] {
            [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0, 0, 0, 0, source, 0x88, 0xB5] + [UInt8](repeating: source, count: 100)
        }
        let tapSocket = try FrameChannel.openPacketSocket(interface: tap)
        _ = try control.request("add-port vm:sender,tag=10")
        let sender = try FrameChannel.connectSeqPacket(path: daemon.dataDirectory + "/switches/\(switchName)-sender.sock")
        for _ in 0..<10 {
            #expect(FrameChannel.write(tapSocket.rawValue, frame(from: 1)))
            #expect(FrameChannel.sendMessage(sender.rawValue, frame(from: 2)))
        }

        /// The counters vireod must report, read here as the host keeps them (the tap's in sysfs, the
        /// port's from the switch), turned to the guest's view: the host's transmit is its receive.
        func hostCounters() throws -> (tap: [String: Int], port: [String: Int], netin: Int, netout: Int, packetsIn: Int, packetsOut: Int) {
            var tapCounters: [String: Int] = [:]
            for name in ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"] {
                tapCounters[name] = Int(try String(contentsOfFile: "/sys/class/net/\(tap)/statistics/\(name)", encoding: .utf8)
                    .trimmingCharacters(in: .whitespacesAndNewlines))
            }
            let stats = try JSONSerialization.jsonObject(with: Data(try control.request("stats").utf8)) as? [String: Any]
            let port = ((stats?["ports"] as? [[String: Any]])?.first { $0["name"] as? String == vmPort } ?? [:]).compactMapValues { $0 as? Int }
            func sum(_ name: String) -> Int { (tapCounters[name] ?? 0) + (port[name] ?? 0) }
            return (tapCounters, port, sum("tx_bytes"), sum("rx_bytes"), sum("tx_packets"), sum("rx_packets"))
        }
        try await waitUntil("the guest's NICs have received all 20 frames", timeout: 60) { try hostCounters().packetsIn >= 20 }

        func matches(_ row: [String: Any]?) throws -> Bool {
            let host = try hostCounters()
            return row?["netin"] as? Int == host.netin && row?["netout"] as? Int == host.netout
        }
        // status/current also has each NIC's figures, by tap or switch port, as PVE's `nics`.
        try await waitUntil("status/current reports the NICs' traffic", timeout: 60) {
            let current = try await daemon.vmStatus(vmid), host = try hostCounters()
            let nics = current["nics"] as? [String: [String: Int]]
            return try matches(current)
                && nics?[tap] == ["netin": host.tap["tx_bytes"]!, "netout": host.tap["rx_bytes"]!]
                && nics?[vmPort] == ["netin": host.port["tx_bytes"] ?? -1, "netout": host.port["rx_bytes"] ?? -1]
        }
        try await waitUntil("the VM list reports it", timeout: 60) {
            let rows = try await daemon.request("GET", "/nodes/testnode/qemu").data as? [[String: Any]]
            return try matches(rows?.first { $0["vmid"] as? Int == vmid })
        }
        try await waitUntil("cluster/resources reports it", timeout: 60) {
            let rows = try await daemon.request("GET", "/cluster/resources", ["type": "vm"]).data as? [[String: Any]]
            return try matches(rows?.first { $0["vmid"] as? Int == vmid })
        }
        let labels = "{vmid=\"\(vmid)\",name=\"chatty\",engine=\"vireo\"}"
        try await waitUntil("/metrics reports it", timeout: 60) {
            let text = try await daemon.rawGet("/metrics").text
            func sample(_ family: String) -> Int? {
                text.split(separator: "\n").first { $0.hasPrefix(family + labels + " ") }.flatMap { $0.split(separator: " ").last }.flatMap { Int($0) }
            }
            let host = try hostCounters()
            return sample("vireo_vm_network_receive_bytes_total") == host.netin && sample("vireo_vm_network_transmit_bytes_total") == host.netout
                && sample("vireo_vm_network_receive_packets_total") == host.packetsIn && sample("vireo_vm_network_transmit_packets_total") == host.packetsOut
        }
        #expect(try hostCounters().netin >= 20 * 114)
    }

    /// QEMU holds a tap's file side; the switch takes its kernel side as an `uplink:` port with the NIC's VLAN.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64")))
    func qemuNICJoinsTheSwitchThroughATap() async throws {
        let daemon = try DaemonHarness()
        let switchName = "vt\(tag)sw", vmid = 720
        let tap = "tap\(vmid)i0"
        defer {
            daemon.shutdown()
            _ = try? Self.run(["ip", "link", "del", tap])
        }
        let switchProcess = try await startNode(daemon, switchName: switchName)
        defer { switchProcess.terminate() }
        // No kernel: QEMU starts (and sits in its firmware-less machine), which is all the NIC needs.
        let create = try await daemon.request("POST", "/nodes/testnode/qemu", [
            "vmid": "\(vmid)", "memory": "64", "engine": "qemu", "net0": "virtio=52:54:00:bb:00:01,bridge=\(switchName),tag=20", "start": "1",
        ])
        let status = try await daemon.waitTask(create.data)
        let log = try await daemon.taskLog(create.data)
        #expect(status["exitstatus"] as? String == "OK", "\(log)")
        #expect(log.contains { $0.contains("-netdev tap,id=net0,ifname=\(tap),script=no,downscript=no") }, "\(log)")
        let reply = try SwitchControlClient(path: daemon.dataDirectory + "/switches/\(switchName).ctl").request("ports")
        let ports = (try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any])?["ports"] as? [[String: Any]] ?? []
        let port = ports.first { $0["name"] as? String == tap }
        #expect(port?["kind"] as? String == "uplink" && port?["vlan"] as? Int == 20, "\(reply)")
        #expect((try Self.ipLink(tap)?["flags"] as? [String])?.contains("UP") == true)
        let paths = try await daemon.request("GET", "/nodes/testnode/qemu/\(vmid)/network-path").data as? [[String: Any]] ?? []
        #expect(paths.first?["port"] as? String == tap && paths.first?["vlan"] as? Int == 20, "\(paths)")

        // Stopped: the tap and its uplink port are gone.
        let stop = try await daemon.request("POST", "/nodes/testnode/qemu/\(vmid)/status/stop")
        let stopped = try await daemon.waitTask(stop.data)
        let stopLog = try await daemon.taskLog(stop.data)
        #expect(stopped["exitstatus"] as? String == "OK")
        #expect(stopLog.contains("removed net0: switch \(switchName) port \(tap)"), "\(stopLog)")
        #expect(try Self.ipLink(tap) == nil)
        let after = try SwitchControlClient(path: daemon.dataDirectory + "/switches/\(switchName).ctl").request("ports")
        #expect(!after.contains("\"\(tap)\""), "\(after)")
    }

    /// A TCP transfer between two endpoints on a Vireo switch, with VMs plumbed onto the same
    /// switch by vireod, runs on while vireod is killed (SIGKILL), restarted, and stopped
    /// (SIGTERM): the switch is a process of its own session that vireod neither starts nor stops.
    /// Guests cannot run Linux on every host, so the endpoints are network namespaces behind the
    /// switch's tap ports; the receiver's checksum must equal the sender's.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/python3")))
    func aTransferSurvivesDaemonRestarts() async throws {
        let daemon = try DaemonHarness()
        let switchName = "vt\(tag)sw", sender = "vt\(tag)a", receiver = "vt\(tag)b"
        let namespaces = ["vt\(tag)n1", "vt\(tag)n2"]
        let subnet = "10.249.\(Int.random(in: 1...254))"
        let directory = daemon.dataDirectory + "/switches"
        let work = daemon.dataDirectory + "/transfer"
        var switchPid: Int32 = 0
        defer {
            if switchPid > 0 { kill(switchPid, SIGTERM) }
            daemon.shutdown()
            for namespace in namespaces { _ = try? Self.run(["ip", "netns", "del", namespace]) }
        }
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)

        // The switch, as a host starts it: its own session, no tie to any control plane.
        switchPid = try ProcessControl.spawnDetached(
            executable: DaemonHarness.productsDirectory + "/vireo-switchd",
            arguments: ["--name", switchName, "--socket-dir", directory, "--log-level", "warning",
                        "--port", "tap:\(sender),tag=10", "--port", "tap:\(receiver),tag=10"],
            logPath: daemon.dataDirectory + "/switchd.log")
        let switchStart = try #require(ProcessControl.startTime(of: switchPid))
        #expect(getsid(switchPid) == switchPid)
        let control = SwitchControlClient(path: "\(directory)/\(switchName).ctl")
        try await waitUntil("the switch answers on its control socket", timeout: 60) {
            (try? control.request("ports")) != nil || ProcessControl.startTime(of: switchPid) == nil
        }
        for (index, (namespace, tap)) in zip(namespaces, [sender, receiver]).enumerated() {
            try Self.run(["ip", "netns", "add", namespace])
            try Self.run(["ip", "link", "set", tap, "netns", namespace])
            try Self.run(["ip", "-n", namespace, "addr", "add", "\(subnet).\(index + 1)/24", "dev", tap])
            try Self.run(["ip", "-n", namespace, "link", "set", tap, "up"])
        }

        try await startDaemon(daemon)
        try await daemon.login()
        let vms = kvmUsable ? [730, 731] : []
        for vmid in vms {
            let create = try await daemon.request("POST", "/nodes/testnode/qemu", [
                "vmid": "\(vmid)", "memory": "16", "engine": "vireo", "raw": daemon.spinGuest() + ",mode=real",
                "net0": "virtio=52:54:00:cc:00:\(vmid - 700),bridge=\(switchName),tag=10", "start": "1",
            ])
            #expect(try await daemon.waitTask(create.data)["exitstatus"] as? String == "OK")
        }
        func connectedVMPorts() throws -> Int {
            let reply = try control.request("ports")
            let ports = (try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any])?["ports"] as? [[String: Any]] ?? []
            return ports.filter { $0["kind"] as? String == "vm" && $0["connected"] as? Bool == true }.count
        }
        #expect(try connectedVMPorts() == vms.count)

        // Receiver: sums what arrives until the sender closes. Sender: a seeded stream, paced, until told to stop.
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        server.arguments = ["netns", "exec", namespaces[1], "/usr/bin/python3", "-c", """
            import hashlib, os, socket, sys
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((sys.argv[1], 5001)); s.listen(1); open(sys.argv[2] + "/listening", "w").close()
            c, _ = s.accept(); h = hashlib.sha256(); n = 0
            while True:
                b = c.recv(65536)
                if not b: break
                h.update(b); n += len(b)
            open(sys.argv[2] + "/received.tmp", "w").write(f"{n} {h.hexdigest()}"); os.rename(sys.argv[2] + "/received.tmp", sys.argv[2] + "/received")
            """, "\(subnet).2", work]
        try server.run()
        try await waitUntil("the receiver listens", timeout: 30) { FileManager.default.fileExists(atPath: work + "/listening") }
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        client.arguments = ["netns", "exec", namespaces[0], "/usr/bin/python3", "-c", """
            import hashlib, os, random, socket, sys, time
            c = socket.create_connection((sys.argv[1], 5001), timeout=120)
            rng = random.Random(7); h = hashlib.sha256(); n = 0
            while not os.path.exists(sys.argv[2] + "/stop"):
                b = rng.randbytes(65536); c.sendall(b); h.update(b); n += len(b)
                time.sleep(0.02)  # pacing, so the transfer lasts without loading the host
            c.shutdown(socket.SHUT_WR); c.recv(1)
            open(sys.argv[2] + "/sent.tmp", "w").write(f"{n} {h.hexdigest()}"); os.rename(sys.argv[2] + "/sent.tmp", sys.argv[2] + "/sent")
            """, "\(subnet).2", work]
        try client.run()

        /// Bytes the switch has delivered to the receiver's port.
        func delivered() -> Int {
            guard let reply = try? control.request("stats"),
                  let stats = try? JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any] else { return 0 }
            let ports = stats["ports"] as? [[String: Any]] ?? []
            return ports.first { $0["name"] as? String == receiver }?["tx_bytes"] as? Int ?? 0
        }
        func transferAdvances(_ what: String) async throws {
            let mark = delivered()
            try await waitUntil("the transfer advances \(what) (delivered \(mark) bytes so far)", timeout: 60) {
                delivered() > mark + 512 * 1024
            }
        }
        try await transferAdvances("once started")

        try await daemon.kill9()
        try await transferAdvances("with vireod killed")
        try await startDaemon(daemon)
        try await daemon.login()
        try await transferAdvances("with vireod restarted")
        #expect(rows(try await daemon.request("GET", "/nodes/testnode/network"))[switchName]?["active"] as? Int == 1)
        try await daemon.terminate()
        try await transferAdvances("with vireod stopped")
        try await startDaemon(daemon)
        try await daemon.login()
        try await transferAdvances("with vireod started again")

        FileManager.default.createFile(atPath: work + "/stop", contents: nil)
        try await waitUntil("both ends finish", timeout: 60) {
            FileManager.default.fileExists(atPath: work + "/received") && FileManager.default.fileExists(atPath: work + "/sent")
        }
        let sent = try String(contentsOfFile: work + "/sent", encoding: .utf8)
        let received = try String(contentsOfFile: work + "/received", encoding: .utf8)
        #expect(sent == received)
        #expect((Int(sent.split(separator: " ").first ?? "") ?? 0) > 5 * 512 * 1024)
        #expect(ProcessControl.startTime(of: switchPid) == switchStart, "the switch is the same process throughout")
        #expect(try connectedVMPorts() == vms.count, "the VMs' ports stayed connected")
        for vmid in vms { #expect(try await daemon.vmStatus(vmid)["status"] as? String == "running") }
    }
}
