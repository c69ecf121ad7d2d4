import Foundation
import VireoNetlink

/// The path of one VM NIC, NIC → port → bridge/switch → uplink, and what is wrong with it: the
/// ways a misconfigured network silently isolates a VM, made visible (`vireo net check`,
/// `GET nodes/{node}/qemu/{vmid}/network-path`).
public struct NetworkPath: Sendable, Equatable {
    public struct Uplink: Sendable, Equatable {
        public var name: String
        /// Administratively up with carrier.
        public var up: Bool
        /// The VLANs it carries: nil for a Linux bridge port (no VLAN filtering), else access VLAN or trunk list.
        public var vlans: String?
    }

    public struct Problem: Sendable, Equatable {
        /// Stable code: `no-bridge`, `no-port`, `port-disconnected`, `port-down`, `bridge-down`, `no-uplink`,
        /// `uplink-down`, `vlan-not-on-uplink`, `vlan-not-filtered`, `mac-conflict`, and for frames the
        /// switch dropped on their way in from the NIC (``ingressDropProblems(port:drops:)``):
        /// `flood-drops`, `tagged-on-access`, `untagged-on-trunk`, `vlan-not-allowed`, `bad-offload`.
        public var code: String
        public var message: String
    }

    public var nic: Int
    public var mac: String
    public var bridge: String?
    /// `VireoSwitch` or `bridge` (Linux); nil when the bridge does not exist.
    public var bridgeType: String?
    /// The NIC's port: a switch port name or a tap.
    public var port: String?
    /// The VLAN the NIC is in (1 on an untagged switch port).
    public var vlan: Int?
    public var uplinks: [Uplink] = []
    public var problems: [Problem] = []

    /// What the switch's drop counters of the NIC's port (`stats` → `drops`, by reason) say is
    /// wrong with the traffic the guest sends: each reason that means the guest and its port
    /// disagree (a VLAN configured in the guest but not on the port, or the other way round; storm
    /// control; offload headers the switch cannot use) and has a non-zero count is one problem.
    public static func ingressDropProblems(port: String, drops: [String: Int]) -> [Problem] {
        let explained: [(reason: String, code: String, what: String, why: String)] = [
            ("flood-limited", "flood-drops", "flooded frame(s)", " (flood-limit)"),
            ("tagged-on-access", "tagged-on-access", "802.1Q-tagged frame(s)",
             ": the guest tags its traffic but its port is an access port (untag in the guest, or attach it to a trunk port)"),
            ("untagged-on-trunk", "untagged-on-trunk", "untagged frame(s)",
             ": its port is a trunk without a native VLAN (tag in the guest, or give the port native=)"),
            ("vlan-not-allowed", "vlan-not-allowed", "frame(s) tagged with VLANs", " that its trunk port does not allow"),
            ("bad-offload", "bad-offload", "frame(s)", " whose virtio-net offload header does not match the frame"),
        ]
        return explained.compactMap { entry in
            guard let count = drops[entry.reason], count > 0 else { return nil }
            return Problem(code: entry.code, message: "switch dropped \(count) \(entry.what) from \(port)\(entry.why)")
        }
    }
}

extension HostNetwork {
    /// Whether `name` is a tap vireod made for a VM NIC (`tap{vmid}i{index}`), not an uplink.
    static func isVMTap(_ name: String) -> Bool {
        guard name.hasPrefix("tap"), let i = name.lastIndex(of: "i") else { return false }
        let vmid = name[name.index(name.startIndex, offsetBy: 3)..<i], index = name[name.index(after: i)...]
        return !vmid.isEmpty && !index.isEmpty && vmid.allSatisfy(\.isNumber) && index.allSatisfy(\.isNumber)
    }

    /// The path and problems of every NIC of `spec`.
    public func paths(for spec: VMSpec) -> [NetworkPath] {
        spec.nics.sorted { $0.index < $1.index }.map { nic in
            var path = NetworkPath(nic: nic.index, mac: nic.mac.lowercased(), bridge: nic.bridge)
            guard let bridge = nic.bridge else {
                path.problems.append(.init(code: "no-bridge", message: "net\(nic.index) names no bridge: it has user-mode networking (QEMU) or none (vireo)"))
                return path
            }
            switch try? resolve(bridge: bridge) {
            case .vireoSwitch(let name)?: switchPath(&path, nic: nic, vmid: spec.vmid, switchName: name)
            case .linux(let name)?: linuxPath(&path, nic: nic, vmid: spec.vmid, bridge: name)
            case nil:
                path.problems.append(.init(code: "no-bridge", message: "bridge '\(bridge)' does not exist (no Linux bridge, no Vireo switch)"))
            }
            return path
        }
    }

    private func linkState(_ links: [Link], _ name: String) -> Bool {
        links.first { $0.name == name }.map { $0.isUp && $0.hasCarrier } ?? false
    }

    private func switchPath(_ path: inout NetworkPath, nic: VMSpec.NIC, vmid: Int, switchName: String) {
        path.bridgeType = "VireoSwitch"
        let ports = (try? switchPorts(switchName)) ?? []
        let links = (try? netlink().links()) ?? []
        let vmPort = "vm" + path.mac.replacingOccurrences(of: ":", with: "")
        let tap = nic.tapName(vmid: vmid)
        let mine = ports.first { $0["name"] as? String == vmPort } ?? ports.first { $0["name"] as? String == tap }
        let vlan = mine?["vlan"] as? Int ?? (mine == nil ? nic.tag ?? 1 : nil)
        path.vlan = vlan
        if let mine {
            let name = mine["name"] as? String ?? ""
            path.port = name
            if mine["kind"] as? String == "vm", mine["connected"] as? Bool != true {
                path.problems.append(.init(code: "port-disconnected", message: "switch port \(name) has no VMM connected (VM stopped?)"))
            }
            if mine["kind"] as? String == "uplink", !linkState(links, name) {
                path.problems.append(.init(code: "port-down", message: "tap \(name) is down or has no carrier (VM stopped?)"))
            }
            if let stats = try? switchStats(switchName), let entry = (stats["ports"] as? [[String: Any]])?.first(where: { $0["name"] as? String == name }),
               let drops = entry["drops"] as? [String: Any] {
                path.problems += NetworkPath.ingressDropProblems(port: name, drops: drops.compactMapValues { $0 as? Int })
            }
        } else {
            path.problems.append(.init(code: "no-port", message: "no port for this NIC on switch \(switchName) (\(vmPort) or \(tap)): VM not started, or attached elsewhere"))
        }
        // Uplinks: uplink ports that are not VM taps.
        var carriesVLAN = false
        for port in ports where port["kind"] as? String == "uplink" {
            guard let name = port["name"] as? String, !Self.isVMTap(name) else { continue }
            let vlans: String
            if port["mode"] as? String == "trunk" {
                let allowed = port["allowed"] as? [Int] ?? []
                let native = port["native"] as? Int
                vlans = "trunk " + allowed.map(String.init).joined(separator: ",") + (native.map { " native \($0)" } ?? "")
                if let vlan, allowed.contains(vlan) || native == vlan { carriesVLAN = true }
            } else {
                let access = port["vlan"] as? Int ?? 1
                vlans = "access \(access)"
                if access == vlan { carriesVLAN = true }
            }
            let up = linkState(links, name)
            path.uplinks.append(.init(name: name, up: up, vlans: vlans))
            if !up { path.problems.append(.init(code: "uplink-down", message: "uplink \(name) is down or has no carrier")) }
        }
        if path.uplinks.isEmpty {
            path.problems.append(.init(code: "no-uplink", message: "switch \(switchName) has no uplink: the NIC reaches only VMs on the same switch"))
        } else if let vlan, !carriesVLAN {
            path.problems.append(.init(code: "vlan-not-on-uplink", message: "VLAN \(vlan) is not carried by any uplink of \(switchName) (\(path.uplinks.map { "\($0.name): \($0.vlans ?? "")" }.joined(separator: "; ")))"))
        }
        // MAC conflict: the NIC's address learned on another port of its VLAN.
        if let vlan, let fdb = try? JSONSerialization.jsonObject(with: Data(control(switchName).request("fdb").utf8)) as? [String: Any] {
            for entry in fdb["entries"] as? [[String: Any]] ?? [] where entry["vlan"] as? Int == vlan && entry["mac"] as? String == path.mac {
                if let other = entry["port"] as? String, other != path.port {
                    path.problems.append(.init(code: "mac-conflict", message: "\(path.mac) is also in use on switch port \(other) (VLAN \(vlan))"))
                }
            }
        }
    }

    private func linuxPath(_ path: inout NetworkPath, nic: VMSpec.NIC, vmid: Int, bridge: String) {
        path.bridgeType = "bridge"
        path.vlan = nic.tag
        guard let links = try? netlink().links(), let bridgeLink = links.first(where: { $0.name == bridge }) else { return }
        if !bridgeLink.isUp { path.problems.append(.init(code: "bridge-down", message: "bridge \(bridge) is down")) }
        let tap = nic.tapName(vmid: vmid)
        if let link = links.first(where: { $0.name == tap }) {
            path.port = tap
            if link.masterIndex != bridgeLink.index {
                path.problems.append(.init(code: "no-port", message: "tap \(tap) is not a port of \(bridge)"))
            } else if !(link.isUp && link.hasCarrier) {
                path.problems.append(.init(code: "port-down", message: "tap \(tap) is down or has no carrier (VM stopped?)"))
            }
        } else {
            path.problems.append(.init(code: "no-port", message: "no tap \(tap) on \(bridge): VM not started"))
        }
        if let tag = nic.tag, bridgeLink.vlanFiltering != true {
            path.problems.append(.init(code: "vlan-not-filtered", message: "tag=\(tag) but bridge \(bridge) does not filter VLANs: the tag has no effect"))
        }
        for link in links where link.masterIndex == bridgeLink.index && !Self.isVMTap(link.name) {
            let up = link.isUp && link.hasCarrier
            path.uplinks.append(.init(name: link.name, up: up, vlans: nil))
            if !up { path.problems.append(.init(code: "uplink-down", message: "uplink \(link.name) is down or has no carrier")) }
        }
        if path.uplinks.isEmpty {
            path.problems.append(.init(code: "no-uplink", message: "bridge \(bridge) has no uplink port: the NIC reaches only VMs on the same bridge"))
        }
    }
}
