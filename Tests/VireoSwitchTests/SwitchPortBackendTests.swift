import Foundation
import Logging
import Testing
import VireoNetlink
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

    @Test func qinqOptionsReachThePort() throws {
        let config = try NetConfig.parse("switch=sw0,tag=100,tunnel=on,mac=\(mac)")
        guard case .switchPort(let attachment) = config.attachment else { Issue.record("not a switch port"); return }
        #expect(attachment.port.tunnel && attachment.port.spec == "vm:vm5254000a0b0c,tag=100,tunnel=on,offload=on")
        let provider = try NetConfig.parse("switch=sw0,trunk=100,200,tpid=88a8,mac=\(mac)")
        guard case .switchPort(let trunk) = provider.attachment else { Issue.record("not a switch port"); return }
        #expect(trunk.port.tagType == VLAN.serviceTPID)
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

        #expect(backend.send(arpRequest(lab, asking: 1)) == .sent)
        let reply = receive(backend) { ARP.isReply(Array($0.dropFirst(12)), to: mac) }
        #expect(reply != nil, "no ARP reply from VLAN 10: \(lab.switchLog)")
        #expect(reply.map { Array($0.prefix(12)) } == [UInt8](repeating: 0, count: 12), "received packets carry a zeroed virtio-net header")

        #expect(backend.send(arpRequest(lab, asking: 3)) == .sent)
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
        #expect(first.send(arpRequest(lab, asking: 1)) == .dropped)
        #expect(second.isConnected)
        let ports = try lab.control("ports")["ports"] as? [[String: Any]] ?? []
        #expect(ports.count == 1 && ports.first?["mode"] as? String == "trunk" && ports.first?["connected"] as? Bool == true)

        port.detach(logger: Self.logger)
        #expect((try lab.control("ports")["ports"] as? [[String: Any]])?.isEmpty == true)
    }

    // MARK: Shared-memory rings

    static let macs = (1...3).map { MACAddress(0x52, 0x54, 0x00, 0x5e, 0x01, UInt8($0)) }

    /// A 60-byte frame (zeroed virtio-net header first) numbered `index`.
    static func packet(to destination: MACAddress, from source: MACAddress, index: UInt32) -> [UInt8] {
        var frame = [UInt8](repeating: 0, count: 12) + destination.octets + source.octets + [0x88, 0xb5]
        frame += (0..<4).map { UInt8(truncatingIfNeeded: index >> (8 * $0)) }
        return frame + [UInt8](repeating: 0, count: 72 - frame.count)
    }

    static func index(of packet: [UInt8]) -> UInt32 {
        (0..<4).reduce(0) { $0 | UInt32(packet[26 + $1]) << (8 * $1) }
    }

    /// A `vm:` port on VLAN 10 and a backend on it, with or without rings.
    func ringPort(_ lab: NamespaceLab, _ name: String, rings: Bool) throws -> SwitchPortBackend {
        try SwitchControlClient(switch: lab.switchName, directory: lab.directory).addPort(try PortConfig.parse("vm:\(name),tag=10"))
        return try SwitchPortBackend(socketPath: lab.socketPath(port: name), rings: rings)
    }

    /// Every packet from `source` that `backend` receives until `count` have come or `seconds` pass.
    func collect(_ backend: SwitchPortBackend, from source: MACAddress, count: Int, within seconds: Double = 10) -> [[UInt8]] {
        var got: [[UInt8]] = []
        let end = Date().addingTimeInterval(seconds)
        while got.count < count, Date() < end {
            guard let packet = backend.receive() else {
                usleep(500)
                continue
            }
            if Array(packet[18..<24]) == source.octets { got.append(packet) }
        }
        return got
    }

    func portEntry(_ lab: NamespaceLab, _ name: String) throws -> [String: Any]? {
        (try lab.control("ports")["ports"] as? [[String: Any]] ?? []).first { $0["name"] as? String == name }
    }

    /// A VMM whose ring to the switch is full waits instead of dropping: with the switch stopped,
    /// sends report busy; once it runs again it takes the records and kicks the VMM (its socket
    /// becomes readable), and every frame arrives, in order.
    @Test func aFullRingMakesTheVMMWaitForRoom() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: [])
        let (macA, macB) = (Self.macs[0], Self.macs[1])
        let a = try ringPort(lab, "wa", rings: true), b = try ringPort(lab, "wb", rings: true)
        #expect(a.usesRings && b.usesRings)
        #expect(b.send(Self.packet(to: .broadcast, from: macB, index: 0)) == .sent)
        #expect(collect(a, from: macB, count: 1).count == 1, "the switch learnt B")
        #expect(a.receive() == nil, "the kick that came with B's frame is read")
        let pid = try #require(lab.switchPID)
        kill(pid, SIGSTOP)
        defer { kill(pid, SIGCONT) }
        var sent: UInt32 = 0
        while sent < 100_000, a.send(Self.packet(to: macB, from: macA, index: sent + 1)) == .sent { sent += 1 }
        #expect(sent > 1000 && sent < 100_000, "the ring filled after \(sent) frames")
        #expect(a.send(Self.packet(to: macB, from: macA, index: sent + 1)) == .busy)
        let socket = try #require(a.pollDescriptor)
        #expect(!FrameChannel.waitReadable(socket, timeoutMilliseconds: 0), "no kick is pending yet")
        kill(pid, SIGCONT)
        #expect(FrameChannel.waitReadable(socket, timeoutMilliseconds: 10_000), "the switch kicked the waiting VMM")
        let arrived = collect(b, from: macA, count: Int(sent), within: 20).map(Self.index(of:))
        #expect(arrived == Array(1...sent), "\(arrived.count) of \(sent) frames arrived in order")
        #expect(a.send(Self.packet(to: macB, from: macA, index: sent + 1)) == .sent)
        #expect(collect(b, from: macA, count: 1).map(Self.index(of:)) == [sent + 1])
        #expect(try lab.drops(port: "wb", "transmit-failed") == 0)
    }

    @Test func ringPortsCarryFramesBothWaysInOrderAndMeetMessagePorts() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: [])
        let (macA, macB, macC) = (Self.macs[0], Self.macs[1], Self.macs[2])
        let a = try ringPort(lab, "ra", rings: true), b = try ringPort(lab, "rb", rings: true), c = try ringPort(lab, "mc", rings: false)
        #expect(a.usesRings && b.usesRings && !c.usesRings)
        #expect(try portEntry(lab, "ra")?["rings"] as? Bool == true)
        #expect(try portEntry(lab, "mc")?["rings"] as? Bool == false)
        // Each says hello (a broadcast the switch learns its address from); the others see it.
        for (backend, mac) in [(a, macA), (b, macB), (c, macC)] {
            #expect(backend.send(Self.packet(to: .broadcast, from: mac, index: 0)) == .sent)
        }
        #expect(collect(b, from: macA, count: 1).count == 1 && collect(b, from: macC, count: 1).count == 1)
        #expect(collect(c, from: macA, count: 1).count == 1 && collect(a, from: macB, count: 1).count == 1)
        _ = collect(a, from: macC, count: 1) + collect(c, from: macB, count: 1)

        // Bursts larger than a batch, ring to ring and message port to ring port, arrive whole and in order.
        let burst = 3000
        for index in 1...UInt32(burst) {
            #expect(a.send(Self.packet(to: macB, from: macA, index: index)) == .sent)
            if index % 2 == 0 { #expect(c.send(Self.packet(to: macB, from: macC, index: index / 2)) == .sent) }
            if index % 500 == 0 { _ = collect(b, from: MACAddress(0, 0, 0, 0, 0, 0), count: 0) }
        }
        var fromA: [UInt32] = [], fromC: [UInt32] = []
        let end = Date().addingTimeInterval(20)
        while (fromA.count < burst || fromC.count < burst / 2), Date() < end {
            guard let packet = b.receive() else {
                usleep(500)
                continue
            }
            if Array(packet[18..<24]) == macA.octets { fromA.append(Self.index(of: packet)) }
            if Array(packet[18..<24]) == macC.octets { fromC.append(Self.index(of: packet)) }
        }
        #expect(fromA == Array(1...UInt32(burst)), "ring to ring: \(fromA.count) of \(burst)\n\(lab.switchLog)")
        #expect(fromC == Array(1...UInt32(burst / 2)), "messages to ring: \(fromC.count) of \(burst / 2)")
        // And back from a ring port to a message port.
        for index in 1...UInt32(200) { #expect(b.send(Self.packet(to: macC, from: macB, index: index)) == .sent) }
        #expect(collect(c, from: macB, count: 200).map(Self.index(of:)) == Array(1...UInt32(200)))
        #expect(try lab.drops(port: "rb", "transmit-failed") == 0)
    }

    /// A frame of `length` bytes (zeroed virtio-net header first) whose payload is a pattern
    /// numbered `index`, so a byte out of place shows.
    static func largePacket(to destination: MACAddress, from source: MACAddress, index: Int, length: Int) -> [UInt8] {
        let frame = [UInt8](repeating: 0, count: 12) + destination.octets + source.octets + [0x88, 0xb5]
        return frame + (0..<(12 + length - frame.count)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) }
    }

    /// A frame from a ring is switched on the switch's copy of its headers and leaves with the
    /// rest copied straight from that ring (to a ring port, or a tap by `writev`), or copied out
    /// first for a message port and a trunk that adds a tag. Frames longer than the copied
    /// headers arrive whole on each, unicast and flooded.
    @Test func framesLeavingARingInPlaceArriveWholeOnEveryKindOfPort() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        let tap = lab.name("t")
        try lab.startSwitch(ports: ["tap:\(tap),tag=10"])
        try RouteNetlink().setUp(tap, true)
        let capture = try FrameChannel.openPacketSocket(interface: tap)
        try SwitchControlClient(switch: lab.switchName, directory: lab.directory).addPort(try PortConfig.parse("vm:tr,trunk=10"))
        let trunk = try SwitchPortBackend(socketPath: lab.socketPath(port: "tr"), rings: true)
        let (macA, macB, macC) = (Self.macs[0], Self.macs[1], Self.macs[2])
        let (macT, macTrunk) = (MACAddress(0x52, 0x54, 0, 0x5e, 0x02, 1), MACAddress(0x52, 0x54, 0, 0x5e, 0x02, 2))
        let a = try ringPort(lab, "ra", rings: true), b = try ringPort(lab, "rb", rings: true), c = try ringPort(lab, "mc", rings: false)
        #expect(a.usesRings && b.usesRings && !c.usesRings && trunk.usesRings)
        // Everyone says hello so the switch learns where each address is.
        #expect(b.send(Self.packet(to: .broadcast, from: macB, index: 0)) == .sent)
        #expect(c.send(Self.packet(to: .broadcast, from: macC, index: 0)) == .sent)
        var tagged = Self.packet(to: .broadcast, from: macTrunk, index: 0)
        tagged.insert(contentsOf: [0x81, 0x00, 0x00, 10], at: 24)
        #expect(trunk.send(tagged) == .sent)
        #expect(FrameChannel.write(capture.rawValue, Array(Self.packet(to: .broadcast, from: macT, index: 0).dropFirst(12))))
        // A sees the four hellos, in whatever order the switch's ports are read (and among whatever
        // the tap's own kernel side sends, e.g. its IPv6 neighbour discovery).
        let hellos = Set([macB, macC, macTrunk, macT].map(\.octets))
        var greeted: Set<[UInt8]> = []
        let end = Date().addingTimeInterval(10)
        while !greeted.isSuperset(of: hellos), Date() < end {
            guard let packet = a.receive() else {
                usleep(500)
                continue
            }
            greeted.insert(Array(packet[18..<24]))
        }
        #expect(greeted.isSuperset(of: hellos), "hellos seen by A")

        var captured: [[UInt8]] = []
        func captureFrames(count: Int) {
            var buffer = [UInt8](repeating: 0, count: 2048)
            while captured.count < count, FrameChannel.waitReadable(capture.rawValue, timeoutMilliseconds: 5000),
                  let length = try? FrameChannel.receivePacket(capture.rawValue, into: &buffer) {
                if Array(buffer[6..<12]) == macA.octets { captured.append(Array(buffer[..<length])) }
            }
        }
        let lengths = [257, 700, 1514]
        for (index, length) in lengths.enumerated() {
            let destinations = [macB, macC, macTrunk, macT, MACAddress.broadcast]
            for (offset, destination) in destinations.enumerated() {
                #expect(a.send(Self.largePacket(to: destination, from: macA, index: index * 8 + offset, length: length)) == .sent)
            }
            for (backend, destination, offset) in [(b, macB, 0), (c, macC, 1)] {
                let expected = [Self.largePacket(to: destination, from: macA, index: index * 8 + offset, length: length),
                                Self.largePacket(to: .broadcast, from: macA, index: index * 8 + 4, length: length)]
                #expect(collect(backend, from: macA, count: 2) == expected, "\(length)-byte frames to \(destination)")
            }
            // The trunk gets them tagged with VLAN 10.
            let onTrunk = [2, 4].map { offset in
                var frame = Self.largePacket(to: offset == 2 ? macTrunk : .broadcast, from: macA, index: index * 8 + offset, length: length)
                frame.insert(contentsOf: [0x81, 0x00, 0x00, 10], at: 24)
                return frame
            }
            #expect(collect(trunk, from: macA, count: 2) == onTrunk, "\(length)-byte frames to the trunk")
            captureFrames(count: 2 * (index + 1))
        }
        let expectedOnTap = lengths.enumerated().flatMap { index, length in
            [3, 4].map { offset in Array(Self.largePacket(to: offset == 3 ? macT : .broadcast, from: macA, index: index * 8 + offset, length: length).dropFirst(12)) }
        }
        #expect(captured == expectedOnTap, "frames through the tap")
        for port in ["rb", "mc", "tr", tap] { #expect(try lab.drops(port: port, "transmit-failed") == 0) }
    }

    /// In ring mode a VMM copies each record from the switch's ring straight into the guest's
    /// receive buffers (`receive(into:)`), scattered over them in their order, on ports with and
    /// without offloads (a zeroed header goes first for the latter); frames sent as messages
    /// before (none here) and the ring's arming go through the array path.
    @Test func ringRecordsLandStraightInTheGuestsBuffers() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: [])
        let (macA, macB, macC) = (Self.macs[0], Self.macs[1], Self.macs[2])
        // Jumbo MTUs, so that frames up to 64 KiB cross without offloads.
        let control = SwitchControlClient(switch: lab.switchName, directory: lab.directory)
        for spec in ["vm:ra,tag=10,mtu=65535", "vm:rb,tag=10,mtu=65535", "vm:oc,tag=10,mtu=65535,offload=on"] { try control.addPort(try PortConfig.parse(spec)) }
        let a = try SwitchPortBackend(socketPath: lab.socketPath(port: "ra"), rings: true)
        let b = try SwitchPortBackend(socketPath: lab.socketPath(port: "rb"), rings: true)
        let c = try SwitchPortBackend(socketPath: lab.socketPath(port: "oc"), offload: true, rings: true)
        #expect(b.receivesInPlace && c.receivesInPlace)
        // b and c say hello one after the other, so the switch learns where they are.
        #expect(b.send(Self.packet(to: .broadcast, from: macB, index: 0)) == .sent)
        #expect(collect(a, from: macB, count: 1).count == 1 && collect(c, from: macB, count: 1).count == 1)
        #expect(c.send(Self.packet(to: .broadcast, from: macC, index: 0)) == .sent)
        #expect(collect(a, from: macC, count: 1).count == 1 && collect(b, from: macC, count: 1).count == 1)

        // "Guest buffers": three pieces of one array, out of address order, covering the largest packet.
        var memory = [UInt8](repeating: 0xEE, count: 70_000)
        let pieces = [0..<100, 40_000..<70_000, 100..<40_000]
        func receiveInPlace(_ backend: SwitchPortBackend) -> [UInt8]? {
            let end = Date().addingTimeInterval(10)
            while Date() < end {
                let length = memory.withUnsafeMutableBytes { raw in
                    let segments = pieces.map { UnsafeMutableRawBufferPointer(rebasing: raw[$0]) }
                    return backend.receive(into: unsafe IOVectors(unsafeSegments: segments))
                }
                guard let length else {
                    usleep(500)
                    continue
                }
                return Array(pieces.flatMap { memory[$0] }.prefix(length))
            }
            return nil
        }
        for (index, length) in [60, 1514, 9000, 40_000, 65_000].enumerated() {
            for (backend, destination) in [(b, macB), (c, macC)] {
                let packet = Self.largePacket(to: destination, from: macA, index: index, length: length)
                #expect(a.send(packet) == .sent)
                #expect(receiveInPlace(backend) == packet, "\(length)-byte frame to \(destination)")
            }
        }
        for port in ["ra", "rb", "oc"] { #expect(try lab.stats(port: port)["drops_total"] as? Int == 0) }
    }

    /// Offers the region `memfd` over a raw connection to a port and returns the switch's reply.
    func offer(_ socket: Int32, memfd: Int32, capacity: UInt32) throws -> RingHandshake.Status? {
        try FrameChannel.sendMessage(socket, RingHandshake.offer(capacity: capacity), descriptors: [memfd])
        guard FrameChannel.waitReadable(socket, timeoutMilliseconds: 5000),
              let reply = try FrameChannel.receiveMessage(socket, capacity: 64) else { return nil }
        return RingHandshake.decodeReply(reply.message)
    }

    @Test func anUnsealedRingOfferIsRefusedAndThePortStaysOnMessages() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: ["vm:raw,tag=10"])
        let good = try ringPort(lab, "good", rings: true)
        let capacity: UInt32 = 1 << 17
        let unsealed = FileDescriptor(adopting: FrameRingTests.unsealedFile())
        #expect(ftruncate(unsealed.rawValue, off_t(4096 + 2 * Int(capacity))) == 0)
        let socket = try FrameChannel.connectSeqPacket(path: lab.socketPath(port: "raw"))
        let status = try offer(socket.rawValue, memfd: unsealed.rawValue, capacity: capacity)
        #expect(status == .refused)
        #expect(lab.switchLog.contains("ring offer refused"))
        #expect(try portEntry(lab, "raw")?["rings"] as? Bool == false)
        // Frames as messages still go both ways.
        let frame = Self.packet(to: .broadcast, from: Self.macs[0], index: 7)
        #expect(FrameChannel.sendMessage(socket.rawValue, frame[12...]))
        #expect(collect(good, from: Self.macs[0], count: 1).map(Self.index(of:)) == [7])
    }

    @Test func aPeerThatBreaksItsRingIsDroppedAndTheOthersGoOn() throws {
        let lab = NamespaceLab()
        defer { lab.close() }
        try lab.startSwitch(ports: ["vm:evil,tag=10"])
        let one = try ringPort(lab, "one", rings: true), two = try ringPort(lab, "two", rings: false)
        let capacity: UInt32 = 1 << 17
        let region = try FrameRingRegion(capacity: capacity)
        let socket = try FrameChannel.connectSeqPacket(path: lab.socketPath(port: "evil"))
        let status = try offer(socket.rawValue, memfd: region.descriptor.rawValue, capacity: capacity)
        #expect(status == .accepted)
        // A valid frame first, then a producer position beyond the ring, and a kick.
        var ring = region.ring(0, producer: true)
        let step1 = ring.push(Self.packet(to: .broadcast, from: Self.macs[2], index: 1)[12...])
        #expect(step1 == .pushed)
        try FrameRingTests.poke(region, offset: FrameRingTests.producerOffset, 0x4000_0000)
        #expect(FrameChannel.sendMessage(socket.rawValue, RingHandshake.kick))
        let end = Date().addingTimeInterval(5)
        while try portEntry(lab, "evil")?["connected"] as? Bool == true, Date() < end { usleep(10_000) }
        #expect(try portEntry(lab, "evil")?["connected"] as? Bool == false, "\(lab.switchLog)")
        #expect(lab.switchLog.contains("its ring to the switch is broken"))
        #expect(lab.switchIsRunning)
        // The others go on.
        #expect(one.send(Self.packet(to: .broadcast, from: Self.macs[0], index: 5)) == .sent)
        #expect(collect(two, from: Self.macs[0], count: 1).map(Self.index(of:)) == [5])
        #expect(two.send(Self.packet(to: Self.macs[0], from: Self.macs[1], index: 6)) == .sent)
        #expect(collect(one, from: Self.macs[1], count: 1).map(Self.index(of:)) == [6])
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
