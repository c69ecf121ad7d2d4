import ArgumentParser
import Logging
import VireoSystem
import VireoVMM

/// `vireo-vmm`: one process per VM. Thin: parses the command line into a `VMConfig` and runs it.
struct VireoVMMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vireo-vmm",
        abstract: "Run one virtual machine on /dev/kvm.",
        discussion: """
            Boots a Linux bzImage through the 64-bit boot protocol (or, with --raw, a flat binary)
            with a 16550A serial console, ACPI power management and KVM's in-kernel interrupt controllers.

            Exit codes: 0 guest powered off; 1 VMM failure; 2 guest requested a reboot;
            3 guest triple-faulted; 4 stopped by a signal or the control socket; 64 bad arguments.

            Control socket commands (one per line): status, pause, resume, ctrl-alt-del, stop, stats.
            """)

    @Option(help: "Linux kernel image (bzImage).") var kernel: String?
    @Option(help: "Initial ramdisk.") var initrd: String?
    @Option(help: "Kernel command line.") var cmdline: String = "console=ttyS0 panic=1"
    @Option(help: "Flat binary to load at 0x10000 instead of a kernel (tiny test guests).") var raw: String?
    @Option(name: .customLong("raw-mode"), help: "CPU mode a --raw image starts in: real or long.") var rawMode: String = "long"
    @Option(help: "Number of vCPUs.") var cpus: Int = 1
    @Option(help: "Guest memory, e.g. 256M or 2G (bare numbers are MiB).") var memory: String = "256M"
    @Option(help: "Serial console: stdio, file:PATH, unix:PATH or none.") var serial: String = "stdio"
    @Option(help: "Control socket: unix:PATH.") var control: String?
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.") var logLevel: String = "warning"
    @Flag(name: .customLong("print-stats"), help: "Print KVM's per-vCPU statistics on stderr when the VM stops.") var printStats = false
    @Option(name: .customLong("disk"), help: "virtio-blk disk: path=FILE[,readonly=on|off][,format=raw|qcow2][,serial=ID] (repeatable; the first is /dev/vda).") var disks: [String] = []
    @Flag(help: "Add a virtio-rng device (host getrandom).") var rng = false
    @Option(help: "Add a virtio-console (guest hvc0): stdio, file:PATH, unix:PATH or none.") var console: String?
    @Option(help: "Add a virtio-balloon: SIZE[,stats=SECONDS][,deflate-on-oom=on|off], SIZE its initial size (e.g. 0 or 64M); change it with the control socket's `balloon MiB`, read the guest's statistics with `balloon-stats` (polled every SECONDS with stats=).") var balloon: String?
    @Option(name: .customLong("net"), help: "virtio-net on a host tap, tap=NAME[,mac=52:54:00:12:34:56] (created if missing), or on a vireo-switchd port, switch=NAME[,tag=N|,trunk=A,B-C[,native=N]][,port=NAME][,dir=/run/vireo][,offload=on|off][,mac=...] (repeatable; default MAC random, locally administered).") var nets: [String] = []
    @Option(help: .hidden) var kvmDevice: String = "/dev/kvm"

    func makeConfig() throws(ConfigError) -> VMConfig {
        let payload: VMConfig.Payload
        switch (kernel, raw) {
        case (let kernel?, nil):
            payload = .linux(kernel: kernel, initrd: initrd, commandLine: cmdline)
        case (nil, let raw?):
            guard let mode = VMConfig.RawMode(rawValue: rawMode) else {
                throw .invalid("--raw-mode must be real or long, got '\(rawMode)'")
            }
            payload = .raw(path: raw, mode: mode)
        case (nil, nil): throw .invalid("nothing to boot: give --kernel PATH (or --raw PATH)")
        case (_?, _?): throw .invalid("--kernel and --raw cannot be used together")
        }
        func consoleBackend(_ text: String, option: String) throws(ConfigError) -> VMConfig.SerialBackend {
            switch text {
            case "stdio": return .stdio
            case "none": return .none
            case let value where value.hasPrefix("file:"): return .file(String(value.dropFirst(5)))
            case let value where value.hasPrefix("unix:"): return .unix(String(value.dropFirst(5)))
            default: throw .invalid("--\(option) must be stdio, none, file:PATH or unix:PATH, got '\(text)'")
            }
        }
        let serialBackend = try consoleBackend(serial, option: "serial")
        var controlPath: String?
        if let control {
            guard control.hasPrefix("unix:"), control.count > 5 else { throw .invalid("--control must be unix:PATH, got '\(control)'") }
            controlPath = String(control.dropFirst(5))
        }
        var config = VMConfig(
            payload: payload, cpuCount: cpus, memorySize: try VMConfig.parseMemorySize(memory),
            serial: serialBackend, controlSocket: controlPath, kvmPath: kvmDevice)
        config.disks = try disks.map { text throws(ConfigError) in try DiskConfig.parse(text) }
        config.rng = rng
        config.nets = try nets.map { text throws(ConfigError) in try NetConfig.parse(text) }
        if let balloon { try config.parseBalloon(balloon) }
        if let console {
            guard !(console == "stdio" && serial == "stdio") else { throw .invalid("--console stdio needs --serial other than stdio") }
            config.virtioConsole = try consoleBackend(console, option: "console")
        }
        try config.validate()
        return config
    }

    func run() throws {
        let config: VMConfig
        do {
            config = try makeConfig()
        } catch {
            throw ValidationError(error.description)
        }
        let level = Logger.Level(rawValue: logLevel) ?? .warning
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "vireo-vmm")

        TerminationSignals.block()
        TerminationSignals.ignoreBrokenPipes()
        let machine: VirtualMachine
        do {
            machine = try VirtualMachine(config: config, logger: logger)
        } catch {
            printError("vireo-vmm: cannot create the VM: \(error)")
            throw ExitCode(VMExit.failed("").exitCode)
        }
        var controlServer: ControlServer?
        do {
            if let path = config.controlSocket {
                controlServer = try ControlServer(path: path, machine: machine, logger: logger)
                try controlServer?.start()
            }
            _ = try OSThread(name: "signals") {
                let signal = TerminationSignals.wait()
                machine.requestStop(.stopped("received \(TerminationSignals.name(signal))"))
            }
            try machine.start()
        } catch {
            printError("vireo-vmm: cannot start the VM: \(error)")
            throw ExitCode(VMExit.failed("").exitCode)
        }
        let exit = machine.waitForExit()
        controlServer?.close()
        if printStats {
            for (name, value) in machine.statistics() { printError("vireo-vmm: stat \(name) \(value)") }
        }
        logger.notice("\(exit)")
        if case .failed = exit { printError("vireo-vmm: \(exit)") }
        throw ExitCode(exit.exitCode)
    }
}

func printError(_ message: String) {
    RawDescriptorIO.writeAll(2, Array((message + "\n").utf8))
}

VireoVMMCommand.main()
