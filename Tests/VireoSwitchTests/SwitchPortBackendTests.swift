import Foundation
import Logging
import Testing
import VireoDevices
import VireoSwitch
import VireoSystem
import VireoVMM

/// `--net switch=…` parsing: the port options are the switch's own.
struct SwitchNetConfigTests {
    let mac = "52:54:00:0a:0b:0c"

    @Test func accessPortDefaultsToAPortNamedAfterTheMAC() throws {
        let config = try NetConfig.parse("switch=sw0,tag=10,mac=\(mac)")
        guard case .switchPort(let attachment) = config.attachment else { Issue.record("not a switch port"); return }
        #expect(attachment.switchName == "sw0")
        #expect(attachment.directory == "/run/vireo")
        #expect(attachment.port.spec == "vm:vm5254000a0b0c,tag=10,offload=on")
        // Offload mode is the default; a NIC may still ask for plain frames.
        let plain = try NetConfig.parse("switch=sw0,tag=10,offload=off,mac=\(mac)")
        guard case .switchPort(let plainAttachment) = plain.attachment else { Issue.record("not a switch port"); return }
        #expect(!plainAttachment.port.offload)
    }

    @Test func trunkListContinuesAcrossCommas() throws {
        let config = try NetConfig.parse("switch=sw0,trunk=10,20-22,native=1,port=web0,dir=/tmp/sw,mac=\(mac)")
        guard case .switchPort(let attachment) = config.attachment else { Issue.record("not a switch port"); return }
        #expect(attachment.port == (try PortConfig.parse("vm:web0,trunk=10,20-22,native=1,offload=on")))
        #expect(attachment.directory == "/tmp/sw")
        #expect(config.mac == [0x52, 0x54, 0, 0x0a, 0x0b, 0x0c])
    }

    @Test func badCombinationsAreClearErrors() {
        for (text, words) in [
            ("switch=sw0,tag=10,trunk=20", "exclude"), ("tap=t0,tag=10", "need switch"), ("tap=t0,switch=sw0", "exclude"),
            ("switch=sw0,tag=5000", "1-4094"), ("switch=sw/0", "switch name"), ("switch=sw0,port=a-very-long-port-name", "1-15"),
            ("mac=\(mac)", "tap=NAME or switch=NAME"),
        ] {
            #expect(throws: ConfigError.self, "\(text)") { try NetConfig.parse(text) }
            do { _ = try NetConfig.parse(text) } catch { #expect("\(error)".contains(words), "\(text): \(error)") }
        }
    }
}

/// The VMM's switch backend against a real `vireo-switchd`, with namespaces behind tap ports.
@Suite(.enabled(if: NamespaceLab.available, "needs root, ip, ping and a built vireo-switchd"), .timeLimit(.minutes(1)))
struct SwitchPortBackendTests {
    static let logger = Logger(label: "switch-port-test")
    let mac = MACAddress(0x52, 0x54, 0x00, 0x5e, 0x00, 0x01)

    func attachment(_ lab: NamespaceLab, _ options: String) throws -> SwitchAttachment {
        let config = try NetConfig.parse("switch=\(lab.switchName),dir=\(lab.directory),mac=\(mac),\(options)")
        guard case .switchPort(let attachment) = config.attachment else { throw NamespaceLab.LabError.command("parse", "not a switch port") }
        return attachment
    }

    /// The next packet (virtio-net header + frame) matching `predicate`, polled until `seconds` pass.
    func receive(_ backend: SwitchPortBackend, within seconds: Double = 3, matching predicate: ([UInt8]) -> Bool) -> [UInt8]? {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if let packet = backend.receive() {
                if predicate(packet) { return packet }
            } else {
                usleep(1000)
            }
        }
        return nil
    }

    func arpRequest(_ lab: NamespaceLab, asking host: Int) -> [UInt8] {
        [UInt8](repeating: 0, count: 12) + ARP.request(from: mac, ip: lab.address(99), asking: lab.address(host))
    }

    @Test func attachedNICReachesItsVLANOnly() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let a = lab.name("a"), c = lab.name("c")
        try lab.startSwitch(ports: ["tap:\(a),tag=10", "tap:\(c),tag=20"])
        try lab.addNamespace("a", interface: a, host: 1)
        try lab.addNamespace("c", interface: c, host: 3)
        let port = try attachment(lab, "tag=10")
        let backend = try port.attach(logger: Self.logger)

        let ports = try lab.control("ports")["ports"] as? [[String: Any]] ?? []
        let entry = ports.first { $0["name"] as? String == port.port.name }
        #expect(entry?["kind"] as? String == "vm" && entry?["vlan"] as? Int == 10)
        #expect(entry?["connected"] as? Bool == true)

        #expect(backend.send(arpRequest(lab, asking: 1)))
        let reply = receive(backend) { ARP.isReply(Array($0.dropFirst(12)), to: mac) }
        #expect(reply != nil, "no ARP reply from VLAN 10: \(lab.switchLog)")
        #expect(reply.map { Array($0.prefix(12)) } == [UInt8](repeating: 0, count: 12), "received packets carry a zeroed virtio-net header")

        #expect(backend.send(arpRequest(lab, asking: 3)))
        #expect(receive(backend, within: 1) { ARP.isReply(Array($0.dropFirst(12)), to: mac) } == nil, "VLAN 10 must not reach VLAN 20")
        #expect(try lab.stats(port: port.port.name)["rx_packets"] as? Int == 2)
    }

    @Test func reattachReplacesTheStalePortAndDetachRemovesIt() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: [])
        let port = try attachment(lab, "trunk=10,20,native=1")
        let first = try port.attach(logger: Self.logger)
        let nic = VirtioNet(mac: [0x52, 0x54, 0, 0, 0, 1], backend: first)
        #expect(nic.readConfig(offset: 6, size: 2) == 1)
        let second = try port.attach(logger: Self.logger)
        // The first connection's port was deleted: its backend notices the hang-up and goes quiet,
        // and the NIC on it reports the link down.
        let end = Date().addingTimeInterval(5)
        while first.isConnected, Date() < end {
            nic.backendReadable()
            if first.isConnected { usleep(1000) }
        }
        #expect(!first.isConnected)
        #expect(nic.readConfig(offset: 6, size: 2) == 0)
        #expect(first.receive() == nil)
        #expect(!first.send(arpRequest(lab, asking: 1)))
        #expect(second.isConnected)
        let ports = try lab.control("ports")["ports"] as? [[String: Any]] ?? []
        #expect(ports.count == 1 && ports.first?["mode"] as? String == "trunk" && ports.first?["connected"] as? Bool == true)

        port.detach(logger: Self.logger)
        #expect((try lab.control("ports")["ports"] as? [[String: Any]])?.isEmpty == true)
    }

    @Test func missingSwitchIsAClearError() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let port = try attachment(lab, "tag=10")
        #expect { try port.attach(logger: Self.logger) } throws: { error in
            "\(error)".contains("switch control socket \(lab.controlPath)")
        }
    }
}
