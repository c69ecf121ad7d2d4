import VireoBoot

/// What to boot and with what resources: the typed form of `vireo-vmm`'s command line,
/// checked by ``validate()`` before anything touches KVM (cloud-hypervisor's `config.rs` pattern).
public struct VMConfig: Sendable {
    /// The guest payload.
    public enum Payload: Sendable, Equatable {
        /// A Linux bzImage booted through the 64-bit boot protocol.
        case linux(kernel: String, initrd: String?, commandLine: String)
        /// A flat binary loaded at ``VMConfig/rawLoadAddress`` and entered in the given mode: tiny test and teaching guests.
        case raw(path: String, mode: RawMode)
    }

    public enum RawMode: String, Sendable, CaseIterable {
        /// 16-bit real mode at CS=0x1000, IP=0 (linear 0x10000), as after a BIOS far jump.
        case real
        /// 64-bit long mode at RIP=0x10000 with the first 4 GiB identity-mapped and RSP=0x80000.
        case long
    }

    /// Where the guest's COM1 goes.
    public enum SerialBackend: Sendable {
        /// Output to standard output, input from standard input (raw mode when it is a terminal).
        case stdio
        /// Output appended to a file; no input.
        case file(String)
        /// A unix-socket server: one client at a time reads output and writes input.
        case unix(String)
        /// Output discarded.
        case none
        /// Output to a caller-supplied sink (in-process users such as tests).
        case sink(any SerialSink)
    }

    public static let rawLoadAddress: UInt64 = 0x10000
    /// Most vCPUs one VM may have: what the MP table in the 1 KiB EBDA can describe.
    public static let maxCPUs = LinuxBoot.maximumCPUCount
    public static let minimumMemory: UInt64 = 16 << 20

    public var payload: Payload
    public var cpuCount: Int
    public var memorySize: UInt64
    public var serial: SerialBackend
    /// Path of the control socket (`--control unix:PATH`), if any.
    public var controlSocket: String?
    public var kvmPath: String
    /// virtio-blk disks (`--disk`), in PCI slot order.
    public var disks: [DiskConfig] = []
    /// A virtio-rng device (`--rng`).
    public var rng = false
    /// A virtio-console (the guest's hvc0) and where it goes (`--console`).
    public var virtioConsole: SerialBackend?
    /// A virtio-balloon and its initial target in bytes (`--balloon [SIZE]`); nil: no balloon.
    public var balloonTarget: UInt64?
    /// Seconds between balloon statistics requests (`--balloon SIZE,stats=N`); 0: only on demand.
    public var balloonStatsInterval: UInt32 = 0
    /// Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM (`--balloon SIZE,deflate-on-oom=on`).
    public var balloonDeflateOnOOM = false
    /// virtio-net devices (`--net`), in PCI slot order.
    public var nets: [NetConfig] = []

    public init(payload: Payload, cpuCount: Int = 1, memorySize: UInt64 = 256 << 20, serial: SerialBackend = .stdio, controlSocket: String? = nil, kvmPath: String = "/dev/kvm") {
        self.payload = payload
        self.cpuCount = cpuCount
        self.memorySize = memorySize
        self.serial = serial
        self.controlSocket = controlSocket
        self.kvmPath = kvmPath
    }

    public func validate() throws(ConfigError) {
        guard (1...VMConfig.maxCPUs).contains(cpuCount) else {
            throw .invalid("--cpus must be between 1 and \(VMConfig.maxCPUs), got \(cpuCount)")
        }
        guard memorySize >= VMConfig.minimumMemory else {
            throw .invalid("--memory must be at least 16M, got \(memorySize >> 20)M")
        }
        guard memorySize % 4096 == 0 else { throw .invalid("--memory must be a multiple of 4 KiB") }
        guard memorySize <= 1 << 40 else { throw .invalid("--memory larger than 1 TiB is not supported") }
    }

    /// Parses `--balloon SIZE[,stats=SECONDS][,deflate-on-oom=on|off]` into this config.
    public mutating func parseBalloon(_ text: String) throws(ConfigError) {
        let items = text.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        balloonTarget = items[0] == "0" ? 0 : try Self.parseMemorySize(items[0])
        for item in items.dropFirst() {
            let parts = item.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2 else { throw .invalid("--balloon: expected key=value, got '\(item)'") }
            switch parts[0] {
            case "stats":
                guard let seconds = UInt32(parts[1]), seconds <= 86_400 else { throw .invalid("--balloon: stats takes seconds (0-86400), got '\(parts[1])'") }
                balloonStatsInterval = seconds
            case "deflate-on-oom":
                switch parts[1] {
                case "on": balloonDeflateOnOOM = true
                case "off": balloonDeflateOnOOM = false
                default: throw .invalid("--balloon: deflate-on-oom must be on or off, got '\(parts[1])'")
                }
            default: throw .invalid("--balloon: unknown key '\(parts[0])' (stats, deflate-on-oom)")
            }
        }
    }

    /// Parses sizes the way QEMU's `-m` does: a number with an optional K/M/G/T suffix (binary units); a bare number means MiB.
    public static func parseMemorySize(_ text: String) throws(ConfigError) -> UInt64 {
        var body = Substring(text.trimmingPrefixAndSuffixSpaces).uppercased()[...]
        if body.hasSuffix("IB") { body = body.dropLast(2) } else if body.hasSuffix("B") && body.count > 1 && !(body.dropLast().last?.isNumber ?? true) { body = body.dropLast() }
        var shift: UInt64 = 20
        if let unit = body.last, !unit.isNumber {
            switch unit {
            case "K": shift = 10
            case "M": shift = 20
            case "G": shift = 30
            case "T": shift = 40
            default: throw .invalid("cannot parse memory size '\(text)': unknown unit '\(unit)' (use K, M, G or T)")
            }
            body = body.dropLast()
        }
        guard let value = UInt64(body), value > 0 else {
            throw .invalid("cannot parse memory size '\(text)': expected a positive number such as 256M or 2G")
        }
        let (bytes, overflow) = value.multipliedReportingOverflow(by: 1 << shift)
        guard !overflow else { throw .invalid("memory size '\(text)' is too large") }
        return bytes
    }
}

/// A configuration the VMM refuses, with a message that says what to change.
public enum ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
    case invalid(String)

    public var description: String {
        switch self { case .invalid(let message): message }
    }
}

/// Receives the bytes the guest writes to its serial console.
public protocol SerialSink: Sendable {
    func write(_ bytes: [UInt8])
}

extension String {
    fileprivate var trimmingPrefixAndSuffixSpaces: Substring {
        var slice = Substring(self)
        while slice.first == " " { slice = slice.dropFirst() }
        while slice.last == " " { slice = slice.dropLast() }
        return slice
    }
}
