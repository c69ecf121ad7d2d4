import Foundation
import Hummingbird

/// `/version`, `/cluster/*` and `/nodes` (node list and status): a one-node cluster for now.
struct ClusterRoutes {
    let services: Services
    let started = Date()

    var collection: RouteCollection<APIContext> {
        let routes = RouteCollection(context: APIContext.self)
        routes.get("version") { _, _ in
            envelope(["version": services.version, "release": "8.2", "repoid": "vireo", "vireo": "0.1"])
        }
        routes.get("cluster/status") { _, context in
            try context.require("Sys.Audit", on: "/")
            return envelope([["type": "node", "id": "node/\(services.node)", "name": services.node, "nodeid": 0, "local": 1,
                              "online": 1, "ip": "127.0.0.1", "level": ""] as [String: Any]])
        }
        routes.get("cluster/resources") { _, context in try resources(context) }
        routes.get("cluster/nextid") { _, context in try nextID(context) }
        routes.get("nodes") { _, context in
            envelope([nodeEntry(context)])
        }
        // What prometheus-pve-exporter also asks for: no containers, no replication jobs, no
        // subscription, and no backup jobs (so every VM is "not backed up").
        routes.get("nodes/:node/lxc") { _, context in
            _ = try services.checkNode(context)
            return envelope([Any]())
        }
        routes.get("nodes/:node/replication") { _, context in
            _ = try services.checkNode(context)
            return envelope([Any]())
        }
        routes.get("nodes/:node/subscription") { _, context in
            _ = try services.checkNode(context)
            try context.require("Sys.Audit", on: "/nodes/\(services.node)")
            return envelope(["status": "notfound", "message": "There is no subscription key", "level": "",
                             "serverid": "", "url": "https://github.com/vireo"] as [String: Any])
        }
        routes.get("cluster/backup-info/not-backed-up") { _, context in
            try context.require("Sys.Audit", on: "/")
            let vms = try services.store.vms().filter { context.principal?.may("VM.Audit", on: "/vms/\($0.vmid)") == true }
            return envelope(vms.map { ["type": "qemu", "vmid": $0.vmid, "name": $0.config["name"] ?? "VM \($0.vmid)"] as [String: Any] })
        }
        routes.get("nodes/:node/status") { _, context in
            _ = try services.checkNode(context)
            try context.require("Sys.Audit", on: "/nodes/\(services.node)")
            return envelope(nodeStatus())
        }
        return routes
    }

    func nodeEntry(_ context: APIContext) -> [String: Any] {
        var entry: [String: Any] = ["node": services.node, "status": "online", "type": "node", "id": "node/\(services.node)", "level": ""]
        if context.principal?.may("Sys.Audit", on: "/nodes/\(services.node)") == true {
            let status = nodeStatus()
            entry["maxcpu"] = status["cpuinfo"].flatMap { ($0 as? [String: Any])?["cpus"] } ?? 1
            entry["cpu"] = 0
            entry["maxmem"] = (status["memory"] as? [String: Any])?["total"] ?? 0
            entry["mem"] = (status["memory"] as? [String: Any])?["used"] ?? 0
            entry["uptime"] = status["uptime"] ?? 0
            entry["maxdisk"] = 0
            entry["disk"] = 0
        }
        return entry
    }

    func nodeStatus() -> [String: Any] {
        let meminfo = VireoSystemFiles.read("/proc/meminfo") ?? ""
        func kib(_ key: String) -> Int {
            let line = meminfo.split(separator: "\n").first { $0.hasPrefix(key + ":") } ?? ""
            return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
        }
        let total = kib("MemTotal"), available = kib("MemAvailable")
        let uptime = Int(Double(VireoSystemFiles.read("/proc/uptime")?.split(separator: " ").first ?? "") ?? 0)
        let load = (VireoSystemFiles.read("/proc/loadavg") ?? "").split(separator: " ").prefix(3).map(String.init)
        return [
            "uptime": uptime, "loadavg": load, "cpu": 0,
            "memory": ["total": total, "used": total - available, "free": available] as [String: Any],
            "cpuinfo": ["cpus": ProcessInfo.processInfo.activeProcessorCount, "sockets": 1] as [String: Any],
            "pveversion": "pve-manager/\(services.version)/vireo", "kversion": VireoSystemFiles.read("/proc/sys/kernel/osrelease")?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "",
        ]
    }

    /// Resources the caller may see; `type` filters to `vm`, `node` or `storage`.
    func resources(_ context: APIContext) throws -> Response {
        let type = context.params["type"]
        if let type, !["vm", "node", "storage", "sdn", "pool"].contains(type) {
            throw APIError.parameters(["type": "value '\(type)' does not have a value in the enumeration 'vm, storage, node, sdn, pool'"])
        }
        var items: [[String: Any]] = []
        if type == nil || type == "node", context.principal?.may("Sys.Audit", on: "/nodes/\(services.node)") == true {
            items.append(nodeEntry(context))
        }
        var vms: [VMRecord] = []
        if type == nil || type == "vm" {
            vms = try services.store.vms().filter { context.principal?.may("VM.Audit", on: "/vms/\($0.vmid)") == true }
        }
        var storage: [[String: Any]] = []
        if type == nil || type == "storage" {
            for pool in services.storage.pools.values.sorted(by: { $0.id < $1.id })
            where context.principal?.may("Datastore.Audit", on: "/storage/\(pool.id)") == true {
                let usage = pool.usage()
                storage.append([
                    "id": "storage/\(services.node)/\(pool.id)", "type": "storage", "storage": pool.id, "node": services.node,
                    "plugintype": "dir", "status": "available", "shared": 0,
                    "content": DirectoryPool.contents.map(\.rawValue).joined(separator: ","), "disk": usage.used, "maxdisk": usage.total,
                ])
            }
        }
        // The VMs are most of the list: written typed, with their summaries encoded once per config.
        let node = services.node, summaries = services.summaries
        return envelope(reserving: 448 * vms.count + 1024) { (buffer: inout ByteBuffer) in
            // Each element followed by a comma, the last one dropped: the node, the VMs, the storage.
            buffer.writeInteger(UInt8(ascii: "["))
            for item in items {
                JSONText.write(item, to: &buffer)
                buffer.writeInteger(UInt8(ascii: ","))
            }
            summaries.writeObjects(vms, to: &buffer) { record, buffer in
                buffer.writeJSONMember("id", "qemu/\(record.vmid)")
                buffer.writeJSONMember("type", "qemu")
                buffer.writeJSONMember("node", node)
            }
            if !vms.isEmpty { buffer.writeInteger(UInt8(ascii: ",")) }
            for item in storage {
                JSONText.write(item, to: &buffer)
                buffer.writeInteger(UInt8(ascii: ","))
            }
            if buffer.getInteger(at: buffer.writerIndex - 1, as: UInt8.self) == UInt8(ascii: ",") {
                buffer.moveWriterIndex(to: buffer.writerIndex - 1)
            }
            buffer.writeInteger(UInt8(ascii: "]"))
        }
    }

    /// The lowest free vmid from 100; with `vmid=N`, N itself if free (else 400).
    func nextID(_ context: APIContext) throws -> Response {
        let used = Set(try services.store.vms().map(\.vmid))
        if let text = context.params["vmid"] {
            guard let vmid = Int(text), (100...999_999_999).contains(vmid) else {
                throw APIError.parameters(["vmid": "value must be an integer between 100 and 999999999"])
            }
            if used.contains(vmid) { throw APIError(400, "VM \(vmid) already exists", errors: ["vmid": "VM \(vmid) already exists"]) }
            return envelope(String(vmid))
        }
        var next = 100
        while used.contains(next) { next += 1 }
        return envelope(String(next))
    }
}
