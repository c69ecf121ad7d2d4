import Testing
@testable import VireoSwitch

/// The forwarding core, with ports as plain IDs and time passed in.
@Suite struct SwitchTests {
    var fabric = Switch()
    var egress: [Egress] = []
    let a = Frames.mac(0xA), b = Frames.mac(0xB), c = Frames.mac(0xC), d = Frames.mac(0xD)

    mutating func add(_ spec: String) -> PortID { try! fabric.addPort(PortConfig.parse(spec)) }

    mutating func send(_ frame: [UInt8], on port: PortID, now: UInt64 = 0) -> (Verdict, [Egress]) {
        let verdict = fabric.receive(frame, on: port, now: now, egress: &egress)
        return (verdict, egress)
    }

    @Test mutating func floodsThenLearns() {
        let p1 = add("tap:p1,tag=10"), p2 = add("tap:p2,tag=10"), p3 = add("tap:p3,tag=10")
        var (verdict, out) = send(Frames.make(dst: b, src: a), on: p1)
        guard case .forward(_, let vlan, let flooded) = verdict else { Issue.record("dropped"); return }
        #expect(vlan == 10 && flooded)
        #expect(out == [Egress(port: p2, vid: nil), Egress(port: p3, vid: nil)])
        // b answers: a is known, so the reply goes to p1 alone.
        (verdict, out) = send(Frames.make(dst: a, src: b), on: p2)
        #expect(out == [Egress(port: p1, vid: nil)])
        if case .forward(_, _, let flooded) = verdict { #expect(!flooded) }
        (_, out) = send(Frames.make(dst: b, src: a), on: p1)
        #expect(out == [Egress(port: p2, vid: nil)])
        #expect(fabric.table.count == 2)
    }

    @Test mutating func broadcastAndMulticastFlood() {
        let p1 = add("tap:p1,tag=10"), p2 = add("tap:p2,tag=10"), p3 = add("tap:p3,tag=10")
        _ = send(Frames.make(dst: a, src: b), on: p2) // learn b… and a multicast never matches the table
        var (_, out) = send(Frames.make(dst: .broadcast, src: a), on: p1)
        #expect(out.map(\.port) == [p2, p3])
        (_, out) = send(Frames.make(dst: MACAddress(0x01, 0x00, 0x5E, 0, 0, 1), src: a), on: p1)
        #expect(out.map(\.port) == [p2, p3])
    }

    @Test mutating func vlansAreIsolated() {
        let p10a = add("tap:a10,tag=10"), p10b = add("tap:b10,tag=10"), p20 = add("tap:c20,tag=20")
        var (_, out) = send(Frames.make(dst: .broadcast, src: a), on: p10a)
        #expect(out.map(\.port) == [p10b])
        (_, out) = send(Frames.make(dst: .broadcast, src: c), on: p20)
        #expect(out.isEmpty)
        // Even a known MAC in another VLAN is not reachable.
        (_, out) = send(Frames.make(dst: a, src: c), on: p20)
        #expect(out.isEmpty)
    }

    @Test mutating func trunkTagsAndNative() {
        let access10 = add("tap:a,tag=10"), access1 = add("tap:n,tag=1"), access30 = add("tap:x,tag=30")
        let trunk = add("uplink:eth0,trunk=10,20,native=1")
        // Access VLAN 10 → trunk: tagged 10.
        var (_, out) = send(Frames.make(dst: .broadcast, src: a), on: access10)
        #expect(out == [Egress(port: trunk, vid: 10)])
        // Native VLAN leaves untagged.
        (_, out) = send(Frames.make(dst: .broadcast, src: b), on: access1)
        #expect(out == [Egress(port: trunk, vid: nil)])
        // VLAN 30 is not allowed on the trunk.
        (_, out) = send(Frames.make(dst: .broadcast, src: c), on: access30)
        #expect(out.isEmpty)
        // Trunk → access: tagged 10 in, the access port gets it untagged.
        var verdict: Verdict
        (verdict, out) = send(Frames.make(dst: a, src: d, vid: 10), on: trunk)
        #expect(out == [Egress(port: access10, vid: nil)])
        if case .forward(_, let vlan, _) = verdict { #expect(vlan == 10) }
        // Untagged and priority-tagged frames on the trunk belong to the native VLAN.
        (_, out) = send(Frames.make(dst: b, src: d), on: trunk)
        #expect(out == [Egress(port: access1, vid: nil)])
        (_, out) = send(Frames.make(dst: b, src: d, vid: 0, pcp: 4), on: trunk)
        #expect(out == [Egress(port: access1, vid: nil)])
        // A tagged frame of the native VLAN is accepted too.
        (_, out) = send(Frames.make(dst: b, src: d, vid: 1), on: trunk)
        #expect(out == [Egress(port: access1, vid: nil)])
    }

    @Test mutating func trunkToTrunkKeepsTags() {
        let t1 = add("vm:t1,trunk=10,20"), t2 = add("vm:t2,trunk=20,30,native=20")
        var (_, out) = send(Frames.make(dst: .broadcast, src: a, vid: 20), on: t1)
        #expect(out == [Egress(port: t2, vid: nil)])
        (_, out) = send(Frames.make(dst: .broadcast, src: b, vid: 30), on: t2)
        #expect(out.isEmpty)
        (_, out) = send(Frames.make(dst: .broadcast, src: b), on: t2)
        #expect(out == [Egress(port: t1, vid: 20)])
    }

    @Test mutating func ingressDrops() {
        let access = add("tap:a,tag=10"), trunk = add("uplink:u,trunk=10"), other = add("tap:o,tag=10")
        #expect(send(Frames.make(dst: b, src: a, vid: 10), on: access).0 == .drop(.taggedOnAccess))
        #expect(send(Frames.make(dst: b, src: a), on: trunk).0 == .drop(.untaggedOnTrunk))
        #expect(send(Frames.make(dst: b, src: a, vid: 99), on: trunk).0 == .drop(.vlanNotAllowed))
        #expect(send([1, 2, 3], on: access).0 == .drop(.runt))
        #expect(send(Frames.make(dst: b, src: a, payloadLength: 2000), on: access).0 == .drop(.oversized))
        #expect(send(Frames.make(dst: b, src: a, vid: 4095), on: trunk).0 == .drop(.malformedTag))
        #expect(send(Frames.make(dst: b, src: .broadcast), on: access).0 == .drop(.invalidSource))
        let counters = fabric[port: access]!.counters
        #expect(counters.rxPackets == 4 && counters[drop: .runt] == 1 && counters[drop: .oversized] == 1 && counters[drop: .taggedOnAccess] == 1)
        #expect(counters.totalDrops == 4)
        #expect(fabric[port: trunk]!.counters.totalDrops == 3)
        // Nothing was learned from dropped frames, and the other port is untouched.
        #expect(fabric.table.count == 0)
        #expect(fabric[port: other]!.counters == PortCounters())
    }

    @Test mutating func sameSegmentIsFiltered() {
        let p1 = add("tap:p1"), _ = add("tap:p2")
        _ = send(Frames.make(dst: .broadcast, src: b), on: p1)
        #expect(send(Frames.make(dst: b, src: a), on: p1).0 == .drop(.sameSegment))
    }

    @Test mutating func macFloodIsCapped() {
        let attacker = add("tap:bad,mac-limit=16"), victim = add("tap:good"), _ = add("tap:third")
        _ = send(Frames.make(dst: .broadcast, src: a), on: victim)
        for index in 0..<1000 {
            _ = send(Frames.make(dst: .broadcast, src: MACAddress(rawValue: 0x0200_0000_0000 | UInt64(index) << 8)), on: attacker)
        }
        #expect(fabric.table.count(on: attacker) == 16)
        #expect(fabric[port: attacker]!.counters.unlearnedSources == 1000 - 16)
        // The victim's address is still known: unicast to it is not flooded.
        let (_, out) = send(Frames.make(dst: a, src: b), on: attacker)
        #expect(out.map(\.port) == [victim])
    }

    @Test mutating func ageingRefloods() {
        fabric.setAgeingTime(10)
        let p1 = add("tap:p1"), p2 = add("tap:p2"), p3 = add("tap:p3")
        _ = send(Frames.make(dst: .broadcast, src: b), on: p2, now: 0)
        #expect(send(Frames.make(dst: b, src: a), on: p1, now: 5).1.map(\.port) == [p2])
        #expect(send(Frames.make(dst: b, src: a), on: p1, now: 10).1.map(\.port) == [p2, p3])
        #expect(fabric.expire(now: 100) == 2) // both aged out by now
    }

    @Test mutating func removingPortsFlushesAndReusesSlot() throws {
        let p1 = add("tap:p1"), p2 = add("tap:p2")
        _ = send(Frames.make(dst: .broadcast, src: a), on: p1)
        try fabric.removePort(named: "p1")
        #expect(fabric.table.count == 0 && fabric[port: p1] == nil)
        #expect(send(Frames.make(dst: a, src: b), on: p2).1.isEmpty)
        #expect(throws: SwitchError.duplicatePort("p2")) { try fabric.addPort(PortConfig(kind: .tap, name: "p2")) }
        #expect(throws: SwitchError.noSuchPort("zz")) { try fabric.removePort(named: "zz") }
        let p3 = add("tap:p3")
        #expect(p3 == p1 && fabric.ports.map(\.config.name) == ["p3", "p2"].sorted { _, _ in false } || fabric.ports.count == 2)
        #expect(send(Frames.make(dst: a, src: b), on: p2).1.map(\.port) == [p3])
        // Frames on an unknown port are refused.
        #expect(send(Frames.make(dst: a, src: b), on: PortID(99)).0 == .drop(.noPeer))
    }

    @Test mutating func counters() {
        let p1 = add("tap:p1"), p2 = add("tap:p2")
        let frame = Frames.make(dst: .broadcast, src: a, payloadLength: 100)
        _ = send(frame, on: p1)
        fabric.countTransmit(on: p2, bytes: frame.count)
        fabric.countDrop(on: p2, .transmitFailed)
        #expect(fabric[port: p1]!.counters.rxPackets == 1 && fabric[port: p1]!.counters.rxBytes == 114)
        #expect(fabric[port: p2]!.counters.txPackets == 1 && fabric[port: p2]!.counters.txBytes == 114)
        #expect(fabric[port: p2]!.counters[drop: .transmitFailed] == 1)
    }
}

@Suite struct StormControlTests {
    @Test func floodLimitIsATokenBucket() throws {
        var fabric = Switch()
        var egress: [Egress] = []
        let noisy = try fabric.addPort(PortConfig.parse("tap:noisy,flood-limit=10"))
        let quiet = try fabric.addPort(PortConfig.parse("tap:quiet"))
        let a = Frames.mac(1), b = Frames.mac(2)
        func flood(_ port: PortID, src: MACAddress, at now: UInt64) -> Verdict {
            fabric.receive(Frames.make(dst: .broadcast, src: src), on: port, now: now, egress: &egress)
        }
        // A one-second burst of 10, then nothing until tokens come back at 10/s.
        let verdicts = (0..<15).map { _ in flood(noisy, src: a, at: 1_000) }
        #expect(verdicts.filter { $0 == .drop(.floodLimited) }.count == 5)
        #expect(flood(noisy, src: a, at: 1_000 + 50_000_000) == .drop(.floodLimited))
        #expect(flood(noisy, src: a, at: 1_000 + 100_000_000) != .drop(.floodLimited))
        #expect(fabric[port: noisy]!.counters[drop: .floodLimited] == 6)
        // Known unicast is not flooding and is not limited.
        _ = flood(quiet, src: b, at: 2_000)
        for _ in 0..<50 {
            let verdict = fabric.receive(Frames.make(dst: b, src: a), on: noisy, now: 2_000_000_000, egress: &egress)
            #expect(egress == [Egress(port: quiet, vid: nil)] && verdict != .drop(.floodLimited))
        }
        // Other ports are unaffected.
        #expect((0..<100).allSatisfy { _ in flood(quiet, src: b, at: 3_000) != .drop(.floodLimited) })
    }

    @Test func floodLimitSpec() throws {
        let config = try PortConfig.parse("vm:x,tag=5,flood-limit=1000")
        #expect(config.floodLimit == 1000 && config.spec == "vm:x,tag=5,flood-limit=1000")
        #expect(throws: PortSpecError.self) { try PortConfig.parse("vm:x,flood-limit=0") }
    }
}
