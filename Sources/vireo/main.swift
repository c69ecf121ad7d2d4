import ArgumentParser
import Foundation
import VireoLab

struct Vireo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vireo",
        abstract: "Vireo: a KVM hypervisor platform.",
        subcommands: [VMCommand.self, TaskCommand.self, APICommand.self, ImgCommand.self, VMMCommand.self, NetCommand.self, Lab.self])
}

struct Lab: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The nested lab: run Vireo inside a QEMU-emulated host with a virtual AMD-V CPU.",
        subcommands: [LabRun.self, LabList.self, LabBuild.self, LabUp.self, LabHostKVM.self])
}

struct VMMOption: ParsableArguments {
    @Option(name: .customLong("vmm"), help: "The vireo-vmm binary to put in the lab host (default: $VIREO_VMM, else the one next to this executable).")
    var vmm: String?

    var resolved: String? {
        if let vmm { return vmm }
        if let env = ProcessInfo.processInfo.environment["VIREO_VMM"] { return env }
        let me = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var candidates = [me.deletingLastPathComponent().appendingPathComponent("vireo-vmm").path]
        if let selfExe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.insert(URL(fileURLWithPath: selfExe).deletingLastPathComponent().appendingPathComponent("vireo-vmm").path, at: 0)
        }
        return candidates.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    func builder(quiet: Bool = false) throws -> ArtifactBuilder {
        let host = try HostEnvironment.detect()
        // This `vireo` goes into the lab host too (as /vireo/bin/vireo), next to vireo-vmm.
        let me = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        return ArtifactBuilder(host: host, vmmPath: resolved, companionBinaries: [me]) { message in
            if !quiet { FileHandle.standardError.write(Data("vireo lab: \(message)\n".utf8)) }
        }
    }
}

struct LabRun: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run a scenario; exit status 0 on PASS, 1 on FAIL, 2 when the lab itself cannot run it.")

    @Argument(help: "A scenario name (from lab/scenarios) or a path to a scenario folder.")
    var scenario: String

    @Option(help: "Copy the scenario's /results here.")
    var keepResults: String?

    @Option(help: "Override the scenario's timeout in seconds.")
    var timeout: Int?

    @Flag(help: "Stream the lab hosts' serial consoles.")
    var verbose = false

    @OptionGroup var vmm: VMMOption

    func run() throws {
        do {
            try runScenario()
        } catch let error as LabError {
            // Tooling problems (missing packages, bad scenario folder) are not scenario failures.
            FileHandle.standardError.write(Data("ERROR: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    func runScenario() throws {
        let scenario = try ScenarioLocator.locate(self.scenario)
        let runner = LabRunner(builder: try vmm.builder())
        let hosts = scenario.spec.hosts
        let verbose = self.verbose
        let options = LabRunner.Options(keepResults: keepResults, timeout: timeout) { index, line in
            guard verbose else { return }
            print(hosts > 1 ? "[host\(index)] \(line)" : line)
            fflush(nil)
        }
        let result = try runner.run(scenario, options: options)
        print(result.report)
        if let dir = result.resultsDirectory, keepResults != nil { print("results: \(dir)") }
        print("console log: \(result.consoleLogs.joined(separator: " "))")
        if !result.passed { throw ExitCode(1) }
    }
}

struct LabList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List scenarios with their descriptions.")

    func run() throws {
        let scenarios = ScenarioLocator.all()
        if scenarios.isEmpty {
            print("no scenarios found (searched: \(ScenarioLocator.searchPath().joined(separator: ", ")))")
        }
        let width = scenarios.map(\.name.count).max() ?? 0
        for scenario in scenarios {
            let needs = scenario.spec.needs.isEmpty ? "" : "  [needs: \(scenario.spec.needs.joined(separator: ", "))]"
            print(scenario.name.padding(toLength: width + 2, withPad: " ", startingAt: 0) + scenario.spec.description + needs)
        }
    }
}

struct LabBuild: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "build", abstract: "Build (or reuse) the lab images and print their paths.")

    @Argument(help: "Scenarios to build for (default: the images for `vireo lab up`).")
    var scenarios: [String] = []

    @OptionGroup var vmm: VMMOption

    func run() throws {
        let builder = try vmm.builder()
        let requests: [(String, ArtifactBuilder.Request)] =
            scenarios.isEmpty
            ? [("up", ArtifactBuilder.Request(needs: [.vireoVMM, .l2Initramfs, .qemu, .rootfs]))]
            : try scenarios.map { let s = try ScenarioLocator.locate($0); return (s.name, ArtifactBuilder.Request(scenario: s)) }
        for (name, request) in requests {
            let start = Date()
            let out = builder.host.cacheDirectory + "/build/" + name
            let images = try builder.build(request, outputDirectory: out)
            print("[\(name)] built in \(String(format: "%.1f", Date().timeIntervalSince(start)))s")
            print(images.summary)
            print("L1 kernel: \(images.l1Kernel)")
            print("L1 initrd: \(images.l1Initrd)")
            if let l2 = images.l2Initrd { print("L2 initrd: \(l2)") }
            if let rootfs = images.rootfs { print("rootfs:    \(rootfs)") }
        }
    }
}

struct LabUp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Boot a lab host with Vireo inside and an interactive console (Ctrl-a x quits).")

    @Flag(help: "Boot straight into an L2 guest under vireo-vmm (its shell is on this terminal).")
    var guest = false

    @Option(help: "Lab host memory.") var memory = "2048M"
    @Option(help: "Lab host vCPUs (TCG runs fastest with 1).") var cpus = 1
    @Option(help: "Host port forwarded (127.0.0.1 only) to the lab host's port 8006.") var hostPort = 8006

    @OptionGroup var vmm: VMMOption

    func run() throws {
        let runner = LabRunner(builder: try vmm.builder())
        let status = try runner.up(
            guest: guest, memory: memory, cpus: cpus, hostForward: "tcp:127.0.0.1:\(hostPort)-:8006")
        if status != 0 { throw ExitCode(status) }
    }
}

struct LabHostKVM: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "host-kvm", abstract: "Whether this host's /dev/kvm runs guests natively: native, emulated (PVM) or absent.")

    func run() {
        print(HostKVM.detect().rawValue)
    }
}

if CommandLine.arguments.dropFirst().first == "img" {
    Vireo.mainExitingLikeQemuImg()  // `vireo img` keeps qemu-img's exit codes
} else {
    Vireo.main()
}
