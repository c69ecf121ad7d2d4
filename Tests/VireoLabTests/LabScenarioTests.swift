import Foundation
import Testing

@testable import VireoLab

extension Tag {
    /// Tests that boot lab hosts under QEMU (seconds to a minute each).
    @Tag static var lab: Self
}

/// Shared setup for the tests that boot lab hosts.
enum TestLab {
    static let repositoryRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path

    static func scenario(_ name: String) throws -> Scenario {
        let shipped = repositoryRoot + "/lab/scenarios/" + name
        if FileManager.default.fileExists(atPath: shipped) { return try Scenario(directory: shipped) }
        return try Scenario(directory: repositoryRoot + "/Tests/VireoLabTests/Scenarios/" + name)
    }

    /// `$VIREO_VMM`, else `vireo-vmm` in the test bundle's build folder.
    static var vmmPath: String? {
        if let env = ProcessInfo.processInfo.environment["VIREO_VMM"] { return env }
        var candidates: [String] = []
        let argument0 = URL(fileURLWithPath: CommandLine.arguments.first ?? ".")
        candidates.append(
            argument0.deletingLastPathComponent().appendingPathComponent("vireo-vmm").path)
        candidates.append(
            Bundle.main.bundleURL.deletingLastPathComponent().appendingPathComponent("vireo-vmm").path)
        candidates.append(Bundle.main.bundleURL.appendingPathComponent("vireo-vmm").path)
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static func runner(cache: String? = nil) throws -> LabRunner {
        var host = try HostEnvironment.detect()
        if let cache { host.cacheDirectory = cache }
        return LabRunner(builder: ArtifactBuilder(host: host, vmmPath: vmmPath))
    }

    /// Runs a scenario. With `retryingTimeOut`, a run that timed out (``LabRunner/Result/timedOut``) is
    /// run once more and its full report printed first: lab hosts are nested SVM emulated by TCG, where a
    /// stall is rare and not Vireo's to fix, but each one is kept in the log with where the CPUs and the
    /// VMM's threads were. A run that failed on its own terms (a fail marker, a wrong exit status) is never
    /// rerun, with one exception: an L2 triple fault (vireo-vmm's exit status 3), an open issue seen in
    /// about one 2-vCPU boot in four under TCG's nested SVM and not yet attributed (docs/lab.md). It is
    /// rerun once too, its report printed first, so each occurrence stays in the CI log.
    static func run(_ name: String, retryingTimeOut: Bool = false) async throws -> LabRunner.Result {
        var result = try await offPool { try runner().run(try scenario(name)) }
        print(
            "[\(name)] \(result.passed ? "PASS" : "FAIL") in \(String(format: "%.1f", result.seconds))s: \(result.reason)"
        )
        if retryingTimeOut, !result.passed, result.timedOut {
            print("[\(name)] TIMED OUT; running it once more. The report of the run that timed out:\n\(result.report)")
            result = try await run(name)
        } else if retryingTimeOut, !result.passed, result.reason.contains("vireo-vmm exited with status 3") {
            print("[\(name)] L2 TRIPLE FAULT (open issue); running it once more. The report of that run:\n\(result.report)")
            result = try await run(name)
        }
        return result
    }

    /// Runs blocking work on a thread of its own. A lab run blocks for minutes on QEMU's console; done in
    /// the test body it would hold one of the cooperative pool's threads (two on a 2-core CI host) and stall
    /// every async test meanwhile, long enough for their own deadlines to pass.
    static func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
        }
    }

    /// No process of this run is alive: neither the pids we started nor anything with our token on its command line.
    static func expectNoQEMULeft(
        _ result: LabRunner.Result, sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        for pid in result.qemuPIDs {
            #expect(
                kill(pid, 0) == -1 && errno == ESRCH, "QEMU pid \(pid) is still there",
                sourceLocation: sourceLocation)
        }
        let pgrep = try Shell.run("pgrep", ["-f", result.runToken], check: false)
        #expect(
            pgrep.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty,
            "left behind: \(pgrep.stdout)", sourceLocation: sourceLocation)
    }
}

/// Every test that boots lab hosts lives under this one serialized suite: on a 2-core machine, TCG hosts
/// running side by side would slow each other down past the scenarios' time limits.
@Suite(.serialized, .tags(.lab)) struct LabTests {}

extension LabTests {
    @Suite struct Scenarios {
        @Test(.timeLimit(.minutes(3))) func qemuBaselineBootsL2() async throws {
            let result = try await TestLab.run("qemu-l2-baseline")
            let passed = result.passed
            #expect(passed, "\(result.report)")
            #expect(result.consoleTail.contains { $0.contains("VIREO-GUEST: cpus=1") })
            let saved = try String(
                contentsOfFile: result.resultsDirectory! + "/qemu-l2-baseline.txt", encoding: .utf8)
            #expect(saved.contains("L2 boot+poweroff under QEMU took"))
            try TestLab.expectNoQEMULeft(result)
        }

        @Test(.timeLimit(.minutes(3))) func twoHostsPingEachOther() async throws {
            let result = try await TestLab.run("two-hosts")
            let passed = result.passed
            #expect(passed, "\(result.report)")
            for host in 0..<2 {
                let ping = try? String(
                    contentsOfFile: "\(result.resultsDirectory ?? "")/host\(host)/ping.txt", encoding: .utf8)
                #expect(ping?.contains("round-trip") == true, "host\(host) ping results")
            }
            try TestLab.expectNoQEMULeft(result)
        }

        @Test(.timeLimit(.minutes(2))) func panicFailsWithTheMarkerAndTail() async throws {
            let start = Date()
            let result = try await TestLab.run("broken-panic")
            #expect(!result.passed)
            #expect(result.reason.contains("fail marker \"Kernel panic\""), "\(result.reason)")
            #expect(result.consoleTail.contains { $0.contains("about to crash") }, "\(result.report)")
            #expect(result.report.contains("--- last"))
            #expect(Date().timeIntervalSince(start) < 60)
            try TestLab.expectNoQEMULeft(result)
        }

        @Test(.timeLimit(.minutes(2))) func l2PanicFailsThroughTheNestedConsole() async throws {
            let result = try await TestLab.run("broken-l2-panic")
            #expect(!result.passed)
            #expect(result.reason.contains("fail marker \"Kernel panic\""), "\(result.reason)")
            #expect(result.consoleTail.contains { $0.contains("L2 about to crash") }, "\(result.report)")
            try TestLab.expectNoQEMULeft(result)
        }

        @Test(.timeLimit(.minutes(2))) func missingMarkerTimesOut() async throws {
            let start = Date()
            let result = try await TestLab.run("broken-no-marker")
            #expect(!result.passed)
            #expect(result.reason == "timed out after 20s", "\(result.reason)")
            #expect(
                result.consoleTail.contains { $0.contains("waiting for something") }, "\(result.report)")
            #expect(Date().timeIntervalSince(start) < 45)
            try TestLab.expectNoQEMULeft(result)
        }

        @Test(.timeLimit(.minutes(2))) func earlyPowerOffIsReported() async throws {
            let result = try await TestLab.run("broken-early-exit")
            #expect(!result.passed)
            #expect(result.reason == "QEMU exited (status 0) before the pass marker", "\(result.reason)")
            #expect(result.consoleTail.contains { $0.contains("powering off early") }, "\(result.report)")
            try TestLab.expectNoQEMULeft(result)
        }

        @Test(.timeLimit(.minutes(2))) func secondBuildReusesTheCache() throws {
            let cache = NSTemporaryDirectory() + "/vireo-lab-cache-test-\(getpid())"
            defer { try? FileManager.default.removeItem(atPath: cache) }
            let builder = try TestLab.runner(cache: cache).builder
            let request = ArtifactBuilder.Request(scenario: try TestLab.scenario("qemu-l2-baseline"))
            let first = try builder.build(request, outputDirectory: cache + "/out1")
            #expect(first.entries.allSatisfy { !$0.reused })
            let start = Date()
            let second = try builder.build(request, outputDirectory: cache + "/out2")
            #expect(second.entries.allSatisfy { $0.reused }, "\(second.summary)")
            #expect(second.entries.map(\.directory) == first.entries.map(\.directory))
            #expect(Date().timeIntervalSince(start) < 5)
            // The boot image is base + overlay: init, env, scenario and the L2 initramfs are in it.
            let names = Set(
                try CpioArchive.parse([UInt8](FileManager.default.contents(atPath: second.l1Initrd)!)).map(
                    \.name))
            for name in [
                "init", "lab/env", "bin/busybox", "lab/modules/kvm-amd.ko", "scenario/run.sh", "l2/vmlinuz",
                "l2/initrd.cpio", "qemu/bin/qemu-system-x86_64", "qemu/share/bios-256k.bin",
                "lib64/ld-linux-x86-64.so.2",
            ] {
                #expect(names.contains(name), "\(name) missing from the L1 initrd")
            }
        }
    }

    /// `vireo lab run` interrupted with SIGINT kills its QEMU (which runs in its own process group).
    @Suite struct Interrupts {
        @Test(.timeLimit(.minutes(2))) func interruptedRunLeavesNoQEMU() throws {
            let vireo = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("vireo").path
            guard FileManager.default.isExecutableFile(atPath: vireo) else {
                Issue.record("no vireo executable at \(vireo) (swift build --product vireo)")
                return
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: vireo)
            process.arguments = [
                "lab", "run", TestLab.repositoryRoot + "/Tests/VireoLabTests/Scenarios/broken-no-marker",
            ]
            let stderr = Pipe()
            process.standardError = stderr
            process.standardOutput = FileHandle.nullDevice
            try process.run()
            // Wait for "host 0: qemu pid N".
            var text = ""
            var qemuPID: pid_t?
            let deadline = Date().addingTimeInterval(30)
            while qemuPID == nil, Date() < deadline {
                let chunk = stderr.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
                if let range = text.range(of: #"qemu pid ([0-9]+)"#, options: .regularExpression) {
                    qemuPID = pid_t(text[range].split(separator: " ").last!)
                }
            }
            guard let qemuPID else {
                Issue.record("vireo did not report a QEMU pid: \(text)")
                process.terminate()
                return
            }
            sleep(2)
            #expect(kill(qemuPID, 0) == 0, "QEMU should be running")
            kill(process.processIdentifier, SIGINT)
            process.waitUntilExit()
            #expect(process.terminationStatus == 130)
            #expect(kill(qemuPID, 0) == -1 && errno == ESRCH, "QEMU \(qemuPID) survived the interrupt")
        }
    }

    /// `vireo lab up`: an interactive lab host shell on stdio (driven through a pipe here).
    @Suite struct Up {
        @Test(.timeLimit(.minutes(2))) func upGivesAShellWithKVM() throws {
            let vireo = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                .appendingPathComponent("vireo").path
            guard FileManager.default.isExecutableFile(atPath: vireo) else {
                Issue.record("no vireo executable at \(vireo) (swift build --product vireo)")
                return
            }
            let process = Process()
            process.executableURL = URL(fileURLWithPath: vireo)
            // A free-ish port: the default 8006 may be taken on a shared machine.
            process.arguments = ["lab", "up", "--host-port", "\(Int.random(in: 30000...40000))"]
            let input = Pipe()
            let output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            process.standardError = output
            try process.run()
            var text = ""
            var sent = false
            let deadline = Date().addingTimeInterval(90)
            while Date() < deadline {
                let chunk = output.fileHandleForReading.availableData
                if chunk.isEmpty { break }
                text += String(decoding: chunk, as: UTF8.self)
                if !sent, text.contains("Leave with") {
                    sent = true
                    input.fileHandleForWriting.write(Data("echo UP-OK $(ls /dev/kvm) $(hostname)\rexit\r".utf8))
                }
            }
            process.waitUntilExit()
            #expect(process.terminationStatus == 0)
            #expect(text.contains("UP-OK /dev/kvm lab0"), "\(text.suffix(2000))")
        }
    }

    /// Scenarios that need vireo-vmm (built from this package). They fail until the VMM implements the
    /// contract in docs/lab.md (--raw/--raw-mode, --kernel/--initrd/--cmdline/--cpus/--memory/--serial, --print-stats).
    @Suite struct VireoVMMScenarios {
        @Test(
            .timeLimit(.minutes(11)),  // the longest scenario time-out (300 s) twice, with a rerun after a time-out
            arguments: ["kvm-native", "linux-boot-1cpu", "linux-boot-2cpu", "linux-reboot", "linux-control", "virtio-blk-rng", "virtio-console", "virtio-balloon", "virtio-balloon-oom", "virtio-net", "virtio-blk-enospc", "virtio-blk-intx"])
        func scenarioPasses(_ name: String) async throws {
            let result = try await TestLab.run(name, retryingTimeOut: true)
            let passed = result.passed
            #expect(passed, "\(result.report)")
            try TestLab.expectNoQEMULeft(result)
        }
    }
}

extension LabTests {
    /// Guests on the Vireo switch (`vireo-vmm --net switch=`; vireo-switchd packaged beside the VMM).
    @Suite struct NetworkScenarios {
        @Test(.timeLimit(.minutes(13)), arguments: ["switch-vlans"])  // its 360 s time-out twice, with a rerun
        func scenarioPasses(_ name: String) async throws {
            let result = try await TestLab.run(name, retryingTimeOut: true)
            #expect(result.passed, "\(result.report)")
            try TestLab.expectNoQEMULeft(result)
        }
    }
}

extension LabTests {
    /// VMs driven through a real vireod (packaged with the `vireod` need) and the vireo CLI inside the lab host.
    @Suite struct DaemonScenarios {
        @Test(.timeLimit(.minutes(13)), arguments: ["vireod-vireo-engine"])
        func scenarioPasses(_ name: String) async throws {
            let result = try await TestLab.run(name, retryingTimeOut: true)
            #expect(result.passed, "\(result.report)")
            try TestLab.expectNoQEMULeft(result)
        }
    }
}
