import Foundation
import Logging
import VireoAPI
import VireoSystem

/// Appends lines to a task's log.
struct TaskLog: Sendable {
    let store: any Store
    let upid: String
    let warnings: WarningCounter

    func callAsFunction(_ line: String) {
        if line.hasPrefix("WARN") { warnings.increment() }
        try? store.appendTaskLog(upid: upid, line: line)
    }
}

final class WarningCounter: @unchecked Sendable {
    // SAFETY (@unchecked): every access holds `lock`.
    private let lock = NSLock()
    private var count = 0
    func increment() { lock.withLock { count += 1 } }
    var value: Int { lock.withLock { count } }
}

/// Long operations run as tasks: the caller gets a UPID at once, the work runs in the background
/// and its log ends with `TASK OK`, `TASK WARNINGS: n` or `TASK ERROR: …`.
final class TaskManager: Sendable {
    let store: any Store
    let node: String
    let logger: Logger
    let pid: Int
    let pstart: UInt64

    init(store: any Store, node: String, logger: Logger) {
        self.store = store
        self.node = node
        self.logger = logger
        pid = Int(getpid())
        pstart = ProcessControl.startTime(of: getpid()) ?? 0
    }

    /// Creates the task record and starts `work`; returns the UPID.
    func start(type: String, id: String, user: String, _ work: @escaping @Sendable (TaskLog) async throws -> Void) throws -> String {
        var startTime = Int(Date().timeIntervalSince1970)
        var upid = ""
        // UPIDs of the same type, id and second would collide: take the next free second.
        for attempt in 0..<64 {
            upid = UPID(node: node, pid: pid, pstart: pstart, startTime: startTime, type: type, id: id, user: user).description
            do {
                try store.createTask(TaskRecord(upid: upid, node: node, type: type, id: id, user: user, startTime: startTime))
                break
            } catch {
                if attempt == 63 { throw error }
                startTime += 1
            }
        }
        let log = TaskLog(store: store, upid: upid, warnings: WarningCounter())
        let taskID = upid
        let store = self.store, logger = self.logger
        Task.detached {
            let status: String
            do {
                try await work(log)
                let warnings = log.warnings.value
                status = warnings > 0 ? "WARNINGS: \(warnings)" : "OK"
                log(warnings > 0 ? "TASK WARNINGS: \(warnings)" : "TASK OK")
            } catch {
                let message = "\(error)".replacingOccurrences(of: "\n", with: " ")
                status = message
                log("TASK ERROR: \(message)")
                logger.notice("task \(taskID) failed: \(message)")
            }
            try? store.finishTask(upid: taskID, exitStatus: status, endTime: Int(Date().timeIntervalSince1970))
        }
        return upid
    }
}

/// Serialises operations per VM in arrival order (a queue, not a lock with a timeout).
actor VMQueue {
    private var tails: [Int: Task<Void, Never>] = [:]

    func run<T: Sendable>(_ vmid: Int, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let previous = tails[vmid]
        let task = Task<T, Error> {
            await previous?.value
            return try await body()
        }
        tails[vmid] = Task { _ = try? await task.value }
        return try await task.value
    }
}
