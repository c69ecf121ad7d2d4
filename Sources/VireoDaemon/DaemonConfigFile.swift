import Foundation

/// vireod's configuration file: JSON, `/etc/vireo/vireod.json` or `DATA_DIR/vireod.json` (the first
/// that exists, unless `--config` names one). Every key is optional; command-line options win.
///
/// ```json
/// {"listen": "0.0.0.0:8006", "data_dir": "/var/lib/vireo", "node": "pve1", "tls": true,
///  "memory_overcommit": 1.0, "cpu_overcommit": 4.0, "storage": {"local": "/var/lib/vireo/storage/local"}}
/// ```
public struct DaemonConfigFile: Decodable, Sendable, Equatable {
    public var listen: String?
    public var dataDir: String?
    public var node: String?
    public var tls: Bool?
    /// Committed guest memory (running VMs) may reach this multiple of the host's RAM.
    public var memoryOvercommit: Double?
    /// Committed vCPUs above this multiple of the host's CPUs put a warning in the start task's log.
    public var cpuOvercommit: Double?
    /// Directory pools by id (`local` only for now): their paths.
    public var storage: [String: String]?

    enum CodingKeys: String, CodingKey {
        case listen, dataDir = "data_dir", node, tls, memoryOvercommit = "memory_overcommit", cpuOvercommit = "cpu_overcommit", storage
    }

    public init() {}

    public static let systemPath = "/etc/vireo/vireod.json"

    /// Reads `path`; a missing file is an empty configuration only when `required` is false.
    public static func load(_ path: String, required: Bool) throws -> DaemonConfigFile {
        guard let data = FileManager.default.contents(atPath: path) else {
            if required { throw ConfigError("cannot read the configuration file \(path)") }
            return DaemonConfigFile()
        }
        let file: DaemonConfigFile
        do {
            file = try JSONDecoder().decode(DaemonConfigFile.self, from: data)
        } catch let DecodingError.dataCorrupted(context) {
            throw ConfigError("\(path): not valid JSON (\(context.debugDescription))")
        } catch let DecodingError.typeMismatch(_, context) {
            throw ConfigError("\(path): '\(context.codingPath.map(\.stringValue).joined(separator: "."))' has the wrong type")
        } catch {
            throw ConfigError("\(path): \(error)")
        }
        for (name, value) in [("memory_overcommit", file.memoryOvercommit), ("cpu_overcommit", file.cpuOvercommit)] {
            if let value, !(value > 0 && value <= 1000) { throw ConfigError("\(path): \(name) must be a number above 0 (got \(value))") }
        }
        for (id, directory) in file.storage ?? [:] {
            guard id == "local" else { throw ConfigError("\(path): storage '\(id)': only the directory pool 'local' exists") }
            guard directory.hasPrefix("/") else { throw ConfigError("\(path): storage '\(id)' must be an absolute path") }
        }
        return file
    }
}

public struct ConfigError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
