import Foundation
import VireoEngines

/// The VM config schema: Proxmox's keys (memory in MiB, netN, scsiN/virtioN/sataN/ideN, …) plus
/// Vireo's `engine`, `kernel`, `initrd`, `cmdline` and `raw` (a flat binary for tiny test and
/// teaching guests: `raw: /path/guest.bin,mode=real|long`, vireo engine only).
enum VMConfigSchema {
    typealias Check = @Sendable (String) -> String?

    static let diskBuses = ["scsi": 30, "virtio": 15, "sata": 5, "ide": 3]
    static let nicModels: Set<String> = ["virtio", "e1000", "rtl8139", "vmxnet3"]
    static let ostypes: Set<String> = ["other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11", "l24", "l26", "solaris"]

    static func integer(_ range: ClosedRange<Int>) -> Check {
        { value in
            guard let number = Int(value) else { return "type check ('integer') failed - got '\(value)'" }
            return range.contains(number) ? nil : "value must have a minimum value of \(range.lowerBound) and a maximum value of \(range.upperBound)"
        }
    }

    static let boolean: Check = { parseBool($0) == nil ? "type check ('boolean') failed - got '\($0)'" : nil }

    static func text(max: Int = 4096) -> Check {
        { value in
            if value.count > max { return "value may only be \(max) characters long" }
            return value.contains("\n") || value.contains("\0") ? "value must be a single line" : nil
        }
    }

    static let absolutePath: Check = { value in
        value.hasPrefix("/") && !value.contains("\n") && !value.contains(",") ? nil : "value must be an absolute path"
    }

    static let dnsName: Check = { value in
        let allowed = CharacterSet(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.")
        guard !value.isEmpty, value.count <= 63, value.unicodeScalars.allSatisfy(allowed.contains),
              !value.hasPrefix("-"), !value.hasPrefix(".") else { return "value does not look like a valid DNS name" }
        return nil
    }

    /// The check for a config key; nil for keys not in the schema.
    static func check(for key: String) -> Check? {
        switch key {
        case "name": return dnsName
        case "memory": return integer(16...4_194_304)
        // Proxmox: the guest memory the balloon should leave, MiB; 0 disables the balloon device.
        case "balloon": return integer(0...4_194_304)
        case "cores": return integer(1...1024)
        case "sockets": return integer(1...16)
        case "onboot", "template": return boolean
        case "agent": return { value in
            let first = value.split(separator: ",").first.map(String.init) ?? ""
            let enabled = first.hasPrefix("enabled=") ? String(first.dropFirst(8)) : first
            return parseBool(enabled) == nil ? "invalid format - agent must be 0|1[,options]" : nil
        }
        case "ostype": return { ostypes.contains($0) ? nil : "value '\($0)' does not have a value in the enumeration '\(ostypes.sorted().joined(separator: ", "))'" }
        case "engine": return { ["qemu", "vireo"].contains($0) ? nil : "value '\($0)' does not have a value in the enumeration 'qemu, vireo'" }
        case "kernel", "initrd": return { value in
            absolutePath(value) == nil || VolumeID(value) != nil ? nil : "value must be an absolute path or a volume id (local:kernel/NAME)"
        }
        case "cmdline", "description", "cpu", "scsihw", "boot", "bios", "machine": return text()
        case "tags": return { value in
            let ok = value.split(whereSeparator: { ";, ".contains($0) }).allSatisfy { tag in
                !tag.isEmpty && tag.allSatisfy { $0.isLetter || $0.isNumber || "-_.+".contains($0) }
            }
            return ok ? nil : "invalid format - tags are letters, digits, - _ . + separated by ';'"
        }
        case "raw": return { value in
            let parts = value.split(separator: ",").map(String.init)
            guard let path = parts.first, absolutePath(path) == nil else { return "invalid format - raw is /path[,mode=real|long]" }
            for option in parts.dropFirst() where option != "mode=real" && option != "mode=long" {
                return "invalid format - unknown raw option '\(option)'"
            }
            return nil
        }
        default:
            if let index = indexed(key, prefix: "net"), index < 32 { return nicCheck }
            for (bus, count) in diskBuses { if let index = indexed(key, prefix: bus), index <= count { return text() } }
            return nil
        }
    }

    static func indexed(_ key: String, prefix: String) -> Int? {
        guard key.hasPrefix(prefix) else { return nil }
        let digits = key.dropFirst(prefix.count)
        guard !digits.isEmpty, digits.allSatisfy(\.isNumber), digits.count <= 2 else { return nil }
        return Int(digits)
    }

    /// `model[=MAC][,bridge=…][,…]`.
    static let nicCheck: Check = { value in
        let first = value.split(separator: ",").first.map(String.init) ?? ""
        let model = first.split(separator: "=", maxSplits: 1).first.map(String.init) ?? ""
        guard nicModels.contains(model) else { return "invalid format - model '\(model)' is not one of \(nicModels.sorted().joined(separator: ", "))" }
        if let mac = first.split(separator: "=", maxSplits: 1).dropFirst().first, !isMAC(String(mac)) {
            return "invalid format - '\(mac)' is not a MAC address"
        }
        for item in value.split(separator: ",").dropFirst() {
            let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard pair.count == 2 else { continue }
            if pair[0] == "tag", !(Int(pair[1]).map { (1...4094).contains($0) } ?? false) {
                return "invalid format - tag '\(pair[1])' is not a VLAN ID (1-4094)"
            }
            if pair[0] == "bridge", pair[1].isEmpty || pair[1].utf8.count > 15 || !pair[1].allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) {
                return "invalid format - bridge '\(pair[1])' is not an interface name"
            }
        }
        return nil
    }

    static func isMAC(_ text: String) -> Bool {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        return parts.count == 6 && parts.allSatisfy { $0.count == 2 && UInt8($0, radix: 16) != nil }
    }

    /// Checks `params` (config keys only: the caller removes vmid, digest, delete, …) and returns
    /// the per-parameter errors.
    static func validate(_ params: [String: String]) -> [String: String] {
        var errors: [String: String] = [:]
        for (key, value) in params {
            guard let check = check(for: key) else {
                errors[key] = "property is not defined in schema and the schema does not allow additional properties"
                continue
            }
            if let message = check(value) { errors[key] = message }
        }
        return errors
    }

    /// Gives NICs without a MAC one (Proxmox's BC:24:11 prefix), as PVE does at create time.
    static func assignMACs(_ config: inout [String: String]) {
        for key in config.keys where indexed(key, prefix: "net") != nil {
            guard let value = config[key] else { continue }
            var parts = value.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard let first = parts.first, !first.contains("=") else { continue }
            let bytes = randomBytes(3).map { String(format: "%02X", $0) }.joined(separator: ":")
            parts[0] = "\(first)=BC:24:11:\(bytes)"
            config[key] = parts.joined(separator: ",")
        }
    }

    /// The engine-neutral spec for a config; `resolve` turns volume ids into files (nil: leave as is).
    static func spec(vmid: Int, config: [String: String], resolve: (String) -> String? = { _ in nil }) -> VMSpec {
        let kernel = config["kernel"].map { resolve($0) ?? $0 }, initrd = config["initrd"].map { resolve($0) ?? $0 }
        let memory = Int(config["memory"] ?? "") ?? 512
        let balloon = Int(config["balloon"] ?? "").map { min($0, memory) } ?? memory
        var spec = VMSpec(vmid: vmid, name: config["name"] ?? "vm\(vmid)", memoryMiB: memory,
                          cores: Int(config["cores"] ?? "") ?? 1, sockets: Int(config["sockets"] ?? "") ?? 1,
                          kernel: kernel, initrd: initrd, cmdline: config["cmdline"], balloonTargetMiB: balloon == 0 ? nil : balloon)
        if let raw = config["raw"] {
            let parts = raw.split(separator: ",").map(String.init)
            let mode: VMSpec.RawImage.Mode = parts.contains("mode=long") ? .long : .real
            spec.raw = VMSpec.RawImage(path: parts[0], mode: mode)
        }
        for key in config.keys.sorted() {
            guard let value = config[key] else { continue }
            if let index = indexed(key, prefix: "net") {
                let first = value.split(separator: ",").first.map(String.init) ?? "virtio"
                let pieces = first.split(separator: "=", maxSplits: 1).map(String.init)
                let options = Dictionary(value.split(separator: ",").dropFirst().compactMap { item -> (String, String)? in
                    let pair = item.split(separator: "=", maxSplits: 1).map(String.init)
                    return pair.count == 2 ? (pair[0], pair[1]) : nil
                }, uniquingKeysWith: { first, _ in first })
                spec.nics.append(VMSpec.NIC(index: index, model: pieces[0], mac: pieces.count > 1 ? pieces[1] : "BC:24:11:00:00:00",
                                            bridge: options["bridge"], tag: options["tag"].flatMap { Int($0) }))
            }
            for bus in diskBuses.keys where indexed(key, prefix: bus) != nil {
                let parts = value.split(separator: ",").map(String.init)
                let volume = parts.first ?? value
                let media: VMSpec.Disk.Media = parts.contains("media=cdrom") ? .cdrom : .disk
                if volume == "none" { continue }
                spec.disks.append(VMSpec.Disk(key: key, bus: bus, volume: resolve(volume) ?? volume, media: media))
            }
        }
        return spec
    }
}
