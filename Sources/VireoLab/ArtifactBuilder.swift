import Foundation

/// Builds (or reuses from the cache) everything a lab run boots:
/// - `l1-base`: busybox, kvm + virtio modules, and per `needs`: vireo-vmm with its libraries, QEMU with its
///   libraries and firmware, the L2 kernel. The big, slow part; shared by every scenario with the same needs.
/// - `l2-initramfs`: busybox, virtio modules, the L2 `/init` and the scenario's guest script.
/// - `rootfs`: an ext4 image with the same tree, for disk tests.
/// - `guests`: the scenario's `*.S` files assembled to flat binaries.
/// - `l1-overlay`: a small cpio with the L1 `/init`, `/lab/env`, the scenario folder and the L2 artifacts.
/// The initrd QEMU boots is `l1-base.cpio` followed by the overlay (the kernel unpacks concatenated archives).
public struct ArtifactBuilder: Sendable {
    public let host: HostEnvironment
    public let cache: ArtifactCache
    /// The vireo-vmm binary to package, when a scenario needs it.
    public let vmmPath: String?
    /// Other Vireo executables (such as the `vireo` CLI) packaged into `/vireo/bin` along with vireo-vmm.
    public let companionBinaries: [String]
    public let log: @Sendable (String) -> Void

    public init(
        host: HostEnvironment, vmmPath: String?, companionBinaries: [String] = [],
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) {
        self.host = host
        self.cache = ArtifactCache(root: host.cacheDirectory)
        self.vmmPath = vmmPath
        // The `vireo` CLI and the `vireo-switchd` switch go into lab hosts too (scenarios use
        // `vireo img`, `vireo vmm control`, and attach guests to a switch): callers other than the
        // CLI itself (the test harness) get the ones built beside vireo-vmm.
        var companions = companionBinaries
        if let vmmPath {
            let directory = (vmmPath as NSString).deletingLastPathComponent as NSString
            let besideVMM = ["vireo", "vireo-switchd"].map { directory.appendingPathComponent($0) }
            let named = Set(companions.map { ($0 as NSString).lastPathComponent })
            companions += besideVMM.filter { !named.contains(($0 as NSString).lastPathComponent) }
        }
        self.companionBinaries = companions.filter { FileManager.default.isExecutableFile(atPath: $0) }
        self.log = log
    }

    /// What to put in an L1 image.
    public struct Request: Sendable {
        public var needs: Set<Need>
        /// Packaged only when available (a scenario's "vireo-vmm?").
        public var optional: Set<Need> = []
        public var scenario: Scenario?
        /// Guest script for the L2 initramfs when the scenario has none.
        public var defaultGuestInit: String
        public var hosts: Int
        public var l2Cmdline: String

        public init(needs: Set<Need>, scenario: Scenario? = nil, defaultGuestInit: String = InitScripts.interactiveGuest, hosts: Int = 1, l2Cmdline: String = InitScripts.defaultL2Cmdline) {
            self.needs = needs; self.scenario = scenario; self.defaultGuestInit = defaultGuestInit
            self.hosts = hosts; self.l2Cmdline = l2Cmdline
        }

        public init(scenario: Scenario) {
            self.init(needs: scenario.spec.needSet, scenario: scenario, hosts: scenario.spec.hosts)
            optional = scenario.spec.optionalNeedSet
        }
    }

    public struct Images: Sendable {
        public var l1Kernel: String
        /// The concatenated initrd to boot (written into `outputDirectory`).
        public var l1Initrd: String
        public var entries: [ArtifactCache.Entry]
        public var l2Initrd: String?
        public var rootfs: String?

        public var summary: String {
            entries.map { entry in
                "\(entry.reused ? "reused " : "rebuilt") \(entry.kind) \(entry.directory)"
                    + (entry.reused ? "" : String(format: " (%.1fs)", entry.seconds))
            }.joined(separator: "\n")
        }
    }

    /// Builds what `request` needs and writes the bootable initrd to `outputDirectory/l1-initrd.cpio`.
    public func build(_ request: Request, outputDirectory: String) throws -> Images {
        var entries: [ArtifactCache.Entry] = []
        func note(_ entry: ArtifactCache.Entry) -> ArtifactCache.Entry {
            entries.append(entry)
            log(entry.reused ? "reused \(entry.kind) (\(entry.directory))" : String(format: "rebuilt %@ in %.1fs (%@)", entry.kind, entry.seconds, entry.directory))
            return entry
        }
        var request = request
        if request.optional.contains(.vireoVMM), let vmmPath, FileManager.default.isExecutableFile(atPath: vmmPath) {
            request.needs.insert(.vireoVMM)
        }
        request.needs.formUnion(request.optional.subtracting([.vireoVMM]))
        if request.needs.contains(.l2Initramfs) || request.needs.contains(.rootfs) { request.needs.insert(.l2Kernel) }
        if request.needs.contains(.vireod) { request.needs.insert(.vireoVMM) }
        let base = note(try buildL1Base(needs: request.needs))
        var guestInit = request.defaultGuestInit
        if let path = request.scenario?.guestInitPath {
            guestInit = try String(contentsOfFile: path, encoding: .utf8)
        }
        var l2Initrd: String?
        if request.needs.contains(.l2Initramfs) {
            l2Initrd = note(try buildL2Initramfs(guestInit: guestInit)).directory + "/initrd.cpio"
        }
        var rootfs: String?
        if request.needs.contains(.rootfs) {
            rootfs = note(try buildRootfs(guestInit: guestInit)).directory + "/rootfs.img"
        }
        var guestBinaries: [String: String] = [:]
        if let scenario = request.scenario, !scenario.assemblySources.isEmpty {
            let guests = note(try buildGuests(scenario))
            for source in scenario.assemblySources {
                let name = String(source.dropLast(2)) + ".bin"
                guestBinaries[name] = guests.directory + "/" + name
            }
        }

        var overlay = CpioArchive()
        overlay.addFile("init", text: InitScripts.l1Init(hosts: request.hosts, l2Cmdline: request.l2Cmdline), mode: 0o755)
        overlay.addFile("lab/env", text: envFile(request))
        overlay.addFile("vireo/bin/vmm-run", text: InitScripts.vmmRun, mode: 0o755)
        if let scenario = request.scenario {
            for file in try scenario.files() {
                try overlay.addFile(InitScripts.L1Paths.scenario + "/" + file, from: scenario.directory + "/" + file)
            }
        } else {
            overlay.addDirectory(InitScripts.L1Paths.scenario)
        }
        for (name, path) in guestBinaries { try overlay.addFile(InitScripts.L1Paths.scenario + "/" + name, from: path) }
        if let l2Initrd { try overlay.addFile(InitScripts.L1Paths.l2Initrd, from: l2Initrd, mode: 0o644) }
        if let rootfs { try overlay.addFile(InitScripts.L1Paths.rootfs, from: rootfs, mode: 0o644) }

        try FileManager.default.createDirectory(atPath: outputDirectory, withIntermediateDirectories: true)
        let overlayPath = outputDirectory + "/l1-overlay.cpio"
        try overlay.write(to: overlayPath)
        let initrd = outputDirectory + "/l1-initrd.cpio"
        try concatenate([base.directory + "/l1-base.cpio", overlayPath], into: initrd)
        try? FileManager.default.removeItem(atPath: overlayPath)
        return Images(l1Kernel: host.kernel, l1Initrd: initrd, entries: entries, l2Initrd: l2Initrd, rootfs: rootfs)
    }

    func envFile(_ request: Request) -> String {
        var lines = [
            "VIREO_LAB_SCENARIO=\(request.scenario?.name ?? "none")",
            "VIREO_VMM=\(InitScripts.L1Paths.vmm)",
            "L2_KERNEL=\(InitScripts.L1Paths.l2Kernel)",
            "L2_INITRD=\(InitScripts.L1Paths.l2Initrd)",
            "L2_CMDLINE='\(request.l2Cmdline)'",
            "ROOTFS_IMG=\(InitScripts.L1Paths.rootfs)",
            "QEMU=\(InitScripts.L1Paths.qemu)",
            "QEMU_DATA=\(InitScripts.L1Paths.qemuData)",
            "RESULTS=\(InitScripts.L1Paths.results)",
            "SCENARIO_DIR=\(InitScripts.L1Paths.scenario)",
        ]
        lines = lines.map { "export " + $0 }
        return lines.joined(separator: "\n") + "\n"
    }

    // MARK: Pieces

    func commonTree(into archive: inout CpioArchive, modules: [String]) throws {
        for dir in ["bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "etc", "root", "var"] {
            archive.addDirectory(dir)
        }
        archive.addCharacterDevice("dev/console", major: 5, minor: 1)
        archive.addCharacterDevice("dev/null", major: 1, minor: 3, mode: 0o666)
        try archive.addFile("bin/busybox", from: host.busybox, mode: 0o755)
        archive.addSymlink("bin/sh", target: "busybox")
        archive.addFile("etc/profile", text: InitScripts.profile)
        archive.addFile("etc/passwd", text: "root:x:0:0:root:/root:/bin/sh\n")
        archive.addFile("etc/group", text: "root:x:0:\n")
        var order: [String] = []
        for module in modules {
            let name = (module as NSString).lastPathComponent
            try archive.addFile("lab/modules/" + name, from: try host.module(module), mode: 0o644)
            order.append(name)
        }
        archive.addFile("lab/modules.order", text: order.joined(separator: "\n") + "\n")
    }

    public func buildL1Base(needs: Set<Need>) throws -> ArtifactCache.Entry {
        var manifest = CacheManifest()
        manifest.add("kind", "l1-base")
        manifest.add("needs", needs.sorted().map(\.rawValue).joined(separator: ","))
        manifest.add("generated", SHA256.hex(InitScripts.profile))
        manifest.addFileStat(host.busybox)
        for module in LabModules.l1 { manifest.addFileStat(try host.module(module)) }
        var vmm: String?
        if needs.contains(.vireoVMM) {
            guard let path = vmmPath, FileManager.default.isExecutableFile(atPath: path) else {
                throw LabError.missingTool("this scenario needs vireo-vmm, but no binary was found (\(vmmPath ?? "none")); build it with `swift build --product vireo-vmm`, or pass --vmm / set VIREO_VMM")
            }
            vmm = path
            manifest.addFileStat(path)
            for companion in companionBinaries { manifest.addFileStat(companion) }
        }
        if needs.contains(.qemu) { manifest.addFileStat(host.qemu) }
        if needs.contains(.l2Kernel) { manifest.addFileStat(host.kernel) }
        var vireod: String?
        if needs.contains(.vireod) {
            let path = ((vmm ?? "") as NSString).deletingLastPathComponent + "/vireod"
            guard vmm != nil, FileManager.default.isExecutableFile(atPath: path) else {
                throw LabError.missingTool("this scenario needs vireod beside vireo-vmm (\(path)); build it with `swift build --product vireod`")
            }
            vireod = path
            manifest.addFileStat(path)
        }
        let e2fsprogs = needs.contains(.e2fsprogs) ? try Self.e2fsprogsTools() : []
        for tool in e2fsprogs { manifest.addFileStat(tool) }
        return try cache.entry(kind: "l1-base", manifest: manifest) { dir in
            var archive = CpioArchive()
            try commonTree(into: &archive, modules: LabModules.l1)
            if let vmm {
                try addWithLibraries(vmm, as: InitScripts.L1Paths.vmm, into: &archive)
                for companion in companionBinaries {
                    let name = (companion as NSString).lastPathComponent
                    try addWithLibraries(companion, as: "/vireo/bin/" + name, into: &archive)
                }
            }
            if let vireod { try addWithLibraries(vireod, as: "/vireo/bin/vireod", into: &archive) }
            if needs.contains(.qemu) {
                try addWithLibraries(host.qemu, as: InitScripts.L1Paths.qemu, into: &archive)
                for (name, path) in qemuDataFiles() {
                    try archive.addFile(InitScripts.L1Paths.qemuData + "/" + name, from: path, mode: 0o644)
                }
            }
            if needs.contains(.l2Kernel) {
                try archive.addFile(InitScripts.L1Paths.l2Kernel, from: host.kernel, mode: 0o644)
            }
            for tool in e2fsprogs {
                try addWithLibraries(tool, as: "/usr/sbin/" + (tool as NSString).lastPathComponent, into: &archive)
            }
            try archive.write(to: dir + "/l1-base.cpio")
        }
    }

    public func buildL2Initramfs(guestInit: String) throws -> ArtifactCache.Entry {
        var manifest = CacheManifest()
        manifest.add("kind", "l2-initramfs")
        manifest.addFileStat(host.busybox)
        for module in LabModules.l2 { manifest.addFileStat(try host.module(module)) }
        manifest.add("guest-init", SHA256.hex(guestInit))
        manifest.add("generated", SHA256.hex(InitScripts.l2Init() + InitScripts.profile))
        return try cache.entry(kind: "l2-initramfs", manifest: manifest) { dir in
            var archive = CpioArchive()
            try commonTree(into: &archive, modules: LabModules.l2)
            archive.addFile("init", text: InitScripts.l2Init(), mode: 0o755)
            archive.addFile("guest-init.sh", text: guestInit, mode: 0o755)
            try archive.write(to: dir + "/initrd.cpio")
        }
    }

    /// An ext4 image (mkfs.ext4 -d, no root needed) with busybox, the modules and `/sbin/init` = the L2 init.
    public func buildRootfs(guestInit: String, sizeMiB: Int = 48) throws -> ArtifactCache.Entry {
        var manifest = CacheManifest()
        manifest.add("kind", "rootfs")
        manifest.add("size", "\(sizeMiB)")
        manifest.addFileStat(host.busybox)
        for module in LabModules.l2 { manifest.addFileStat(try host.module(module)) }
        manifest.add("guest-init", SHA256.hex(guestInit))
        manifest.add("generated", SHA256.hex(InitScripts.l2Init() + InitScripts.profile))
        return try cache.entry(kind: "rootfs", manifest: manifest) { dir in
            let tree = dir + "/tree"
            let fm = FileManager.default
            var archive = CpioArchive()
            try commonTree(into: &archive, modules: LabModules.l2)
            archive.addFile("sbin/init", text: InitScripts.l2Init(), mode: 0o755)
            archive.addFile(".vireo-rootfs", text: "")
            archive.addFile("guest-init.sh", text: guestInit, mode: 0o755)
            // Materialize the tree on disk (device nodes are left to devtmpfs).
            for entry in archive.entries {
                let path = tree + "/" + entry.path
                switch entry.content {
                case .directory:
                    try fm.createDirectory(atPath: path, withIntermediateDirectories: true)
                case .bytes(let bytes):
                    fm.createFile(atPath: path, contents: Data(bytes), attributes: [.posixPermissions: entry.mode])
                case .hostFile(let source):
                    try fm.copyItem(atPath: URL(fileURLWithPath: source).resolvingSymlinksInPath().path, toPath: path)
                    try fm.setAttributes([.posixPermissions: entry.mode], ofItemAtPath: path)
                case .symlink(let target):
                    try fm.createSymbolicLink(atPath: path, withDestinationPath: target)
                case .characterDevice:
                    continue
                }
            }
            try Shell.run("mkfs.ext4", ["-q", "-F", "-L", "vireo-root", "-d", tree, dir + "/rootfs.img", "\(sizeMiB)M"])
            try fm.removeItem(atPath: tree)
        }
    }

    /// Assembles each `X.S` of the scenario with `as --64` and `objcopy -O binary` into `X.bin`.
    public func buildGuests(_ scenario: Scenario) throws -> ArtifactCache.Entry {
        var manifest = CacheManifest()
        manifest.add("kind", "guests")
        for source in scenario.assemblySources { manifest.addFileContent(scenario.directory + "/" + source, label: source) }
        return try cache.entry(kind: "guests", manifest: manifest) { dir in
            for source in scenario.assemblySources {
                let stem = String(source.dropLast(2))
                let object = dir + "/" + stem + ".o"
                try Shell.run("as", ["--64", "-o", object, scenario.directory + "/" + source])
                try Shell.run("objcopy", ["-O", "binary", object, dir + "/" + stem + ".bin"])
                try FileManager.default.removeItem(atPath: object)
            }
        }
    }

    // MARK: Helpers

    /// `e2fsck` and `mke2fs` of the build host (Debian's e2fsprogs).
    static func e2fsprogsTools() throws -> [String] {
        try ["e2fsck", "mke2fs"].map { name in
            guard let path = ["/usr/sbin/", "/sbin/"].map({ $0 + name }).first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
                throw LabError.missingTool("this scenario needs \(name) (install e2fsprogs)")
            }
            return path
        }
    }

    /// Adds `binary` at `destination` plus every library `ldd` lists (at the path ldd prints) and the loader.
    public func addWithLibraries(_ binary: String, as destination: String, into archive: inout CpioArchive) throws {
        try archive.addFile(destination, from: binary, mode: 0o755)
        for library in try Self.sharedLibraries(of: binary) where !archive.contains(library) {
            try archive.addFile(library, from: library, mode: 0o755)
        }
    }

    /// Absolute paths from `ldd` output ("libx.so => /path (0x…)", "/lib64/ld-linux-x86-64.so.2 (0x…)").
    public static func sharedLibraries(of binary: String) throws -> [String] {
        let output = try Shell.run("ldd", [binary], check: false)
        if output.stdout.contains("not a dynamic executable") || output.stderr.contains("not a dynamic executable") {
            return []
        }
        guard output.status == 0 else { throw LabError.command("ldd \(binary) failed: \(output.stderr)") }
        return parseLdd(output.stdout)
    }

    public static func parseLdd(_ text: String) -> [String] {
        var paths: [String] = []
        for line in text.split(separator: "\n") {
            if line.contains("not found") { continue }
            let candidate: Substring?
            if let arrow = line.range(of: "=> ") {
                candidate = line[arrow.upperBound...].split(separator: " ").first
            } else {
                candidate = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first
            }
            if let path = candidate, path.hasPrefix("/"), !paths.contains(String(path)) { paths.append(String(path)) }
        }
        return paths
    }

    /// Firmware QEMU needs for x86 guests (`-L` points at the folder they are copied to).
    func qemuDataFiles() -> [(String, String)] {
        let prefixes = ["bios", "qboot", "kvmvapic", "linuxboot", "multiboot", "pvh", "vgabios", "sgabios", "efi-", "acpi-dsdt"]
        var result: [String: String] = [:]
        for dir in host.qemuDataDirectories {
            for name in ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
            where result[name] == nil && prefixes.contains(where: { name.hasPrefix($0) }) {
                let resolved = URL(fileURLWithPath: dir + "/" + name).resolvingSymlinksInPath().path
                var isDirectory: ObjCBool = false
                if FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory), !isDirectory.boolValue {
                    result[name] = resolved
                }
            }
        }
        return result.sorted { $0.key < $1.key }
    }

    func concatenate(_ inputs: [String], into output: String) throws {
        FileManager.default.createFile(atPath: output, contents: nil)
        guard let out = FileHandle(forWritingAtPath: output) else { throw LabError.io("cannot write \(output)") }
        defer { try? out.close() }
        for input in inputs {
            guard let handle = FileHandle(forReadingAtPath: input) else { throw LabError.io("cannot read \(input)") }
            defer { try? handle.close() }
            while let chunk = try handle.read(upToCount: 8 << 20), !chunk.isEmpty { try out.write(contentsOf: chunk) }
        }
    }
}
