import ArgumentParser
import Logging
import VireoSwitch
import VireoSystem

/// `vireo-switchd`: one virtual switch, one process. The data plane runs on its own: control
/// clients (and vireod) may come and go without frames stopping.
@main
struct VireoSwitchd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vireo-switchd",
        abstract: "Vireo's VLAN-aware virtual switch (data plane).",
        discussion: """
            Ports: tap:NAME (a tap device the switch creates), uplink:IFACE (a host interface via AF_PACKET),
            vm:NAME (a SOCK_SEQPACKET socket DIR/SWITCH-NAME.sock, one frame per message).
            Options after the name: tag=N (access port of VLAN N, the default is tag=1),
            trunk=A,B,C-D (trunk of those VLANs) with native=N, mtu=N, mac-limit=N, flood-limit=N,
            offload=on|off (frames after a virtio-net header, so TSO super-frames cross whole; on
            by default for taps and uplinks).
            Control socket DIR/SWITCH.ctl: one command per line (ports, stats, fdb, add-port SPEC,
            del-port NAME, ageing SECONDS, flush), one JSON reply per line.
            """)

    @Option(help: "Switch name (names the control and VM sockets).")
    var name: String

    @Option(help: "Directory for the control socket and the VM port sockets.")
    var socketDir: String

    @Option(name: .customLong("port"), help: "A port, e.g. tap:vm1,tag=10 or uplink:eth0,trunk=10,20,native=1 (repeatable).")
    var ports: [String] = []

    @Option(help: "Seconds a learned MAC address lives without traffic.")
    var ageingTime: Int = 300

    @Option(help: "Forward between uplink ports in the kernel once the switch has decided a flow (eBPF; needs CAP_BPF and Linux 6.6): on|off.")
    var kernelFastPath: String = "on"

    @Flag(help: "Stop when the process that started the switch exits (tests and benchmarks; not for production switches, which must outlive any control plane).")
    var exitWithParent = false

    @Option(help: "Log level (trace, debug, info, notice, warning, error, critical).")
    var logLevel: String = "info"

    func validate() throws {
        guard !name.isEmpty, name.utf8.count <= 32, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) }) else {
            throw ValidationError("--name must be 1-32 ASCII letters, digits, '-', '_' or '.'")
        }
        guard ageingTime > 0 else { throw ValidationError("--ageing-time must be positive") }
        guard ["on", "off"].contains(kernelFastPath) else { throw ValidationError("--kernel-fast-path takes on or off") }
        for spec in ports {
            do { _ = try PortConfig.parse(spec) } catch { throw ValidationError(error.description) }
        }
    }

    func run() throws {
        var logger = Logger(label: "vireo-switchd.\(name)")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let configs = try ports.map { spec throws(PortSpecError) in try PortConfig.parse(spec) }
        let dataplane: Dataplane
        do {
            dataplane = try Dataplane(name: name, socketDirectory: socketDir, ageingSeconds: ageingTime, kernelFastPath: kernelFastPath == "on", logger: logger)
        } catch {
            logger.critical("startup failed: \(error)")
            throw ExitCode(1)
        }
        do {
            if exitWithParent { dataplane.watchedParent = parentProcessID() }
            for config in configs { try dataplane.addPort(config) }
            try dataplane.publishControlSocket()
        } catch {
            logger.critical("startup failed: \(error)")
            dataplane.shutdown()  // no socket files left behind
            throw ExitCode(1)
        }
        logger.info("switch \(name) up: \(configs.count) port(s), control socket \(dataplane.controlPath)")
        do {
            try dataplane.run()
        } catch {
            logger.critical("data plane failed: \(error)")
            dataplane.shutdown()
            throw ExitCode(1)
        }
        dataplane.shutdown()
        logger.info("switch \(name) stopped")
    }
}
