import Foundation
import Hummingbird
import VireoEngines

/// What the route collections share.
struct Services: Sendable {
    let store: any Store
    let node: String
    let tasks: TaskManager
    let vms: VMManager
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

    /// The status fields `GET /nodes/{node}/qemu` and `/cluster/resources` share (memory in bytes).
    func vmSummary(_ record: VMRecord) -> [String: Any] {
        let config = record.config
        let process = record.process.flatMap { $0.isAlive ? $0 : nil }
        let memory = (Int(config["memory"] ?? "") ?? 512) * 1_048_576
        let cpus = (Int(config["cores"] ?? "") ?? 1) * (Int(config["sockets"] ?? "") ?? 1)
        var summary: [String: Any] = [
            "vmid": record.vmid, "name": config["name"] ?? "VM \(record.vmid)", "status": process == nil ? "stopped" : "running",
            "cpus": cpus, "maxcpu": cpus, "maxmem": memory, "mem": process.map(residentBytes) ?? 0, "cpu": 0,
            "maxdisk": 0, "disk": 0, "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
            "uptime": process.map { max(0, Int(Date().timeIntervalSince1970) - $0.startedAt) } ?? 0,
            "template": parseBool(config["template"] ?? "0") == true ? 1 : 0,
        ]
        if let process { summary["pid"] = Int(process.pid) }
        if let tags = config["tags"] { summary["tags"] = tags }
        return summary
    }

    private func residentBytes(_ process: VMProcess) -> Int {
        guard let statm = VireoSystemFiles.read("/proc/\(process.pid)/statm"),
              let pages = statm.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else { return 0 }
        return pages * 4096
    }
}

enum VireoSystemFiles {
    static func read(_ path: String) -> String? { try? String(contentsOfFile: path, encoding: .utf8) }
}
