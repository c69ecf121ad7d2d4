import Foundation
import Hummingbird
import VireoEngines
import VireoNetlink

/// `/nodes/{node}/network` (Proxmox VE API): the host's bridges and interfaces. Linux bridges are
/// created and deleted over rtnetlink and take effect at once (PVE stages changes in
/// /etc/network/interfaces.new until an apply); running Vireo switches (`vireo-switchd`) are listed
/// with `type` `VireoSwitch` and managed by their own processes.
struct NetworkRoutes {
    let services: Services
    var network: HostNetwork { HostNetwork() }

    static let types = ["bridge", "eth", "VireoSwitch", "any_bridge"]

    var collection: RouteCollection<APIContext> {
        let routes = RouteCollection(context: APIContext.self)
        routes.get(":node/network") { _, context in try list(context) }
        routes.post(":node/network") { _, context in try create(context) }
        routes.get(":node/network/:iface") { _, context in try show(context) }
        routes.delete(":node/network/:iface") { _, context in try delete(context) }
        routes.get(":node/qemu/:vmid/network-path") { _, context in try networkPath(context) }
        return routes
    }

    /// Vireo's extension: each NIC's path (NIC → port → bridge/switch → uplinks) and its problems.
    func networkPath(_ context: APIContext) throws -> Response {
        _ = try services.checkNode(context)
        let vmid = try services.vmid(context)
        try context.require("VM.Audit", on: "/vms/\(vmid)")
        guard let record = try services.store.vm(vmid) else { throw APIError(500, "Configuration file 'nodes/\(services.node)/qemu-server/\(vmid).conf' does not exist") }
        let spec = VMConfigSchema.spec(vmid: vmid, config: record.config)
        let rows: [[String: Any]] = network.paths(for: spec).map { path in
            var row: [String: Any] = [
                "net": "net\(path.nic)", "mac": path.mac,
                "uplinks": path.uplinks.map { uplink -> [String: Any] in
                    var entry: [String: Any] = ["iface": uplink.name, "active": uplink.up ? 1 : 0]
                    if let vlans = uplink.vlans { entry["vlans"] = vlans }
                    return entry
                },
                "problems": path.problems.map { ["code": $0.code, "message": $0.message] },
            ]
            if let bridge = path.bridge { row["bridge"] = bridge }
            if let type = path.bridgeType { row["type"] = type }
            if let port = path.port { row["port"] = port }
            if let vlan = path.vlan { row["vlan"] = vlan }
            return row
        }
        return envelope(rows)
    }

    func row(_ interface: HostNetwork.Interface) -> [String: Any] {
        var row: [String: Any] = [
            "iface": interface.name, "type": interface.kind.rawValue, "active": interface.active ? 1 : 0,
            "autostart": 1, "method": "manual", "families": ["inet"], "priority": 0,
        ]
        if interface.kind != .eth {
            row["bridge_ports"] = interface.ports.joined(separator: " ")
            row["bridge_vlan_aware"] = interface.vlanAware == true ? 1 : 0
        }
        return row
    }

    func interfaces(_ context: APIContext) throws -> [HostNetwork.Interface] {
        let node = try services.checkNode(context)
        try context.require("Sys.Audit", on: "/nodes/\(node)")
        do { return try network.interfaces() } catch { throw APIError(500, "cannot list network interfaces: \(error)") }
    }

    func list(_ context: APIContext) throws -> Response {
        let all = try interfaces(context)
        guard let type = context.params["type"] else { return envelope(all.map(row)) }
        guard Self.types.contains(type) else {
            throw APIError.parameters(["type": "value '\(type)' does not have a value in the enumeration '\(Self.types.joined(separator: ", "))'"])
        }
        let wanted = all.filter { type == "any_bridge" ? $0.kind != .eth : $0.kind.rawValue == type }
        return envelope(wanted.map(row))
    }

    func show(_ context: APIContext) throws -> Response {
        let name = try context.parameters.require("iface")
        guard let interface = try interfaces(context).first(where: { $0.name == name }) else {
            throw APIError(500, "interface '\(name)' does not exist")
        }
        return envelope(row(interface))
    }

    /// `POST`: `iface`, `type=bridge`, `bridge_ports` (space- or comma-separated), `bridge_vlan_aware`.
    func create(_ context: APIContext) throws -> Response {
        let node = try services.checkNode(context)
        try context.require("Sys.Modify", on: "/nodes/\(node)")
        var errors: [String: String] = [:]
        let name = context.params["iface"] ?? ""
        if name.isEmpty { errors["iface"] = "property is missing and it is not optional" }
        switch context.params["type"] {
        case nil: errors["type"] = "property is missing and it is not optional"
        case "bridge": break
        case let other?: errors["type"] = "creating '\(other)' interfaces is not supported (only 'bridge'; Vireo switches are vireo-switchd processes)"
        }
        let ports = (context.params["bridge_ports"] ?? "").split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        let vlanAware: Bool
        switch context.params["bridge_vlan_aware"] ?? "0" {
        case "0": vlanAware = false
        case "1": vlanAware = true
        case let other:
            errors["bridge_vlan_aware"] = "type check ('boolean') failed - got '\(other)'"
            vlanAware = false
        }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        if network.vireoSwitches().contains(name) { throw APIError.parameters(["iface": "'\(name)' is a Vireo switch"]) }
        do {
            try network.createBridge(named: name, ports: ports, vlanAware: vlanAware)
        } catch {
            switch error {
            case .vlanFilteringUnsupported: throw APIError.parameters(["bridge_vlan_aware": error.description])
            case .noSuchLink(let port): throw APIError.parameters(["bridge_ports": "interface '\(port)' does not exist"])
            case .invalidName: throw APIError.parameters(["iface": error.description])
            case .kernel(_, EEXIST, _): throw APIError.parameters(["iface": "interface '\(name)' already exists"])
            default: throw APIError(500, "cannot create bridge '\(name)': \(error)")
            }
        }
        return envelope(nil)
    }

    func delete(_ context: APIContext) throws -> Response {
        let node = try services.checkNode(context)
        try context.require("Sys.Modify", on: "/nodes/\(node)")
        let name = try context.parameters.require("iface")
        if network.vireoSwitches().contains(name) {
            throw APIError.parameters(["iface": "'\(name)' is a Vireo switch: stop its vireo-switchd"])
        }
        do {
            try network.deleteBridge(named: name)
        } catch .noSuchLink {
            throw APIError(500, "interface '\(name)' does not exist")
        } catch {
            throw APIError(500, "cannot delete '\(name)': \(error)")
        }
        return envelope(nil)
    }
}
