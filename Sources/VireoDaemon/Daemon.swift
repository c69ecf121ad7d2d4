import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import ServiceLifecycle
import VireoEngines

/// How vireod runs.
public struct DaemonConfiguration: Sendable {
    public var dataDirectory: String
    public var host: String
    public var port: Int
    /// Defaults to the host name (its first label).
    public var node: String?
    /// HTTPS with the node certificate (``NodeCertificate``); false serves plain HTTP.
    public var tls: Bool
    /// Admission control: see ``DaemonConfigFile``.
    public var memoryOvercommit: Double
    public var cpuOvercommit: Double
    /// The directory pool `local` (default DATA_DIR/storage/local).
    public var localStoragePath: String?

    public init(dataDirectory: String = "/var/lib/vireo", host: String = "0.0.0.0", port: Int = 8006, node: String? = nil, tls: Bool = true,
                memoryOvercommit: Double = 1.0, cpuOvercommit: Double = 4.0, localStoragePath: String? = nil) {
        self.dataDirectory = dataDirectory; self.host = host; self.port = port; self.node = node; self.tls = tls
        self.memoryOvercommit = memoryOvercommit; self.cpuOvercommit = cpuOvercommit; self.localStoragePath = localStoragePath
    }
}

/// The control-plane daemon: state in SQLite, the Proxmox-shaped API over HTTPS, VMs via engines.
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
        let storage = try StorageManager(pools: [DirectoryPool(id: "local", path: configuration.localStoragePath ?? directory + "/storage/local")])
        let admission = Admission(memoryOvercommit: configuration.memoryOvercommit, cpuOvercommit: configuration.cpuOvercommit)
        let vms = VMManager(store: store, runDirectory: directory + "/run", engines: engines, storage: storage, admission: admission, logger: logger)
        await vms.adopt()
        let services = Services(store: store, node: node, tasks: TaskManager(store: store, node: node, logger: logger),
                                vms: vms, storage: storage, signer: signer, version: "8.2.4")

        try Self.startOnBoot(services: services, runDirectory: directory + "/run", logger: logger)

        let router = Router(context: APIContext.self)
        router.add(middleware: APIMiddleware(authenticator: Authenticator(store: store, signer: signer), logger: logger))
        let api = router.group("api2/json")
        api.addRoutes(AccessRoutes(services: services).collection, atPath: "access")
        api.addRoutes(NetworkRoutes(services: services).collection, atPath: "nodes")
        api.addRoutes(ClusterRoutes(services: services).collection)
        api.addRoutes(TaskRoutes(services: services).collection, atPath: "nodes")
        api.addRoutes(QemuRoutes(services: services).collection, atPath: "nodes")
        api.addRoutes(StorageRoutes(services: services).collection, atPath: "nodes")
        router.addRoutes(MetricsRoutes(services: services).collection)

        let addressFile = directory + "/vireod.addr"
        try? fileManager.removeItem(atPath: addressFile)
        var server: HTTPServerBuilder = .http1()
        if configuration.tls {
            let (tls, fingerprint, created) = try NodeCertificate.serverConfiguration(dataDirectory: directory, node: node)
            let path = NodeCertificate.certificatePath(dataDirectory: directory)
            logger.notice("\(created ? "created a self-signed certificate" : "TLS certificate") \(path), SHA-256 fingerprint \(fingerprint)")
            server = try .tls(.http1(), tlsConfiguration: tls)
        }
        let scheme = configuration.tls ? "https" : "http"
        let app = Application(
            router: router,
            server: server,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "vireod"),
            onServerRunning: { channel in
                // Tests and tools find the bound port here (`--listen 127.0.0.1:0`).
                let port = channel.localAddress?.port ?? 0
                _ = fileManager.createFile(atPath: addressFile, contents: Data("\(configuration.host):\(port)\n".utf8))
                logger.notice("vireod listening on \(scheme)://\(configuration.host):\(port)/api2/json (node \(node))")
            },
            logger: logger)
        // SIGTERM/SIGINT: swift-service-lifecycle shuts the server and the monitor down gracefully;
        // VMs run in sessions of their own and keep running.
        let group = ServiceGroup(configuration: .init(services: [app, VMMonitorService(vms: vms)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        logger.notice("vireod stopped; VMs keep running")
    }

    /// Starts the stopped VMs with `onboot: 1`, each in its own `qmstart` task, once per host boot
    /// (as Proxmox's pve-guests does at boot): `RUN/onboot.bootid` remembers the boot it ran for,
    /// so restarting vireod does not restart VMs someone stopped.
    static func startOnBoot(services: Services, runDirectory: String, logger: Logger) throws {
        let marker = runDirectory + "/onboot.bootid"
        let bootID = VireoSystemFiles.read("/proc/sys/kernel/random/boot_id")?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        if let done = VireoSystemFiles.read(marker), done.trimmingCharacters(in: .whitespacesAndNewlines) == bootID { return }
        _ = FileManager.default.createFile(atPath: marker, contents: Data((bootID + "\n").utf8))
        let vms = services.vms
        for record in try services.store.vms() where record.config["onboot"] == "1" && record.process?.isAlive != true {
            let vmid = record.vmid
            logger.notice("starting VM \(vmid) (onboot)")
            _ = try services.tasks.start(type: "qmstart", id: String(vmid), user: "root@pam") { log in
                log("onboot: starting VM \(vmid)")
                try await vms.start(vmid, log: log)
            }
        }
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

/// Watches VM processes until vireod shuts down.
struct VMMonitorService: Service {
    let vms: VMManager
    func run() async throws {
        await cancelWhenGracefulShutdown { await vms.monitor() }
    }
}
