import Foundation
import Testing
import VireoSwitch
import VireoSystem

/// End-to-end tests of `vireo-switchd` with network namespaces as endpoints. They need root,
/// `ip`, `ping` and a built `vireo-switchd` next to the test bundle (or `$VIREO_SWITCHD`).
@Suite(.enabled(if: NamespaceLab.available, "needs root, ip, ping and a built vireo-switchd"), .timeLimit(.minutes(1)))
struct NamespaceTests {
    @Test func sameVLANPingsAcrossVLANsDoesNot() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), b = lab.name("b"), c = lab.name("c")
        try lab.startSwitch(ports: ["tap:\(a),tag=10", "tap:\(b),tag=10", "tap:\(c),tag=20"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("b", interface: b, host: 2)
        try lab.addNamespace("c", interface: c, host: 3)

        #expect(lab.ping(from: "a", to: 2), "same VLAN: \(lab.switchLog)")
        #expect(!lab.ping(from: "a", to: 3, count: 1), "VLAN 10 must not reach VLAN 20")
        #expect(!lab.ping(from: "c", to: 2, count: 1), "VLAN 20 must not reach VLAN 10")

        // Learning: both VLAN-10 hosts sit on their ports; c's ARP was learned in VLAN 20 only.
        let fdb = try lab.fdb()
        let macA = try lab.mac(in: "a", interface: a), macB = try lab.mac(in: "b", interface: b), macC = try lab.mac(in: "c", interface: c)
        #expect(fdb.contains { $0 == (10, macA, a) })
        #expect(fdb.contains { $0 == (10, macB, b) })
        #expect(fdb.contains { $0 == (20, macC, c) })
        #expect(!fdb.contains { $0.vlan == 10 && $0.mac == macC })

        let stats = try lab.stats(port: b)
        #expect((stats["rx_packets"] as? Int ?? 0) >= 2 && (stats["tx_packets"] as? Int ?? 0) >= 2)
        #expect(stats["drops_total"] as? Int == 0)
    }

    @Test func learnedAddressesAgeOut() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), b = lab.name("b")
        try lab.startSwitch(ports: ["tap:\(a)", "tap:\(b)"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("b", interface: b, host: 2)
        #expect(lab.ping(from: "a", to: 2, count: 1))
        #expect(try lab.fdb().count >= 2)
        #expect(try lab.control("ageing 1")["ok"] as? Bool == true)
        // The table is swept about once a second.
        var remaining = -1
        for _ in 0..<40 {
            usleep(100_000)
            remaining = try lab.fdb().count
            if remaining == 0 { break }
        }
        #expect(remaining == 0)
        // …and relearned on the next exchange.
        #expect(lab.ping(from: "a", to: 2, count: 1))
        #expect(try lab.fdb().count >= 2)
    }

    @Test func trunkPortCarriesTags() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), c = lab.name("c")
        try lab.startSwitch(ports: ["tap:\(a),tag=10", "tap:\(c),tag=20", "vm:trunk,trunk=10,20"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("c", interface: c, host: 3)
        let vm = try FakeVMNIC(path: lab.socketPath(port: "trunk"))
        usleep(100_000)

        // An ARP broadcast from each access VLAN reaches the trunk tagged with that VLAN.
        _ = lab.ping(from: "a", to: 50, count: 1)
        let fromA = vm.receive { (try? FrameHeader.parse($0).get())?.etherType == 0x0806 && (try? FrameHeader.parse($0).get())?.vid == 10 }
        #expect(fromA != nil, "no VLAN-10 ARP on the trunk")
        _ = lab.ping(from: "c", to: 51, count: 1)
        let fromC = vm.receive { (try? FrameHeader.parse($0).get())?.etherType == 0x0806 && (try? FrameHeader.parse($0).get())?.vid == 20 }
        #expect(fromC != nil, "no VLAN-20 ARP on the trunk")

        // A tagged request from the trunk reaches VLAN 10 untagged; the reply comes back tagged 10.
        let vmMAC = MACAddress(0x02, 0x56, 0, 0, 0, 0x99)
        vm.send(ARP.request(from: vmMAC, ip: lab.address(99), asking: lab.address(1), vid: 10))
        let reply = vm.receive { ARP.isReply($0, to: vmMAC) }
        #expect(reply.flatMap { try? FrameHeader.parse($0).get().vid } == 10)
        // The same request in VLAN 20 finds nobody with that address.
        vm.send(ARP.request(from: vmMAC, ip: lab.address(99), asking: lab.address(1), vid: 20))
        #expect(vm.receive(matching: { ARP.isReply($0, to: vmMAC) }, within: 1) == nil)
        // Untagged frames on a trunk without a native VLAN are dropped and counted.
        vm.send(ARP.request(from: vmMAC, ip: lab.address(99), asking: lab.address(1)))
        vm.send(ARP.request(from: vmMAC, ip: lab.address(99), asking: lab.address(1), vid: 30))
        usleep(100_000)
        #expect(try lab.drops(port: "trunk", "untagged-on-trunk") == 1)
        #expect(try lab.drops(port: "trunk", "vlan-not-allowed") == 1)
        #expect(try lab.fdb().contains { $0 == (10, vmMAC.description, "trunk") })
    }

    /// TCP between ports in offload mode, two taps and an uplink: the sender's TSO super-frames
    /// cross the switch whole (the receiving port's mean frame is larger than any MTU-sized one),
    /// the host's own super-frames come in through the uplink's packet socket with their header,
    /// and every transfer arrives intact.
    @Test func tcpSuperFramesCrossOffloadPortsWhole() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), b = lab.name("b")
        let uplink = try lab.addVethNamespace("u", host: 3)
        try lab.startSwitch(ports: ["tap:\(a),tag=10", "tap:\(b),tag=10", "uplink:\(uplink),tag=10"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("b", interface: b, host: 2)
        try expectIntactTransfers(lab, [("a", "b", 2), ("a", "u", 3), ("u", "a", 1)], megabytes: 4)
        for port in [a, b, uplink] {
            let (packets, mean) = try transmitted(lab, port: port)
            #expect(packets > 0 && mean > 1514, "\(port): mean frame \(mean) bytes: no super-frames crossed")
        }
    }

    /// Super-frames leave in software-made segments through ports without offloads: a tap with
    /// `offload=off` (whose kernel checks every segment's checksums) and an uplink with
    /// `offload=off`, whose host's own super-frames are cut for the tap too; the other way, plain
    /// frames reach an offload tap behind an empty header.
    @Test func superFramesAreSegmentedForPortsWithoutOffloads() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), b = lab.name("b")
        let uplink = try lab.addVethNamespace("u", host: 3)
        try lab.startSwitch(ports: ["tap:\(a)", "tap:\(b),offload=off", "uplink:\(uplink),offload=off"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("b", interface: b, host: 2)
        try expectIntactTransfers(lab, [("a", "b", 2), ("a", "u", 3), ("b", "a", 1), ("u", "b", 2)], megabytes: 2)
        for port in [b, uplink] {
            let (packets, mean) = try transmitted(lab, port: port)
            #expect(packets > 2 * 1024 * 1024 / 1514 && mean <= 1514, "\(port): \(packets) frames of \(mean) bytes on average")
        }
    }

    /// Sends `megabytes` over TCP on each leg (from, to, to's host number) and expects them intact.
    private func expectIntactTransfers(_ lab: NamespaceLab, _ legs: [(String, String, Int)], megabytes: Int) throws {
        for (from, to, host) in legs {
            let (sent, received) = try lab.transfer(from: from, to: to, host: host, megabytes: megabytes)
            #expect(sent != nil && sent == received, "\(from) → \(to): sent \(sent ?? "-"), received \(received ?? "-"): \(lab.switchLog)")
        }
    }

    /// The frames `port` sent and their mean size; none may have been dropped on it.
    private func transmitted(_ lab: NamespaceLab, port: String) throws -> (packets: Int, meanBytes: Int) {
        let stats = try lab.stats(port: port)
        #expect(stats["drops_total"] as? Int == 0, "\(port): \(stats)")
        let packets = stats["tx_packets"] as? Int ?? 0, bytes = stats["tx_bytes"] as? Int ?? 0
        return (packets, bytes / max(packets, 1))
    }

    /// Waits (up to 2 s) until the switch lists TSO among `port`'s accepted offloads.
    private func awaitTSOAnnounced(_ lab: NamespaceLab, port: String) throws -> Bool {
        for _ in 0..<100 {
            let ports = try lab.control("ports")["ports"] as? [[String: Any]] ?? []
            if ports.contains(where: { $0["name"] as? String == port && ($0["accepted_offloads"] as? [String])?.contains("tso4") == true }) {
                return true
            }
            usleep(20_000)
        }
        return false
    }

    /// A VM port in offload mode: a super-frame from one peer reaches a peer that announced TSO as
    /// one message (header moved for the tag it gained), a peer that announced nothing as checked
    /// segments behind empty headers, and a plain VM port as tagged segments.
    @Test func vmPortsGetSuperFramesAsTheirPeersAnnounced() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: ["vm:src,tag=10,offload=on", "vm:tso,trunk=10,offload=on", "vm:none,tag=10,offload=on", "vm:plain,trunk=10"])
        let source = try FakeVMNIC(path: lab.socketPath(port: "src"))
        let tso = try FakeVMNIC(path: lab.socketPath(port: "tso"))
        let none = try FakeVMNIC(path: lab.socketPath(port: "none"))
        let plain = try FakeVMNIC(path: lab.socketPath(port: "plain"))
        tso.send(OffloadAnnouncement.message(.all))
        none.send(OffloadAnnouncement.message([]))
        // The announcements are in before the frame: each port's accepted offloads say so.
        #expect(try awaitTSOAnnounced(lab, port: "tso"))

        let (frame, header) = SoftwareOffloadTests.superFrame(payload: SoftwareOffloadTests.payload)
        source.send(header.bytes + frame)
        let whole = tso.receive(matching: { $0.count > 1600 })
        if let whole {
            let moved = VirtioNetHeader(whole)
            #expect(moved?.checksumStart == header.checksumStart + 4 && moved?.gsoSize == header.gsoSize, "header moved by the tag")
            #expect((try? FrameHeader.parse(Array(whole.dropFirst(12)), mtu: 65_535).get())?.vid == 10)
            var segments: [[UInt8]] = []
            #expect(SoftwareOffload.resolve(whole.dropFirst(12), header: moved!, networkOffset: 18, into: &segments) && segments.count == 4)
        } else {
            Issue.record("no super-frame on the TSO peer: \(lab.switchLog)")
        }
        var payload: [UInt8] = []
        for index in 0..<4 {
            guard let message = none.receive() else {
                Issue.record("segment \(index) missing on the peer without offloads")
                break
            }
            #expect(Array(message.prefix(12)) == VirtioNetHeader().bytes)
            payload += SoftwareOffloadTests.verify(Array(message.dropFirst(12)), networkOffset: 14, ipv6: false, tcpHeaderLength: 32).payload
            guard let tagged = plain.receive() else {
                Issue.record("segment \(index) missing on the plain port")
                break
            }
            #expect((try? FrameHeader.parse(tagged).get())?.vid == 10)
            _ = SoftwareOffloadTests.verify(tagged, networkOffset: 18, ipv6: false, tcpHeaderLength: 32)
        }
        #expect(payload == SoftwareOffloadTests.payload)
    }

    /// Untagged in and untagged out, a frame leaves as it came: a super-frame reaches a peer that
    /// announced TSO byte for byte, header included; a header whose `num_buffers` the sender set
    /// (meaningless on transmit) leaves with it cleared; a port without offloads gets the bare frame.
    @Test func unchangedFramesLeaveAsTheyCame() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: ["vm:src,tag=10,offload=on", "vm:tso,tag=10,offload=on", "vm:plain,tag=10"])
        let source = try FakeVMNIC(path: lab.socketPath(port: "src"))
        let tso = try FakeVMNIC(path: lab.socketPath(port: "tso"))
        let plain = try FakeVMNIC(path: lab.socketPath(port: "plain"))
        tso.send(OffloadAnnouncement.message(.all))
        #expect(try awaitTSOAnnounced(lab, port: "tso"))

        let (superFrame, superHeader) = SoftwareOffloadTests.superFrame(payload: SoftwareOffloadTests.payload)
        source.send(superHeader.bytes + superFrame)
        #expect(tso.receive(matching: { $0.count > 1600 }) == superHeader.bytes + superFrame)

        let small = Frames.make(dst: Frames.mac(0x0B), src: Frames.mac(0x0A), payloadLength: 100)
        var stale = VirtioNetHeader()
        stale.numBuffers = 7
        source.send(stale.bytes + small)
        #expect(tso.receive(matching: { $0.count == 12 + small.count }) == VirtioNetHeader().bytes + small)
        #expect(plain.receive(matching: { $0 == small }) != nil, "the plain port got the bare frame")
    }

    @Test func uplinkOverPacketSocket() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a")
        let hostAccess = try lab.addVethNamespace("u", host: 2)
        let hostTrunk = try lab.addVethNamespace("t", host: 3)
        try lab.startSwitch(ports: ["tap:\(a),tag=10", "uplink:\(hostAccess),tag=10", "uplink:\(hostTrunk),trunk=10"])
        try lab.addNamespace("a", interface: a, host: 1)
        // Access uplink: plain Ethernet through AF_PACKET both ways.
        #expect(lab.ping(from: "a", to: 2), "via AF_PACKET uplink: \(lab.switchLog)")

        // Trunk uplink: what a's broadcasts look like on the wire, seen by tcpdump in the far namespace.
        guard NamespaceLab.hasTool("/usr/bin/tcpdump") else { return }
        let capture = Process()
        capture.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        capture.arguments = ["ip", "netns", "exec", lab.name("t"), "timeout", "4", "tcpdump", "-e", "-nn", "-l", "-c", "1", "-i", lab.name("ti"), "arp"]
        let pipe = Pipe()
        capture.standardOutput = pipe
        capture.standardError = FileHandle.nullDevice
        try capture.run()
        usleep(700_000)
        _ = lab.ping(from: "a", to: 77, count: 1)
        capture.waitUntilExit()
        let line = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(line.contains("802.1Q") && line.contains("vlan 10"), "tcpdump saw: \(line)")
    }

    @Test func uplinkSurvivesItsInterfaceGoingDownAndUp() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a")
        let uplink = try lab.addVethNamespace("u", host: 2)
        try lab.startSwitch(ports: ["tap:\(a)", "uplink:\(uplink)"])
        try lab.addNamespace("a", interface: a, host: 1)
        #expect(lab.ping(from: "a", to: 2))
        try NamespaceLab.run(["ip", "link", "set", uplink, "down"])
        #expect(!lab.ping(from: "a", to: 2, count: 1))
        try NamespaceLab.run(["ip", "link", "set", uplink, "up"])
        // The veth needs a moment to regain its carrier: retry, bounded.
        var reached = false
        for _ in 0..<10 where !reached { reached = lab.ping(from: "a", to: 2, count: 1) }
        #expect(reached, "uplink dead after down/up: \(lab.switchLog)")
    }

    /// Bursts between two VM ports go through the batched path (one recvmmsg in, one sendmmsg out
    /// per batch): every frame arrives once, in order, intact, tagged for the trunk.
    @Test func burstsBetweenVMPortsArriveInOrder() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: ["vm:a,tag=10", "vm:b,trunk=10"])
        let a = try FakeVMNIC(path: lab.socketPath(port: "a")), b = try FakeVMNIC(path: lab.socketPath(port: "b"))
        let macA = Frames.mac(0x0A), macB = Frames.mac(0x0B)
        var received: [[UInt8]] = []
        for burst in 0..<6 {
            for index in 0..<50 {
                let sequence = UInt8((burst * 50 + index) & 0xFF)
                a.send(Frames.make(dst: macB, src: macA, payload: [UInt8(burst), sequence] + [UInt8](repeating: sequence, count: 44)))
            }
            while received.count < (burst + 1) * 50, let frame = b.receive() { received.append(frame) }
        }
        #expect(received.count == 300)
        for (index, frame) in received.enumerated() {
            let expected = Frames.make(dst: macB, src: macA, vid: 10, payload: [UInt8(index / 50), UInt8(index & 0xFF)] + [UInt8](repeating: UInt8(index & 0xFF), count: 44))
            #expect(frame == expected, "frame \(index)")
            if frame != expected { break }
        }
        #expect(try lab.stats(port: "b")["tx_packets"] as? Int == 300)
        #expect(try lab.stats(port: "b")["drops_total"] as? Int == 0)
    }

    @Test func garbageFromOnePortChangesNothingForOthers() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), b = lab.name("b")
        try lab.startSwitch(ports: ["tap:\(a),tag=10", "tap:\(b),tag=10", "vm:bad,tag=10"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("b", interface: b, host: 2)
        #expect(lab.ping(from: "a", to: 2, count: 1))
        let before = try lab.stats(port: b)
        let bad = try FakeVMNIC(path: lab.socketPath(port: "bad"))
        usleep(100_000)
        let src = MACAddress(0x02, 0xBA, 0xD0, 0, 0, 1)
        for _ in 0..<50 {
            bad.send([0x01])                                                               // runt
            bad.send(Array(Frames.make(dst: .broadcast, src: src).prefix(13)))              // runt
            bad.send(Frames.make(dst: .broadcast, src: src, payloadLength: 1501))          // oversized
            bad.send(Array(Frames.make(dst: .broadcast, src: src, vid: 10).prefix(16)))     // truncated tag
            bad.send(Frames.make(dst: .broadcast, src: src, vid: 0xFFF))                   // reserved VID
            bad.send(Frames.make(dst: .broadcast, src: src, etherType: 0x88A8))            // QinQ
            bad.send(Frames.make(dst: .broadcast, src: src, vid: 10))                      // tagged on access
            bad.send(Frames.make(dst: .broadcast, src: .broadcast))                        // invalid source
        }
        #expect(lab.ping(from: "a", to: 2, count: 3))
        let drops = try lab.stats(port: "bad")["drops"] as? [String: Int] ?? [:]
        #expect(drops["runt"] == 100)
        #expect(drops["oversized"] == 50)
        #expect(drops["malformed-tag"] == 100)
        #expect(drops["unsupported-tag"] == 50)
        #expect(drops["tagged-on-access"] == 50)
        #expect(drops["invalid-source"] == 50)
        // Nothing of it reached b, and nothing was learned from it.
        let after = try lab.stats(port: b)
        #expect((after["tx_packets"] as? Int ?? 0) - (before["tx_packets"] as? Int ?? 0) < 20)
        #expect(after["drops_total"] as? Int == 0)
        #expect(try !lab.fdb().contains { $0.port == "bad" })
        #expect(lab.switchIsRunning)
    }

    @Test func macFloodIsCappedPerPort() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), b = lab.name("b")
        try lab.startSwitch(ports: ["tap:\(a)", "tap:\(b)", "vm:flood,mac-limit=8"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("b", interface: b, host: 2)
        let flood = try FakeVMNIC(path: lab.socketPath(port: "flood"))
        usleep(100_000)
        for index in 0..<2000 {
            flood.send(Frames.make(dst: .broadcast, src: MACAddress(rawValue: 0x0200_0000_0000 | UInt64(index) << 4)))
        }
        #expect(lab.ping(from: "a", to: 2))
        let stats = try lab.stats(port: "flood")
        #expect(stats["learned"] as? Int == 8)
        #expect(stats["unlearned_sources"] as? Int == 2000 - 8)
        let fdb = try lab.fdb()
        #expect(fdb.filter { $0.port == "flood" }.count == 8)
        #expect(fdb.contains { $0.port == a } && fdb.contains { $0.port == b })
    }

    @Test func broadcastStormIsLimited() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), b = lab.name("b")
        try lab.startSwitch(ports: ["tap:\(a)", "tap:\(b)", "vm:storm,flood-limit=100"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("b", interface: b, host: 2)
        let storm = try FakeVMNIC(path: lab.socketPath(port: "storm"))
        usleep(100_000)
        let before = try lab.stats(port: b)["tx_packets"] as? Int ?? 0
        for _ in 0..<3000 { storm.send(Frames.make(dst: .broadcast, src: MACAddress(0x02, 0x57, 0, 0, 0, 1))) }
        #expect(lab.ping(from: "a", to: 2))
        #expect(try lab.drops(port: "storm", "flood-limited") >= 2500)
        // b saw at most the burst plus the refill (and a few frames of the ping).
        let delivered = (try lab.stats(port: b)["tx_packets"] as? Int ?? 0) - before
        #expect(delivered < 500, "\(delivered) frames reached b")
    }

    @Test func keepsSwitchingWithoutControlPlane() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), b = lab.name("b")
        try lab.startSwitch(ports: ["tap:\(a)", "tap:\(b)"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("b", interface: b, host: 2)
        // Control clients that vanish mid-command, or send junk, do not disturb the data plane.
        for _ in 0..<5 {
            let client = try UnixSocketClient(path: lab.controlPath)
            client.write("sta")
        }
        #expect(try lab.control("frobnicate")["error"] != nil)
        #expect(lab.ping(from: "a", to: 2))
        // Ports come and go at run time.
        #expect(try lab.control("add-port vm:late,tag=1")["ok"] as? Bool == true)
        #expect(FileManager.default.fileExists(atPath: lab.socketPath(port: "late")))
        #expect(try lab.control("add-port vm:late,tag=1")["error"] != nil)
        #expect(try lab.control("add-port vm:x,tag=5000")["error"] != nil)
        #expect(try lab.control("del-port late")["ok"] as? Bool == true)
        #expect(!FileManager.default.fileExists(atPath: lab.socketPath(port: "late")))
        let ports = try lab.control("ports")["ports"] as? [[String: Any]] ?? []
        #expect(ports.compactMap { $0["name"] as? String }.sorted() == [a, b].sorted())
        #expect(lab.ping(from: "a", to: 2))
    }

    /// QinQ through the real data plane: a customer's C-tagged frame enters a tunnel port and
    /// leaves a provider port with an S-tag in front of its C-tag; the answer comes back with the
    /// S-tag popped and the C-tag as it was.
    @Test func customerTagsCrossAProviderPortInsideAnSTag() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: ["vm:cust,tag=100,tunnel=on", "vm:core,trunk=100,tpid=88a8"])
        let customer = try FakeVMNIC(path: lab.socketPath(port: "cust"))
        let core = try FakeVMNIC(path: lab.socketPath(port: "core"))
        let a = Frames.mac(0xA), b = Frames.mac(0xB)
        let out = Frames.make(dst: .broadcast, src: a, vid: 5, payloadLength: 100)
        customer.send(out)
        #expect(core.receive(matching: { Array($0[6..<12]) == a.octets }) == QinQTests.sTagged(out, vid: 100), "\(lab.switchLog)")
        let back = Frames.make(dst: a, src: b, vid: 5, payloadLength: 100)
        core.send(QinQTests.sTagged(back, vid: 100))
        #expect(customer.receive(matching: { Array($0[6..<12]) == b.octets }) == back)
        let ports = try lab.control("ports")["ports"] as? [[String: Any]] ?? []
        #expect(ports.first { $0["name"] as? String == "core" }?["tpid"] as? String == "88a8")
        #expect(ports.first { $0["name"] as? String == "cust" }?["tunnel"] as? Bool == true)
    }
}

/// A control-socket client that may disappear at any moment.
final class UnixSocketClient {
    let fd: Int32
    init(path: String) throws {
        let socket = try VireoSystem.UnixSocket.connect(path: path)
        fd = socket.release()
    }
    func write(_ text: String) { VireoSystem.RawDescriptorIO.writeAll(fd, Array(text.utf8)) }
    deinit { VireoSystem.RawDescriptorIO.close(fd) }
}
