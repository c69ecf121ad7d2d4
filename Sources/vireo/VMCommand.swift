import ArgumentParser
import Foundation

/// `vireo vm create|list|config|set|status|start|stop|shutdown|reboot|suspend|resume|destroy|console`:
/// VMs through vireod's API (like Proxmox's `qm`).
struct VMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vm",
        abstract: "Manage VMs through vireod (like qm).",
        subcommands: [Create.self, List.self, Config.self, SetCommand.self, Status.self, Start.self, Stop.self, Shutdown.self, Reboot.self,
                      Suspend.self, Resume.self, Destroy.self, ConsoleCommand.self])

    struct Target: ParsableArguments {
        @Option(help: "Node (default: the one vireod reports).") var node: String?
        @OptionGroup var connection: APIConnectionOptions

        func open() throws -> (APIClient, String) {
            let client = try connection.client()
            return (client, try node ?? client.defaultNode())
        }
    }

    /// Runs a task-returning call and waits for it, streaming its log to stderr; prints the task's
    /// final status (text: UPID and exit status; json: the status object).
    static func runTask(_ target: Target, _ method: String, _ path: (String) -> String, _ params: [String: String] = [:]) throws {
        let (client, node) = try target.open()
        guard let upid = try client.call(method, path(node), params) as? String else { throw CLIError("vireod returned no task") }
        let status = try client.wait(node, upid, progress: printProgress)
        if target.connection.output == .json { printJSON(status) } else { print("\(upid) \(status["exitstatus"] as? String ?? "")") }
    }

    /// Parses `key=value` arguments into API parameters.
    static func keyValues(_ arguments: [String]) throws -> [String: String] {
        var params: [String: String] = [:]
        for argument in arguments {
            guard let equals = argument.firstIndex(of: "="), equals != argument.startIndex else {
                throw ValidationError("'\(argument)' is not key=value (e.g. memory=1024)")
            }
            params[String(argument[..<equals])] = String(argument[argument.index(after: equals)...])
        }
        return params
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
            guard let upid = try client.call("POST", "/nodes/\(node)/qemu", params) as? String else { throw CLIError("vireod returned no task") }
            let status = try client.wait(node, upid, progress: printProgress)
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
            printTable(["VMID", "NAME", "STATUS", "MEM(MB)", "CPUS", "PID"], vms.map { vm in
                ["\(vm["vmid"] as? Int ?? 0)", vm["name"] as? String ?? "", vm["status"] as? String ?? "",
                 "\((vm["maxmem"] as? Int ?? 0) / 1_048_576)", "\(vm["cpus"] as? Int ?? 0)", "\(vm["pid"] as? Int ?? 0)"]
            })
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
                var params = try VMCommand.keyValues(changes)
                if let delete { params["delete"] = delete }
                _ = try client.call("PUT", "/nodes/\(node)/qemu/\(vmid)/config", params)
            }
            let config = try client.call("GET", "/nodes/\(node)/qemu/\(vmid)/config") as? [String: Any] ?? [:]
            if target.connection.output == .json { printJSON(config); return }
            for key in config.keys.sorted() { print("\(key): \(config[key]!)") }
        }
    }

    struct SetCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set",
            abstract: "Change a VM's config: vireo vm set VMID key=value … [--delete key,key] [--digest D] (like qm set).")
        @Argument(help: "VMID.") var vmid: Int
        @Argument(help: "Changes as key=value.") var changes: [String] = []
        @Option(help: "Keys to delete, comma-separated.") var delete: String?
        @Option(help: "Refuse the change unless the config's digest (vireo vm config --output json) still matches.") var digest: String?
        @OptionGroup var target: Target

        func validate() throws {
            if changes.isEmpty, delete == nil { throw ValidationError("nothing to change: give key=value pairs or --delete key,key") }
        }

        func run() throws {
            var params = try VMCommand.keyValues(changes)
            if let delete { params["delete"] = delete }
            if let digest { params["digest"] = digest }
            let (client, node) = try target.open()
            let data = try client.call("PUT", "/nodes/\(node)/qemu/\(vmid)/config", params)
            // Some changes (a disk's allocation) run as a task: wait for it like qm does.
            if let upid = data as? String, upid.hasPrefix("UPID:") { _ = try client.wait(node, upid, progress: printProgress) }
            if target.connection.output == .json { printJSON(data) }
        }
    }

    struct Status: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a VM's status: running, stopped or paused (like qm status).")
        @Argument(help: "VMID.") var vmid: Int
        @Flag(help: "Show every status field.") var verbose = false
        @OptionGroup var target: Target

        func run() throws {
            let (client, node) = try target.open()
            let status = try client.call("GET", "/nodes/\(node)/qemu/\(vmid)/status/current") as? [String: Any] ?? [:]
            if target.connection.output == .json { printJSON(status); return }
            guard verbose else { print("status: \(status["qmpstatus"] as? String ?? status["status"] as? String ?? "unknown")"); return }
            printTable(nil, status.keys.sorted().map { ["\($0):", "\(status[$0]!)"] })
        }
    }

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start a VM and wait for the task.")
        @Argument(help: "VMID.") var vmid: Int
        @OptionGroup var target: Target
        func run() throws { try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/start" }) }
    }

    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stop a VM now, like pulling the plug (vireo vm shutdown asks the guest).")
        @Argument(help: "VMID.") var vmid: Int
        @OptionGroup var target: Target
        func run() throws { try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/stop" }) }
    }

    struct Shutdown: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Ask the guest to power off (ACPI) and wait for it.")
        @Argument(help: "VMID.") var vmid: Int
        @Option(help: "Seconds to wait for the guest.") var timeout = 60
        @Flag(help: "Stop the VM if the guest has not powered off after --timeout.") var forceStop = false
        @OptionGroup var target: Target
        func run() throws {
            try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/shutdown" },
                                  ["timeout": String(timeout), "forceStop": forceStop ? "1" : "0"])
        }
    }

    struct Reboot: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Shut the guest down and start it again.")
        @Argument(help: "VMID.") var vmid: Int
        @Option(help: "Seconds to wait for the guest to power off before stopping it.") var timeout: Int?
        @OptionGroup var target: Target
        func run() throws {
            try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/reboot" }, timeout.map { ["timeout": String($0)] } ?? [:])
        }
    }

    struct Suspend: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pause a running VM's vCPUs (memory stays allocated).")
        @Argument(help: "VMID.") var vmid: Int
        @OptionGroup var target: Target
        func run() throws { try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/suspend" }) }
    }

    struct Resume: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Resume a suspended VM.")
        @Argument(help: "VMID.") var vmid: Int
        @OptionGroup var target: Target
        func run() throws { try VMCommand.runTask(target, "POST", { "/nodes/\($0)/qemu/\(vmid)/status/resume" }) }
    }

    struct Destroy: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Destroy a stopped VM.")
        @Argument(help: "VMID.") var vmid: Int
        @OptionGroup var target: Target
        func run() throws { try VMCommand.runTask(target, "DELETE", { "/nodes/\($0)/qemu/\(vmid)" }) }
    }
}
