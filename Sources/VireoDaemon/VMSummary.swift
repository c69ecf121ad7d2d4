import Foundation
import Hummingbird
import VireoEngines

/// The status fields `GET /nodes/{node}/qemu`, `status/current` and `/cluster/resources` share,
/// as Proxmox reports them: memory and disk in bytes, `cpu` the share of the VM's vCPUs it used
/// (averaged since it started), `mem` its resident memory, `diskread`/`diskwrite` its engine
/// process's block I/O (/proc/PID/io), `netin`/`netout` the bytes its NICs received and sent,
/// summed over its taps and switch ports (``NICTrafficMeter``; as PVE sums its `tap{vmid}i*`).
///
/// Typed, and written straight to JSON: a list of 10,000 VMs must not box each field in `Any`.
struct VMSummary: Sendable {
    /// What the config decides; fixed until the config changes.
    struct ConfigFacts: Sendable {
        var vmid: Int
        var name: String
        var cpus: Int
        var maxmem: Int
        var maxdisk: Int
        var template: Bool
        var tags: String?
        /// What ``NICTrafficMeter`` needs to find the NICs' counters.
        var nics: [VMSpec.NIC]

        init(vmid: Int, config: [String: String]) {
            let demand = Admission.demand(config)
            self.vmid = vmid
            nics = VMConfigSchema.spec(vmid: vmid, config: config).nics
            name = config["name"] ?? "VM \(vmid)"
            cpus = demand.cpus
            maxmem = demand.memory
            maxdisk = Self.maxDisk(config)
            template = parseBool(config["template"] ?? "0") == true
            tags = config["tags"]
        }

        /// The first disk's `size=` in key order (what PVE reports as maxdisk), in bytes; CD-ROMs
        /// and disks without a size do not count.
        static func maxDisk(_ config: [String: String]) -> Int {
            var first: (key: String, bytes: Int)?
            for (key, value) in config where StorageManager.isDiskKey(key) && !value.contains("media=cdrom") {
                guard let option = value.split(separator: ",").first(where: { $0.hasPrefix("size=") }),
                      let bytes = parseSize(String(option.dropFirst(5)), defaultUnit: 1) else { continue }
                if first.map({ key < $0.key }) ?? true { first = (key, Int(bytes)) }
            }
            return first?.bytes ?? 0
        }

        func writeMembers(to buffer: inout ByteBuffer) {
            buffer.writeJSONMember("vmid", vmid, first: true)
            buffer.writeJSONMember("name", name)
            buffer.writeJSONMember("cpus", cpus)
            buffer.writeJSONMember("maxcpu", cpus)
            buffer.writeJSONMember("maxmem", maxmem)
            buffer.writeJSONMember("maxdisk", maxdisk)
            buffer.writeJSONMember("disk", 0)
            buffer.writeJSONMember("template", template ? 1 : 0)
            if let tags { buffer.writeJSONMember("tags", tags) }
        }
    }

    /// What the VM's engine process decides (all zero when stopped).
    struct Runtime: Sendable {
        var pid: Int?
        var uptime = 0
        var cpu = 0.0
        var mem = 0
        var diskread = 0
        var diskwrite = 0
        var network = NICTraffic()

        /// `process` must be alive; nil for a stopped VM.
        init(process: VMProcess?, facts: ConfigFacts, now: Int, meter: NICTrafficMeter) {
            guard let process else { return }
            let figures = ProcessFigures(process)
            pid = Int(process.pid)
            uptime = max(0, now - process.startedAt)
            if uptime > 0 { cpu = min(1, figures.cpuSeconds / Double(uptime) / Double(max(1, facts.cpus))) }
            mem = figures.residentBytes
            diskread = figures.readBytes
            diskwrite = figures.writeBytes
            network = meter.traffic(vmid: facts.vmid, nics: facts.nics)
        }

        func writeMembers(to buffer: inout ByteBuffer) {
            buffer.writeJSONMember("status", pid == nil ? "stopped" : "running")
            if let pid { buffer.writeJSONMember("pid", pid) }
            buffer.writeJSONMember("uptime", uptime)
            buffer.writeJSONMember("cpu", cpu)
            buffer.writeJSONMember("mem", mem)
            buffer.writeJSONMember("diskread", diskread)
            buffer.writeJSONMember("diskwrite", diskwrite)
            buffer.writeJSONMember("netin", network.receivedBytes)
            buffer.writeJSONMember("netout", network.transmittedBytes)
        }
    }
}

/// Each VM's ``VMSummary/ConfigFacts`` encoded once, reused until its config changes.
///
/// The check is `==` on the config dictionary, which is O(1) while the store hands out the same
/// (unchanged) dictionary storage, and a full comparison only after a change.
final class VMSummaryCache: @unchecked Sendable {
    // SAFETY (@unchecked): `entries` is only touched while holding `lock`.
    private var entries: [Int: (config: [String: String], facts: VMSummary.ConfigFacts, json: ByteBuffer)] = [:]
    private let lock = NSLock()

    /// Writes the VM's summary members (no braces): cached config facts, then fresh runtime figures.
    func writeMembers(of record: VMRecord, now: Int, meter: NICTrafficMeter, to buffer: inout ByteBuffer) {
        let cached = lock.withLock { entries[record.vmid] }
        let facts: VMSummary.ConfigFacts
        if let cached, cached.config == record.config {
            facts = cached.facts
            buffer.writeImmutableBuffer(cached.json)
        } else {
            facts = VMSummary.ConfigFacts(vmid: record.vmid, config: record.config)
            var json = ByteBuffer()
            facts.writeMembers(to: &json)
            buffer.writeImmutableBuffer(json)
            lock.withLock { entries[record.vmid] = (record.config, facts, json) }
        }
        let process = record.process.flatMap { $0.isAlive ? $0 : nil }
        VMSummary.Runtime(process: process, facts: facts, now: now, meter: meter).writeMembers(to: &buffer)
    }

    /// Forgets VMs that no longer exist (called with every VM).
    func retain(only records: [VMRecord]) {
        lock.withLock {
            guard entries.count > records.count else { return }
            let vmids = Set(records.map(\.vmid))
            entries = entries.filter { vmids.contains($0.key) }
        }
    }

    /// The VMs' summaries as JSON objects separated by commas, each with the members `more`
    /// writes after the summary's.
    func writeObjects(_ records: [VMRecord], to buffer: inout ByteBuffer, more: (VMRecord, inout ByteBuffer) -> Void = { _, _ in }) {
        let now = Int(Date().timeIntervalSince1970)
        let meter = NICTrafficMeter()
        for (index, record) in records.enumerated() {
            buffer.writeStaticString(index == 0 ? "{" : ",{")
            writeMembers(of: record, now: now, meter: meter, to: &buffer)
            more(record, &buffer)
            buffer.writeInteger(UInt8(ascii: "}"))
        }
    }
}

extension ByteBuffer {
    /// `"key":` preceded by the comma that separates members unless it is the object's first.
    mutating func writeJSONKey(_ key: StaticString, first: Bool = false) {
        if !first { writeInteger(UInt8(ascii: ",")) }
        writeInteger(UInt8(ascii: "\""))
        writeStaticString(key)
        writeStaticString("\":")
    }

    mutating func writeJSONMember(_ key: StaticString, _ value: Int, first: Bool = false) {
        writeJSONKey(key, first: first)
        writeString(String(value))
    }

    mutating func writeJSONMember(_ key: StaticString, _ value: Double) {
        writeJSONKey(key)
        JSONText.writeNumber(value, to: &self)
    }

    mutating func writeJSONMember(_ key: StaticString, _ value: String) {
        writeJSONKey(key)
        JSONText.writeString(value, to: &self)
    }
}
