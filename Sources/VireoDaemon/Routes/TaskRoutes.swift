import Foundation
import Hummingbird
import VireoAPI

/// `/nodes/{node}/tasks`: the task list, each task's status and its log.
struct TaskRoutes {
    let services: Services

    var collection: RouteCollection<APIContext> {
        let routes = RouteCollection(context: APIContext.self)
        routes.get(":node/tasks") { _, context in try list(context) }
        routes.get(":node/tasks/:upid") { _, context in
            _ = try task(context)
            return envelope([["name": "log"], ["name": "status"]])
        }
        routes.get(":node/tasks/:upid/status") { _, context in try status(context) }
        routes.get(":node/tasks/:upid/log") { _, context in try log(context) }
        return routes
    }

    /// The task named in the path; a caller sees its own tasks, root@pam all of them.
    func task(_ context: APIContext) throws -> TaskRecord {
        _ = try services.checkNode(context)
        let raw = try context.parameters.require("upid")
        let text = raw.removingPercentEncoding ?? raw
        guard UPID(text) != nil else { throw APIError.parameters(["upid": "unable to parse worker upid '\(text)'"]) }
        guard let task = try services.store.task(text) else { throw APIError(500, "no such task") }
        let own = task.user == context.user || task.user == context.principal?.userid
        if !own { try context.require("Sys.Audit", on: "/nodes/\(services.node)") }
        return task
    }

    func statusObject(_ task: TaskRecord) -> [String: Any] {
        let upid = UPID(task.upid)
        var object: [String: Any] = [
            "upid": task.upid, "node": task.node, "pid": upid?.pid ?? 0, "pstart": upid?.pstart ?? 0,
            "starttime": task.startTime, "type": task.type, "id": task.id, "user": task.user,
            "status": task.exitStatus == nil ? "running" : "stopped",
        ]
        if let user = upid?.user, let bang = user.firstIndex(of: "!") {
            object["user"] = String(user[..<bang])
            object["tokenid"] = String(user[user.index(after: bang)...])
        }
        if let exit = task.exitStatus { object["exitstatus"] = exit }
        if let end = task.endTime { object["endtime"] = end }
        return object
    }

    func status(_ context: APIContext) throws -> Response {
        envelope(statusObject(try task(context)))
    }

    func log(_ context: APIContext) throws -> Response {
        let task = try task(context)
        let start = max(0, Int(context.params["start"] ?? "0") ?? 0)
        let limit = max(0, min(Int(context.params["limit"] ?? "50") ?? 50, 100_000))
        let (lines, total) = try services.store.taskLog(upid: task.upid, start: start, limit: limit)
        let data = lines.enumerated().map { ["n": start + $0.offset + 1, "t": $0.element] as [String: Any] }
        return jsonResponse(["data": data, "total": total])
    }

    func list(_ context: APIContext) throws -> Response {
        _ = try services.checkNode(context)
        let limit = max(1, min(Int(context.params["limit"] ?? "50") ?? 50, 10_000))
        let vmid = context.params["vmid"]
        let all = context.principal?.may("Sys.Audit", on: "/nodes/\(services.node)") == true
        let tasks = try services.store.tasks(limit: 10_000).filter { task in
            (all || task.user == context.user) && (vmid == nil || task.id == vmid)
        }
        return envelope(tasks.prefix(limit).map(statusObject))
    }
}
