import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// A real vireod on 127.0.0.1 (any free port) with its own data directory, and a small API client.
final class DaemonHarness: @unchecked Sendable {
    // SAFETY (@unchecked): one test drives one harness.
    static let password = "test-password-1"
    let dataDirectory: String
    private(set) var process: Process?
    private(set) var base = ""
    var ticket: String?
    var csrf: String?
    var token: String?

    /// The directory holding this test binary, where SwiftPM also puts vireod and vireo-vmm.
    static var productsDirectory: String {
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return URL(fileURLWithPath: me).deletingLastPathComponent().path
    }

    static var vireo: String { productsDirectory + "/vireo" }

    static var vireod: String {
        ProcessInfo.processInfo.environment["VIREOD"] ?? productsDirectory + "/vireod"
    }

    /// HTTPS (the default of vireod) or plain HTTP (`--no-tls`): this harness's own requests go
    /// through URLSession, which cannot trust a self-signed certificate, so only tests that talk to
    /// vireod through `vireo`, proxmoxer and other real clients use TLS.
    let tls: Bool
    private(set) var hostPort = ""
    /// More vireod options (overcommit ratios, --config …).
    var extraArguments: [String] = []

    init(tls: Bool = false) throws {
        self.tls = tls
        dataDirectory = "/tmp/vireod-test-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
    }

    /// Starts vireod and waits (bounded) until it has written the address it listens on.
    func start() async throws {
        let addressFile = dataDirectory + "/vireod.addr"
        try? FileManager.default.removeItem(atPath: addressFile)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.vireod)
        process.arguments = ["--data-dir", dataDirectory, "--listen", "127.0.0.1:0", "--node", "testnode"] + (tls ? [] : ["--no-tls"]) + extraArguments
        var environment = ProcessInfo.processInfo.environment
        environment["VIREO_ROOT_PASSWORD"] = Self.password
        environment["VIREO_PASSWORD_ROUNDS"] = "1000"  // PBKDF2 at 100k rounds takes seconds in a debug build
        process.environment = environment
        let log = FileHandle(forWritingAtPath: dataDirectory + "/vireod.log") ?? {
            _ = FileManager.default.createFile(atPath: dataDirectory + "/vireod.log", contents: nil)
            return FileHandle(forWritingAtPath: dataDirectory + "/vireod.log")!
        }()
        log.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        try await waitUntil("vireod writes \(addressFile)", timeout: 60) {
            FileManager.default.fileExists(atPath: addressFile) || !process.isRunning
        }
        guard process.isRunning, let text = try? String(contentsOfFile: addressFile, encoding: .utf8) else {
            throw HarnessError("vireod did not start: \(daemonLog())")
        }
        hostPort = text.trimmingCharacters(in: .whitespacesAndNewlines)
        base = (tls ? "https://" : "http://") + hostPort + "/api2/json"
    }


    /// A GET outside /api2/json (e.g. /metrics) with the current credentials: status and body text.
    func rawGet(_ path: String) async throws -> (status: Int, text: String) {
        var request = URLRequest(url: URL(string: base.replacingOccurrences(of: "/api2/json", with: "") + path)!)
        request.httpShouldHandleCookies = false
        if let token { request.setValue("PVEAPIToken=\(token)", forHTTPHeaderField: "Authorization") }
        else if let ticket { request.setValue("PVEAuthCookie=\(ticket)", forHTTPHeaderField: "Cookie") }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    /// Config for a VM this host can really start: vireo-vmm with a spinning 2-byte guest where
    /// /dev/kvm works, else QEMU (TCG, no disks: SeaBIOS idles); nil when neither can run.
    func startableVM() -> [String: String]? {
        if kvmUsable { return ["engine": "vireo", "raw": spinGuest(), "memory": "16"] }
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/qemu-system-x86_64") { return ["engine": "qemu", "memory": "32"] }
        return nil
    }

    func daemonLog() -> String { (try? String(contentsOfFile: dataDirectory + "/vireod.log", encoding: .utf8)) ?? "" }

    /// SIGKILL, then wait (bounded) until the process is gone or a zombie. Not `waitUntilExit()`:
    /// Foundation may never observe the exit from a Swift-concurrency thread.
    func kill9() async throws {
        guard let process else { return }
        let pid = process.processIdentifier
        kill(pid, SIGKILL)
        try await waitUntil("vireod (pid \(pid)) dies", timeout: 60) { !processAlive(Int(pid)) }
        self.process = nil
    }

    /// SIGTERM (a graceful stop), then wait (bounded) until the process is gone; what it started keeps running.
    func terminate() async throws {
        guard let process else { return }
        let pid = process.processIdentifier
        kill(pid, SIGTERM)
        try await waitUntil("vireod (pid \(pid)) stops on SIGTERM", timeout: 30) { !processAlive(Int(pid)) }
        self.process = nil
    }

    /// Stops vireod, kills the VMs it left running (any process whose command line names this
    /// data directory), and removes the data directory. Synchronous, so `defer` can call it.
    func shutdown() {
        if let process {
            let pid = process.processIdentifier
            kill(pid, SIGTERM)
            let deadline = Date().addingTimeInterval(10)
            while processAlive(Int(pid)), Date() < deadline { usleep(20_000) }
            if processAlive(Int(pid)) { kill(pid, SIGKILL) }
        }
        process = nil
        let me = getpid()
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
            guard let pid = Int32(entry), pid != me,
                  let cmdline = FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") else { continue }
            if String(decoding: cmdline, as: UTF8.self).contains(dataDirectory + "/") { kill(pid, SIGKILL) }
        }
        try? FileManager.default.removeItem(atPath: dataDirectory)
    }

    struct Reply {
        var status: Int
        var body: [String: Any]
        var data: Any? { body["data"] is NSNull ? nil : body["data"] }
        var errors: [String: String] { body["errors"] as? [String: String] ?? [:] }
    }

    /// One API call: form-encoded body for POST/PUT, query for GET/DELETE; ticket cookie + CSRF or token.
    func request(_ method: String, _ path: String, _ params: [String: String] = [:], csrf sendCSRF: Bool = true,
                 rawBody: Data? = nil) async throws -> Reply {
        let encoded = params.sorted { $0.key < $1.key }.map { "\(Self.escape($0.key))=\(Self.escape($0.value))" }.joined(separator: "&")
        let hasBody = method == "POST" || method == "PUT"
        var url = base + path
        if !hasBody, !encoded.isEmpty { url += "?" + encoded }
        var request = URLRequest(url: URL(string: url)!)
        request.httpMethod = method
        request.httpShouldHandleCookies = false
        request.timeoutInterval = 30
        if hasBody {
            request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
            request.httpBody = rawBody ?? Data(encoded.utf8)
        }
        if let token {
            request.setValue("PVEAPIToken=\(token)", forHTTPHeaderField: "Authorization")
        } else if let ticket {
            request.setValue("PVEAuthCookie=\(ticket)", forHTTPHeaderField: "Cookie")
            if sendCSRF, method != "GET", let csrf { request.setValue(csrf, forHTTPHeaderField: "CSRFPreventionToken") }
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let body = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
        return Reply(status: status, body: body)
    }

    static func escape(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
    }

    func login() async throws {
        let reply = try await request("POST", "/access/ticket", ["username": "root@pam", "password": Self.password])
        guard reply.status == 200, let data = reply.data as? [String: Any] else { throw HarnessError("login failed: \(reply.status) \(reply.body)") }
        ticket = data["ticket"] as? String
        csrf = data["CSRFPreventionToken"] as? String
    }

    /// Polls the task until it stops (bounded) and returns its status object.
    func waitTask(_ upid: Any?, timeout: Double = 60) async throws -> [String: Any] {
        guard let upid = upid as? String else { throw HarnessError("not a UPID: \(String(describing: upid))") }
        var last: [String: Any] = [:]
        try await waitUntil("task \(upid) stops", timeout: timeout) {
            last = (try? await self.request("GET", "/nodes/testnode/tasks/\(upid)/status").data as? [String: Any]) ?? [:]
            return last["status"] as? String == "stopped"
        }
        return last
    }

    func taskLog(_ upid: Any?) async throws -> [String] {
        let reply = try await request("GET", "/nodes/testnode/tasks/\(upid as? String ?? "")/log", ["start": "0", "limit": "500"])
        return (reply.data as? [[String: Any]] ?? []).compactMap { $0["t"] as? String }
    }

    func vmStatus(_ vmid: Int) async throws -> [String: Any] {
        try await request("GET", "/nodes/testnode/qemu/\(vmid)/status/current").data as? [String: Any] ?? [:]
    }

    /// A 2-byte real-mode guest that spins forever (`jmp $`), for vireo-vmm's --raw.
    func spinGuest() -> String {
        let path = dataDirectory + "/spin.bin"
        _ = FileManager.default.createFile(atPath: path, contents: Data([0xEB, 0xFE]))
        return path
    }
}

/// Runs a program to completion and returns its exit status and output (stdout and stderr together).
@discardableResult
func runProgram(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, output)
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Polls `condition` every 50 ms until it holds; throws after `timeout` seconds.
/// Polls `condition` every 50 ms for up to `timeout` seconds. The condition is asked once more after the
/// deadline: a test task that was not scheduled for a while (a loaded 2-core CI host, where Swift's
/// cooperative pool has two threads) must not report a time-out for something that has long happened.
func waitUntil(_ what: String, timeout: Double, _ condition: () async throws -> Bool) async throws {
    let deadline = Date().addingTimeInterval(timeout)
    while true {
        if try await condition() { return }
        if Date() >= deadline { break }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw HarnessError("timed out after \(timeout) s waiting until \(what)")
}

func processAlive(_ pid: Int) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Whether this host can run vireo-vmm guests (/dev/kvm) — the vireo-engine tests need it.
var kvmUsable: Bool { FileManager.default.isWritableFile(atPath: "/dev/kvm") }
