import Foundation
import Hummingbird
import Logging
import NIOCore
import VireoEngines

/// How vireod runs.
public struct DaemonConfiguration: Sendable {
    public var dataDirectory: String
    public var host: String
    public var port: Int
    /// Defaults to the host name (its first label).
    public var node: String?

    public init(dataDirectory: String = "/var/lib/vireo", host: String = "0.0.0.0", port: Int = 8006, node: String? = nil) {
        self.dataDirectory = dataDirectory; self.host = host; self.port = port; self.node = node
    }
}

/// The control-plane daemon: state in SQLite, the Proxmox-shaped API over HTTP, VMs via engines.
public struct Daemon: Sendable {
    public let configuration: DaemonConfiguration
    public init(configuration: DaemonConfiguration) { self.configuration = configuration }

    public static func hostName() -> String {
        let name = ProcessInfo.processInfo.hostName
        return name.split(separator: ".").first.map(String.init) ?? "localhost"
    }

    /// Runs until SIGTERM/SIGINT.
    public func run() async throws {
        var baseLogger = Logger(label: "vireod")
        baseLogger.logLevel = ProcessInfo.processInfo.environment["VIREO_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        let directory = configuration.dataDirectory
        let logger = baseLogger
        let fileManager = FileManager.default
        for sub in ["", "/priv", "/run"] {
            try fileManager.createDirectory(atPath: directory + sub, withIntermediateDirectories: true,
                                            attributes: sub == "/priv" ? [.posixPermissions: 0o700] : nil)
        }
        let store = try SQLiteStore(path: directory + "/vireo.db")
        try Self.ensureRootUser(store: store, directory: directory, logger: logger)
        let signer = try TicketSigner(keyFile: directory + "/priv/authkey.key")
        let node = configuration.node ?? Self.hostName()
        try store.abandonRunningTasks(endTime: Int(Date().timeIntervalSince1970))

        let engines: [String: any VMEngine] = ["qemu": QEMUEngine(), "vireo": VireoEngine()]
        let vms = VMManager(store: store, runDirectory: directory + "/run", engines: engines, logger: logger)
        await vms.adopt()
        let services = Services(store: store, node: node, tasks: TaskManager(store: store, node: node, logger: logger),
                                vms: vms, signer: signer, version: "8.2.4")

        let router = Router(context: APIContext.self)
        router.add(middleware: APIMiddleware(authenticator: Authenticator(store: store, signer: signer), logger: logger))
        let api = router.group("api2/json")
        api.addRoutes(AccessRoutes(services: services).collection, atPath: "access")
        api.addRoutes(NetworkRoutes(services: services).collection, atPath: "nodes")
        api.addRoutes(ClusterRoutes(services: services).collection)
        api.addRoutes(TaskRoutes(services: services).collection, atPath: "nodes")
        api.addRoutes(QemuRoutes(services: services).collection, atPath: "nodes")

        let addressFile = directory + "/vireod.addr"
        try? fileManager.removeItem(atPath: addressFile)
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "vireod"),
            onServerRunning: { channel in
                // Tests and tools find the bound port here (`--listen 127.0.0.1:0`).
                let port = channel.localAddress?.port ?? 0
                _ = fileManager.createFile(atPath: addressFile, contents: Data("\(configuration.host):\(port)\n".utf8))
                logger.notice("vireod listening on http://\(configuration.host):\(port)/api2/json (node \(node))")
            },
            logger: logger)
        let monitor = Task { await vms.monitor() }
        defer { monitor.cancel() }
        try await app.runService()
    }

    /// First start: root@pam with $VIREO_ROOT_PASSWORD, or a random password written to
    /// DIR/initial-root-password (0600).
    static func ensureRootUser(store: any Store, directory: String, logger: Logger) throws {
        guard try store.user("root@pam") == nil else { return }
        let password: String
        if let given = ProcessInfo.processInfo.environment["VIREO_ROOT_PASSWORD"], !given.isEmpty {
            password = given
        } else {
            password = randomBytes(18).map { String(format: "%02x", $0) }.joined()
            let path = directory + "/initial-root-password"
            guard FileManager.default.createFile(atPath: path, contents: Data((password + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
                throw APIError(500, "cannot write \(path)")
            }
            logger.notice("created root@pam; its password is in \(path)")
        }
        try store.putUser(UserRecord(userid: "root@pam", passwordHash: PasswordHash.make(password)))
    }
}
