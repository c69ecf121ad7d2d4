import Testing
@testable import VireoSwitch

@Suite struct MACTableTests {
    let second: UInt64 = 1_000_000_000
    let p1 = PortID(1), p2 = PortID(2)

    @Test func learnsPerVLAN() {
        var table = MACTable()
        #expect(table.learn(vlan: 10, mac: Frames.mac(1), port: p1, now: 0, limit: 10) == .learned)
        #expect(table.lookup(vlan: 10, mac: Frames.mac(1), now: 1) == p1)
        #expect(table.lookup(vlan: 20, mac: Frames.mac(1), now: 1) == nil)
        #expect(table.learn(vlan: 20, mac: Frames.mac(1), port: p2, now: 0, limit: 10) == .learned)
        #expect(table.count == 2 && table.count(on: p1) == 1 && table.count(on: p2) == 1)
        #expect(table.learn(vlan: 10, mac: Frames.mac(1), port: p1, now: 5, limit: 10) == .refreshed)
    }

    @Test func ageing() {
        var table = MACTable(ageingTime: 10 * second)
        table.learn(vlan: 1, mac: Frames.mac(1), port: p1, now: 0, limit: 10)
        table.learn(vlan: 1, mac: Frames.mac(2), port: p1, now: 5 * second, limit: 10)
        #expect(table.lookup(vlan: 1, mac: Frames.mac(1), now: 9 * second) == p1)
        // Expired entries stop matching even before the sweep.
        #expect(table.lookup(vlan: 1, mac: Frames.mac(1), now: 10 * second) == nil)
        #expect(table.expire(now: 10 * second) == 1)
        #expect(table.count == 1 && table.count(on: p1) == 1)
        // Refreshing keeps an entry alive.
        table.learn(vlan: 1, mac: Frames.mac(2), port: p1, now: 14 * second, limit: 10)
        #expect(table.expire(now: 20 * second) == 0)
        #expect(table.expire(now: 24 * second) == 1)
        #expect(table.count == 0 && table.count(on: p1) == 0)
    }

    @Test func perPortLimit() {
        var table = MACTable()
        for index in 0..<100 {
            let outcome = table.learn(vlan: 1, mac: Frames.mac(UInt8(index)), port: p1, now: 0, limit: 8)
            #expect(outcome == (index < 8 ? .learned : .portLimitReached))
        }
        #expect(table.count(on: p1) == 8)
        // Another port still learns.
        #expect(table.learn(vlan: 1, mac: Frames.mac(200), port: p2, now: 0, limit: 8) == .learned)
        // Ageing frees the quota.
        table.expire(now: MACTable.defaultAgeingTime)
        #expect(table.learn(vlan: 1, mac: Frames.mac(99), port: p1, now: MACTable.defaultAgeingTime, limit: 8) == .learned)
    }

    @Test func tableCapacity() {
        var table = MACTable(capacity: 4)
        for index in 0..<4 { table.learn(vlan: 1, mac: Frames.mac(UInt8(index)), port: PortID(index), now: 0, limit: 10) }
        #expect(table.learn(vlan: 1, mac: Frames.mac(50), port: p1, now: 1, limit: 10) == .tableFull)
        // Once old entries age out, space comes back.
        #expect(table.learn(vlan: 1, mac: Frames.mac(50), port: p1, now: MACTable.defaultAgeingTime + 1, limit: 10) == .learned)
    }

    @Test func moves() {
        var table = MACTable()
        table.learn(vlan: 1, mac: Frames.mac(1), port: p1, now: 0, limit: 10)
        #expect(table.learn(vlan: 1, mac: Frames.mac(1), port: p2, now: 1, limit: 10) == .moved(from: p1))
        #expect(table.count(on: p1) == 0 && table.count(on: p2) == 1)
        #expect(table.lookup(vlan: 1, mac: Frames.mac(1), now: 2) == p2)
        // A port at its limit cannot take addresses over.
        #expect(table.learn(vlan: 1, mac: Frames.mac(1), port: p1, now: 3, limit: 0) == .portLimitReached)
        #expect(table.lookup(vlan: 1, mac: Frames.mac(1), now: 4) == p2)
    }

    @Test func flushAndListing() {
        var table = MACTable()
        table.learn(vlan: 20, mac: Frames.mac(3), port: p1, now: 0, limit: 10)
        table.learn(vlan: 10, mac: Frames.mac(2), port: p2, now: 0, limit: 10)
        table.learn(vlan: 10, mac: Frames.mac(1), port: p1, now: 0, limit: 10)
        #expect(table.allEntries.map { "\($0.vlan) \($0.mac.description)" } == ["10 02:00:00:00:00:01", "10 02:00:00:00:00:02", "20 02:00:00:00:00:03"])
        table.flush(port: p1)
        #expect(table.allEntries.map(\.port) == [p2] && table.count(on: p1) == 0)
    }
}
