import ArgumentParser
import VireoDaemon

@main
struct Vireod: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vireod",
        abstract: "Vireo's control-plane daemon: the Proxmox-compatible /api2/json API over HTTP.",
        discussion: """
            State lives in DIR/vireo.db (SQLite). On first start root@pam gets $VIREO_ROOT_PASSWORD, or a \
            random password written to DIR/initial-root-password. The bound address is written to DIR/vireod.addr. \
            VMs run in their own sessions and outlive vireod; a restart re-adopts them.
            """)

    @Option(help: "Data directory.") var dataDir = "/var/lib/vireo"
    @Option(help: "Listen address ADDR:PORT (port 0: any free port).") var listen = "0.0.0.0:8006"
    @Option(help: "Node name (default: the host name).") var node: String?
    @Flag(help: "Serve plain HTTP. (HTTPS is not implemented yet; vireod always serves HTTP for now.)") var noTLS = false

    func run() async throws {
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]), (0...65535).contains(port) else {
            throw ValidationError("--listen must be ADDR:PORT, got '\(listen)'")
        }
        var host = String(listen[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        try await Daemon(configuration: DaemonConfiguration(dataDirectory: dataDir, host: host, port: port, node: node)).run()
    }
}
