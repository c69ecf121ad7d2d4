import Foundation
import Hummingbird
import VireoQCOW2

/// `/nodes/{node}/storage`: pools, their content (list, allocate, delete) and uploads.
struct StorageRoutes {
    let services: Services

    var collection: RouteCollection<APIContext> {
        let routes = RouteCollection(context: APIContext.self)
        routes.get(":node/storage") { _, context in try list(context) }
        routes.get(":node/storage/:storage") { _, context in
            _ = try pool(context)
            return envelope(["content", "status", "upload"].map { ["subdir": $0] })
        }
        routes.get(":node/storage/:storage/status") { _, context in
            let pool = try pool(context)
            try requireAudit(context, pool)
            return envelope(summary(pool))
        }
        routes.get(":node/storage/:storage/content") { _, context in try content(context) }
        routes.post(":node/storage/:storage/upload") { request, context in try await StorageUpload(services: services).upload(request, context) }
        routes.post(":node/storage/:storage/content") { _, context in try allocate(context) }
        // A volid holds a slash (`local:100/vm-100-disk-0.qcow2`), escaped or not: match the rest of the path.
        routes.get(":node/storage/:storage/content/**") { _, context in try volumeInfo(context) }
        routes.delete(":node/storage/:storage/content/**") { _, context in try remove(context) }
        return routes
    }

    func pool(_ context: APIContext) throws -> DirectoryPool {
        _ = try services.checkNode(context)
        return try services.storage.pool(try context.parameters.require("storage"))
    }

    /// PVE lets either privilege see a storage's status and content.
    func requireAudit(_ context: APIContext, _ pool: DirectoryPool) throws {
        let path = "/storage/\(pool.id)"
        if context.principal?.may("Datastore.AllocateSpace", on: path) == true { return }
        try context.require("Datastore.Audit", on: path)
    }

    func summary(_ pool: DirectoryPool) -> [String: Any] {
        let usage = pool.usage()
        return [
            "storage": pool.id, "type": "dir", "content": DirectoryPool.contents.map(\.rawValue).joined(separator: ","),
            "active": 1, "enabled": 1, "shared": 0, "total": usage.total, "used": usage.used, "avail": usage.available,
            "used_fraction": usage.total > 0 ? Double(usage.used) / Double(usage.total) : 0, "path": pool.path,
        ]
    }

    /// `GET /nodes/{node}/storage` [`content`, `storage`, `enabled`]: the pools the caller may see.
    func list(_ context: APIContext) throws -> Response {
        _ = try services.checkNode(context)
        let wanted = context.params["content"].map { Set($0.split(separator: ",").map(String.init)) }
        let pools = services.storage.pools.values.sorted { $0.id < $1.id }.filter { pool in
            let path = "/storage/\(pool.id)"
            guard context.principal?.may("Datastore.Audit", on: path) == true
                    || context.principal?.may("Datastore.AllocateSpace", on: path) == true else { return false }
            if let only = context.params["storage"], only != pool.id { return false }
            if let wanted, wanted.isDisjoint(with: DirectoryPool.contents.map(\.rawValue)) { return false }
            return true
        }
        return envelope(pools.map(summary))
    }

    /// `GET …/content` [`content`, `vmid`].
    func content(_ context: APIContext) throws -> Response {
        let pool = try pool(context)
        try requireAudit(context, pool)
        var contents = DirectoryPool.contents
        if let text = context.params["content"] {
            guard let type = ContentType(rawValue: text) else {
                throw APIError.parameters(["content": "value '\(text)' does not have a value in the enumeration '\(DirectoryPool.contents.map(\.rawValue).joined(separator: ", "))'"])
            }
            contents = [type]
        }
        var vmid: Int?
        if let text = context.params["vmid"] {
            guard let number = Int(text), (100...999_999_999).contains(number) else {
                throw APIError.parameters(["vmid": "value must be an integer between 100 and 999999999"])
            }
            vmid = number
        }
        return envelope(pool.list(contents: contents, vmid: vmid).map(pool.entry))
    }

    /// `POST …/content` `vmid`, `filename` (`vm-VMID-…`), `size` (K/M/G/T, plain numbers are KiB as in
    /// PVE), [`format` qcow2|raw]: allocates an image and returns its volid.
    func allocate(_ context: APIContext) throws -> Response {
        let pool = try pool(context)
        try context.require("Datastore.AllocateSpace", on: "/storage/\(pool.id)")
        var errors: [String: String] = [:]
        let vmid = context.params["vmid"].flatMap { Int($0) }.flatMap { (100...999_999_999).contains($0) ? $0 : nil }
        if vmid == nil { errors["vmid"] = context.params["vmid"] == nil ? "property is missing and it is not optional" : "value must be an integer between 100 and 999999999" }
        let size = context.params["size"].flatMap { parseSize($0, defaultUnit: 1 << 10) }
        if size == nil { errors["size"] = context.params["size"] == nil ? "property is missing and it is not optional" : "invalid size '\(context.params["size"]!)'" }
        let filename = context.params["filename"] ?? ""
        if filename.isEmpty { errors["filename"] = "property is missing and it is not optional" }
        var format = ImageFormat.qcow2
        if let text = context.params["format"] {
            if let parsed = ImageFormat(rawValue: text) { format = parsed } else { errors["format"] = "value '\(text)' does not have a value in the enumeration 'raw, qcow2'" }
        }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        let vm = vmid!
        var name = filename
        if !name.contains(".") { name += "." + format.rawValue }
        guard VolumeID.validName(name), name.hasPrefix("vm-\(vm)-"),
              name.hasSuffix("." + format.rawValue) else {
            throw APIError.parameters(["filename": "illegal name '\(filename)' - should be 'vm-\(vm)-*' with suffix .\(format.rawValue)"])
        }
        try context.require("VM.Config.Disk", on: "/vms/\(vm)")
        do {
            let volume = try pool.allocate(vmid: vm, size: size!, format: format, name: name)
            return envelope(volume.description)
        } catch {
            throw APIError(500, "\(error)")
        }
    }

    func volume(_ context: APIContext, _ pool: DirectoryPool) throws -> VolumeID {
        let raw = context.parameters.getCatchAll().joined(separator: "/")
        let text = raw.removingPercentEncoding ?? raw
        let full = text.contains(":") ? text : "\(pool.id):\(text)"
        guard let volume = VolumeID(full), volume.storage == pool.id else {
            throw APIError.parameters(["volume": "unable to parse volume ID '\(text)'"])
        }
        guard pool.exists(volume) else { throw APIError(500, "volume '\(volume)' does not exist") }
        return volume
    }

    /// `GET …/content/{volume}`: path, size, used, format.
    func volumeInfo(_ context: APIContext) throws -> Response {
        let pool = try pool(context)
        let volume = try volume(context, pool)
        try requireAudit(context, pool)
        var entry = pool.entry(volume)
        entry["path"] = pool.path(of: volume)
        return envelope(entry)
    }

    /// `DELETE …/content/{volume}`: a `imgdel` task. Images a VM config still references are refused.
    func remove(_ context: APIContext) throws -> Response {
        let pool = try pool(context)
        let volume = try volume(context, pool)
        if volume.content == .images, let vmid = volume.vmid {
            try context.require("Datastore.Allocate", on: "/storage/\(pool.id)")
            if let record = try services.store.vm(vmid), services.storage.ownedVolumes(vmid: vmid, config: record.config).contains(volume) {
                throw APIError(500, "volume '\(volume)' is still in use by VM \(vmid)")
            }
        } else {
            try context.require("Datastore.AllocateTemplate", on: "/storage/\(pool.id)")
        }
        // PVE runs imgdel with an empty id (a volid has a colon, which a UPID cannot carry).
        let upid = try services.tasks.start(type: "imgdel", id: "", user: context.user) { log in
            try pool.remove(volume)
            log("removed volume '\(volume)'")
        }
        return envelope(upid)
    }
}
