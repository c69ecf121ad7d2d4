import Foundation
import Testing
import VireoSwitch
import VireoSystem

/// The kernel fast path between uplink ports (``KernelFastPath``), end to end: veth pairs whose
/// host ends are the switch's uplinks and whose other ends are namespaces, as a bridge's ports are.
/// Each test checks that the kernel forwards what the switch decided, and only that.
@Suite(.enabled(if: NamespaceLab.available && KernelFastPathProbe.available, "needs root, ip, ping, vireo-switchd and BPF with tcx (Linux 6.6)"),
       .timeLimit(.minutes(1)))
struct KernelFastPathTests {
    /// Starts a switch whose ports are uplinks on veth pairs into namespaces `roles` (hosts 1, 2, …).
    private func lab(_ roles: [String], options: String = "tag=10") throws -> (NamespaceLab, [String]) {
        let lab = NamespaceLab()
        var ports: [String] = []
        for (index, role) in roles.enumerated() { ports.append(try lab.addVethNamespace(role, host: index + 1)) }
        try lab.startSwitch(ports: ports.map { "uplink:\($0),\(options)" })
        return (lab, ports)
    }

    private func kernelFlows(_ lab: NamespaceLab) throws -> Int { try lab.control("stats")["kernel_flows"] as? Int ?? -1 }

    private func counter(_ lab: NamespaceLab, _ port: String, _ name: String) throws -> Int { try lab.stats(port: port)[name] as? Int ?? -1 }

    /// Polls `condition` every 50 ms, for up to 10 s.
    private func eventually(_ condition: () throws -> Bool) rethrows -> Bool {
        for _ in 0..<200 {
            if try condition() { return true }
            usleep(50_000)
        }
        return try condition()
    }

    @Test func trafficBetweenUplinksIsForwardedByTheKernelAndCountedOnThePorts() throws {
        let (lab, ports) = try lab(["a", "b"])
        defer { lab.close() }
        #expect(lab.ping(from: "a", to: 2), "\(lab.switchLog)")
        #expect(try eventually { try kernelFlows(lab) == 2 }, "one flow each way")
        let (sent, received) = try lab.transfer(from: "a", to: "b", host: 2, megabytes: 16)
        #expect(sent != nil && sent == received, "sent \(sent ?? "-"), received \(received ?? "-")")
        // The transfer's frames were counted, once a second, as the kernel forwarded them: nearly
        // all of a's frames never reached the switch process.
        // (Packets as the kernel counts them: a 64 KiB super-frame is one.)
        #expect(try eventually { try counter(lab, ports[0], "kernel_rx_packets") > 100 && counter(lab, ports[1], "kernel_rx_packets") > 10 },
                "\((try? lab.control("stats")) ?? [:])")
        let rx = try counter(lab, ports[0], "rx_packets"), inKernel = try counter(lab, ports[0], "kernel_rx_packets")
        #expect(rx - inKernel < 20, "\(rx) frames received on a, \(inKernel) of them in the kernel")
        #expect(try counter(lab, ports[1], "tx_bytes") >= 16 << 20, "b's port sent the transfer")
        #expect(try lab.stats(port: ports[0])["drops_total"] as? Int == 0)

        // A removed port takes its flows with it: nothing reaches the namespace behind it.
        #expect(try lab.control("del-port \(ports[1])")["ok"] as? Bool == true)
        #expect(try kernelFlows(lab) == 0)
        #expect(!lab.ping(from: "a", to: 2, count: 1))
    }

    /// A tagged frame on an access uplink is the switch's to judge (dropped, counted): the kernel
    /// passes it on even when a flow exists for its addresses, and the far side never sees it.
    @Test func taggedFramesOnAnAccessUplinkNeverTakeTheFastPath() throws {
        let (lab, ports) = try lab(["a", "b"])
        defer { lab.close() }
        #expect(lab.ping(from: "a", to: 2))
        #expect(try eventually { try kernelFlows(lab) == 2 })
        let macA = MACAddress(try lab.mac(in: "a", interface: lab.name("ai")))!, macB = MACAddress(try lab.mac(in: "b", interface: lab.name("bi")))!
        let tagged = Frames.make(dst: macB, src: macA, vid: 10, etherType: 0x88B5, payload: Array("VIREO-TAGGED".utf8) + [UInt8](repeating: 0, count: 40))
        let control = Frames.make(dst: macB, src: macA, etherType: 0x88B5, payload: Array("VIREO-CONTROL".utf8) + [UInt8](repeating: 0, count: 40))

        let receiver = try RawReceiver(lab, role: "b", interface: lab.name("bi"))
        try lab.sendRaw(from: "a", interface: lab.name("ai"), tagged)
        #expect(try eventually { try lab.drops(port: ports[0], "tagged-on-access") == 1 }, "the switch saw and dropped the tagged frame")
        try lab.sendRaw(from: "a", interface: lab.name("ai"), control)
        // The untagged frame came through the kernel; had the tagged one, it would have arrived first.
        #expect(receiver.finish() == ["control"])
        #expect(try counter(lab, ports[1], "tx_packets") > 0)
    }

    /// When an address moves to another port, the flows that sent frames to it (or took frames
    /// from it) leave the kernel before anyone can answer the frame that moved it.
    @Test func aMovedAddressLeavesTheFastPath() throws {
        let (lab, ports) = try lab(["a", "b", "c"])
        defer { lab.close() }
        #expect(lab.ping(from: "a", to: 2))
        #expect(try eventually { try kernelFlows(lab) == 2 })
        let inner = (b: lab.name("bi"), c: lab.name("ci"))
        let macB = try lab.mac(in: "b", interface: inner.b)
        // b goes away; c takes over its MAC address and talks to a.
        try NamespaceLab.run(["ip", "-n", lab.name("b"), "link", "set", inner.b, "down"])
        try NamespaceLab.run(["ip", "-n", lab.name("c"), "link", "set", inner.c, "address", macB])
        #expect(lab.ping(from: "c", to: 1, count: 1), "a's answers to \(macB) must go to c's port now: \(lab.switchLog)")
        #expect(try lab.fdb().contains { $0.mac == macB && $0.port == ports[2] })
        #expect(try eventually { try kernelFlows(lab) == 2 }, "a ↔ c flows")
        #expect(lab.ping(from: "a", to: 3, count: 2))
    }

    /// Addresses behind flows the kernel carries stay learned while the traffic lasts (the sweep
    /// refreshes them from the kernel's counts), and age out, flows included, once it stops.
    @Test func addressesOnTheFastPathAgeOnlyWhenTrafficStops() throws {
        let (lab, ports) = try lab(["a", "b"])
        defer { lab.close() }
        #expect(try lab.control("ageing 2")["ok"] as? Bool == true)
        #expect(lab.ping(from: "a", to: 2))
        #expect(try eventually { try kernelFlows(lab) == 2 })
        let before = try counter(lab, ports[0], "rx_packets") - counter(lab, ports[0], "kernel_rx_packets")
        // 5 s of pings, longer than the ageing time: the flows must stay installed throughout, so
        // the switch process sees (almost) none of them.
        #expect(lab.ping(from: "a", to: 2, count: 25))
        let after = try counter(lab, ports[0], "rx_packets") - counter(lab, ports[0], "kernel_rx_packets")
        #expect(after - before <= 4, "\(after - before) of a's frames went through the switch process: the flows were aged out")
        #expect(try lab.fdb().count == 2)
        #expect(try eventually { try lab.fdb().isEmpty && kernelFlows(lab) == 0 }, "aged out once quiet")
    }

    /// An access uplink and a trunk uplink: the kernel pushes the VLAN's tag on the way to the
    /// trunk and pops it on the way back, as the switch would; a frame of another VLAN on the trunk
    /// is still the switch's (and reaches nobody on VLAN 10).
    @Test func tagsArePushedAndPoppedAtTheEdgesInTheKernel() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let access = try lab.addVethNamespace("a", host: 1), trunk = try lab.addVethNamespace("t", host: 2)
        try lab.startSwitch(ports: ["uplink:\(access),tag=10", "uplink:\(trunk),trunk=10,20"])
        let (innerA, innerT) = (lab.name("ai"), lab.name("ti"))
        let macA = MACAddress(try lab.mac(in: "a", interface: innerA))!, macT = MACAddress(try lab.mac(in: "t", interface: innerT))!
        func frame(to destination: MACAddress, from source: MACAddress, vid: UInt16? = nil, _ marker: String) -> [UInt8] {
            Frames.make(dst: destination, src: source, vid: vid, etherType: 0x88B5, payload: Array("VIREO-\(marker)".utf8) + [UInt8](repeating: 0, count: 40))
        }
        // Each side makes itself known; the second frame each way installs a flow.
        try lab.sendRaw(from: "t", interface: innerT, frame(to: .broadcast, from: macT, vid: 10, "HELLO"))
        try lab.sendRaw(from: "a", interface: innerA, frame(to: macT, from: macA, "HELLO"))
        #expect(try eventually { try lab.fdb().count == 2 })
        try lab.sendRaw(from: "t", interface: innerT, frame(to: macA, from: macT, vid: 10, "HELLO"))
        try lab.sendRaw(from: "a", interface: innerA, frame(to: macT, from: macA, "HELLO"))
        #expect(try eventually { try kernelFlows(lab) == 2 }, "\((try? lab.control("stats")) ?? [:])")

        let onTrunk = try RawReceiver(lab, role: "t", interface: innerT, stop: "totrunk")
        try lab.sendRaw(from: "a", interface: innerA, frame(to: macT, from: macA, "TOTRUNK"))
        #expect(onTrunk.finish() == ["totrunk@10"], "tagged with VLAN 10 on the trunk")

        let onAccess = try RawReceiver(lab, role: "a", interface: innerA, stop: "toaccess")
        try lab.sendRaw(from: "t", interface: innerT, frame(to: macA, from: macT, vid: 20, "OTHERVLAN"))
        #expect(try eventually { try counter(lab, trunk, "rx_packets") - counter(lab, trunk, "kernel_rx_packets") >= 3 }, "VLAN 20 went to the switch (after the two hellos)")
        try lab.sendRaw(from: "t", interface: innerT, frame(to: macA, from: macT, vid: 10, "TOACCESS"))
        #expect(onAccess.finish() == ["toaccess"], "untagged on the access port; VLAN 20 never reached it")
        #expect(try eventually { try counter(lab, access, "kernel_rx_packets") >= 1 && counter(lab, trunk, "kernel_rx_packets") >= 1 },
                "both frames crossed in the kernel")
    }

    /// The way a QEMU VM joins a switch: a tap whose file side the VMM holds (here a Python
    /// process, writing and reading frames as QEMU would) and whose interface is an uplink port.
    /// Frames between two such taps take the kernel fast path, arrive whole and in order, and are
    /// counted on both ports.
    @Test func tapsHeldByAVMMTakeTheFastPath() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let (tapA, tapB) = (lab.name("qa"), lab.name("qb"))
        let go = "\(lab.directory)/go", flowsReady = "\(lab.directory)/flows", ready = "\(lab.directory)/taps-ready"
        let vmm = Process()
        vmm.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        vmm.arguments = ["-c", """
            import fcntl, os, struct, subprocess, sys, time
            a_name, b_name, ready, go, flows = sys.argv[1:6]
            def tap(name):
                fd = os.open("/dev/net/tun", os.O_RDWR)
                fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0002 | 0x1000))  # TUNSETIFF, IFF_TAP|IFF_NO_PI
                subprocess.run(["ip", "link", "set", name, "up"], check=True)
                return fd
            def wait(path):
                for _ in range(2000):
                    if os.path.exists(path): return
                    time.sleep(0.01)
                sys.exit("timed out waiting for " + path)
            a, b = tap(a_name), tap(b_name)
            mac_a, mac_b = bytes.fromhex("025400aa0001"), bytes.fromhex("025400bb0002")
            def frame(dst, src, n): return dst + src + b"\\x88\\xb5" + n.to_bytes(4, "big") + bytes(1000)
            def expect(fd, src, n):
                while True:
                    got = os.read(fd, 65536)
                    if got[6:12] == src and int.from_bytes(got[14:18], "big") == n and len(got) == 1018: return
            open(ready, "w").close(); wait(go)
            os.write(a, frame(b"\\xff" * 6, mac_a, 0)); expect(b, mac_a, 0)
            os.write(b, frame(mac_a, mac_b, 0)); expect(a, mac_b, 0)
            os.write(a, frame(mac_b, mac_a, 1)); expect(b, mac_a, 1)
            wait(flows)
            for n in range(2, 202): os.write(a, frame(mac_b, mac_a, n))
            for n in range(2, 202): expect(b, mac_a, n)
            os.write(b, frame(mac_a, mac_b, 1)); expect(a, mac_b, 1)
            print("ok", flush=True)
            """, tapA, tapB, ready, go, flowsReady]
        let output = Pipe()
        vmm.standardOutput = output
        try vmm.run()
        defer { if vmm.isRunning { vmm.terminate() } }
        #expect(try eventually { FileManager.default.fileExists(atPath: ready) || !vmm.isRunning } && vmm.isRunning, "the taps are up")
        try lab.startSwitch(ports: ["uplink:\(tapA)", "uplink:\(tapB)"])
        FileManager.default.createFile(atPath: go, contents: nil)
        #expect(try eventually { try kernelFlows(lab) == 2 }, "\((try? lab.control("stats")) ?? [:])")
        FileManager.default.createFile(atPath: flowsReady, contents: nil)
        let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        vmm.waitUntilExit()
        #expect(said == "ok\n" && vmm.terminationStatus == 0, "200 frames from A reached B whole and in order")
        #expect(try eventually { try counter(lab, tapA, "kernel_rx_packets") >= 200 && counter(lab, tapB, "tx_packets") >= 202 },
                "\((try? lab.control("stats")) ?? [:])")
    }

    @Test func offByFlagEveryFrameGoesThroughTheSwitch() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = try lab.addVethNamespace("a", host: 1), b = try lab.addVethNamespace("b", host: 2)
        try lab.startSwitch(ports: ["uplink:\(a)", "uplink:\(b)"], extra: ["--kernel-fast-path", "off"])
        #expect(lab.ping(from: "a", to: 2, count: 3))
        #expect(try lab.control("stats")["kernel_fast_path"] as? Bool == false)
        #expect(try kernelFlows(lab) == 0 && counter(lab, a, "kernel_rx_packets") == 0)
    }
}

enum KernelFastPathProbe {
    /// Whether this process may load the fast path's programs (CAP_BPF, tcx): the switch would
    /// run without it, and these tests have nothing to test.
    static let available: Bool = (try? KernelFastPath(capacity: 16)) != nil
}

/// A packet socket in a lab namespace that reports each marked frame it receives: a payload
/// "VIREO-NAME" is reported as "name", or "name@VID" when it arrived in an 802.1Q tag (read from
/// the packet's auxiliary data, where the kernel puts a tag it took off), until the one named `stop`.
final class RawReceiver {
    private let process = Process()
    private let output = Pipe()

    init(_ lab: NamespaceLab, role: String, interface: String, stop: String = "control") throws {
        let ready = "\(lab.directory)/raw-ready-\(role)"
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", lab.name(role), "/usr/bin/python3", "-c", """
            import re, socket, struct, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)); s.bind((sys.argv[1], 0)); s.settimeout(20)
            s.setsockopt(263, 8, 1)  # SOL_PACKET, PACKET_AUXDATA
            open(sys.argv[2], "w").close()
            while True:
                frame, ancillary, _, _ = s.recvmsg(65536, 256)
                marker = re.search(rb"VIREO-([A-Z0-9]+)", frame)
                if not marker: continue
                name = marker.group(1).decode().lower()
                for level, kind, data in ancillary:
                    status, tci = struct.unpack_from("I", data, 0)[0], struct.unpack_from("H", data, 16)[0]
                    if level == 263 and kind == 8 and status & 0x10: name += "@%d" % (tci & 0xFFF)
                print(name, flush=True)
                if marker.group(1).decode().lower() == sys.argv[3]: break
            """, interface, ready, stop]
        process.standardOutput = output
        try process.run()
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: ready) && process.isRunning { usleep(20_000) }
    }

    /// What it saw, once it has seen the control frame (or given up after 20 s).
    func finish() -> [String] {
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return text.split(separator: "\n").map(String.init)
    }
}

extension NamespaceLab {
    /// Sends `frame` as it is out of `interface` in namespace `role` (an AF_PACKET socket).
    func sendRaw(from role: String, interface: String, _ frame: [UInt8]) throws {
        let hex = frame.map { String(format: "%02x", $0) }.joined()
        try Self.run(["ip", "netns", "exec", name(role), "/usr/bin/python3", "-c", """
            import socket, sys
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind((sys.argv[1], 0)); s.send(bytes.fromhex(sys.argv[2]))
            """, interface, hex])
    }
}

/// The assembler's encoding, against the kernel's `struct bpf_insn` layout.
struct BPFAssemblerTests {
    @Test func instructionsEncodeAsTheKernelReadsThem() throws {
        var a = BPFAssembler()
        a.load(.word, .r2, .r6, 76)          // ldxw r2, [r6+76]
        a.jump(if: .r2, .notEqual, 0, to: "out")
        a.loadMap(.r1, fd: 7)
        a.label("out")
        a.move(.r0, -1)
        a.exit()
        let program = try a.assemble()
        #expect(program.map(\.bytes) == [
            [0x61, 0x62, 76, 0, 0, 0, 0, 0],
            [0x55, 0x02, 2, 0, 0, 0, 0, 0],             // skips the two-slot map load
            [0x18, 0x11, 0, 0, 7, 0, 0, 0],             // src 1: BPF_PSEUDO_MAP_FD
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0xB7, 0x00, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF],
            [0x95, 0, 0, 0, 0, 0, 0, 0],
        ])
    }

    @Test func aJumpToALabelNeverPlacedIsAnError() {
        var a = BPFAssembler()
        a.jump(if: .r0, .equal, 0, to: "nowhere")
        a.exit()
        #expect(throws: BPFError.undefinedLabel("nowhere")) { try a.assemble() }
    }
}
