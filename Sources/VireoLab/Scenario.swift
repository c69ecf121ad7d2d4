import Foundation

/// `scenario.json`: everything the runner needs to know about a scenario, as data.
public struct ScenarioSpec: Codable, Sendable, Equatable {
    public struct L1: Codable, Sendable, Equatable {
        public var memory: String?
        public var cpus: Int?
        public init(memory: String? = nil, cpus: Int? = nil) { self.memory = memory; self.cpus = cpus }
    }

    public var description: String
    /// Seconds from the first QEMU start until the scenario must have passed.
    public var timeout: Int
    public var hosts: Int
    public var l1: L1
    /// Artifacts the L1 image must contain: see `Need`.
    public var needs: [String]
    public var pass: String
    public var fail: [String]
    /// Regular expressions that must match console lines, in this order, before the pass marker.
    public var expect: [String]
    /// Size of the /results scratch disk in MiB.
    public var resultsDiskMiB: Int

    public static let defaultPass = "VIREO-LAB: PASS"
    public static let defaultFail = ["Kernel panic", "VIREO-LAB: FAIL"]

    enum CodingKeys: String, CodingKey {
        case description, timeout, hosts, l1, needs, pass, fail, expect
        case resultsDiskMiB = "results_disk_mib"
    }

    public init(
        description: String = "", timeout: Int = 180, hosts: Int = 1, l1: L1 = L1(), needs: [String] = [],
        pass: String = ScenarioSpec.defaultPass, fail: [String] = ScenarioSpec.defaultFail, expect: [String] = [],
        resultsDiskMiB: Int = 64
    ) {
        self.description = description; self.timeout = timeout; self.hosts = hosts; self.l1 = l1
        self.needs = needs; self.pass = pass; self.fail = fail; self.expect = expect; self.resultsDiskMiB = resultsDiskMiB
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        description = try c.decodeIfPresent(String.self, forKey: .description) ?? ""
        timeout = try c.decodeIfPresent(Int.self, forKey: .timeout) ?? 180
        hosts = try c.decodeIfPresent(Int.self, forKey: .hosts) ?? 1
        l1 = try c.decodeIfPresent(L1.self, forKey: .l1) ?? L1()
        needs = try c.decodeIfPresent([String].self, forKey: .needs) ?? []
        pass = try c.decodeIfPresent(String.self, forKey: .pass) ?? Self.defaultPass
        fail = try c.decodeIfPresent([String].self, forKey: .fail) ?? Self.defaultFail
        expect = try c.decodeIfPresent([String].self, forKey: .expect) ?? []
        resultsDiskMiB = try c.decodeIfPresent(Int.self, forKey: .resultsDiskMiB) ?? 64
        for need in needs where Need(rawValue: need.hasSuffix("?") ? String(need.dropLast()) : need) == nil {
            throw LabError.scenario("unknown need \"\(need)\" (known: \(Need.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        guard hosts >= 1, hosts <= 8 else { throw LabError.scenario("hosts must be between 1 and 8") }
        guard timeout > 0 else { throw LabError.scenario("timeout must be positive") }
        for pattern in expect { _ = try Regex(pattern) }
    }

    /// Required needs (a name ending in "?" is optional: packaged only when available, see `optionalNeedSet`).
    public var needSet: Set<Need> {
        var set = Set(needs.compactMap(Need.init(rawValue:)))
        if set.contains(.l2Initramfs) || set.contains(.rootfs) { set.insert(.l2Kernel) }
        if set.contains(.vireod) { set.insert(.vireoVMM) }
        return set
    }

    public var optionalNeedSet: Set<Need> {
        Set(needs.filter { $0.hasSuffix("?") }.compactMap { Need(rawValue: String($0.dropLast())) })
    }

    /// QEMU's -m value ("2048M", "2G", or a plain number of MiB).
    public var l1Memory: String { l1.memory ?? "2048M" }
    public var l1CPUs: Int { l1.cpus ?? 1 }
}

public enum Need: String, CaseIterable, Sendable, Hashable, Comparable {
    case vireoVMM = "vireo-vmm"
    case l2Kernel = "l2-kernel"
    case l2Initramfs = "l2-initramfs"
    case qemu
    case rootfs
    /// The build host's `e2fsck` and `mke2fs` (e2fsprogs) in the L1 host's /usr/sbin (call them by that path: busybox has its own mke2fs): scenarios that make
    /// or check ext4 images there.
    case e2fsprogs
    /// The `vireod` control-plane daemon built beside vireo-vmm, in /vireo/bin (implies vireo-vmm): scenarios that
    /// drive VMs through the API.
    case vireod

    public static func < (a: Need, b: Need) -> Bool { a.rawValue < b.rawValue }
}

/// A scenario folder: `scenario.json`, `run.sh`, optional `guest-init.sh` and `*.S` guests, plus any other files.
public struct Scenario: Sendable {
    public var name: String
    public var directory: String
    public var spec: ScenarioSpec

    public init(directory: String) throws {
        let dir = URL(fileURLWithPath: directory).standardizedFileURL.path
        let jsonPath = dir + "/scenario.json"
        guard let data = FileManager.default.contents(atPath: jsonPath) else {
            throw LabError.scenario("\(jsonPath) not found")
        }
        do {
            spec = try JSONDecoder().decode(ScenarioSpec.self, from: data)
        } catch let error as LabError {
            throw LabError.scenario("\(jsonPath): \(error)")
        } catch {
            throw LabError.scenario("\(jsonPath): \(error)")
        }
        guard FileManager.default.fileExists(atPath: dir + "/run.sh") else { throw LabError.scenario("\(dir)/run.sh not found") }
        self.directory = dir
        self.name = (dir as NSString).lastPathComponent
    }

    public var guestInitPath: String? {
        let path = directory + "/guest-init.sh"
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }

    /// Files of the scenario folder (relative paths), sorted; used for hashing and packaging.
    public func files() throws -> [String] {
        guard let enumerator = FileManager.default.enumerator(atPath: directory) else { return [] }
        var result: [String] = []
        while let relative = enumerator.nextObject() as? String {
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: directory + "/" + relative, isDirectory: &isDirectory), !isDirectory.boolValue {
                result.append(relative)
            }
        }
        return result.sorted()
    }

    public var assemblySources: [String] {
        ((try? files()) ?? []).filter { $0.hasSuffix(".S") && !$0.contains("/") }
    }
}

/// Finds scenarios by name in the scenario search path.
public enum ScenarioLocator {
    /// `$VIREO_LAB_SCENARIOS`, `./lab/scenarios`, and `lab/scenarios` in any parent of the executable's folder.
    public static func searchPath(environment: [String: String] = ProcessInfo.processInfo.environment) -> [String] {
        var paths: [String] = []
        if let explicit = environment["VIREO_LAB_SCENARIOS"] { paths += explicit.split(separator: ":").map(String.init) }
        paths.append(FileManager.default.currentDirectoryPath + "/lab/scenarios")
        var dir = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            paths.append(dir.path + "/lab/scenarios")
            dir = dir.deletingLastPathComponent()
        }
        var seen = Set<String>()
        return paths.filter { FileManager.default.fileExists(atPath: $0) && seen.insert($0).inserted }
    }

    public static func locate(_ nameOrPath: String) throws -> Scenario {
        if nameOrPath.contains("/") || FileManager.default.fileExists(atPath: nameOrPath + "/scenario.json") {
            return try Scenario(directory: nameOrPath)
        }
        for dir in searchPath() where FileManager.default.fileExists(atPath: dir + "/" + nameOrPath + "/scenario.json") {
            return try Scenario(directory: dir + "/" + nameOrPath)
        }
        throw LabError.scenario("no scenario named \(nameOrPath) in \(searchPath().joined(separator: ", "))")
    }

    public static func all() -> [Scenario] {
        var found: [String: Scenario] = [:]
        for dir in searchPath() {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where found[name] == nil {
                if let scenario = try? Scenario(directory: dir + "/" + name) { found[name] = scenario }
            }
        }
        return found.values.sorted { $0.name < $1.name }
    }
}
