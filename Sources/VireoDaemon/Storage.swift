import Foundation
import VireoQCOW2

/// What a volume holds, as Proxmox's `content` values, plus Vireo's `kernel` (kernels and initrds
/// for direct boot).
enum ContentType: String, CaseIterable, Sendable {
    case images, iso, vztmpl, `import`, kernel

    /// The pool subdirectory, as in Proxmox's directory storage (`images/VMID`, `template/iso`, …).
    var directory: String {
        switch self {
        case .images: "images"
        case .iso: "template/iso"
        case .vztmpl: "template/cache"
        case .import: "import"
        case .kernel: "kernel"
        }
    }

    /// File-name suffixes Proxmox accepts for uploads of this type (none: anything).
    var suffixes: [String] {
        switch self {
        case .iso: [".iso", ".img"]
        case .vztmpl: [".tar.gz", ".tar.xz", ".tar.zst", ".tgz"]
        case .import: [".ova", ".ovf", ".qcow2", ".raw", ".vmdk", ".img"]
        case .images, .kernel: []
        }
    }
}

/// A parsed volume id: `local:iso/x.iso`, `local:100/vm-100-disk-0.qcow2`, `local:kernel/vmlinuz`.
struct VolumeID: Equatable, Sendable, CustomStringConvertible {
    var storage: String
    var content: ContentType
    /// The owning VM for images.
    var vmid: Int?
    var name: String

    var description: String {
        content == .images ? "\(storage):\(vmid ?? 0)/\(name)" : "\(storage):\(content.rawValue)/\(name)"
    }

    /// File names: letters, digits, `-_.+`, not starting with a dot (no paths, no `..`).
    static func validName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 200 && !name.hasPrefix(".")
            && name.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) && $0.isASCII || "-_.+".unicodeScalars.contains($0) }
    }

    init(storage: String, content: ContentType, vmid: Int? = nil, name: String) {
        self.storage = storage; self.content = content; self.vmid = vmid; self.name = name
    }

    init?(_ text: String) {
        guard let colon = text.firstIndex(of: ":") else { return nil }
        storage = String(text[..<colon])
        let rest = text[text.index(after: colon)...]
        guard let slash = rest.firstIndex(of: "/") else { return nil }
        let head = String(rest[..<slash])
        name = String(rest[rest.index(after: slash)...])
        guard Self.validName(name) else { return nil }
        if let vmid = Int(head), (100...999_999_999).contains(vmid) {
            content = .images
            self.vmid = vmid
        } else if let type = ContentType(rawValue: head), type != .images {
            content = type
        } else {
            return nil
        }
    }
}

struct StorageError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// A directory storage pool (Proxmox's `dir` type): one directory holding disk images, ISOs,
/// templates, import sources and kernels. Disk images are qcow2 (or raw) files made by VireoQCOW2.
struct DirectoryPool: Sendable {
    let id: String
    let path: String

    static let contents: [ContentType] = [.images, .iso, .vztmpl, .import, .kernel]

    func prepare() throws {
        for content in Self.contents {
            try FileManager.default.createDirectory(atPath: path + "/" + content.directory, withIntermediateDirectories: true)
        }
    }

    func path(of volume: VolumeID) -> String {
        volume.content == .images ? "\(path)/images/\(volume.vmid ?? 0)/\(volume.name)" : "\(path)/\(volume.content.directory)/\(volume.name)"
    }

    func exists(_ volume: VolumeID) -> Bool { FileManager.default.fileExists(atPath: path(of: volume)) }

    /// Bytes of the file system holding the pool (statvfs).
    func usage() -> (total: Int, used: Int, available: Int) {
        guard let attributes = try? FileManager.default.attributesOfFileSystem(forPath: path),
              let total = (attributes[.systemSize] as? NSNumber)?.intValue,
              let free = (attributes[.systemFreeSize] as? NSNumber)?.intValue else { return (0, 0, 0) }
        return (total, total - free, free)
    }

    /// A new image `vm-VMID-disk-N.FORMAT` (the lowest free N) of `size` bytes.
    func allocate(vmid: Int, size: UInt64, format: ImageFormat = .qcow2, name: String? = nil) throws -> VolumeID {
        let directory = "\(path)/images/\(vmid)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        var chosen = name
        if chosen == nil {
            let taken = Set((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? [])
            var index = 0
            while taken.contains("vm-\(vmid)-disk-\(index).qcow2") || taken.contains("vm-\(vmid)-disk-\(index).raw") { index += 1 }
            chosen = "vm-\(vmid)-disk-\(index).\(format.rawValue)"
        }
        let volume = VolumeID(storage: id, content: .images, vmid: vmid, name: chosen!)
        let file = self.path(of: volume)
        guard !FileManager.default.fileExists(atPath: file) else { throw StorageError("volume '\(volume)' already exists") }
        do {
            try createImage(file, format: format, size: size)
        } catch {
            try? FileManager.default.removeItem(atPath: file)
            throw StorageError("cannot allocate \(volume): \(error)")
        }
        return volume
    }

    func remove(_ volume: VolumeID) throws {
        let file = path(of: volume)
        guard FileManager.default.fileExists(atPath: file) else { throw StorageError("volume '\(volume)' does not exist") }
        try FileManager.default.removeItem(atPath: file)
        if volume.content == .images, let vmid = volume.vmid {
            // Leave no empty images/VMID behind (rmdir fails while it holds anything).
            rmdir("\(path)/images/\(vmid)")
        }
    }

    /// Every image of `vmid` in this pool (referenced or not).
    func images(of vmid: Int) -> [VolumeID] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: "\(path)/images/\(vmid)")) ?? []
        return names.sorted().filter(VolumeID.validName).map { VolumeID(storage: id, content: .images, vmid: vmid, name: $0) }
    }

    /// One entry of `GET …/storage/{storage}/content`: volid, content, format, size (virtual for images), used, ctime, vmid.
    func entry(_ volume: VolumeID) -> [String: Any] {
        let file = path(of: volume)
        let attributes = (try? FileManager.default.attributesOfItem(atPath: file)) ?? [:]
        let bytes = (attributes[.size] as? NSNumber)?.intValue ?? 0
        var item: [String: Any] = [
            "volid": volume.description, "content": volume.content.rawValue, "size": bytes, "used": bytes,
            "ctime": Int((attributes[.modificationDate] as? Date)?.timeIntervalSince1970 ?? 0),
        ]
        switch volume.content {
        case .images:
            item["vmid"] = volume.vmid
            if let image = try? openImage(file) {
                item["format"] = image.format.rawValue
                item["size"] = Int(image.size)
                try? image.close()
            } else {
                item["format"] = "raw"
            }
        case .iso: item["format"] = "iso"
        case .vztmpl: item["format"] = "tgz"
        case .import:
            item["format"] = volume.name.split(separator: ".").last.map(String.init) ?? "raw"
        case .kernel: item["format"] = "raw"
        }
        return item
    }

    /// The volumes of the given content types, sorted by volid.
    func list(contents: [ContentType] = contents, vmid: Int? = nil) -> [VolumeID] {
        var volumes: [VolumeID] = []
        for content in contents {
            if content == .images {
                let owners = ((try? FileManager.default.contentsOfDirectory(atPath: path + "/images")) ?? []).compactMap { Int($0) }
                for owner in owners.sorted() where vmid == nil || vmid == owner { volumes += images(of: owner) }
            } else if vmid == nil {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: path + "/" + content.directory)) ?? []
                volumes += names.sorted().filter(VolumeID.validName).map { VolumeID(storage: id, content: content, name: $0) }
            }
        }
        return volumes
    }
}

/// Proxmox sizes: a number with an optional K, M, G or T suffix (bytes without one for `size=`
/// of content allocation is KiB in PVE; disk `storage:SIZE` is GiB).
func parseSize(_ text: String, defaultUnit: UInt64) -> UInt64? {
    let units: [Character: UInt64] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40]
    var number = Substring(text)
    var unit = defaultUnit
    if let last = number.last?.uppercased().first, let scale = units[last] {
        unit = scale
        number = number.dropLast()
    }
    guard let value = Double(number), value > 0, value.isFinite, value * Double(unit) < Double(1 << 50) else { return nil }
    let bytes = UInt64((value * Double(unit)).rounded(.up))
    return (bytes + 511) / 512 * 512
}

/// Formats bytes as Proxmox's `size=` disk option: the largest unit that divides it.
func formatSize(_ bytes: UInt64) -> String {
    for (suffix, scale) in [("T", UInt64(1) << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)] where bytes % scale == 0 {
        return "\(bytes / scale)\(suffix)"
    }
    return "\(bytes)"
}

/// The node's storage pools and what VM configs need from them: volume ids resolved to files,
/// `storage:SIZE` disks allocated, a VM's own volumes found for destruction.
struct StorageManager: Sendable {
    let pools: [String: DirectoryPool]

    init(pools: [DirectoryPool]) throws {
        for pool in pools { try pool.prepare() }
        self.pools = Dictionary(uniqueKeysWithValues: pools.map { ($0.id, $0) })
    }

    func pool(_ id: String) throws -> DirectoryPool {
        guard let pool = pools[id] else { throw APIError(500, "storage '\(id)' does not exist") }
        return pool
    }

    /// The file behind a volume id or absolute path; nil for anything else.
    func file(for text: String) -> String? {
        if text.hasPrefix("/") { return text }
        guard let volume = VolumeID(text), let pool = pools[volume.storage] else { return nil }
        return pool.path(of: volume)
    }

    static func isDiskKey(_ key: String) -> Bool {
        VMConfigSchema.diskBuses.keys.contains { VMConfigSchema.indexed(key, prefix: $0) != nil }
    }

    /// Checks disk keys and `kernel`/`initrd` of `changes` against the pools and allocates every
    /// `storage:SIZE` disk (GiB) as a qcow2 volume of `vmid`, rewriting the value to
    /// `storage:VMID/vm-VMID-disk-N.qcow2,…,size=…`. Returns the volumes it made (the caller
    /// removes them if the config change fails), or throws a 400 naming the bad keys.
    func prepareDisks(vmid: Int, changes: inout [String: String]) throws -> [VolumeID] {
        var errors: [String: String] = [:]
        var allocations: [(key: String, pool: DirectoryPool, size: UInt64, options: [String])] = []
        for key in changes.keys.sorted() {
            guard let value = changes[key] else { continue }
            if key == "kernel" || key == "initrd" {
                if value.hasPrefix("/") { continue }
                guard let volume = VolumeID(value), volume.content == .kernel || volume.content == .import else {
                    errors[key] = "value must be an absolute path or a volume id such as local:kernel/NAME"
                    continue
                }
                if let pool = pools[volume.storage], pool.exists(volume) { continue }
                errors[key] = "volume '\(value)' does not exist"
                continue
            }
            guard Self.isDiskKey(key) else { continue }
            let parts = value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            let volume = parts[0]
            let options = Array(parts.dropFirst())
            let isCDROM = options.contains("media=cdrom")
            if volume == "none" && isCDROM { continue }
            if volume.hasPrefix("/") { continue }
            guard let colon = volume.firstIndex(of: ":") else {
                errors[key] = "invalid format - '\(volume)' is not storage:SIZE, storage:VOLUME or an absolute path"
                continue
            }
            let storage = String(volume[..<colon]), rest = String(volume[volume.index(after: colon)...])
            guard let pool = pools[storage] else {
                errors[key] = "storage '\(storage)' does not exist"
                continue
            }
            if !isCDROM, !rest.contains("/"), let size = parseSize(rest, defaultUnit: 1 << 30) {
                allocations.append((key, pool, size, options.filter { !$0.hasPrefix("size=") }))
                continue
            }
            guard let parsed = VolumeID(volume) else {
                errors[key] = "invalid format - '\(volume)' is not storage:SIZE or a volume id"
                continue
            }
            if isCDROM && parsed.content != .iso { errors[key] = "a cdrom takes an iso volume (storage:iso/NAME)"; continue }
            if !isCDROM && parsed.content != .images && parsed.content != .import {
                errors[key] = "'\(volume)' is not a disk image"
                continue
            }
            if !pool.exists(parsed) { errors[key] = "volume '\(volume)' does not exist" }
        }
        if !errors.isEmpty { throw APIError.parameters(errors) }
        var made: [VolumeID] = []
        do {
            for allocation in allocations {
                let volume = try allocation.pool.allocate(vmid: vmid, size: allocation.size)
                made.append(volume)
                changes[allocation.key] = ([volume.description] + allocation.options + ["size=\(formatSize(allocation.size))"]).joined(separator: ",")
            }
        } catch {
            release(made)
            throw APIError(500, "\(error)")
        }
        return made
    }

    /// Removes volumes made for a config change that did not happen.
    func release(_ volumes: [VolumeID]) {
        for volume in volumes { try? pools[volume.storage]?.remove(volume) }
    }

    /// The volumes a config references that belong to `vmid` (its disks; not ISOs or other VMs' images).
    func ownedVolumes(vmid: Int, config: [String: String]) -> [VolumeID] {
        config.keys.sorted().filter(Self.isDiskKey).compactMap { key in
            guard let first = config[key]?.split(separator: ",").first, let volume = VolumeID(String(first)),
                  volume.content == .images, volume.vmid == vmid else { return nil }
            return volume
        }
    }
}
