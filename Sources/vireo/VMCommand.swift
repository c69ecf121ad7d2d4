import ArgumentParser
import Foundation

/// `vireo vm create|list|config|start|stop|destroy`: VMs through vireod's API (like Proxmox's `qm`).
struct VMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm",
        abstract: "Manage VMs through vireod (like qm).",
        subcommands: [Create.self, List.self, Config.self, Start.self, Stop.self, Destroy.self])

    struct Target: ParsableArguments {
        @Option(help: "Node (default: the one vireod reports).") var node: String?
        @OptionGroup var connection: APIConnectionOptions

        func open() throws -> (APIClient, String) {
            let client = try connection.client()
            return (client, try node ?? client.defaultNode())
        }
    }

    /// Runs a task-returning call, waits for it, and reports the UPID.
    static func runTask(_ target: Target, _ method: String, _ path: (String) -> String, _ params: [String: String] = [:]) throws {
        let (client, node) = try target.open()
        guard let upid = try client.call(method, path(node), params) as? String else { throw ValidationError("vireod returned no task") }
        let status = try client.wait(node, upid)
        if target.connection.output == .json { printJSON(status) } else { print("\(upid) \(status["exitstatus"] as? String ?? "")") }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a VM: vireo vm create [VMID] name=web memory=1024 cores=2 engine=vireo kernel=/boot/vmlinuz …")
        @Argument(help: "VMID (default: the next free one), then config as key=value.") var arguments: [String] = []
        @OptionGroup var target: Target

        func run() throws {
            var params: [String: String] = [:]
            for argument in arguments {
                if let vmid = Int(argument) { params["vmid"] = String(vmid); continue }
                guard let equals = argument.firstIndex(of: "=") else { throw ValidationError("'\(argument)' is not key=value") }
                params[String(argument[..<equals])] = String(argument[argument.index(after: equals)...])
            }
            let (client, node) = try target.open()
            if params["vmid"] == nil { params["vmid"] = try client.call("GET", "/cluster/nextid") as? String }
            guard let upid = try client.call("POST", "/nodes/\(node)/qemu", params) as? String else { throw ValidationError("no task") }
            let status = try client.wait(node, upid)
            if target.connection.output == .json { printJSON(["vmid": Int(params["vmid"] ?? "") ?? 0, "task": status]) } else { print(params["vmid"] ?? "") }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List VMs.")
        @OptionGroup var target: Target

        func run() throws {
            let (client, node) = try target.open()
            let vms = (try client.call("GET", "/nodes/\(node)/qemu") as? [[String: Any]] ?? []).sorted { ($0["vmid"] as? Int ?? 0) < ($1["vmid"] as? Int ?? 0) }
            if target.connection.output == .json { printJSON(vms); return }
            print("VMID".padding(toLength: 10, withPad: " ", startingAt: 0) + "NAME".padding(toLength: 24, withPad: " ", startingAt: 0)
                  + "STATUS".padding(toLength: 10, withPad: " ", startingAt: 0) + "MEM(MB)".padding(toLength: 10, withPad: " ", startingAt: 0) + "PID")
            for vm in vms {
                let memory = (vm["maxmem"] as? Int ?? 0) / 1_048_576
                print("\(vm["vmid"] as? Int ?? 0)".padding(toLength: 10, withPad: " ", startingAt: 0)
                      + (vm["name"] as? String ?? "").padding(toLength: 24, withPad: " ", startingAt: 0)
                      + (vm["status"] as? String ?? "").padding(toLength: 10, withPad: " ", startingAt: 0)
                      + "\(memory)".padding(toLength: 10, withPad: " ", startingAt: 0) + "\(vm["pid"] as? Int ?? 0)")
            }
        }
    }

    struct Config: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a VM's config, or change it: vireo vm config VMID [key=value …] [--delete key,key].")
        @Argument(help: "VMID.") var vmid: Int
        @Argument(help: "Changes as key=value.") var changes: [String] = []
        @Option(help: "Keys to delete, comma-separated.") var delete: String?
        @OptionGroup var target: Target

        func run() throws {
            let (client, node) = try target.open()
            if !changes.isEmpty || delete != nil {
                var params: [String: String] = [:]
                for change in changes {
                    guard let equals = change.firstIndex(of: "=") else { throw ValidationError("'\(change)' is not key=value") }
                    params[String(change[..<equals])] = String(change[change.index(after: equals)...])
                }
                if let delete { params["delete"] = delete }
                _ = try client.call("PUT", "/nodes/\(node)/qemu/\(vmid)/config", params)
            }
            let config = try client.call("GET", "/nodes/\(node)/qemu/\(vmid)/config") as? [String: Any] ?? [:]
            if target.connection.output == .json { printJSON(config); return }
            for key in config.keys.sorted() { print("\(key): \(config[key]!)") }
        }
    }

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start a VM and wait for the task.")
        @Argument(help: "VMID.") var vmid: Int
        @OptionGroup var target: Target
        func run() throws { try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/start" }) }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a VM now (or --shutdown: ask the guest to power off).")
        @Argument(help: "VMID.") var vmid: Int
        @Flag(help: "Ask the guest to power off instead (ACPI), stopping it after --timeout.") var shutdown = false
        @Option(help: "Seconds to wait for a shutdown.") var timeout = 60
        @OptionGroup var target: Target
        func run() throws {
            if shutdown {
                try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/shutdown" }, ["timeout": String(timeout), "forceStop": "1"])
            } else {
                try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/stop" })
            }
        }
    }

    struct Destroy: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Destroy a stopped VM.")
        @Argument(help: "VMID.") var vmid: Int
        @OptionGroup var target: Target
        func run() throws { try VMCommand.runTask(target, "DELETE", { "/nodes/\($0)/qemu/\(vmid)" }) }
    }
}
