import Foundation
import Testing

/// The `vireo` CLI (`vireo vm …`, `vireo task …`) against a real vireod running a tiny raw guest
/// on this host's /dev/kvm under the vireo engine.
@Suite(.serialized) struct CLITests {
    /// One `vireo` run: exit status, stdout and stderr apart (stdout carries the result, stderr progress and errors).
    struct Run {
        var status: Int32
        var stdout: String
        var stderr: String
        var json: Any? { try? JSONSerialization.jsonObject(with: Data(stdout.utf8), options: .fragmentsAllowed) }
    }

    static func vireo(_ arguments: [String], _ daemon: DaemonHarness, password: String = DaemonHarness.password) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: DaemonHarness.vireo)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(
            ["VIREO_URL": "http://\(daemon.hostPort)", "VIREO_PASSWORD": password]) { _, new in new }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // stderr is small (progress lines); read it after stdout.
        let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: stdout, stderr: stderr)
    }

    /// A real-mode guest that writes `text` to COM1 (port 0x3F8) and then spins.
    static func helloGuest(_ daemon: DaemonHarness, _ text: String) -> String {
        var bytes: [UInt8] = [0xBA, 0xF8, 0x03]  // mov dx, 0x3F8
        for byte in text.utf8 { bytes += [0xB0, byte, 0xEE] }  // mov al, byte; out dx, al
        bytes += [0xEB, 0xFE]  // jmp $
        let path = daemon.dataDirectory + "/hello.bin"
        _ = FileManager.default.createFile(atPath: path, contents: Data(bytes))
        return path
    }

    @Test(.enabled(if: kvmUsable, "needs /dev/kvm"))
    func vmLifecycleThroughTheCLI() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        func vireo(_ arguments: String...) throws -> Run { try Self.vireo(arguments, daemon) }

        let create = try vireo("vm", "create", "610", "name=cli", "memory=16", "engine=vireo",
                               "raw=\(Self.helloGuest(daemon, "hello from COM1\r\n")),mode=real")
        #expect(create.status == 0, "\(create.stderr)")
        #expect(create.stdout == "610\n")

        // set: changes, --delete, a bad value (the API's error, non-zero), a stale --digest.
        #expect(try vireo("vm", "set", "610", "name=renamed", "tags=a").status == 0)
        #expect(try vireo("vm", "set", "610", "--delete", "tags").status == 0)
        let config = try vireo("vm", "config", "610", "--output", "json").json as? [String: Any] ?? [:]
        #expect(config["name"] as? String == "renamed")
        #expect(config["tags"] == nil)
        let bad = try vireo("vm", "set", "610", "memory=lots")
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("memory"), "\(bad.stderr)")
        let stale = try vireo("vm", "set", "610", "name=x", "--digest", String(repeating: "0", count: 40))
        #expect(stale.status != 0, "\(stale.stdout)")

        let start = try vireo("vm", "start", "610")
        #expect(start.status == 0, "\(start.stderr)")
        #expect(start.stdout.hasPrefix("UPID:") && start.stdout.contains(" OK"), "\(start.stdout)")
        #expect(try vireo("vm", "status", "610").stdout == "status: running\n")
        let current = try vireo("vm", "status", "610", "--output", "json").json as? [String: Any] ?? [:]
        #expect(current["qmpstatus"] as? String == "running")
        #expect((current["vireo-serial"] as? String)?.hasSuffix("serial.sock") == true)

        #expect(try vireo("vm", "suspend", "610").status == 0)
        #expect(try vireo("vm", "status", "610").stdout == "status: paused\n")
        #expect(try vireo("vm", "resume", "610").status == 0)
        #expect(try vireo("vm", "status", "610").stdout == "status: running\n")

        // The serial console: what the guest printed on COM1 (the VMM replays recent output to a new client).
        try await Self.expectConsoleLine(daemon, vmid: 610, "hello from COM1")

        // task list: JSON is the API's data; the table has aligned columns; task log prints the lines.
        let tasks = try vireo("task", "list", "--vmid", "610", "--output", "json").json as? [[String: Any]] ?? []
        let types = Set(tasks.compactMap { $0["type"] as? String })
        #expect(types.isSuperset(of: ["qmcreate", "qmstart", "qmsuspend", "qmresume"]), "\(types)")
        #expect(tasks.allSatisfy { $0["id"] as? String == "610" })
        let table = try vireo("task", "list", "--vmid", "610", "--limit", "2")
        let rows = table.stdout.split(separator: "\n")
        #expect(rows.count == 3, "\(table.stdout)")
        #expect(rows.first?.hasPrefix("UPID") == true)
        let statusColumn = rows.first.flatMap { $0.range(of: "STATUS") }.map { rows[0].distance(from: rows[0].startIndex, to: $0.lowerBound) }
        #expect(rows.dropFirst().allSatisfy { row in statusColumn.map { row.count > $0 && row[row.index(row.startIndex, offsetBy: $0 - 1)] == " " } ?? false })
        let startTask = try #require(tasks.first { $0["type"] as? String == "qmstart" }?["upid"] as? String)
        let log = try vireo("task", "log", startTask)
        #expect(log.status == 0 && log.stdout.contains("TASK OK"), "\(log.stdout)")
        let logJSON = try vireo("task", "log", startTask, "--output", "json").json as? [[String: Any]] ?? []
        #expect(logJSON.first?["n"] as? Int == 1)

        // shutdown: the spinning guest ignores ACPI, so it fails with the task's error, or --force-stop stops it.
        let refused = try vireo("vm", "shutdown", "610", "--timeout", "1")
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("task failed") && refused.stderr.contains("timeout"), "\(refused.stderr)")
        let forced = try vireo("vm", "shutdown", "610", "--timeout", "1", "--force-stop")
        #expect(forced.status == 0, "\(forced.stderr)")
        #expect(forced.stderr.contains("asking the guest to power off"), "progress: \(forced.stderr)")
        #expect(try vireo("vm", "status", "610").stdout == "status: stopped\n")
        let console = try vireo("vm", "console", "610")
        #expect(console.status != 0 && console.stderr.contains("vireo vm start 610"), "\(console.stderr)")

        let list = try vireo("vm", "list")
        #expect(list.stdout.split(separator: "\n").first?.hasPrefix("VMID") == true)
        #expect(list.stdout.contains("renamed"))
        #expect(try vireo("vm", "destroy", "610").status == 0)
        let after = try vireo("vm", "list", "--output", "json").json as? [[String: Any]]
        #expect(after?.isEmpty == true)
    }

    /// Runs `vireo vm console` with stdin a pipe, waits (bounded) for `line`, then closes stdin: the console ends.
    static func expectConsoleLine(_ daemon: DaemonHarness, vmid: Int, _ line: String) async throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: DaemonHarness.vireo)
        process.arguments = ["vm", "console", String(vmid)]
        process.environment = ProcessInfo.processInfo.environment.merging(
            ["VIREO_URL": "http://\(daemon.hostPort)", "VIREO_PASSWORD": DaemonHarness.password]) { _, new in new }
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = output
        let seen = Collected()
        output.fileHandleForReading.readabilityHandler = { handle in seen.append(handle.availableData) }
        try process.run()
        let pid = process.processIdentifier
        defer { if processAlive(Int(pid)) { kill(pid, SIGKILL) } }
        try await waitUntil("the console shows '\(line)'", timeout: 30) { seen.text.contains(line) || !processAlive(Int(pid)) }
        #expect(seen.text.contains(line), "\(seen.text)")
        try input.fileHandleForWriting.close()
        try await waitUntil("the console ends at stdin's end", timeout: 30) { !processAlive(Int(pid)) }
        output.fileHandleForReading.readabilityHandler = nil
    }

    @Test func errorsSayWhatToDo() async throws {
        let daemon = try DaemonHarness()
        try await daemon.start()
        defer { daemon.shutdown() }
        let wrong = try Self.vireo(["vm", "list"], daemon, password: "wrong")
        #expect(wrong.status != 0)
        #expect(wrong.stderr.contains("401") && wrong.stderr.contains("VIREO_PASSWORD"), "\(wrong.stderr)")
        let missing = try Self.vireo(["vm", "status", "999"], daemon)
        #expect(missing.status != 0 && !missing.stderr.isEmpty)
        let port = daemon.hostPort
        try await daemon.terminate()
        let refused = try Self.vireo(["vm", "list", "--url", "http://\(port)"], daemon)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("is vireod running") && refused.stderr.contains(port), "\(refused.stderr)")
    }
}

/// Bytes a readability handler collects from another thread.
private final class Collected: @unchecked Sendable {
    // SAFETY (@unchecked): `data` is only touched under `lock`.
    private let lock = NSLock()
    private var data = Data()
    func append(_ more: Data) { lock.withLock { data.append(more) } }
    var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
}
