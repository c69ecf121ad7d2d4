/// Where a forwarded frame goes: a port, and whether it leaves tagged (`vid`, in a tag of
/// `tagType`: 0x8100, or 0x88A8 on a provider port) or untagged (nil).
public struct Egress: Equatable, Sendable {
    public var port: PortID
    public var vid: UInt16?
    public var tagType: UInt16
    public init(port: PortID, vid: UInt16?, tagType: UInt16 = VLAN.customerTPID) {
        self.port = port
        self.vid = vid
        self.tagType = tagType
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
    /// What the per-frame path reads of each slot, flat and free of references, kept in step with
    /// `slots`: copying a port (its name, its VLAN bitmap array) per frame costs reference counting.
    private var views: [SlotView] = []
    /// Each trunk slot's allowed VLANs, 64 words per slot (``VLANSet``'s layout).
    private var allowedWords: [UInt64] = []

    private struct SlotView {
        var present = false
        var mtu = 0
        var macLimit = 0
        /// The access VLAN; 0 on a trunk.
        var access: UInt16 = 0
        /// A trunk's native VLAN; 0 for none (VIDs are 1...4094).
        var native: UInt16 = 0
        var tagType = VLAN.customerTPID
        var tunnel = false

        init() {}

        init(_ config: PortConfig) {
            present = true
            mtu = config.mtu
            macLimit = config.macLimit
            tagType = config.tagType
            tunnel = config.tunnel
            switch config.mode {
            case .access(let vlan): access = vlan
            case .trunk(_, let native): self.native = native ?? 0
            }
        }
    }

    public init(table: MACTable = MACTable()) {
        self.table = table
    }

    // MARK: Ports

    public mutating func addPort(_ config: PortConfig) throws(SwitchError) -> PortID {
        guard port(named: config.name) == nil else { throw .duplicatePort(config.name) }
        let index = slots.firstIndex(where: { $0 == nil }) ?? slots.count
        let id = PortID(index)
        if index == slots.count {
            slots.append(nil)
            views.append(SlotView())
            allowedWords += [UInt64](repeating: 0, count: 64)
        }
        slots[index] = SwitchPort(id: id, config: config)
        views[index] = SlotView(config)
        let allowed = if case .trunk(let allowed, _) = config.mode { allowed.words } else { [UInt64](repeating: 0, count: 64) }
        allowedWords.replaceSubrange(index * 64..<(index + 1) * 64, with: allowed)
        return id
    }

    @discardableResult
    public mutating func removePort(named name: String) throws(SwitchError) -> PortID {
        guard let id = port(named: name) else { throw .noSuchPort(name) }
        slots[id.rawValue] = nil
        views[id.rawValue] = SlotView()
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
        guard index >= 0, index < views.count, views[index].present else { return .drop(.noPeer) }
        // Counters are updated in place (slots[index]!.…), never through a copy of the port.
        slots[index]!.counters.rxPackets &+= 1
        slots[index]!.counters.rxBytes &+= UInt64(frame.count)
        let view = views[index]
        let mtu = view.mtu

        func drop(_ reason: DropReason) -> Verdict {
            slots[index]!.counters.countDrop(reason)
            return .drop(reason)
        }

        let header: FrameHeader
        let superFrame = offload?.isSegmentationOffload ?? false
        switch FrameHeader.parse(frame, mtu: superFrame ? Int.max : mtu, tagType: view.tagType, tunnel: view.tunnel) {
        case .success(let parsed): header = parsed
        case .failure(let reason): return drop(reason)
        }
        if let offload {
            guard offload.validate(frameLength: frame.count, allowed: .all, dataValidAllowed: true) == nil else { return drop(.badOffload) }
            if superFrame {
                guard let largest = SoftwareOffload.largestPacket(frame, header: offload, networkOffset: header.networkOffset) else {
                    return drop(.badOffload)
                }
                guard largest <= mtu else { return drop(.oversized) }
            }
        }

        // Classify: which VLAN does this frame belong to?
        // Classify (IEEE 802.1Q §6.9): the port's VLAN for untagged frames, the tag's on a trunk.
        let vlan: UInt16
        if view.access != 0 {
            guard !header.isVLANTagged else { return drop(.taggedOnAccess) }
            vlan = view.access
        } else if header.isVLANTagged, let vid = header.vid {
            guard allows(index, vid) || vid == view.native else { return drop(.vlanNotAllowed) }
            vlan = vid
        } else {
            guard view.native != 0 else { return drop(.untaggedOnTrunk) }
            vlan = view.native
        }

        switch table.learn(vlan: vlan, mac: header.source, port: ingress, now: now, limit: view.macLimit) {
        case .portLimitReached, .tableFull: slots[index]!.counters.unlearnedSources &+= 1
        case .learned, .refreshed, .moved: break
        }

        if !header.destination.isMulticast, let target = table.lookup(vlan: vlan, mac: header.destination, now: now) {
            if target == ingress { return drop(.sameSegment) }
            if let tag = egressTag(on: target.rawValue, for: vlan) {
                egress.append(Egress(port: target, vid: tag, tagType: views[target.rawValue].tagType))
                return .forward(header, vlan: vlan, flooded: false)
            }
        }
        guard slots[index]!.admitFlood(now: now) else { return drop(.floodLimited) }
        for out in slots.indices where out != index {
            if let tag = egressTag(on: out, for: vlan) { egress.append(Egress(port: PortID(out), vid: tag, tagType: views[out].tagType)) }
        }
        return .forward(header, vlan: vlan, flooded: true)
    }

    /// Whether port slot `index` carries `vlan`, and if so the tag a frame leaves it with (the inner
    /// optional: nil for untagged). Reads the port in place, without copying it.
    private func egressTag(on index: Int, for vlan: UInt16) -> UInt16?? {
        guard index >= 0, index < views.count, views[index].present else { return nil }
        let view = views[index]
        if view.access != 0 { return view.access == vlan ? .some(nil) : nil }
        if view.native != 0, view.native == vlan { return .some(nil) }
        return allows(index, vlan) ? .some(vlan) : nil
    }

    /// Whether trunk slot `index`'s allowed list has `vid`.
    private func allows(_ index: Int, _ vid: UInt16) -> Bool {
        let bit = Int(vid & 0xFFF)
        return allowedWords[index * 64 + bit >> 6] & (1 << UInt64(bit & 63)) != 0
    }

    public mutating func receive(_ frame: [UInt8], offload: VirtioNetHeader? = nil, on ingress: PortID, now: UInt64, egress: inout [Egress]) -> Verdict {
        receive(frame[...], offload: offload, on: ingress, now: now, egress: &egress)
    }

    // MARK: Data-plane feedback

    /// Counts a frame the data plane sent on `port`.
    public mutating func countTransmit(on port: PortID, bytes: Int) {
        guard views.indices.contains(port.rawValue), views[port.rawValue].present else { return }
        slots[port.rawValue]!.counters.txPackets &+= 1
        slots[port.rawValue]!.counters.txBytes &+= UInt64(bytes)
    }

    /// Counts a frame the data plane could not deliver (or rejected before ``receive(_:on:now:egress:)``).
    public mutating func countDrop(on port: PortID, _ reason: DropReason) {
        guard views.indices.contains(port.rawValue), views[port.rawValue].present else { return }
        slots[port.rawValue]!.counters.countDrop(reason)
    }

    /// Counts frames the kernel forwarded from `ingress` to `egress` on the switch's behalf
    /// (``KernelFastPath``), and refreshes their sender's address, as the switch would have had
    /// it seen them.
    public mutating func countForwardedInKernel(from ingress: PortID, to egress: PortID, vlan: UInt16, source: MACAddress,
                                                packets: UInt64, bytes: UInt64, now: UInt64) {
        guard packets > 0, views.indices.contains(ingress.rawValue), views[ingress.rawValue].present,
              views.indices.contains(egress.rawValue), views[egress.rawValue].present else { return }
        slots[ingress.rawValue]!.counters.rxPackets &+= packets
        slots[ingress.rawValue]!.counters.rxBytes &+= bytes
        slots[ingress.rawValue]!.counters.kernelPackets &+= packets
        slots[egress.rawValue]!.counters.txPackets &+= packets
        slots[egress.rawValue]!.counters.txBytes &+= bytes
        if table.lookup(vlan: vlan, mac: source, now: now) == ingress {
            table.learn(vlan: vlan, mac: source, port: ingress, now: now, limit: views[ingress.rawValue].macLimit)
        }
    }

    /// Ages out stale addresses; call about once a second.
    @discardableResult
    public mutating func expire(now: UInt64) -> Int { table.expire(now: now) }

    /// Forgets every learned address.
    public mutating func flushTable() { table.flushAll() }

    public mutating func setAgeingTime(_ nanoseconds: UInt64) { table.ageingTime = nanoseconds }
}
