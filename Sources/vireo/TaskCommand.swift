import ArgumentParser
import Foundation

/// `vireo task list|log`: the node's tasks (like Proxmox's `pvenode task`).
struct TaskCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "task",
        abstract: "List tasks and show their logs.",
        subcommands: [List.self, Log.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List recent tasks, newest first.")
        @Option(help: "Only tasks for this VM.") var vmid: Int?
        @Option(help: "At most this many tasks.") var limit = 50
        @OptionGroup var target: VMCommand.Target

        func run() throws {
            let (client, node) = try target.open()
            var params = ["limit": String(limit)]
            if let vmid { params["vmid"] = String(vmid) }
            let tasks = try client.call("GET", "/nodes/\(node)/tasks", params) as? [[String: Any]] ?? []
            if target.connection.output == .json { printJSON(tasks); return }
            let formatter = DateFormatter()
            formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
            printTable(["UPID", "TYPE", "ID", "USER", "START", "STATUS"], tasks.map { task in
                let start = Date(timeIntervalSince1970: Double(task["starttime"] as? Int ?? 0))
                let status = task["status"] as? String == "running" ? "running" : task["exitstatus"] as? String ?? ""
                return [task["upid"] as? String ?? "", task["type"] as? String ?? "", task["id"] as? String ?? "",
                        task["user"] as? String ?? "", formatter.string(from: start), status]
            })
        }
    }

    struct Log: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print a task's log (text: its lines; json: the API's {n, t} entries).")
        @Argument(help: "The task's UPID (from vireo task list).") var upid: String
        @Option(help: "First line to show (0-based).") var start = 0
        @OptionGroup var target: VMCommand.Target

        func run() throws {
            let (client, node) = try target.open()
            let lines = try client.call("GET", "/nodes/\(node)/tasks/\(APIClient.escape(upid))/log",
                                        ["start": String(start), "limit": "100000"]) as? [[String: Any]] ?? []
            if target.connection.output == .json { printJSON(lines); return }
            for line in lines { print(line["t"] as? String ?? "") }
        }
    }
}
