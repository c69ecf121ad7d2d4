import ArgumentParser
import Foundation
import VireoAPI

/// Where vireod is and how to authenticate (shared by `vireo api` and `vireo vm`).
struct APIConnectionOptions: ParsableArguments {
    @Option(help: "API base URL (default: $VIREO_URL, else https://127.0.0.1:8006).") var url: String?
    @Option(help: "Trust only the server certificate with this SHA-256 fingerprint (AA:BB:…; default: $VIREO_FINGERPRINT).")
    var fingerprint: String?
    @Flag(help: "Accept any server certificate (encrypted, not authenticated; or $VIREO_INSECURE=1).") var insecure = false
    @Option(help: "API token user@realm!tokenid=SECRET (default: $VIREO_TOKEN).") var token: String?
    @Option(help: "User for a ticket login (default: $VIREO_USER, else root@pam).") var user: String?
    @Option(help: "Password for a ticket login (default: $VIREO_PASSWORD).") var password: String?
    @Option(help: "Output format: text or json.") var output: OutputFormat = .text

    enum OutputFormat: String, ExpressibleByArgument { case text, json }

    func client() throws -> APIClient {
        let environment = ProcessInfo.processInfo.environment
        var base = url ?? environment["VIREO_URL"] ?? "https://127.0.0.1:8006"
        while base.hasSuffix("/") { base.removeLast() }
        if !base.hasSuffix("/api2/json") { base += "/api2/json" }
        var trust = ServerTrust.system
        if let text = fingerprint ?? environment["VIREO_FINGERPRINT"] {
            guard let normalized = ServerTrust.normalizedFingerprint(text) else {
                throw ValidationError("--fingerprint must be 32 hex bytes (AA:BB:…), got '\(text)'")
            }
            trust = .fingerprint(normalized)
        } else if insecure || environment["VIREO_INSECURE"] == "1" {
            trust = .insecure
        }
        let client = APIClient(base: base, trust: trust)
        if let token = token ?? environment["VIREO_TOKEN"] {
            client.token = token
        } else if let password = password ?? environment["VIREO_PASSWORD"] {
            try client.login(user: user ?? environment["VIREO_USER"] ?? "root@pam", password: password)
        } else {
            throw ValidationError("no credentials: pass --token or --password (or set VIREO_TOKEN / VIREO_PASSWORD)")
        }
        return client
    }
}

/// A non-2xx reply, described with what to do about it.
struct APIClientError: Error, CustomStringConvertible {
    var status: Int
    var message: String
    var errors: [String: String]
    var description: String {
        let details = errors.keys.sorted().map { "\n  \($0): \(errors[$0]!)" }.joined()
        let text = "\(status) \(message.trimmingCharacters(in: .whitespacesAndNewlines))\(details)"
        return hint.map { text + "\n" + $0 } ?? text
    }

    /// What the user can do next, for the statuses that have an obvious answer.
    var hint: String? {
        switch status {
        case 401:
            return "hint: log in with --password (or VIREO_PASSWORD; user --user or VIREO_USER, default root@pam), "
                + "or use an API token: --token user@realm!tokenid=SECRET (or VIREO_TOKEN)"
        case 403:
            return "hint: this user lacks the privilege named above; an administrator can grant a role holding it "
                + "(vireo api put /access/acl path=PATH roles=ROLE users=USER)"
        default:
            return nil
        }
    }
}

/// The API could not be reached at all.
struct ConnectionError: Error, CustomStringConvertible {
    var base: String
    var underlying: String
    var description: String {
        var text = "cannot reach vireod at \(base): \(underlying)\n"
        if underlying.contains("certificate") || underlying.contains("SSL") || underlying.contains("TLS") {
            text += "hint: pin the node certificate with --fingerprint AA:BB:… (or VIREO_FINGERPRINT; vireod logs it at start, or"
                + " openssl x509 -noout -fingerprint -sha256 -in /var/lib/vireo/pki/vireod.pem),"
                + " or pass --insecure"
        } else {
            text += "hint: is vireod running on that host (systemctl status vireod)? Point --url (or VIREO_URL) at it"
        }
        return text
    }
}

/// A small synchronous client for vireod's /api2/json (form-encoded writes, `{"data": …}` replies).
final class APIClient: @unchecked Sendable {
    // SAFETY (@unchecked): used from one thread (the CLI's).
    let base: String
    let trust: ServerTrust
    var token: String?
    var ticket: String?
    var csrf: String?

    init(base: String, trust: ServerTrust) { self.base = base; self.trust = trust }

    func login(user: String, password: String) throws {
        let data = try call("POST", "/access/ticket", ["username": user, "password": password]) as? [String: Any]
        ticket = data?["ticket"] as? String
        csrf = data?["CSRFPreventionToken"] as? String
    }

    static func escape(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    /// Performs one call and returns `data` (nil for `data: null`); non-2xx throws ``APIClientError``.
    func call(_ method: String, _ path: String, _ params: [String: String] = [:]) throws -> Any? {
        let form = params.sorted { $0.key < $1.key }.map { "\(Self.escape($0.key))=\(Self.escape($0.value))" }.joined(separator: "&")
        let hasBody = method == "POST" || method == "PUT"
        var text = base + (path.hasPrefix("/") ? path : "/" + path)
        if !hasBody, !form.isEmpty { text += "?" + form }
        guard let url = URL(string: text) else { throw ValidationError("bad path \(path)") }
        var headers: [(String, String)] = []
        if hasBody { headers.append(("Content-Type", "application/x-www-form-urlencoded")) }
        if let token {
            headers.append(("Authorization", "PVEAPIToken=\(token)"))
        } else if let ticket {
            headers.append(("Cookie", "PVEAuthCookie=\(ticket)"))
            if method != "GET", let csrf { headers.append(("CSRFPreventionToken", csrf)) }
        }
        let reply: HTTPReply
        do {
            reply = try HTTPTransport.send(method: method, url: url, headers: headers, body: hasBody ? Data(form.utf8) : nil, trust: trust)
        } catch {
            throw ConnectionError(base: base, underlying: "\(method) \(path): \(error)")
        }
        let status = reply.status, data: Data? = reply.body
        let body = data.flatMap { try? JSONSerialization.jsonObject(with: $0, options: .fragmentsAllowed) } as? [String: Any] ?? [:]
        guard (200..<300).contains(status) else {
            throw APIClientError(status: status, message: body["message"] as? String ?? "HTTP status \(status)",
                                 errors: body["errors"] as? [String: String] ?? [:])
        }
        return body["data"] is NSNull ? nil : body["data"]
    }

    /// The node to address: the first (only) one vireod reports.
    func defaultNode() throws -> String {
        guard let nodes = try call("GET", "/nodes") as? [[String: Any]], let node = nodes.first?["node"] as? String else {
            throw CLIError("vireod reported no nodes")
        }
        return node
    }

    /// Polls a task until it stops, handing each new log line to `progress` as it arrives (like
    /// `qm`); throws with the log's tail unless it ended OK or with warnings.
    func wait(_ node: String, _ upid: String, timeout: Double = 600, progress: ((String) -> Void)? = nil) throws -> [String: Any] {
        let deadline = Date().addingTimeInterval(timeout)
        var shown = 0
        func showNewLines() throws {
            guard let progress else { return }
            let lines = try call("GET", "/nodes/\(node)/tasks/\(upid)/log", ["start": String(shown), "limit": "1000"]) as? [[String: Any]] ?? []
            for line in lines { progress(line["t"] as? String ?? "") }
            shown += lines.count
        }
        while Date() < deadline {
            let status = try call("GET", "/nodes/\(node)/tasks/\(upid)/status") as? [String: Any] ?? [:]
            try showNewLines()
            if status["status"] as? String == "stopped" {
                let exit = status["exitstatus"] as? String ?? "unexpected status"
                if exit == "OK" || exit.hasPrefix("WARNINGS") { return status }
                if progress != nil { throw TaskFailure(upid: upid, exit: exit, log: []) }
                let log = try call("GET", "/nodes/\(node)/tasks/\(upid)/log", ["start": "0", "limit": "1000"]) as? [[String: Any]] ?? []
                throw TaskFailure(upid: upid, exit: exit, log: log.compactMap { $0["t"] as? String }.suffix(20))
            }
            Thread.sleep(forTimeInterval: 0.2)
        }
        throw CLIError("task \(upid) still running after \(Int(timeout)) s (follow it with `vireo task log \(upid)`)")
    }
}

/// A task that ended with an error: its exit status and (when not already shown) its log's tail.
struct TaskFailure: Error, CustomStringConvertible {
    var upid: String
    var exit: String
    var log: [String]
    var description: String {
        (["task failed: \(exit)"] + log + ["(full log: vireo task log \(upid))"]).joined(separator: "\n")
    }
}

/// Prints `data` as pretty JSON.
func printJSON(_ value: Any?) {
    guard let value else { print("null"); return }
    if let data = try? JSONSerialization.data(withJSONObject: value, options: [.prettyPrinted, .sortedKeys, .fragmentsAllowed, .withoutEscapingSlashes]) {
        print(String(decoding: data, as: UTF8.self))
    } else {
        print(value)
    }
}
