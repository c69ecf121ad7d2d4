import VireoQCOW2

/// One `--disk path=FILE[,readonly=on|off][,format=raw|qcow2][,serial=ID][,werror=enospc|report]`: a virtio-blk device.
public struct DiskConfig: Sendable, Equatable {
    public var path: String
    public var readOnly: Bool
    /// nil probes the file (qcow2 magic, else raw).
    public var format: ImageFormat?
    /// VIRTIO_BLK_T_GET_ID answer (≤ 20 bytes); defaults to `vireo-diskN`.
    public var serial: String?
    /// `werror=enospc` (the default, as QEMU's): a write that finds the host file system full pauses the
    /// VM and is retried on resume. `werror=report`: the guest gets an I/O error.
    public var pauseOnOutOfSpace: Bool

    public init(path: String, readOnly: Bool = false, format: ImageFormat? = nil, serial: String? = nil, pauseOnOutOfSpace: Bool = true) {
        self.pauseOnOutOfSpace = pauseOnOutOfSpace
        self.path = path
        self.readOnly = readOnly
        self.format = format
        self.serial = serial
    }

    /// Parses the option's `key=value` list; a bare first item is taken as the path.
    public static func parse(_ text: String) throws(ConfigError) -> DiskConfig {
        var path: String?
        var readOnly = false
        var format: ImageFormat?
        var serial: String?
        var pauseOnOutOfSpace = true
        for (index, item) in text.split(separator: ",", omittingEmptySubsequences: false).enumerated() {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 1, index == 0 {
                path = parts[0]
                continue
            }
            guard parts.count == 2 else { throw .invalid("--disk: expected key=value, got '\(item)'") }
            switch parts[0] {
            case "path": path = parts[1]
            case "readonly", "ro":
                switch parts[1] {
                case "on", "true", "yes": readOnly = true
                case "off", "false", "no": readOnly = false
                default: throw .invalid("--disk: readonly must be on or off, got '\(parts[1])'")
                }
            case "format":
                guard let value = ImageFormat(rawValue: parts[1]) else { throw .invalid("--disk: format must be raw or qcow2, got '\(parts[1])'") }
                format = value
            case "serial":
                guard parts[1].utf8.count <= 20 else { throw .invalid("--disk: serial is at most 20 bytes") }
                serial = parts[1]
            case "werror":
                switch parts[1] {
                case "enospc": pauseOnOutOfSpace = true
                case "report": pauseOnOutOfSpace = false
                default: throw .invalid("--disk: werror must be enospc or report, got '\(parts[1])'")
                }
            default: throw .invalid("--disk: unknown key '\(parts[0])' (path, readonly, format, serial, werror)")
            }
        }
        guard let path, !path.isEmpty else { throw .invalid("--disk needs path=FILE") }
        return DiskConfig(path: path, readOnly: readOnly, format: format, serial: serial, pauseOnOutOfSpace: pauseOnOutOfSpace)
    }
}
