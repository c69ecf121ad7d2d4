import Foundation
import Testing

/// Host tier: `vireo-vmm` as a process — its documented exit codes, SIGTERM handling and control socket.
@Suite(.enabled(if: HostKVM.available, "needs /dev/kvm"))
struct VMMProcessTests {
    /// The `vireo-vmm` binary: `$VIREO_VMM`, else the one built next to this test bundle.
    static var binary: String {
        if let path = ProcessInfo.processInfo.environment["VIREO_VMM"] { return path }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [bundle, bundle.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("vireo-vmm").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return "vireo-vmm"
    }

    struct Run {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    func vmm(_ arguments: [String]) throws -> Run {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = arguments
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Run(status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self), stderr: String(decoding: stderr, as: UTF8.self))
    }

    func guestFile(_ build: (inout TinyGuest) -> Void, mode: TinyGuest.Mode = .real16) throws -> String {
        var guest = TinyGuest(mode)
        build(&guest)
        return try writeTemporary(guest.bytes)
    }

    @Test func powerOffExitsZeroWithTheConsoleOnStdout() throws {
        let file = try guestFile { $0.print("bye\n"); $0.powerOff() }
        let run = try vmm(["--raw", file, "--raw-mode", "real", "--memory", "16M"])
        #expect(run.status == 0)
        #expect(run.stdout == "bye\n")
    }

    @Test func rebootExitsTwo() throws {
        let file = try guestFile { $0.resetThroughKeyboardController() }
        #expect(try vmm(["--raw", file, "--raw-mode", "real", "--memory", "16M"]).status == 2)
    }

    @Test func tripleFaultExitsThree() throws {
        let file = try guestFile({ $0.ud2() }, mode: .long64)
        #expect(try vmm(["--raw", file, "--raw-mode", "long", "--memory", "16M"]).status == 3)
    }

    @Test func badArgumentsExit64WithAMessage() throws {
        let run = try vmm(["--cpus", "0", "--raw", "/nonexistent"])
        #expect(run.status == 64)
        #expect(run.stderr.contains("--cpus must be between 1 and"))
        let nothing = try vmm([])
        #expect(nothing.status == 64)
        #expect(nothing.stderr.contains("nothing to boot"))
    }

    @Test func unreadableKernelIsAVMMFailure() throws {
        let run = try vmm(["--kernel", "/nonexistent/vmlinuz", "--memory", "64M"])
        #expect(run.status == 1)
        #expect(run.stderr.contains("cannot read kernel /nonexistent/vmlinuz"))
    }

    @Test func printStatsReportsKVMCounters() throws {
        let file = try guestFile { $0.powerOff() }
        let run = try vmm(["--raw", file, "--raw-mode", "real", "--memory", "16M", "--print-stats"])
        #expect(run.status == 0)
        #expect(run.stderr.contains("vireo-vmm: stat vcpu0.exits "))
    }

    /// SIGTERM stops the VM cleanly (exit 4) while the guest spins; the control socket answers meanwhile.
    @Test func sigtermStopsARunningVMAndTheControlSocketWorks() throws {
        let file = try guestFile { guest in
            guest.print("ready\n")
            guest.appendRaw([0xEB, 0xFE])  // jmp $
        }
        let directory = NSTemporaryDirectory() + "vireo-ctl-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let control = directory + "/control.sock", console = directory + "/console.log"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        // A balloon polled every second: no driver ever offers statistics, and the poller must not delay the stop.
        process.arguments = ["--raw", file, "--raw-mode", "real", "--memory", "16M", "--serial", "file:" + console, "--control", "unix:" + control,
                             "--balloon", "0,stats=1"]
        try process.run()
        defer { if process.isRunning { process.terminate() } }

        try awaitCondition { (try? String(contentsOfFile: console, encoding: .utf8))?.contains("ready") == true }
        #expect(try controlCommand(control, "status").contains(#""state":"running""#))
        #expect(try controlCommand(control, "pause").contains(#""state":"paused""#))
        #expect(try controlCommand(control, "status").contains(#""state":"paused","cpus":1,"memory":16777216,"reason":"pause""#))
        #expect(try controlCommand(control, "resume").contains(#""state":"running""#))
        #expect(!(try controlCommand(control, "status").contains("reason")))
        #expect(try controlCommand(control, "events") == #"{"return":{}}"#)
        #expect(try controlCommand(control, "balloon-stats") == #"{"return":{"fresh":false,"generation":0,"stats":{}}}"#)
        #expect(try controlCommand(control, "balloon-stats 0").contains(#""generation":0"#))
        #expect(try controlCommand(control, "balloon-stats soon").contains(#""error""#))
        #expect(try controlCommand(control, "bogus").contains(#""error""#))
        // No driver ever touched the balloon: status 0, its queues not ready.
        let virtio = try controlCommand(control, "virtio")
        #expect(virtio.hasPrefix(#"{"return":[{"pci":"00:0"#))
        #expect(virtio.contains(#""device":"balloon","status":0,"driver_ok":false,"needs_reset":false,"failure":null"#))
        #expect(virtio.contains(#""ready":false"#))
        kill(process.processIdentifier, SIGTERM)
        process.waitUntilExit()
        #expect(process.terminationStatus == 4)
    }

    /// `link N [up|down]` sets and reports a NIC's link (virtio-net STATUS); a missing NIC is an error.
    @Test(.enabled(if: access("/dev/net/tun", R_OK | W_OK) == 0 && geteuid() == 0, "needs /dev/net/tun and root"))
    func linkCommandSetsTheNICsLink() throws {
        let file = try guestFile { $0.appendRaw([0xEB, 0xFE]) }
        let control = NSTemporaryDirectory() + "vireo-ctl-\(UUID().uuidString.prefix(8)).sock"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["--raw", file, "--raw-mode", "real", "--memory", "16M", "--serial", "none", "--control", "unix:" + control,
                             "--net", "tap=vtl\(getpid() % 100_000)"]
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        try awaitCondition { FileManager.default.fileExists(atPath: control) }
        #expect(try controlCommand(control, "link 0") == #"{"return":{"index":0,"link":"up"}}"#)
        #expect(try controlCommand(control, "link 0 down") == #"{"return":{"index":0,"link":"down"}}"#)
        #expect(try controlCommand(control, "link 0") == #"{"return":{"index":0,"link":"down"}}"#)
        #expect(try controlCommand(control, "link 0 up") == #"{"return":{"index":0,"link":"up"}}"#)
        #expect(try controlCommand(control, "link 1 down").contains("no NIC 1; this VM has 1"))
        #expect(try controlCommand(control, "link 0 sideways").contains("usage"))
        #expect(try controlCommand(control, "link").contains("usage"))
        _ = try controlCommand(control, "stop")
        process.waitUntilExit()
        #expect(process.terminationStatus == 4)
    }

    /// `stats` answers while a vCPU sleeps in the kernel (`cli; hlt` with the in-kernel LAPIC: KVM_RUN
    /// never returns): the statistics file was opened when the vCPU was created, and a vCPU ioctl
    /// now would wait for the vCPU's mutex for as long as the guest idles.
    @Test func statsAnswerWhileTheGuestIdlesInTheKernel() throws {
        let file = try guestFile { guest in
            guest.print("idle\n")
            guest.appendRaw([0xFA, 0xF4, 0xEB, 0xFD])  // cli; hlt; jmp back to hlt
        }
        let directory = NSTemporaryDirectory() + "vireo-ctl-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let control = directory + "/control.sock", console = directory + "/console.log"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["--raw", file, "--raw-mode", "real", "--memory", "16M", "--serial", "file:" + console,
                             "--control", "unix:" + control]
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        try awaitCondition { (try? String(contentsOfFile: console, encoding: .utf8))?.contains("idle") == true }
        let stats = try controlCommand(control, "stats")
        #expect(stats.contains(#""vcpu0.exits":"#), "\(stats)")
        #expect(stats.contains(#""vcpu0.halt_exits":"#))
        _ = try controlCommand(control, "stop")
        process.waitUntilExit()
        #expect(process.terminationStatus == 4)
    }

    @Test func stopOnTheControlSocketEndsTheVM() throws {
        let file = try guestFile { $0.appendRaw([0xEB, 0xFE]) }
        let control = NSTemporaryDirectory() + "vireo-ctl-\(UUID().uuidString.prefix(8)).sock"
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = ["--raw", file, "--raw-mode", "real", "--memory", "16M", "--serial", "none", "--control", "unix:" + control]
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        try awaitCondition { FileManager.default.fileExists(atPath: control) }
        _ = try controlCommand(control, "stop")
        process.waitUntilExit()
        #expect(process.terminationStatus == 4)
    }
}

/// Sends one control-socket command and returns the reply line.
func controlCommand(_ path: String, _ command: String) throws -> String {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw POSIXError(.EIO) }
    defer { close(fd) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        for (index, byte) in path.utf8.enumerated() where index < raw.count - 1 { raw[index] = byte }
    }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    // A VMM that never answers fails the test instead of hanging it.
    var timeout = timeval(tv_sec: 30, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    let line = Array((command + "\n").utf8)
    _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    var reply: [UInt8] = []
    var byte: UInt8 = 0
    while read(fd, &byte, 1) == 1, byte != 0x0A { reply.append(byte) }
    return String(decoding: reply, as: UTF8.self)
}

/// Waits for `condition` by polling the file system the VMM writes to; fails after a generous bound.
func awaitCondition(_ condition: () -> Bool) throws {
    for _ in 0..<2000 {
        if condition() { return }
        usleep(10_000)
    }
    Issue.record("condition not met within 20 s")
    throw POSIXError(.ETIMEDOUT)
}
