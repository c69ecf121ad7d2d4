import ArgumentParser
import Foundation

/// `vireo net check [VMID]`: each VM NIC's path (NIC → port → bridge/switch → uplink) and what is
/// wrong with it, from vireod's `GET nodes/{node}/qemu/{vmid}/network-path`.
struct NetCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "net", abstract: "Host networking diagnostics.", subcommands: [Check.self])

    struct Check: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each VM NIC's path and its problems (no uplink, uplink down, VLAN not on the uplink, MAC conflict, flood drops…); exit status 1 when there are problems.")
        @Argument(help: "VMID (default: every VM).") var vmid: Int?
        @OptionGroup var target: VMCommand.Target

        func run() throws {
            let (client, node) = try target.open()
            let vmids: [Int]
            if let vmid {
                vmids = [vmid]
            } else {
                vmids = (try client.call("GET", "/nodes/\(node)/qemu") as? [[String: Any]] ?? []).compactMap { $0["vmid"] as? Int }.sorted()
            }
            var report: [String: Any] = [:]
            var problems = 0
            for vmid in vmids {
                let paths = try client.call("GET", "/nodes/\(node)/qemu/\(vmid)/network-path") as? [[String: Any]] ?? []
                report[String(vmid)] = paths
                for path in paths { problems += (path["problems"] as? [[String: Any]])?.count ?? 0 }
                if target.connection.output == .text { print(Self.describe(vmid: vmid, paths)) }
            }
            if target.connection.output == .json { printJSON(report) }
            if problems > 0 { throw ExitCode(1) }
        }

        /// `VM 100 net0 bc:24:11:… → port vmbc2411… (VLAN 10) → VireoSwitch sw0 → uplink eth1 (up, trunk 10,20)`, then one line per problem.
        static func describe(vmid: Int, _ paths: [[String: Any]]) -> String {
            guard !paths.isEmpty else { return "VM \(vmid): no NICs" }
            var lines: [String] = []
            for path in paths {
                var hops = ["VM \(vmid) \(path["net"] as? String ?? "?") \(path["mac"] as? String ?? "")"]
                if let port = path["port"] as? String { hops.append("port \(port)" + ((path["vlan"] as? Int).map { " (VLAN \($0))" } ?? "")) }
                if let bridge = path["bridge"] as? String { hops.append("\(path["type"] as? String ?? "missing bridge") \(bridge)") }
                let uplinks = (path["uplinks"] as? [[String: Any]] ?? []).map { uplink in
                    "uplink \(uplink["iface"] as? String ?? "?") (\(uplink["active"] as? Int == 1 ? "up" : "DOWN")\((uplink["vlans"] as? String).map { ", \($0)" } ?? ""))"
                }
                hops.append(uplinks.isEmpty ? "no uplink" : uplinks.joined(separator: ", "))
                lines.append(hops.joined(separator: " → "))
                let problems = path["problems"] as? [[String: Any]] ?? []
                if problems.isEmpty { lines.append("  ok") }
                for problem in problems { lines.append("  problem \(problem["code"] as? String ?? "?"): \(problem["message"] as? String ?? "")") }
            }
            return lines.joined(separator: "\n")
        }
    }
}
