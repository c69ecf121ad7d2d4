/// One learned address: (VLAN, MAC) was last seen as a source on `port`.
public struct FDBEntry: Equatable, Sendable {
    public var vlan: UInt16
    public var mac: MACAddress
    public var port: PortID
    /// Nanoseconds (on the switch's clock) the address was last seen.
    public var lastSeen: UInt64
}

/// What ``MACTable/learn(vlan:mac:port:now:limit:)`` did.
public enum LearnOutcome: Equatable, Sendable {
    case refreshed
    case learned
    /// The address moved from another port (a VM migrated, or a loop).
    case moved(from: PortID)
    /// Not learned: the port owns `limit` entries already, or the table is full.
    case portLimitReached
    case tableFull
}

/// The forwarding database: (VLAN, MAC) → port, with ageing and per-port caps.
///
/// Time is passed in (nanoseconds on any monotonic clock), so tests drive ageing directly.
/// A port that sends from ever-new source addresses stops being learned at its limit; the
/// addresses it already owns, and every other port's, stay.
public struct MACTable: Sendable {
    /// How long an entry lives without being refreshed.
    public var ageingTime: UInt64
    /// Entries in the whole table, over all ports.
    public let capacity: Int

    private var entries: [UInt64: Slot] = [:]
    private var perPort: [PortID: Int] = [:]
    /// Changes whenever an address is added, moves, ages out or is flushed (not when one is only
    /// refreshed): whoever caches forwarding decisions (the kernel fast path) re-checks them then.
    public private(set) var generation: UInt64 = 0

    private struct Slot {
        var port: PortID
        var lastSeen: UInt64
    }

    public static let defaultAgeingTime: UInt64 = 300 * 1_000_000_000
    public static let defaultCapacity = 16_384

    public init(ageingTime: UInt64 = MACTable.defaultAgeingTime, capacity: Int = MACTable.defaultCapacity) {
        self.ageingTime = ageingTime
        self.capacity = capacity
    }

    private static func key(_ vlan: UInt16, _ mac: MACAddress) -> UInt64 { UInt64(vlan & 0xFFF) << 48 | mac.rawValue }

    public var count: Int { entries.count }

    public func count(on port: PortID) -> Int { perPort[port] ?? 0 }

    /// The port `mac` was learned on in `vlan`, unless the entry has aged out.
    public func lookup(vlan: UInt16, mac: MACAddress, now: UInt64) -> PortID? {
        guard let slot = entries[Self.key(vlan, mac)] else { return nil }
        guard now &- slot.lastSeen < ageingTime || now < slot.lastSeen else { return nil }
        return slot.port
    }

    /// Records that `mac` sent on `port` in `vlan`.
    @discardableResult
    public mutating func learn(vlan: UInt16, mac: MACAddress, port: PortID, now: UInt64, limit: Int) -> LearnOutcome {
        let key = Self.key(vlan, mac)
        if var slot = entries[key] {
            if slot.port == port {
                slot.lastSeen = now
                entries[key] = slot
                return .refreshed
            }
            guard count(on: port) < limit else { return .portLimitReached }
            let previous = slot.port
            generation &+= 1
            perPort[previous, default: 1] -= 1
            perPort[port, default: 0] += 1
            entries[key] = Slot(port: port, lastSeen: now)
            return .moved(from: previous)
        }
        guard count(on: port) < limit else { return .portLimitReached }
        if entries.count >= capacity {
            expire(now: now)
            guard entries.count < capacity else { return .tableFull }
        }
        entries[key] = Slot(port: port, lastSeen: now)
        perPort[port, default: 0] += 1
        generation &+= 1
        return .learned
    }

    /// Removes entries not seen for ``ageingTime``; returns how many.
    @discardableResult
    public mutating func expire(now: UInt64) -> Int {
        let stale = entries.filter { now > $0.value.lastSeen && now - $0.value.lastSeen >= ageingTime }
        for (key, slot) in stale {
            entries[key] = nil
            perPort[slot.port, default: 1] -= 1
        }
        if !stale.isEmpty { generation &+= 1 }
        return stale.count
    }

    /// Forgets every entry of `port` (the port went away or changed VLANs).
    public mutating func flush(port: PortID) {
        entries = entries.filter { $0.value.port != port }
        perPort[port] = nil
        generation &+= 1
    }

    public mutating func flushAll() {
        entries.removeAll()
        perPort.removeAll()
        generation &+= 1
    }

    /// All entries, sorted by VLAN, then MAC.
    public var allEntries: [FDBEntry] {
        entries.map { key, slot in
            FDBEntry(vlan: UInt16(key >> 48), mac: MACAddress(rawValue: key), port: slot.port, lastSeen: slot.lastSeen)
        }.sorted { ($0.vlan, $0.mac) < ($1.vlan, $1.mac) }
    }
}
