import Foundation

/// Admission control for VM starts: committed guest memory (running VMs plus starts in flight)
/// may not exceed `memoryOvercommit` × host RAM; committed vCPUs above `cpuOvercommit` × host
/// CPUs only warn. Starts in flight hold a reservation, so two concurrent starts cannot both
/// squeeze under the limit.
final class Admission: @unchecked Sendable {
    // SAFETY (@unchecked): `reservations` is only touched while holding `lock`.
    let memoryOvercommit: Double
    let cpuOvercommit: Double
    let hostMemory: Int
    let hostCPUs: Int
    private let lock = NSLock()
    private var reservations: [Int: (memory: Int, cpus: Int)] = [:]

    init(memoryOvercommit: Double, cpuOvercommit: Double, hostMemory: Int = Admission.hostMemoryBytes(),
         hostCPUs: Int = ProcessInfo.processInfo.activeProcessorCount) {
        self.memoryOvercommit = memoryOvercommit; self.cpuOvercommit = cpuOvercommit
        self.hostMemory = hostMemory; self.hostCPUs = hostCPUs
    }

    static func hostMemoryBytes() -> Int {
        let line = (VireoSystemFiles.read("/proc/meminfo") ?? "").split(separator: "\n").first { $0.hasPrefix("MemTotal:") } ?? ""
        return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) * 1024
    }

    /// Guest memory (bytes) and vCPUs a config commits.
    static func demand(_ config: [String: String]) -> (memory: Int, cpus: Int) {
        let memory = (Int(config["memory"] ?? "") ?? 512) * 1_048_576
        return (memory, (Int(config["cores"] ?? "") ?? 1) * (Int(config["sockets"] ?? "") ?? 1))
    }

    /// What running VMs commit (other than `excluding`).
    static func committed(_ records: [VMRecord], excluding: Int? = nil) -> (memory: Int, cpus: Int) {
        records.filter { $0.vmid != excluding && $0.process?.isAlive == true }.reduce((0, 0)) { sum, record in
            let demand = demand(record.config)
            return (sum.0 + demand.memory, sum.1 + demand.cpus)
        }
    }

    /// Reserves the VM's demand or throws why it cannot start; returns warnings for the task log.
    func reserve(vmid: Int, config: [String: String], running records: [VMRecord]) throws -> [String] {
        let demand = Self.demand(config)
        let base = Self.committed(records, excluding: vmid)
        return try lock.withLock {
            let pending = reservations.filter { $0.key != vmid }.values.reduce((memory: 0, cpus: 0)) { ($0.memory + $1.memory, $0.cpus + $1.cpus) }
            let memory = base.memory + pending.memory + demand.memory
            let limit = Int(Double(hostMemory) * memoryOvercommit)
            guard memory <= limit else {
                throw AdmissionError(
                    "cannot start VM \(vmid): committed guest memory would be \(memory >> 20) MiB, above the node's limit of \(limit >> 20) MiB "
                    + "(memory_overcommit \(memoryOvercommit) × \(hostMemory >> 20) MiB RAM; \((base.memory + pending.memory) >> 20) MiB already committed)")
            }
            reservations[vmid] = demand
            let cpus = base.cpus + pending.cpus + demand.cpus
            let cpuLimit = Double(hostCPUs) * cpuOvercommit
            guard Double(cpus) > cpuLimit else { return [] }
            return ["WARN: CPU overcommit: \(cpus) vCPUs committed on \(hostCPUs) host CPUs, above cpu_overcommit \(cpuOvercommit) (\(Int(cpuLimit)) vCPUs)"]
        }
    }

    func release(vmid: Int) {
        lock.withLock { _ = reservations.removeValue(forKey: vmid) }
    }
}

struct AdmissionError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
