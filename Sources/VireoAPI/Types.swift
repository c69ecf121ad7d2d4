/// The `/api2/json` envelope: every 2xx body is `{"data": …}`; errors add `message` and `errors`.
public struct Envelope<Payload: Decodable & Sendable>: Decodable, Sendable {
    public var data: Payload?
    public var message: String?
    public var errors: [String: String]?
}

/// `POST /access/ticket`.
public struct TicketResponse: Codable, Sendable {
    public var username: String
    public var ticket: String
    public var CSRFPreventionToken: String
    public init(username: String, ticket: String, CSRFPreventionToken: String) {
        self.username = username; self.ticket = ticket; self.CSRFPreventionToken = CSRFPreventionToken
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
public struct TaskStatus: Codable, Sendable {
    public var upid: String
    public var node: String
    public var pid: Int
    public var pstart: UInt64
    public var starttime: Int
    public var type: String
    public var id: String
    public var user: String
    /// `running` or `stopped`.
    public var status: String
    /// When stopped: `OK`, `WARNINGS: n`, the error text, or `unexpected status`.
    public var exitstatus: String?
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`.
public struct TaskLogLine: Codable, Sendable {
    public var n: Int
    public var t: String
}

/// `GET /nodes/{node}/qemu` entries and `…/status/current` (the fields clients read).
public struct VMStatus: Codable, Sendable {
    public var vmid: Int
    public var name: String?
    /// `running` or `stopped`.
    public var status: String
    public var qmpstatus: String?
    public var cpus: Int?
    public var maxmem: Int?
    public var mem: Int?
    public var uptime: Int?
    public var pid: Int?
}
