import Foundation
import Hummingbird
import VireoEngines

/// `/nodes/{node}/qemu`: VMs, their config, power state and destruction.
struct QemuRoutes {
    let services: Services

    /// Parameters that are part of a request but not of the config.
    static let createOnly: Set<String> = ["vmid", "node", "start", "pool", "storage", "unique", "force"]
    static let updateOnly: Set<String> = ["vmid", "node", "digest", "delete", "revert", "skiplock", "force"]
    /// Config keys returned as JSON numbers.
    static let numericKeys: Set<String> = ["memory", "balloon", "cores", "sockets", "onboot", "template"]

    var collection: RouteCollection<APIContext> {
        let routes = RouteCollection(context: APIContext.self)
        routes.get(":node/qemu") { _, context in try list(context) }
        routes.post(":node/qemu") { _, context in try create(context) }
        routes.get(":node/qemu/:vmid") { _, context in
            _ = try services.checkNode(context)
            _ = try services.vmid(context)
            return envelope(["config", "status", "pending"].map { ["subdir": $0] })
        }
        routes.get(":node/qemu/:vmid/config") { _, context in try config(context) }
        routes.put(":node/qemu/:vmid/config") { _, context in try update(context, asTask: false) }
        routes.post(":node/qemu/:vmid/config") { _, context in try update(context, asTask: true) }
        routes.get(":node/qemu/:vmid/status") { _, context in
            _ = try services.checkNode(context)
            return envelope(["current", "start", "stop", "shutdown", "reboot", "suspend", "resume"].map { ["subdir": $0] })
        }
        routes.get(":node/qemu/:vmid/status/current") { _, context in try await current(context) }
        routes.post(":node/qemu/:vmid/status/:action") { _, context in try power(context) }
        routes.delete(":node/qemu/:vmid") { _, context in try destroy(context) }
        return routes
    }

    func list(_ context: APIContext) throws -> Response {
        _ = try services.checkNode(context)
        let records = try services.store.vms()
        services.summaries.retain(only: records)
        let visible = records.filter { context.principal?.may("VM.Audit", on: "/vms/\($0.vmid)") == true }
        return envelope(reserving: 384 * visible.count + 64) { (buffer: inout ByteBuffer) in
            buffer.writeInteger(UInt8(ascii: "["))
            services.summaries.writeObjects(visible, to: &buffer)
            buffer.writeInteger(UInt8(ascii: "]"))
        }
    }

    /// Validates config parameters; a 400 leaves the store untouched.
    func validated(_ params: [String: String], dropping: Set<String>) throws -> [String: String] {
        let config = params.filter { !dropping.contains($0.key) }
        let errors = VMConfigSchema.validate(config)
        if !errors.isEmpty { throw APIError.parameters(errors) }
        return config
    }

    /// `POST /nodes/{node}/qemu`: the config exists (with generated MACs) before the UPID is returned.
    func create(_ context: APIContext) throws -> Response {
        _ = try services.checkNode(context)
        guard let text = context.params["vmid"] else {
            throw APIError.parameters(["vmid": "property is missing and it is not optional"])
        }
        guard let vmid = Int(text), (100...999_999_999).contains(vmid) else {
            throw APIError.parameters(["vmid": "value must be an integer between 100 and 999999999"])
        }
        try context.require("VM.Allocate", on: "/vms/\(vmid)")
        var config = try validated(context.params, dropping: Self.createOnly)
        let start = parseBool(context.params["start"] ?? "0")
        if start == nil { throw APIError.parameters(["start": "type check ('boolean') failed - got '\(context.params["start"] ?? "")'"]) }
        VMConfigSchema.assignMACs(&config)
        if try services.store.vm(vmid) != nil { throw StoreError.duplicateVM(vmid) }
        try requireDiskPrivileges(context, vmid: vmid, changes: config)
        let allocated = try services.storage.prepareDisks(vmid: vmid, changes: &config)
        do {
            try services.store.createVM(vmid: vmid, config: config)
        } catch {
            services.storage.release(allocated)
            throw error
        }
        let vms = services.vms, created = config
        let upid = try services.tasks.start(type: "qmcreate", id: String(vmid), user: context.user) { log in
            log("created VM \(vmid) (engine \(created["engine"] ?? "qemu"))")
            for volume in allocated { log("allocated volume '\(volume)'") }
            if start == true { try await vms.start(vmid, log: log) }
        }
        return envelope(upid)
    }

    /// The privilege PVE requires to change a (non-disk) config key.
    static func privilege(forKey key: String) -> String {
        switch key {
        case "memory", "balloon", "shares": "VM.Config.Memory"
        case "cores", "sockets", "vcpus", "cpu", "cpulimit", "cpuunits", "numa", "affinity": "VM.Config.CPU"
        case "bios", "machine", "scsihw", "vga", "acpi", "kvm", "engine", "kernel", "initrd", "cmdline", "raw": "VM.Config.HWType"
        default: VMConfigSchema.indexed(key, prefix: "net") != nil ? "VM.Config.Network" : "VM.Config.Options"
        }
    }

    /// Proxmox's checks for disk changes: `Datastore.AllocateSpace` on the storage of a new disk,
    /// `Datastore.Audit` on one holding an existing volume (`VM.Config.Disk` / `VM.Config.CDROM` on the VM).
    func requireDiskPrivileges(_ context: APIContext, vmid: Int, changes: [String: String]) throws {
        for key in changes.keys.sorted() where StorageManager.isDiskKey(key) {
            let value = changes[key] ?? ""
            let cdrom = value.contains("media=cdrom")
            try context.require(cdrom ? "VM.Config.CDROM" : "VM.Config.Disk", on: "/vms/\(vmid)")
            guard let volume = value.split(separator: ",").first, let colon = volume.firstIndex(of: ":") else { continue }
            let storage = String(volume[..<colon]), rest = volume[volume.index(after: colon)...]
            try context.require(rest.contains("/") ? "Datastore.Audit" : "Datastore.AllocateSpace", on: "/storage/\(storage)")
        }
    }

    func config(_ context: APIContext) throws -> Response {
        _ = try services.checkNode(context)
        let vmid = try services.vmid(context)
        try context.require("VM.Audit", on: "/vms/\(vmid)")
        guard let record = try services.store.vm(vmid) else { throw StoreError.noSuchVM(vmid) }
        var data: [String: Any] = [:]
        for (key, value) in record.config {
            data[key] = Self.numericKeys.contains(key) ? (Int(value) as Any? ?? value) : value
        }
        data["digest"] = configDigest(record.config)
        return envelope(data)
    }

    /// `PUT` (synchronous, `data: null`) and `POST` (a `qmconfig` task) `…/config` [`digest`, `delete`].
    func update(_ context: APIContext, asTask: Bool) throws -> Response {
        _ = try services.checkNode(context)
        let vmid = try services.vmid(context)
        var changes = try validated(context.params, dropping: Self.updateOnly)
        let deletions = (context.params["delete"] ?? "").split(whereSeparator: { ", ;".contains($0) }).map(String.init)
        var errors: [String: String] = [:]
        for key in deletions where VMConfigSchema.check(for: key) == nil { errors["delete"] = "invalid configuration ID '\(key)'" }
        for key in deletions where changes[key] != nil { errors[key] = "unable to delete and set '\(key)' in one request" }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        for key in Set(changes.keys).union(deletions).sorted() where !StorageManager.isDiskKey(key) {
            try context.require(Self.privilege(forKey: key), on: "/vms/\(vmid)")
        }
        for key in deletions where StorageManager.isDiskKey(key) { try context.require("VM.Config.Disk", on: "/vms/\(vmid)") }
        if changes.isEmpty && deletions.isEmpty { try context.require("VM.Config.Options", on: "/vms/\(vmid)") }
        guard try services.store.vm(vmid) != nil else { throw StoreError.noSuchVM(vmid) }
        try requireDiskPrivileges(context, vmid: vmid, changes: changes)
        let allocated = try services.storage.prepareDisks(vmid: vmid, changes: &changes)
        do {
            try services.store.updateVM(vmid: vmid, expectedDigest: context.params["digest"]) { config in
                for key in deletions { config.removeValue(forKey: key) }
                config.merge(changes) { _, new in new }
                VMConfigSchema.assignMACs(&config)
            }
        } catch {
            services.storage.release(allocated)
            throw error
        }
        guard asTask else { return envelope(nil) }
        let summary = (changes.keys.sorted().map { "\($0): \(changes[$0]!)" } + deletions.map { "delete \($0)" })
        let upid = try services.tasks.start(type: "qmconfig", id: String(vmid), user: context.user) { log in
            for line in summary { log("update VM \(vmid): \(line)") }
        }
        return envelope(upid)
    }

    func current(_ context: APIContext) async throws -> Response {
        _ = try services.checkNode(context)
        let vmid = try services.vmid(context)
        try context.require("VM.Audit", on: "/vms/\(vmid)")
        guard let record = try services.store.vm(vmid) else { throw StoreError.noSuchVM(vmid) }
        var more: [String: Any] = ["ha": ["managed": 0]]
        more["qmpstatus"] = pausedFlag(record).map { $0 ? "paused" : "running" } ?? "stopped"
        if let agent = record.config["agent"], agent.hasPrefix("1") || agent.hasPrefix("enabled=1") { more["agent"] = 1 }
        if let lastExit = record.lastExit, record.process == nil { more["vireo-lastexit"] = lastExit }
        // Vireo extension: the serial console's unix socket on this node (what `vireo vm console` opens).
        if let process = record.process, process.isAlive { more["vireo-serial"] = process.serialSocket }
        // As qemu-server's vmstatus (full): `balloon` the memory the balloon leaves the guest, and `ballooninfo`.
        if let balloon = await services.vms.balloon(of: record, guestStatistics: true) {
            more["balloon"] = balloon.actual
            var info: [String: Any] = ["actual": balloon.actual, "max_mem": balloon.maxMemory]
            for (name, value) in balloon.guestStatistics { info[name] = value }
            more["ballooninfo"] = info
            // qemu-server's `freemem`: what the guest itself reports free.
            if let free = balloon.guestStatistics["free_mem"] { more["freemem"] = free }
        }
        // As qemu-server's vmstatus (full): each NIC's `netin`/`netout` by its tap (or switch port).
        let meter = NICTrafficMeter()
        if record.process?.isAlive == true {
            let ports = meter.trafficByPort(vmid: vmid, nics: VMConfigSchema.spec(vmid: vmid, config: record.config).nics)
            if !ports.isEmpty { more["nics"] = ports.mapValues { ["netin": $0.receivedBytes, "netout": $0.transmittedBytes] } }
        }
        return envelope { (buffer: inout ByteBuffer) in
            buffer.writeInteger(UInt8(ascii: "{"))
            services.summaries.writeMembers(of: record, now: Int(Date().timeIntervalSince1970), meter: meter, to: &buffer)
            JSONText.writeMoreMembers(more, to: &buffer)
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }

    /// Whether a running VM is paused, as recorded by the last suspend/resume (no engine call on the request path).
    private func pausedFlag(_ record: VMRecord) -> Bool? {
        guard record.process?.isAlive == true else { return nil }
        return record.lastExit == "paused"
    }

    func power(_ context: APIContext) throws -> Response {
        _ = try services.checkNode(context)
        let vmid = try services.vmid(context)
        let action = try context.parameters.require("action")
        let types = ["start": "qmstart", "stop": "qmstop", "shutdown": "qmshutdown", "reboot": "qmreboot",
                     "suspend": "qmsuspend", "resume": "qmresume"]
        guard let type = types[action] else { throw APIError(501, "Method 'POST /nodes/\(services.node)/qemu/\(vmid)/status/\(action)' not implemented") }
        try context.require("VM.PowerMgmt", on: "/vms/\(vmid)")
        guard try services.store.vm(vmid) != nil else { throw StoreError.noSuchVM(vmid) }
        var errors: [String: String] = [:]
        let timeout = context.params["timeout"].map { Int($0) } ?? 60
        if timeout == nil || timeout! < 0 { errors["timeout"] = "type check ('integer') failed - got '\(context.params["timeout"] ?? "")'" }
        let forceStop = parseBool(context.params["forceStop"] ?? "0")
        if forceStop == nil { errors["forceStop"] = "type check ('boolean') failed - got '\(context.params["forceStop"] ?? "")'" }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        let seconds = Duration.seconds(timeout ?? 60)
        let vms = services.vms, store = services.store
        let upid = try services.tasks.start(type: type, id: String(vmid), user: context.user) { log in
            switch action {
            case "start": try await vms.start(vmid, log: log)
            case "stop": try await vms.stop(vmid, timeout: .seconds(min(timeout ?? 10, 10)), log: log)
            case "shutdown": try await vms.shutdown(vmid, timeout: seconds, forceStop: forceStop ?? false, log: log)
            case "reboot":
                try await vms.shutdown(vmid, timeout: seconds, forceStop: true, log: log)
                try await vms.start(vmid, log: log)
            case "suspend":
                try await vms.pause(vmid, resume: false, log: log)
                if let process = try store.vm(vmid)?.process { try store.setProcess(vmid: vmid, process: process, lastExit: "paused") }
            default:
                try await vms.pause(vmid, resume: true, log: log)
                if let process = try store.vm(vmid)?.process { try store.setProcess(vmid: vmid, process: process, lastExit: nil) }
            }
        }
        return envelope(upid)
    }

    func destroy(_ context: APIContext) throws -> Response {
        _ = try services.checkNode(context)
        let vmid = try services.vmid(context)
        try context.require("VM.Allocate", on: "/vms/\(vmid)")
        guard let record = try services.store.vm(vmid) else { throw StoreError.noSuchVM(vmid) }
        if record.process?.isAlive == true { throw APIError(500, "VM \(vmid) is running - destroy failed") }
        var errors: [String: String] = [:]
        for name in ["purge", "destroy-unreferenced-disks", "skiplock"] where context.params[name].map({ parseBool($0) == nil }) == true {
            errors[name] = "type check ('boolean') failed - got '\(context.params[name] ?? "")'"
        }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        let unreferenced = context.params["destroy-unreferenced-disks"] == "1", purge = context.params["purge"] == "1"
        let vms = services.vms, store = services.store
        let upid = try services.tasks.start(type: "qmdestroy", id: String(vmid), user: context.user) { log in
            try await vms.destroy(vmid, unreferenced: unreferenced, log: log)
            if purge {
                let removed = try store.removeACLs(path: "/vms/\(vmid)")
                if removed > 0 { log("purged \(removed) ACL entries on /vms/\(vmid)") }
            }
        }
        return envelope(upid)
    }
}
