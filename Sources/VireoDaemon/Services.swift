import Foundation
import Hummingbird
import VireoEngines

/// What the route collections share.
struct Services: Sendable {
    let store: any Store
    let node: String
    let tasks: TaskManager
    let vms: VMManager
    let storage: StorageManager
    let signer: TicketSigner
    let version: String

    /// Only this node exists until clustering: other names are an error, as an unknown host is in PVE.
    func checkNode(_ context: APIContext) throws -> String {
        let name = try context.parameters.require("node")
        guard name == node else { throw APIError(500, "hostname lookup '\(name)' failed - no such node") }
        return name
    }

    func vmid(_ context: APIContext) throws -> Int {
        let text = try context.parameters.require("vmid")
        guard let vmid = Int(text), (100...999_999_999).contains(vmid) else {
            throw APIError.parameters(["vmid": "value must be an integer between 100 and 999999999"])
        }
        return vmid
    }

    /// The status fields `GET /nodes/{node}/qemu`, `status/current` and `/cluster/resources` share,
    /// as Proxmox reports them: memory and disk in bytes, `cpu` the share of the VM's vCPUs it used
    /// (averaged since it started), `mem` its resident memory, `diskread`/`diskwrite` its engine
    /// process's block I/O (/proc/PID/io). `netin`/`netout` stay 0 until NICs report counters.
    func vmSummary(_ record: VMRecord) -> [String: Any] {
        let config = record.config
        let process = record.process.flatMap { $0.isAlive ? $0 : nil }
        let demand = Admission.demand(config)
        let figures = process.map(ProcessFigures.init)
        let uptime = process.map { max(0, Int(Date().timeIntervalSince1970) - $0.startedAt) } ?? 0
        var cpu = 0.0
        if let figures, uptime > 0 { cpu = min(1, figures.cpuSeconds / Double(uptime) / Double(max(1, demand.cpus))) }
        var summary: [String: Any] = [
            "vmid": record.vmid, "name": config["name"] ?? "VM \(record.vmid)", "status": process == nil ? "stopped" : "running",
            "cpus": demand.cpus, "maxcpu": demand.cpus, "maxmem": demand.memory, "mem": figures?.residentBytes ?? 0, "cpu": cpu,
            "maxdisk": maxDisk(config), "disk": 0, "netin": 0, "netout": 0,
            "diskread": figures?.readBytes ?? 0, "diskwrite": figures?.writeBytes ?? 0, "uptime": uptime,
            "template": parseBool(config["template"] ?? "0") == true ? 1 : 0,
        ]
        if let process { summary["pid"] = Int(process.pid) }
        if let tags = config["tags"] { summary["tags"] = tags }
        return summary
    }

    /// The first disk's `size=` (what PVE reports as maxdisk), in bytes.
    func maxDisk(_ config: [String: String]) -> Int {
        for key in config.keys.sorted() where StorageManager.isDiskKey(key) {
            guard let value = config[key], !value.contains("media=cdrom") else { continue }
            if let option = value.split(separator: ",").first(where: { $0.hasPrefix("size=") }),
               let bytes = parseSize(String(option.dropFirst(5)), defaultUnit: 1) { return Int(bytes) }
        }
        return 0
    }
}

/// What /proc tells about a VM's engine process.
struct ProcessFigures {
    var cpuSeconds = 0.0
    var residentBytes = 0
    var readBytes = 0
    var writeBytes = 0
    var readOps = 0
    var writeOps = 0

    static let ticksPerSecond = Double(sysconf(Int32(_SC_CLK_TCK)))

    init(_ process: VMProcess) {
        let pid = process.pid
        // /proc/PID/stat: utime and stime are fields 14 and 15, counted after the ")" that ends the name.
        if let stat = VireoSystemFiles.read("/proc/\(pid)/stat"), let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            if fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) {
                cpuSeconds = (user + system) / Self.ticksPerSecond
            }
        }
        if let statm = VireoSystemFiles.read("/proc/\(pid)/statm"), let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) {
            residentBytes = pages * Int(sysconf(Int32(_SC_PAGESIZE)))
        }
        for line in (VireoSystemFiles.read("/proc/\(pid)/io") ?? "").split(separator: "\n") {
            let parts = line.split(separator: ":").map { $0.trimmingCharacters(in: .whitespaces) }
            guard parts.count == 2, let value = Int(parts[1]) else { continue }
            switch parts[0] {
            case "read_bytes": readBytes = value
            case "write_bytes": writeBytes = value
            case "syscr": readOps = value
            case "syscw": writeOps = value
            default: break
            }
        }
    }
}

enum VireoSystemFiles {
    static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }
}
