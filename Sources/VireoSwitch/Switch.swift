/// Where a forwarded frame goes: a port, and whether it leaves tagged (`vid`) or untagged (nil).
public struct Egress: Equatable, Sendable {
    public var port: PortID
    public var vid: UInt16?
    public init(port: PortID, vid: UInt16?) {
        self.port = port
        self.vid = vid
    }
}

/// The switch's decision for one received frame.
public enum Verdict: Equatable, Sendable {
    /// Send to the egress list the caller passed in; `flooded` when the destination was not a known unicast address.
    case forward(FrameHeader, vlan: UInt16, flooded: Bool)
    case drop(DropReason)
}

/// Why the switch refused a configuration change.
public enum SwitchError: Error, Equatable, Sendable, CustomStringConvertible {
    case duplicatePort(String)
    case noSuchPort(String)

    public var description: String {
        switch self {
        case .duplicatePort(let name): "a port named '\(name)' exists already"
        case .noSuchPort(let name): "no port named '\(name)'"
        }
    }
}

/// A port as the switch sees it: configuration and counters.
public struct SwitchPort: Sendable {
    public let id: PortID
    public var config: PortConfig
    public var counters = PortCounters()
    /// Storm control: a token bucket of flooded frames (capacity and rate `floodLimit`).
    var floodTokens: Double = 0
    var floodRefilled: UInt64 = 0
    var floodPrimed = false

    /// Takes one token for a flooded frame; false when the port is over its flood limit.
    mutating func admitFlood(now: UInt64) -> Bool {
        guard let limit = config.floodLimit else { return true }
        let capacity = Double(limit)
        if !floodPrimed {
            floodTokens = capacity
            floodPrimed = true
        } else if now > floodRefilled {
            floodTokens = min(capacity, floodTokens + Double(now - floodRefilled) * capacity / 1e9)
        }
        floodRefilled = max(floodRefilled, now)
        guard floodTokens >= 1 else { return false }
        floodTokens -= 1
        return true
    }
}

/// A VLAN-aware learning switch: the pure forwarding core, no I/O.
///
/// For each frame received on a port it validates the header, assigns the VLAN from the port's
/// mode (access or trunk), learns the source address, and returns the egress ports with the tag
/// each one needs. Known unicast goes to one port; unknown unicast, broadcast and multicast are
/// flooded to every other port carrying the VLAN. VLANs never leak: a frame only ever reaches
/// ports that carry its VLAN.
public struct Switch: Sendable {
    public private(set) var table: MACTable
    private var slots: [SwitchPort?] = []

    public init(table: MACTable = MACTable()) {
        self.table = table
    }

    // MARK: Ports

    public mutating func addPort(_ config: PortConfig) throws(SwitchError) -> PortID {
        guard port(named: config.name) == nil else { throw .duplicatePort(config.name) }
        let index = slots.firstIndex(where: { $0 == nil }) ?? slots.count
        let id = PortID(index)
        if index == slots.count { slots.append(nil) }
        slots[index] = SwitchPort(id: id, config: config)
        return id
    }

    @discardableResult
    public mutating func removePort(named name: String) throws(SwitchError) -> PortID {
        guard let id = port(named: name) else { throw .noSuchPort(name) }
        slots[id.rawValue] = nil
        table.flush(port: id)
        return id
    }

    public func port(named name: String) -> PortID? {
        slots.first(where: { $0?.config.name == name })??.id
    }

    public subscript(port id: PortID) -> SwitchPort? {
        id.rawValue >= 0 && id.rawValue < slots.count ? slots[id.rawValue] : nil
    }

    /// Every port, by ID.
    public var ports: [SwitchPort] { slots.compactMap { $0 } }

    // MARK: Forwarding

    /// Decides what to do with `frame`, received on `ingress` at time `now` (nanoseconds).
    /// On `.forward`, `egress` holds the destinations (it is cleared first, so one array can be reused).
    ///
    /// - Parameter offload: the virtio-net header that came with the frame on a port carrying
    ///   offloads (a tap, a VM port in offload mode): it is validated against the frame, and a TCP
    ///   super-frame meets the MTU when each of its segments will (``SoftwareOffload/largestPacket(_:header:networkOffset:)``).
    public mutating func receive(
        _ frame: ArraySlice<UInt8>, offload: VirtioNetHeader? = nil, on ingress: PortID, now: UInt64, egress: inout [Egress]
    ) -> Verdict {
        egress.removeAll(keepingCapacity: true)
        let index = ingress.rawValue
        guard index >= 0, index < slots.count, slots[index] != nil else { return .drop(.noPeer) }
        // Counters are updated in place (slots[index]!.…), never through a copy of the port.
        slots[index]!.counters.rxPackets &+= 1
        slots[index]!.counters.rxBytes &+= UInt64(frame.count)
        let config = slots[index]!.config

        func drop(_ reason: DropReason) -> Verdict {
            slots[index]!.counters.countDrop(reason)
            return .drop(reason)
        }

        let header: FrameHeader
        let superFrame = offload?.isSegmentationOffload ?? false
        switch FrameHeader.parse(frame, mtu: superFrame ? Int.max : config.mtu) {
        case .success(let parsed): header = parsed
        case .failure(let reason): return drop(reason)
        }
        if let offload {
            guard offload.validate(frameLength: frame.count, allowed: .all, dataValidAllowed: true) == nil else { return drop(.badOffload) }
            if superFrame {
                guard let largest = SoftwareOffload.largestPacket(frame, header: offload, networkOffset: header.headerLength) else {
                    return drop(.badOffload)
                }
                guard largest <= config.mtu else { return drop(.oversized) }
            }
        }

        // Classify: which VLAN does this frame belong to?
        let vlan: UInt16
        switch config.mode {
        case .access(let access):
            guard !header.isVLANTagged else { return drop(.taggedOnAccess) }
            vlan = access
        case .trunk(let allowed, let native):
            if header.isVLANTagged, let vid = header.vid {
                guard allowed.contains(vid) || vid == native else { return drop(.vlanNotAllowed) }
                vlan = vid
            } else {
                guard let native else { return drop(.untaggedOnTrunk) }
                vlan = native
            }
        }

        switch table.learn(vlan: vlan, mac: header.source, port: ingress, now: now, limit: config.macLimit) {
        case .portLimitReached, .tableFull: slots[index]!.counters.unlearnedSources &+= 1
        case .learned, .refreshed, .moved: break
        }

        if !header.destination.isMulticast, let target = table.lookup(vlan: vlan, mac: header.destination, now: now) {
            if target == ingress { return drop(.sameSegment) }
            if let out = self[port: target], out.config.mode.carries(vlan) {
                egress.append(Egress(port: target, vid: out.config.mode.egressTag(for: vlan)))
                return .forward(header, vlan: vlan, flooded: false)
            }
        }
        guard slots[index]!.admitFlood(now: now) else { return drop(.floodLimited) }
        for case let out? in slots where out.id != ingress && out.config.mode.carries(vlan) {
            egress.append(Egress(port: out.id, vid: out.config.mode.egressTag(for: vlan)))
        }
        return .forward(header, vlan: vlan, flooded: true)
    }

    public mutating func receive(_ frame: [UInt8], offload: VirtioNetHeader? = nil, on ingress: PortID, now: UInt64, egress: inout [Egress]) -> Verdict {
        receive(frame[...], offload: offload, on: ingress, now: now, egress: &egress)
    }

    // MARK: Data-plane feedback

    /// Counts a frame the data plane sent on `port`.
    public mutating func countTransmit(on port: PortID, bytes: Int) {
        guard slots.indices.contains(port.rawValue), slots[port.rawValue] != nil else { return }
        slots[port.rawValue]!.counters.txPackets &+= 1
        slots[port.rawValue]!.counters.txBytes &+= UInt64(bytes)
    }

    /// Counts a frame the data plane could not deliver (or rejected before ``receive(_:on:now:egress:)``).
    public mutating func countDrop(on port: PortID, _ reason: DropReason) {
        guard slots.indices.contains(port.rawValue), slots[port.rawValue] != nil else { return }
        slots[port.rawValue]!.counters.countDrop(reason)
    }

    /// Ages out stale addresses; call about once a second.
    @discardableResult
    public mutating func expire(now: UInt64) -> Int { table.expire(now: now) }

    /// Forgets every learned address.
    public mutating func flushTable() { table.flushAll() }

    public mutating func setAgeingTime(_ nanoseconds: UInt64) { table.ageingTime = nanoseconds }
}
