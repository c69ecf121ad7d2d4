import ArgumentParser
import Foundation
import VireoDaemon

@main
struct Vireod: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vireod",
        abstract: "Vireo's control-plane daemon: the Proxmox-compatible /api2/json API over HTTPS.",
        discussion: """
            State lives in DIR/vireo.db (SQLite). On first start root@pam gets $VIREO_ROOT_PASSWORD, or a \
            random password written to DIR/initial-root-password. The bound address is written to DIR/vireod.addr. \
            HTTPS uses DIR/pki/vireod.pem and DIR/pki/vireod.key, a self-signed pair made on first start (replace \
            both to use your own); the log names the certificate's SHA-256 fingerprint. \
            VMs run in their own sessions and outlive vireod; a restart re-adopts them, SIGTERM leaves them running. \
            Settings come from --config, else /etc/vireo/vireod.json, else DIR/vireod.json (JSON: listen, data_dir, \
            node, tls, memory_overcommit, cpu_overcommit, storage.local); options given here win.
            """)

    @Option(help: "Configuration file (JSON).") var config: String?
    @Option(help: "Data directory (default /var/lib/vireo).") var dataDir: String?
    @Option(help: "Listen address ADDR:PORT (port 0: any free port; default 0.0.0.0:8006).") var listen: String?
    @Option(help: "Node name (default: the host name).") var node: String?
    @Flag(help: "Serve plain HTTP instead of HTTPS (only behind a TLS-terminating proxy or in tests).") var noTLS = false
    @Option(help: "Committed guest memory may reach this multiple of host RAM (default 1.0).") var memoryOvercommit: Double?
    @Option(help: "Committed vCPUs above this multiple of host CPUs warn in the start task (default 4.0).") var cpuOvercommit: Double?

    func run() async throws {
        var file = try DaemonConfigFile.load(config ?? DaemonConfigFile.systemPath, required: config != nil)
        if config == nil, !FileManager.default.fileExists(atPath: DaemonConfigFile.systemPath) {
            file = try DaemonConfigFile.load((dataDir ?? "/var/lib/vireo") + "/vireod.json", required: false)
        }
        let listen = self.listen ?? file.listen ?? "0.0.0.0:8006"
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("listen must be ADDR:PORT, got '\(listen)'")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        for (name, value) in [("--memory-overcommit", memoryOvercommit), ("--cpu-overcommit", cpuOvercommit)] {
            if let value, !(value > 0) { throw ValidationError("\(name) must be above 0") }
        }
        let configuration = DaemonConfiguration(
            dataDirectory: dataDir ?? file.dataDir ?? "/var/lib/vireo", host: host, port: port, node: node ?? file.node,
            tls: noTLS ? false : (file.tls ?? true),
            memoryOvercommit: memoryOvercommit ?? file.memoryOvercommit ?? 1.0, cpuOvercommit: cpuOvercommit ?? file.cpuOvercommit ?? 4.0,
            localStoragePath: file.storage?["local"])
        try await Daemon(configuration: configuration).run()
    }
}
