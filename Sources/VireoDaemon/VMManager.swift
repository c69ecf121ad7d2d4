import Foundation
import Logging
import VireoEngines
import VireoSystem

/// Runs VMs through their engines and keeps the store's view of each VM's process true:
/// VMs run in their own sessions and outlive vireod; a restarted vireod re-adopts the live ones
/// (pid alive and /proc start time unchanged) and notices the ones that ended on their own.
final class VMManager: Sendable {
    let store: any Store
    let runDirectory: String
    let engines: [String: any VMEngine]
    let storage: StorageManager
    let admission: Admission
    let queue = VMQueue()
    let logger: Logger

    init(store: any Store, runDirectory: String, engines: [String: any VMEngine], storage: StorageManager, admission: Admission, logger: Logger) {
        self.store = store
        self.runDirectory = runDirectory
        self.engines = engines
        self.storage = storage
        self.admission = admission
        self.logger = logger
    }

    func engine(for config: [String: String]) throws -> any VMEngine {
        let name = config["engine"] ?? "qemu"
        guard let engine = engines[name] else { throw EngineError("engine '\(name)' is not available") }
        return engine
    }

    func record(_ vmid: Int) throws -> VMRecord {
        guard let record = try store.vm(vmid) else { throw StoreError.noSuchVM(vmid) }
        return record
    }

    /// The live process of a VM, nil when it is not running.
    func liveProcess(_ vmid: Int) throws -> VMProcess? {
        guard let process = try record(vmid).process, process.isAlive else { return nil }
        return process
    }

    /// A running VM's balloon, asked of its engine (with the guest's statistics for
    /// `guestStatistics`: `status/current`, not `/metrics`); nil when it is stopped, has no balloon
    /// (`balloon: 0`), or does not answer within `timeout` (a hung engine must not hang the API).
    func balloon(of record: VMRecord, guestStatistics: Bool = false, timeout: Duration = .seconds(1)) async -> BalloonInfo? {
        guard let process = record.process, process.isAlive else { return nil }
        let spec = VMConfigSchema.spec(vmid: record.vmid, config: record.config)
        guard spec.balloonTargetMiB != nil, let engine = try? engine(for: record.config) else { return nil }
        return try? await engine.balloon(process, memoryMiB: spec.memoryMiB, guestStatistics: guestStatistics, timeout: timeout)
    }

    /// ``balloon(of:timeout:)`` of each VM by vmid, asking at most `parallel` engines at once.
    func balloons(of records: [VMRecord], parallel: Int = 16) async -> [Int: BalloonInfo] {
        await withTaskGroup(of: (Int, BalloonInfo?).self) { group in
            var waiting = records[...], result: [Int: BalloonInfo] = [:]
            func askNext() {
                guard let record = waiting.popFirst() else { return }
                group.addTask { (record.vmid, await self.balloon(of: record)) }
            }
            for _ in 0..<parallel { askNext() }
            while let answer = await group.next() {
                result[answer.0] = answer.1
                askNext()
            }
            return result
        }
    }

    /// Removes the taps and switch ports the VM's NICs used (its process has ended).
    func unplumb(_ vmid: Int, config: [String: String], log: @escaping @Sendable (String) -> Void) {
        HostNetwork().unplumb(VMConfigSchema.spec(vmid: vmid, config: config), log: log)
    }

    func start(_ vmid: Int, log: TaskLog) async throws {
        try await queue.run(vmid) { [self] in
            let record = try record(vmid)
            if let process = record.process, process.isAlive { throw EngineError("VM \(vmid) already running") }
            let engine = try engine(for: record.config)
            let spec = VMConfigSchema.spec(vmid: vmid, config: record.config, resolve: storage.file(for:))
            for warning in try admission.reserve(vmid: vmid, config: record.config, running: try store.vms()) { log(warning) }
            defer { admission.release(vmid: vmid) }
            log("starting VM \(vmid) with engine \(engine.name)")
            let process = try await engine.start(spec, runDirectory: "\(runDirectory)/\(vmid)", log: { log($0) })
            try store.setProcess(vmid: vmid, process: process, lastExit: nil)
            log("VM \(vmid) started: pid \(process.pid)")
        }
    }

    func stop(_ vmid: Int, timeout: Duration = .seconds(10), log: TaskLog) async throws {
        try await queue.run(vmid) { [self] in
            let record = try record(vmid)
            guard let process = record.process, process.isAlive else {
                try store.setProcess(vmid: vmid, process: nil, lastExit: record.lastExit)
                log("VM \(vmid) is not running")
                return
            }
            try await engine(for: record.config).stop(process, timeout: timeout, log: { log($0) })
            try store.setProcess(vmid: vmid, process: nil, lastExit: "stopped")
            log("VM \(vmid) stopped")
            unplumb(vmid, config: record.config, log: { log($0) })
        }
    }

    func shutdown(_ vmid: Int, timeout: Duration, forceStop: Bool, log: TaskLog) async throws {
        try await queue.run(vmid) { [self] in
            let record = try record(vmid)
            guard let process = record.process, process.isAlive else {
                try store.setProcess(vmid: vmid, process: nil, lastExit: record.lastExit)
                log("VM \(vmid) is not running")
                return
            }
            let engine = try engine(for: record.config)
            log("asking the guest to power off")
            if try await engine.shutdown(process, timeout: timeout, log: { log($0) }) {
                try store.setProcess(vmid: vmid, process: nil, lastExit: "shutdown")
                unplumb(vmid, config: record.config, log: { log($0) })
                return
            }
            guard forceStop else { throw EngineError("VM quit/powerdown failed - got timeout") }
            log("WARN: the guest did not power off in time: stopping it")
            try await engine.stop(process, timeout: .seconds(10), log: { log($0) })
            try store.setProcess(vmid: vmid, process: nil, lastExit: "stopped")
            unplumb(vmid, config: record.config, log: { log($0) })
        }
    }

    func pause(_ vmid: Int, resume: Bool, log: TaskLog) async throws {
        try await queue.run(vmid) { [self] in
            let record = try record(vmid)
            guard let process = record.process, process.isAlive else { throw EngineError("VM \(vmid) not running") }
            let engine = try engine(for: record.config)
            if resume { try await engine.resume(process) } else { try await engine.pause(process) }
            log(resume ? "VM \(vmid) resumed" : "VM \(vmid) paused")
        }
    }

    /// Deletes the VM and the volumes its config references that it owns (Proxmox's qm destroy);
    /// `unreferenced` also removes every other `vm-VMID-*` image in the pools (`destroy-unreferenced-disks=1`).
    func destroy(_ vmid: Int, unreferenced: Bool, log: TaskLog) async throws {
        try await queue.run(vmid) { [self] in
            let record = try record(vmid)
            if let process = record.process, process.isAlive { throw EngineError("VM \(vmid) is running - destroy failed") }
            unplumb(vmid, config: record.config, log: { log($0) })
            var volumes = storage.ownedVolumes(vmid: vmid, config: record.config)
            if unreferenced {
                for pool in storage.pools.values.sorted(by: { $0.id < $1.id }) {
                    volumes += pool.images(of: vmid).filter { !volumes.contains($0) }
                }
            }
            for volume in volumes {
                do {
                    try storage.pool(volume.storage).remove(volume)
                    log("removed volume '\(volume)'")
                } catch {
                    log("WARN: cannot remove volume '\(volume)': \(error)")
                }
            }
            try store.deleteVM(vmid: vmid)
            try? FileManager.default.removeItem(atPath: "\(runDirectory)/\(vmid)")
            log("destroyed VM \(vmid)")
        }
    }

    /// One pass over the VMs the store believes are running: reaps our exited children and records
    /// VMs whose process is gone (exited on its own, or killed while vireod was down).
    func reconcile() async {
        guard let records = try? store.vms() else { return }
        for record in records {
            guard let process = record.process else { continue }
            var code = ProcessControl.reap(process.pid)
            guard code != nil || !process.isAlive else { continue }
            // It may have ended between waitpid and the liveness check: a zombie now, so its exit
            // code is there to collect (a VM that is not our child has none: nil again).
            if code == nil { code = ProcessControl.reap(process.pid) }
            _ = try? await queue.run(record.vmid) { [self, code] in
                // Re-check under the VM's queue: a stop or start may have changed the record meanwhile.
                guard let current = try store.vm(record.vmid), current.process == process, !process.isAlive else { return }
                let how = code.map { "exited with code \($0)" } ?? "exited"
                logger.notice("VM \(record.vmid) (pid \(process.pid)) \(how)")
                try store.setProcess(vmid: record.vmid, process: nil, lastExit: how)
                let logger = logger
                unplumb(record.vmid, config: current.config, log: { logger.notice("VM \(record.vmid): \($0)") })
            }
        }
    }

    /// Logs which running VMs were re-adopted at startup.
    func adopt() async {
        for record in (try? store.vms()) ?? [] {
            guard let process = record.process else { continue }
            if process.isAlive { logger.notice("re-adopted VM \(record.vmid) (pid \(process.pid))") }
        }
        await reconcile()
    }

    /// Polls forever (a VM may not be our child, so waitpid cannot tell us when it ends).
    func monitor() async {
        while !Task.isCancelled {
            await reconcile()
            try? await Task.sleep(for: .milliseconds(500))
        }
    }
}
