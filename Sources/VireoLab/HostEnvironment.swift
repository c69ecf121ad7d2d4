import Foundation

/// Where the lab finds its inputs on the host: the Debian cloud kernel and its modules, a static busybox,
/// QEMU and its firmware, and the cache directory. Every path can be overridden by an environment variable.
public struct HostEnvironment: Sendable {
    public var kernel: String
    public var kernelVersion: String
    public var modulesRoot: String  // .../lib/modules/<version>/kernel
    public var busybox: String
    public var qemu: String
    public var qemuDataDirectories: [String]
    public var cacheDirectory: String

    public static func detect(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> HostEnvironment {
        let fm = FileManager.default
        let kernel: String
        let version: String
        if let explicit = environment["VIREO_LAB_KERNEL"] {
            kernel = explicit
            let base = (explicit as NSString).lastPathComponent
            version = base.hasPrefix("vmlinuz-") ? String(base.dropFirst("vmlinuz-".count)) : base
        } else {
            let candidates = ((try? fm.contentsOfDirectory(atPath: "/boot")) ?? [])
                .filter { $0.hasPrefix("vmlinuz-") && $0.hasSuffix("-cloud-amd64") }
                .map { String($0.dropFirst("vmlinuz-".count)) }
                .sorted { versionLess($0, $1) }
            guard let newest = candidates.last else {
                throw LabError.missingTool("no /boot/vmlinuz-*-cloud-amd64 (install linux-image-cloud-amd64) or set VIREO_LAB_KERNEL")
            }
            version = newest
            kernel = "/boot/vmlinuz-\(newest)"
        }
        guard fm.isReadableFile(atPath: kernel) else { throw LabError.missingTool("kernel \(kernel) is not readable") }
        let modulesRoot = environment["VIREO_LAB_MODULES"] ?? "/lib/modules/\(version)/kernel"
        guard fm.fileExists(atPath: modulesRoot) else { throw LabError.missingTool("kernel modules not found at \(modulesRoot)") }
        let busybox = environment["VIREO_LAB_BUSYBOX"] ?? "/bin/busybox"
        guard fm.isExecutableFile(atPath: busybox) else { throw LabError.missingTool("static busybox not found at \(busybox) (install busybox-static)") }
        guard let qemu = Shell.which(environment["VIREO_LAB_QEMU"] ?? "qemu-system-x86_64") else {
            throw LabError.missingTool("qemu-system-x86_64 not found (install qemu-system-x86)")
        }
        let cache = environment["VIREO_LAB_CACHE"] ?? ((environment["HOME"] ?? NSTemporaryDirectory()) + "/.cache/vireo-lab")
        return HostEnvironment(
            kernel: kernel, kernelVersion: version, modulesRoot: modulesRoot, busybox: busybox, qemu: qemu,
            qemuDataDirectories: ["/usr/share/qemu", "/usr/share/seabios"].filter { fm.fileExists(atPath: $0) },
            cacheDirectory: cache)
    }

    /// Compares dotted/dashed version strings numerically where both parts are numbers.
    static func versionLess(_ a: String, _ b: String) -> Bool {
        let split: (String) -> [Substring] = { $0.split(whereSeparator: { $0 == "." || $0 == "-" }) }
        let pa = split(a), pb = split(b)
        for (x, y) in zip(pa, pb) where x != y {
            if let nx = Int(x), let ny = Int(y) { return nx < ny }
            return x < y
        }
        return pa.count < pb.count
    }

    public func module(_ relativePath: String) throws -> String {
        for suffix in ["", ".ko"] {
            let path = modulesRoot + "/" + relativePath + suffix
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        throw LabError.missingTool("kernel module \(relativePath) not found under \(modulesRoot) (compressed modules are not supported)")
    }
}

/// What the lab needs in each layer. Orders matter: they are insmod orders (checked with `modinfo -F depends`).
public enum LabModules {
    public static let kvm = ["virt/lib/irqbypass.ko", "arch/x86/kvm/kvm.ko", "arch/x86/kvm/kvm-amd.ko"]
    public static let virtioCore = [
        "drivers/virtio/virtio_ring.ko", "drivers/virtio/virtio.ko",
        "drivers/virtio/virtio_pci_legacy_dev.ko", "drivers/virtio/virtio_pci_modern_dev.ko",
        "drivers/virtio/virtio_pci.ko",
    ]
    public static let virtioBlockAndNet = [
        "drivers/block/virtio_blk.ko", "net/core/failover.ko", "drivers/net/net_failover.ko", "drivers/net/virtio_net.ko",
    ]
    public static let l1 = virtioCore + virtioBlockAndNet + kvm + ["drivers/net/tun.ko", "drivers/net/veth.ko"]
    public static let l2 = virtioCore + virtioBlockAndNet + [
        "drivers/char/hw_random/virtio-rng.ko", "drivers/virtio/virtio_balloon.ko", "drivers/char/virtio_console.ko",
        // The ACPI power button (PNP0C0C, notified through the GED) and the event device acpid reads it from.
        "drivers/input/evdev.ko", "drivers/acpi/button.ko",
    ]
}

/// Whether this host's /dev/kvm runs ordinary guests at hardware speed.
public enum HostKVM: String, Sendable {
    case native
    case emulatedPVM = "emulated (PVM)"
    case absent

    public static func detect() -> HostKVM {
        guard FileManager.default.fileExists(atPath: "/dev/kvm") else { return .absent }
        let cpuinfo = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let hasVirtFlags = cpuinfo.split(separator: "\n").contains { line in
            line.hasPrefix("flags") && line.split(separator: " ").contains { $0 == "vmx" || $0 == "svm" }
        }
        let pvmLoaded = FileManager.default.fileExists(atPath: "/sys/module/kvm_pvm")
            || ((try? String(contentsOfFile: "/proc/modules", encoding: .utf8)) ?? "").contains("kvm_pvm ")
        return hasVirtFlags && !pvmLoaded ? .native : .emulatedPVM
    }
}
