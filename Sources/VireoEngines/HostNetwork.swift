import Foundation
import VireoNetlink
import VireoSwitch

/// The host's side of VM networking: Linux bridges (over rtnetlink) and Vireo switches (running
/// `vireo-switchd` processes, found by their control sockets), listed in Proxmox's
/// `nodes/{node}/network` terms, and the plumbing that connects a VM NIC to either.
///
/// A NIC's `bridge=NAME` names a Vireo switch when `DIR/NAME.ctl` answers, else a Linux bridge.
public struct HostNetwork: Sendable {
    /// Where switches keep their sockets (`vireo-switchd --socket-dir`): `$VIREO_SWITCH_DIR`, else /run/vireo.
    public var switchDirectory: String
    /// The network namespace to work in (nil: the process's); tests use their own.
    public var namespacePath: String?

    public init(switchDirectory: String? = nil, namespacePath: String? = nil) {
        self.switchDirectory = switchDirectory ?? ProcessInfo.processInfo.environment["VIREO_SWITCH_DIR"] ?? SwitchAttachmentDefaults.directory
        self.namespacePath = namespacePath
    }

    /// One row of `GET /nodes/{node}/network`.
    public struct Interface: Sendable, Equatable {
        public enum Kind: String, Sendable {
            /// A Linux bridge.
            case bridge
            /// A physical (or other plain) interface.
            case eth
            /// A Vireo switch (`vireo-switchd`).
            case vireoSwitch = "VireoSwitch"
        }
        public var name: String
        public var kind: Kind
        public var active: Bool
        /// Bridge ports (Linux bridge slaves, or a switch's port names).
        public var ports: [String]
        /// Bridges: whether they filter VLANs (a Vireo switch always does).
        public var vlanAware: Bool?
    }

    /// What a NIC's `bridge=` names.
    public enum Bridge: Sendable, Equatable {
        case linux(String)
        case vireoSwitch(String)
    }

    func netlink() throws(NetlinkError) -> RouteNetlink { try RouteNetlink(namespacePath: namespacePath) }

    func control(_ name: String) -> SwitchControlClient { SwitchControlClient(switch: name, directory: switchDirectory) }

    /// Bridges, plain interfaces and Vireo switches.
    public func interfaces() throws(NetlinkError) -> [Interface] {
        let links = try netlink().links()
        var result: [Interface] = []
        for link in links where link.name != "lo" {
            if link.isBridge {
                let ports = links.filter { $0.masterIndex == link.index }.map(\.name).sorted()
                result.append(Interface(name: link.name, kind: .bridge, active: link.isUp, ports: ports, vlanAware: link.vlanFiltering ?? false))
            } else if link.kind == nil {
                result.append(Interface(name: link.name, kind: .eth, active: link.isUp, ports: [], vlanAware: nil))
            }
        }
        for name in vireoSwitches() {
            let ports = (try? switchPorts(name))?.compactMap { $0["name"] as? String } ?? []
            result.append(Interface(name: name, kind: .vireoSwitch, active: true, ports: ports, vlanAware: true))
        }
        return result.sorted { $0.name < $1.name }
    }

    /// The names of the switches whose control sockets answer.
    public func vireoSwitches() -> [String] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: switchDirectory)) ?? []
        return entries.filter { $0.hasSuffix(".ctl") }.map { String($0.dropLast(4)) }.filter { (try? control($0).request("ports")) != nil }.sorted()
    }

    /// A switch's `ports` reply, decoded.
    public func switchPorts(_ name: String) throws -> [[String: Any]] {
        try decode(control(name).request("ports"))["ports"] as? [[String: Any]] ?? []
    }

    /// A switch's `stats` reply, decoded.
    public func switchStats(_ name: String) throws -> [String: Any] {
        try decode(control(name).request("stats"))
    }

    private func decode(_ line: String) throws -> [String: Any] {
        try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
    }

    /// Which kind of bridge `name` is, or nil when there is none of that name.
    public func resolve(bridge name: String) throws(NetlinkError) -> Bridge? {
        if (try? control(name).request("ports")) != nil { return .vireoSwitch(name) }
        if let link = try netlink().link(named: name), link.isBridge { return .linux(name) }
        return nil
    }

    /// Creates a Linux bridge with `ports` (existing interfaces) and brings it up, as PVE's
    /// `POST nodes/{node}/network` followed by an apply does.
    public func createBridge(named name: String, ports: [String], vlanAware: Bool) throws(NetlinkError) {
        let netlink = try netlink()
        for port in ports where try netlink.link(named: port) == nil { throw .noSuchLink(port) }
        try netlink.createBridge(named: name, vlanFiltering: vlanAware)
        do {
            for port in ports {
                try netlink.setMaster(port, bridge: name)
                try netlink.setUp(port, true)
            }
            try netlink.setUp(name, true)
        } catch {
            try? netlink.deleteLink(named: name)
            throw error
        }
    }

    /// Deletes a Linux bridge (its ports are released, not deleted).
    public func deleteBridge(named name: String) throws(NetlinkError) {
        let netlink = try netlink()
        guard let link = try netlink.link(named: name), link.isBridge else { throw .noSuchLink(name) }
        try netlink.deleteLink(named: name)
    }

    /// A persistent tap `tap` on Linux bridge `bridge`, up; with `tag`, its only (untagged, PVID)
    /// VLAN on a VLAN-filtering bridge. An existing tap of that name is reused.
    public func attachTap(_ tap: String, toBridge bridge: String, tag: Int?) throws(NetlinkError) {
        let netlink = try netlink()
        try netlink.createTap(named: tap)
        try netlink.setMaster(tap, bridge: bridge)
        if let tag { try netlink.addBridgeVLAN(port: tap, vid: UInt16(clamping: tag), pvid: true, untagged: true) }
        try netlink.setUp(tap, true)
    }

    /// A persistent tap `tap` whose kernel side is an `uplink:` port of switch `name` (VLAN `tag`):
    /// the way a QEMU VM (which holds the tap's file side) joins a Vireo switch.
    public func attachTap(_ tap: String, toSwitch name: String, tag: Int?) throws {
        let netlink = try netlink()
        try netlink.createTap(named: tap)
        try netlink.setUp(tap, true)
        let port = try PortConfig.parse("uplink:\(tap),tag=\(tag ?? 1)")
        do {
            try control(name).addPort(port)
        } catch {
            guard case .refused(_, let message) = error, message == SwitchError.duplicatePort(tap).description else { throw error }
            try control(name).removePort(named: tap)
            try control(name).addPort(port)
        }
    }
}

/// Defaults shared with `vireo-vmm --net switch=` (which lives above this layer).
public enum SwitchAttachmentDefaults {
    public static let directory = "/run/vireo"
}

extension HostNetwork {
    /// Connects each NIC of `spec` that names a bridge before the VM starts, and returns what each
    /// bridge turned out to be (by NIC index). A Linux bridge gets a tap `tap{vmid}i{index}`
    /// enslaved to it; a Vireo switch gets nothing here when the VMM attaches itself
    /// (`vireo-vmm --net switch=`), or, for a VMM that holds a tap (`tapHolder`, QEMU), a tap
    /// whose kernel side becomes an `uplink:` port of the switch. NICs without `bridge=` use
    /// user-mode networking (QEMU) or none (vireo-vmm). An unknown bridge is a warning in the task
    /// log (the NIC is treated as having none: configs written for Proxmox name `vmbr0` everywhere),
    /// and a `no-bridge` problem in `vireo net check`; a bridge that exists but refuses the NIC is an error.
    public func plumb(_ spec: VMSpec, forTapHolder tapHolder: Bool, log: EngineLog) throws -> [Int: Bridge] {
        var bridges: [Int: Bridge] = [:]
        for nic in spec.nics {
            guard let name = nic.bridge else {
                log("net\(nic.index): no bridge; \(tapHolder ? "user-mode networking" : "not attached")")
                continue
            }
            guard let bridge = try resolve(bridge: name) else {
                log("warning: net\(nic.index): bridge '\(name)' does not exist (no Linux bridge and no Vireo switch of that name in \(switchDirectory)); \(tapHolder ? "using user-mode networking" : "NIC not attached")")
                continue
            }
            let tap = nic.tapName(vmid: spec.vmid)
            do {
                switch bridge {
                case .linux(let name):
                    try attachTap(tap, toBridge: name, tag: nic.tag)
                    log("net\(nic.index): tap \(tap) on Linux bridge \(name)\(nic.tag.map { " VLAN \($0)" } ?? "")")
                case .vireoSwitch(let name) where tapHolder:
                    try attachTap(tap, toSwitch: name, tag: nic.tag)
                    log("net\(nic.index): tap \(tap) on Vireo switch \(name) (uplink port, VLAN \(nic.tag ?? 1))")
                case .vireoSwitch(let name):
                    log("net\(nic.index): Vireo switch \(name) port \(VMSpec.NIC.switchPortName(mac: nic.mac)) (VLAN \(nic.tag ?? 1))")
                }
            } catch {
                throw EngineError("net\(nic.index): cannot attach to bridge '\(name)': \(error)")
            }
            bridges[nic.index] = bridge
        }
        return bridges
    }
}

extension HostNetwork {
    /// Undoes ``plumb(_:forTapHolder:log:)`` once the VM's process has ended (stopped, exited,
    /// killed, or destroyed): the switch ports its NICs used (a VMM's `vm…` port, a QEMU tap's
    /// `uplink:` port) are deleted, and the taps vireod created are removed, so nothing of the VM
    /// is left on the host; the next start plumbs afresh. Best effort: what cannot be removed is
    /// logged, and what is already gone (a VMM that stopped normally deletes its own port) is skipped.
    /// Returns what was removed, for the task log.
    @discardableResult
    public func unplumb(_ spec: VMSpec, log: EngineLog) -> [String] {
        var removed: [String] = []
        for nic in spec.nics {
            guard let name = nic.bridge else { continue }
            let tap = nic.tapName(vmid: spec.vmid)
            if case .vireoSwitch? = try? resolve(bridge: name) {
                let candidates = [tap, VMSpec.NIC.switchPortName(mac: nic.mac)]
                let ports = Set(((try? switchPorts(name)) ?? []).compactMap { $0["name"] as? String })
                for port in candidates where ports.contains(port) {
                    do {
                        try control(name).removePort(named: port)
                        removed.append("net\(nic.index): switch \(name) port \(port)")
                    } catch {
                        log("warning: net\(nic.index): cannot delete port \(port) of switch \(name): \(error)")
                    }
                }
            }
            do {
                let netlink = try netlink()
                if try netlink.link(named: tap) != nil {
                    try netlink.deleteLink(named: tap)
                    removed.append("net\(nic.index): tap \(tap)")
                }
            } catch {
                log("warning: net\(nic.index): cannot remove tap \(tap): \(error)")
            }
        }
        for item in removed { log("removed \(item)") }
        return removed
    }
}

extension VMSpec.NIC {
    /// The switch port `vireo-vmm --net switch=` asks for when given no `port=`: `vm` + the MAC in hex.
    public static func switchPortName(mac: String) -> String {
        "vm" + mac.lowercased().replacingOccurrences(of: ":", with: "")
    }
}
