import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Boots lab hosts (L1 VMs under QEMU TCG with a virtual AMD SVM CPU), watches their serial consoles and
/// decides the scenario's outcome. QEMU always runs in its own process group and is always killed and reaped.
public struct LabRunner: Sendable {
    public let builder: ArtifactBuilder
    public var host: HostEnvironment { builder.host }

    public init(builder: ArtifactBuilder) { self.builder = builder }

    public struct Options: Sendable {
        /// Copy the /results disk contents here (for several hosts: `DIR/host<N>`).
        public var keepResults: String?
        /// Called for every console line, with the host index.
        public var console: (@Sendable (Int, String) -> Void)?
        /// Override the scenario's timeout (seconds).
        public var timeout: Int?
        /// Extra kernel command-line words for L1.
        public var extraL1Cmdline: String = ""

        public init(keepResults: String? = nil, timeout: Int? = nil, console: (@Sendable (Int, String) -> Void)? = nil) {
            self.keepResults = keepResults; self.timeout = timeout; self.console = console
        }
    }

    public struct Result: Sendable {
        public var scenario: String
        public var passed: Bool
        /// One line: why it passed or failed.
        public var reason: String
        /// The last console lines of the host that decided the outcome.
        public var consoleTail: [String]
        /// On a time-out: where the waiting host's CPUs were (``LabDiagnostics``).
        public var diagnostics: [String] = []
        /// Where the /results contents were extracted, if any.
        public var resultsDirectory: String?
        public var consoleLogs: [String]
        public var seconds: Double
        public var bootSeconds: Double
        /// The QEMU processes that were started (all reaped when `run` returns).
        public var qemuPIDs: [pid_t]
        /// A unique token on every QEMU command line of this run (`-name`), for `pgrep -f`.
        public var runToken: String
        public var buildSummary: String

        /// The scenario did not finish: the run hit its time limit, a bounded wait in `run.sh` gave up
        /// (`VIREO-LAB: FAIL timed out waiting for …`), or `vmm-run` stopped a VMM that overran its limit.
        /// Any other failure is the scenario's verdict, not a time-out.
        public var timedOut: Bool {
            !passed && (reason.contains("timed out") || consoleTail.contains { $0.contains("vmm-run:") && $0.contains("still running after") })
        }

        /// The reason followed by the console tail, as printed on failure.
        public var report: String {
            passed ? "PASS \(scenario): \(reason)"
                : "FAIL \(scenario): \(reason)\n--- last \(consoleTail.count) console lines ---\n" + consoleTail.joined(separator: "\n")
                    + diagnostics.map { "\n" + $0 }.joined()
        }
    }

    /// Runs the scenario to an outcome. Throws only for tooling errors (missing tools, unreadable scenario).
    public func run(_ scenario: Scenario, options: Options = Options()) throws -> Result {
        ChildProcess.installInterruptHandlers()
        let spec = scenario.spec
        let runToken = "vireo-lab-\(scenario.name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let runDirectory = host.cacheDirectory + "/runs/" + runToken
        Self.pruneRuns(in: host.cacheDirectory + "/runs", keeping: 30)
        try FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        let buildStart = Date()
        let images = try builder.build(ArtifactBuilder.Request(scenario: scenario), outputDirectory: runDirectory)
        builder.log(String(format: "images ready in %.1fs", Date().timeIntervalSince(buildStart)))
        defer {
            try? FileManager.default.removeItem(atPath: images.l1Initrd)
        }

        // One results disk per host.
        var disks: [String] = []
        for index in 0..<spec.hosts {
            let disk = runDirectory + "/results-\(index).img"
            try Shell.run("mkfs.ext4", ["-q", "-F", "-L", "results", disk, "\(spec.resultsDiskMiB)M"])
            disks.append(disk)
        }
        defer { for disk in disks { try? FileManager.default.removeItem(atPath: disk) } }

        let linkPort = Int.random(in: 20000...60000)
        var sessions: [HostSession] = []
        defer { for session in sessions { session.child.terminate() } }
        let start = Date()
        for index in 0..<spec.hosts {
            let arguments = qemuArguments(
                spec: spec, index: index, images: images, disk: disks[index], linkPort: linkPort,
                runToken: runToken, mode: .run, extraCmdline: options.extraL1Cmdline,
                monitorSocket: runDirectory + "/monitor-\(index).sock")
            let log = runDirectory + "/console-\(index).log"
            let child = try ChildProcess.spawn(host.qemu, arguments)
            builder.log("host \(index): qemu pid \(child.pid), console log \(log)")
            sessions.append(HostSession(
                index: index, child: child, matcher: ConsoleMatcher(spec: spec), logPath: log,
                monitorSocket: runDirectory + "/monitor-\(index).sock"))
        }

        let timeout = Double(options.timeout ?? spec.timeout)
        let outcome = monitor(sessions: &sessions, deadline: start.addingTimeInterval(timeout), timeout: timeout, console: options.console)
        let bootSeconds = Date().timeIntervalSince(start)
        if outcome.passed {
            // Let the hosts sync and power off, so the results disks are clean.
            _ = monitor(sessions: &sessions, deadline: Date().addingTimeInterval(min(60, max(5, timeout - bootSeconds))), timeout: 0, console: options.console, untilExit: true)
        }
        for session in sessions { session.child.terminate() }

        var resultsDirectory: String?
        let target = options.keepResults ?? (runDirectory + "/results")
        do {
            for (index, disk) in disks.enumerated() {
                let dir = spec.hosts == 1 ? target : target + "/host\(index)"
                try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try Shell.run("debugfs", ["-R", "rdump / \(dir)", disk])
                try? FileManager.default.removeItem(atPath: dir + "/lost+found")
            }
            resultsDirectory = target
        } catch {
            builder.log("could not extract results: \(error)")
        }

        return Result(
            scenario: scenario.name, passed: outcome.passed, reason: outcome.reason, consoleTail: outcome.tail,
            diagnostics: outcome.diagnostics,
            resultsDirectory: resultsDirectory, consoleLogs: sessions.map(\.logPath),
            seconds: Date().timeIntervalSince(buildStart), bootSeconds: bootSeconds,
            qemuPIDs: sessions.map(\.child.pid), runToken: runToken, buildSummary: images.summary)
    }

    /// Removes all but the newest `keeping` run folders (console logs and extracted results).
    static func pruneRuns(in directory: String, keeping: Int) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory), names.count > keeping else { return }
        let dated = names.map { name -> (String, Date) in
            let date = (try? fm.attributesOfItem(atPath: directory + "/" + name)[.modificationDate] as? Date) ?? .distantPast
            return (name, date ?? .distantPast)
        }.sorted { $0.1 > $1.1 }
        for (name, _) in dated.dropFirst(keeping) { try? fm.removeItem(atPath: directory + "/" + name) }
    }

    /// The QEMU command line of lab host `index`.
    public func qemuArguments(
        spec: ScenarioSpec, index: Int, images: ArtifactBuilder.Images, disk: String?, linkPort: Int?,
        runToken: String, mode: InitScripts.Mode, extraCmdline: String = "", interactive: Bool = false, hostForward: String? = nil,
        monitorSocket: String? = nil
    ) -> [String] {
        var args = [
            "-name", "\(runToken)-h\(index)",
            "-accel", Self.accelerator, "-cpu", Self.l1CPU,
            "-m", spec.l1Memory, "-smp", "\(spec.l1CPUs)",
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", "-no-reboot",
            "-serial", interactive ? "mon:stdio" : "stdio",
            "-kernel", images.l1Kernel, "-initrd", images.l1Initrd,
            // nokaslr: the kernel text at its System.map addresses, so a time-out report can name functions.
            // highres=off nohz=off: a periodic local APIC timer. With a one-shot timer a lab host froze
            // now and then (halted, IF=1, the timer's vector pending in IRR and never delivered: the
            // emulator lost the wake-up); a periodic timer fires again and delivers it (docs/lab.md).
            "-append", "console=ttyS0 quiet panic=-1 nokaslr highres=off nohz=off vireo.host=\(index) vireo.mode=\(mode.rawValue) \(extraCmdline)"
                .trimmingCharacters(in: .whitespaces),
        ]
        if !interactive {
            // A monitor socket only where its path fits a sockaddr_un (108 bytes): it serves time-out reports.
            if let monitorSocket, monitorSocket.utf8.count < 100 {
                args += ["-monitor", "unix:\(monitorSocket),server=on,wait=off"]
            } else {
                args += ["-monitor", "none"]
            }
        }
        if let disk {
            args += [
                "-drive", "file=\(disk),format=raw,if=none,id=results,cache=unsafe",
                "-device", "virtio-blk-pci,drive=results",
            ]
        }
        var user = "user,id=net0"
        if let hostForward { user += ",hostfwd=\(hostForward)" } else { user += ",restrict=on" }
        args += ["-netdev", user, "-device", "virtio-net-pci,netdev=net0,romfile=,mac=52:54:00:12:34:\(String(format: "%02x", 0x10 + index))"]
        if spec.hosts > 1, let linkPort {
            args += [
                "-netdev", "socket,id=link,mcast=230.0.0.1:\(linkPort),localaddr=127.0.0.1",
                "-device", "virtio-net-pci,netdev=link,romfile=,mac=52:54:00:99:00:\(String(format: "%02x", 0x10 + index))",
            ]
        }
        return args
    }

    /// EPYC with SVM; the features TCG cannot provide are switched off explicitly (TCG would drop them anyway,
    /// with one warning line each on the console).
    /// TCG for the lab host: one thread per CPU (MTTCG), or as `VIREO_LAB_TCG_THREAD` (`single`
    /// or `multi`) says. One thread for all CPUs (`thread=single`) was tried against the 2-CPU lab
    /// host's nested-SVM failures (see docs/lab.md): 2-vCPU L2 boots then took over 120 s.
    static var accelerator: String {
        if let override = ProcessInfo.processInfo.environment["VIREO_LAB_TCG_THREAD"], ["single", "multi"].contains(override) {
            return "tcg,thread=\(override)"
        }
        return "tcg"
    }

    public static let l1CPU = "EPYC,+svm,-rdseed,-sha-ni,-fxsr-opt,-misalignsse,-3dnowprefetch,-osvw,-topoext,-nrip-save,-xsavec"

    // MARK: Monitoring

    final class HostSession: @unchecked Sendable {
        let index: Int
        let child: ChildProcess
        var matcher: ConsoleMatcher
        var lines = LineAssembler()
        let log: FileHandle?
        let logPath: String
        let monitorSocket: String?
        var eof = false
        var exitedAt: Date?

        init(index: Int, child: ChildProcess, matcher: ConsoleMatcher, logPath: String, monitorSocket: String? = nil) {
            self.index = index; self.child = child; self.matcher = matcher; self.logPath = logPath
            self.monitorSocket = monitorSocket
            FileManager.default.createFile(atPath: logPath, contents: nil)
            log = FileHandle(forWritingAtPath: logPath)
        }
        deinit { try? log?.close() }
    }

    struct Outcome {
        var passed: Bool
        var reason: String
        var tail: [String]
        var diagnostics: [String] = []
    }

    /// Reads all consoles until the outcome is decided (or, with `untilExit`, until every QEMU has exited).
    func monitor(sessions: inout [HostSession], deadline: Date, timeout: Double, console: (@Sendable (Int, String) -> Void)?, untilExit: Bool = false) -> Outcome {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            var fds = sessions.filter { !$0.eof }.map { pollfd(fd: $0.child.outputFD, events: Int16(POLLIN), revents: 0) }
            let open = sessions.filter { !$0.eof }
            if !fds.isEmpty { _ = Glibc.poll(&fds, nfds_t(fds.count), 100) } else { usleep(100_000) }
            for (i, session) in open.enumerated() where fds[i].revents != 0 {
                let count = read(session.child.outputFD, &buffer, buffer.count)
                if count < 0 && (errno == EINTR || errno == EAGAIN) { continue }
                var newLines: [String]
                if count > 0 {
                    let chunk = buffer[0..<count]
                    try? session.log?.write(contentsOf: chunk)
                    newLines = session.lines.append(chunk)
                } else {
                    session.eof = true
                    newLines = session.lines.flush()
                }
                for line in newLines {
                    console?(session.index, line)
                    if !untilExit, case .failed(let why) = session.matcher.feed(line) {
                        return fail(session, sessions.count, why)
                    }
                }
            }
            for session in sessions where session.exitedAt == nil {
                if session.child.poll() != nil { session.exitedAt = Date() }
            }
            if untilExit {
                if sessions.allSatisfy({ $0.exitedAt != nil && ($0.eof || Date().timeIntervalSince($0.exitedAt!) > 2) }) {
                    return Outcome(passed: true, reason: "all hosts exited", tail: [])
                }
            } else {
                if sessions.allSatisfy({ $0.matcher.state == .passed }) {
                    let who = sessions.count == 1 ? "pass marker" : "pass marker on all \(sessions.count) hosts"
                    return Outcome(passed: true, reason: String(format: "%@ after %.1fs", who, timeout - deadline.timeIntervalSinceNow), tail: sessions[0].lines.tail)
                }
                for session in sessions where session.matcher.state != .passed {
                    if let exited = session.exitedAt, session.eof || Date().timeIntervalSince(exited) > 2,
                        let termination = session.child.poll()
                    {
                        return fail(session, sessions.count, "QEMU exited (\(termination)) before the pass marker")
                    }
                }
            }
            if Date() >= deadline {
                if untilExit { return Outcome(passed: true, reason: "hosts did not power off in time", tail: []) }
                let waiting = sessions.first { $0.matcher.state != .passed } ?? sessions[0]
                var outcome = fail(waiting, sessions.count, "timed out after \(Int(timeout))s")
                outcome.diagnostics = timeoutReport(waiting)
                return outcome
            }
        }
    }

    /// Where the timed-out host's CPUs were (see ``LabDiagnostics``), as lines for the failure report.
    private func timeoutReport(_ session: HostSession) -> [String] {
        guard let socket = session.monitorSocket else { return [] }
        let systemMap = host.kernel.replacingOccurrences(of: "/vmlinuz-", with: "/System.map-")
        let cpus = LabDiagnostics.cpuReport(monitorSocket: socket, systemMap: systemMap)
        guard !cpus.isEmpty else { return ["--- host \(session.index): its QEMU monitor did not answer ---"] }
        return ["--- host \(session.index): L1 CPUs at the time-out ---"] + cpus
    }

    private func fail(_ session: HostSession, _ hostCount: Int, _ why: String) -> Outcome {
        let prefix = hostCount > 1 ? "host \(session.index): " : ""
        return Outcome(passed: false, reason: prefix + why, tail: session.lines.tailWithPending)
    }
}
