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

    /// Each VM's summary fields, encoded once per config (``VMSummary``).
    let summaries = VMSummaryCache()
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
