import Foundation
import Hummingbird
import VireoEngines

/// `GET /metrics`: Prometheus text exposition format 0.0.4 for the node and every VM the caller may
/// audit. Authenticated like the API (a Prometheus `authorization` block with type `PVEAPIToken`
/// sends `PVEAPIToken user@realm!id=SECRET`, which vireod accepts); needs `Sys.Audit` on `/nodes/NODE`.
struct MetricsRoutes {
    let services: Services

    var collection: RouteCollection<APIContext> {
        let routes = RouteCollection(context: APIContext.self)
        routes.get("metrics") { _, context in try await metrics(context) }
        return routes
    }

    /// One metric family: HELP, TYPE and its samples (`labels` already rendered as `{…}`).
    struct Family {
        var name: String
        var help: String
        var type: String
        var samples: [(labels: String, value: String)] = []

        var text: String {
            "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n" + samples.map { "\(name)\($0.labels) \($0.value)\n" }.joined()
        }
    }

    static func label(_ value: String) -> String {
        value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    func metrics(_ context: APIContext) async throws -> Response {
        try context.require("Sys.Audit", on: "/nodes/\(services.node)")
        let records = try services.store.vms()
        let audited = records.filter { context.principal?.may("VM.Audit", on: "/vms/\($0.vmid)") == true }
        let balloons = await services.vms.balloons(of: audited)
        let meter = NICTrafficMeter()
        let committed = Admission.committed(records)
        let admission = services.vms.admission
        var text = ""
        func gauge(_ name: String, _ help: String, _ value: Double) {
            text += Family(name: name, help: help, type: "gauge", samples: [("", Self.number(value))]).text
        }
        gauge("vireo_node_memory_bytes", "Host RAM.", Double(admission.hostMemory))
        gauge("vireo_node_cpus", "Host CPUs.", Double(admission.hostCPUs))
        gauge("vireo_node_committed_memory_bytes", "Guest memory committed by running VMs.", Double(committed.memory))
        gauge("vireo_node_committed_vcpus", "vCPUs committed by running VMs.", Double(committed.cpus))
        gauge("vireo_node_memory_overcommit_ratio", "Admission limit: committed memory / host RAM.", admission.memoryOvercommit)
        gauge("vireo_node_cpu_overcommit_ratio", "Warning threshold: committed vCPUs / host CPUs.", admission.cpuOvercommit)

        var families: [String: Family] = [:]
        let definitions: [(String, String, String)] = [
            ("vireo_vm_up", "1 while the VM's engine process runs.", "gauge"),
            ("vireo_vm_memory_bytes", "Configured guest memory.", "gauge"),
            ("vireo_vm_vcpus", "Configured vCPUs.", "gauge"),
            ("vireo_vm_cpu_seconds_total", "CPU time of the VM's engine process (user + system).", "counter"),
            ("vireo_vm_resident_bytes", "Resident memory of the VM's engine process.", "gauge"),
            ("vireo_vm_balloon_bytes", "Balloon target from the config: the guest memory the balloon should leave (balloon key; 0 when unset).", "gauge"),
            ("vireo_vm_balloon_actual_bytes", "Guest memory the balloon leaves now (Proxmox's balloon, QEMU's query-balloon actual); running VMs with a balloon.", "gauge"),
            ("vireo_vm_disk_read_bytes_total", "Bytes the engine process read from storage (/proc/PID/io).", "counter"),
            ("vireo_vm_disk_write_bytes_total", "Bytes the engine process wrote to storage (/proc/PID/io).", "counter"),
            ("vireo_vm_disk_read_ops_total", "Read system calls of the engine process (/proc/PID/io syscr).", "counter"),
            ("vireo_vm_disk_write_ops_total", "Write system calls of the engine process (/proc/PID/io syscw).", "counter"),
            ("vireo_vm_network_receive_bytes_total", "Bytes the guest received on its bridged NICs (Proxmox's netin: its taps' tx_bytes, its switch ports' tx_bytes).", "counter"),
            ("vireo_vm_network_transmit_bytes_total", "Bytes the guest sent on its bridged NICs (Proxmox's netout: its taps' rx_bytes, its switch ports' rx_bytes).", "counter"),
            ("vireo_vm_network_receive_packets_total", "Packets the guest received on its bridged NICs.", "counter"),
            ("vireo_vm_network_transmit_packets_total", "Packets the guest sent on its bridged NICs.", "counter"),
            ("vireo_vm_uptime_seconds", "Seconds since the VM started.", "gauge"),
        ]
        for (name, help, type) in definitions { families[name] = Family(name: name, help: help, type: type) }
        func add(_ name: String, _ labels: String, _ value: Double) { families[name]?.samples.append((labels, Self.number(value))) }
        for record in audited {
            let labels = "{vmid=\"\(record.vmid)\",name=\"\(Self.label(record.config["name"] ?? ""))\",engine=\"\(record.config["engine"] ?? "qemu")\"}"
            let demand = Admission.demand(record.config)
            let process = record.process.flatMap { $0.isAlive ? $0 : nil }
            add("vireo_vm_up", labels, process == nil ? 0 : 1)
            add("vireo_vm_memory_bytes", labels, Double(demand.memory))
            add("vireo_vm_vcpus", labels, Double(demand.cpus))
            add("vireo_vm_balloon_bytes", labels, Double((Int(record.config["balloon"] ?? "") ?? 0) * 1_048_576))
            guard let process else { continue }
            let figures = ProcessFigures(process)
            add("vireo_vm_cpu_seconds_total", labels, figures.cpuSeconds)
            add("vireo_vm_resident_bytes", labels, Double(figures.residentBytes))
            add("vireo_vm_disk_read_bytes_total", labels, Double(figures.readBytes))
            add("vireo_vm_disk_write_bytes_total", labels, Double(figures.writeBytes))
            add("vireo_vm_disk_read_ops_total", labels, Double(figures.readOps))
            add("vireo_vm_disk_write_ops_total", labels, Double(figures.writeOps))
            add("vireo_vm_uptime_seconds", labels, Double(max(0, Int(Date().timeIntervalSince1970) - process.startedAt)))
            if let balloon = balloons[record.vmid] { add("vireo_vm_balloon_actual_bytes", labels, Double(balloon.actual)) }
            let nics = VMConfigSchema.spec(vmid: record.vmid, config: record.config).nics
            let traffic = meter.traffic(vmid: record.vmid, nics: nics)
            add("vireo_vm_network_receive_bytes_total", labels, Double(traffic.receivedBytes))
            add("vireo_vm_network_transmit_bytes_total", labels, Double(traffic.transmittedBytes))
            add("vireo_vm_network_receive_packets_total", labels, Double(traffic.receivedPackets))
            add("vireo_vm_network_transmit_packets_total", labels, Double(traffic.transmittedPackets))
        }
        for (name, _, _) in definitions { text += families[name]?.text ?? "" }
        return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                        body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }
}
