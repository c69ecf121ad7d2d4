import Foundation
import Testing

@testable import VireoLab

@Suite struct CpioTests {
    @Test func roundTripsEntries() throws {
        var archive = CpioArchive()
        archive.addFile("bin/hello", text: "hello\n", mode: 0o755)
        archive.addFile("/etc/odd", bytes: [1, 2, 3], mode: 0o600)  // length not a multiple of 4
        archive.addSymlink("bin/sh", target: "busybox")
        archive.addCharacterDevice("dev/console", major: 5, minor: 1)
        let path = NSTemporaryDirectory() + "/cpio-test-\(getpid()).cpio"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try archive.write(to: path)
        let bytes = [UInt8](FileManager.default.contents(atPath: path)!)
        #expect(bytes.count % 4 == 0)
        #expect(String(decoding: bytes[0..<6], as: UTF8.self) == "070701")
        let entries = try CpioArchive.parse(bytes)
        let byName = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })
        #expect(entries.map(\.name) == ["bin", "bin/hello", "etc", "etc/odd", "bin/sh", "dev", "dev/console"])
        #expect(byName["bin"]?.mode == 0o040755)
        #expect(byName["bin/hello"]?.mode == 0o100755)
        #expect(byName["bin/hello"]?.data == Array("hello\n".utf8))
        #expect(byName["etc/odd"]?.data == [1, 2, 3])
        #expect(byName["etc/odd"]?.mode == 0o100600)
        #expect(byName["bin/sh"]?.mode == 0o120777)
        #expect(byName["bin/sh"]?.data == Array("busybox".utf8))
        #expect(byName["dev/console"]?.mode == 0o020600)
        #expect(byName["dev/console"]?.rdevMajor == 5 && byName["dev/console"]?.rdevMinor == 1)
        // The trailer is there.
        #expect(String(decoding: bytes, as: UTF8.self).contains("TRAILER!!!"))
    }

    @Test func hostFilesAndConcatenation() throws {
        let dir = NSTemporaryDirectory() + "/cpio-host-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir + "/tree/sub", withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "x".write(toFile: dir + "/tree/sub/file", atomically: true, encoding: .utf8)
        var first = CpioArchive()
        try first.addTree("data", from: dir + "/tree")
        var second = CpioArchive()
        second.addFile("init", text: "#!/bin/sh\n", mode: 0o755)
        try first.write(to: dir + "/a.cpio")
        try second.write(to: dir + "/b.cpio")
        let joined = [UInt8](FileManager.default.contents(atPath: dir + "/a.cpio")!) + [UInt8](FileManager.default.contents(atPath: dir + "/b.cpio")!)
        let names = try CpioArchive.parse(joined).map(\.name)
        #expect(names == ["data", "data/sub", "data/sub/file", "init"])
    }

    @Test func matchesTheSystemCpioTool() throws {
        guard let cpio = Shell.which("cpio") else { return }
        var archive = CpioArchive()
        archive.addFile("a/b/c.txt", text: "content", mode: 0o644)
        let path = NSTemporaryDirectory() + "/cpio-sys-\(getpid()).cpio"
        defer { try? FileManager.default.removeItem(atPath: path) }
        try archive.write(to: path)
        let output = try Shell.run("sh", ["-c", "\(cpio) -it < \(path)"])
        #expect(output.stdout.split(separator: "\n") == ["a", "a/b", "a/b/c.txt"])
    }
}

@Suite struct HashAndCacheTests {
    @Test func sha256KnownVectors() {
        #expect(SHA256.hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(SHA256.hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        #expect(SHA256.hex(String(repeating: "a", count: 1000)) == "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    @Test func cacheKeyFollowsInputs() throws {
        let dir = NSTemporaryDirectory() + "/cache-key-\(getpid())"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try "one".write(toFile: dir + "/f", atomically: true, encoding: .utf8)
        func key() -> String {
            var m = CacheManifest()
            m.add("kind", "test")
            m.addFileContent(dir + "/f", label: "f")
            return m.key
        }
        let first = key()
        #expect(key() == first)
        try "two".write(toFile: dir + "/f", atomically: true, encoding: .utf8)
        #expect(key() != first)
        var a = CacheManifest(); a.add("needs", "qemu")
        var b = CacheManifest(); b.add("needs", "qemu,vireo-vmm")
        #expect(a.key != b.key)
        #expect(a.text.hasPrefix("format \(ArtifactCache.formatVersion)"))
    }

    @Test func cacheEntryIsBuiltOnce() throws {
        let cache = ArtifactCache(root: NSTemporaryDirectory() + "/cache-entry-\(getpid())")
        defer { try? FileManager.default.removeItem(atPath: cache.root) }
        var manifest = CacheManifest()
        manifest.add("x", "1")
        var builds = 0
        let first = try cache.entry(kind: "k", manifest: manifest) { dir in
            builds += 1
            try "out".write(toFile: dir + "/out", atomically: true, encoding: .utf8)
        }
        let second = try cache.entry(kind: "k", manifest: manifest) { _ in builds += 1 }
        #expect(builds == 1)
        #expect(!first.reused && second.reused)
        #expect(first.directory == second.directory)
        #expect(FileManager.default.fileExists(atPath: second.directory + "/out"))
        // A failing build leaves nothing behind.
        var other = CacheManifest(); other.add("x", "2")
        #expect(throws: LabError.self) {
            try cache.entry(kind: "k", manifest: other) { _ in throw LabError.io("boom") }
        }
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: cache.root)
        #expect(leftovers.count == 1)
    }
}

extension HashAndCacheTests {
    @Test func pruneKeepsTheMostRecentlyUsed() throws {
        var cache = ArtifactCache(root: NSTemporaryDirectory() + "/cache-prune-\(getpid())")
        cache.keepPerKind = 2
        defer { try? FileManager.default.removeItem(atPath: cache.root) }
        var dirs: [String] = []
        for i in 0..<3 {
            var m = CacheManifest()
            m.add("i", "\(i)")
            dirs.append(try cache.entry(kind: "k", manifest: m) { _ in }.directory)
            if i == 0 { _ = try cache.entry(kind: "other", manifest: m) { _ in } }
            usleep(20_000)
        }
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: cache.root).map { cache.root + "/" + $0 })
        #expect(!left.contains(dirs[0]))
        #expect(left.contains(dirs[1]) && left.contains(dirs[2]))
        #expect(left.count == 3)  // plus the "other" kind
    }

    @Test func concurrentBuildKeepsThePublishedEntry() throws {
        let cache = ArtifactCache(root: NSTemporaryDirectory() + "/cache-race-\(getpid())")
        defer { try? FileManager.default.removeItem(atPath: cache.root) }
        var manifest = CacheManifest()
        manifest.add("x", "race")
        // While "we" build, "another process" publishes the same entry first.
        let ours = try cache.entry(kind: "k", manifest: manifest) { dir in
            _ = try cache.entry(kind: "k", manifest: manifest) { other in
                try "theirs".write(toFile: other + "/out", atomically: true, encoding: .utf8)
            }
            try "ours".write(toFile: dir + "/out", atomically: true, encoding: .utf8)
        }
        #expect(try String(contentsOfFile: ours.directory + "/out", encoding: .utf8) == "theirs")
        #expect(try FileManager.default.contentsOfDirectory(atPath: cache.root).count == 1)
    }
}

@Suite struct ScenarioSpecTests {
    @Test func decodesFullSpec() throws {
        let json = """
            {"description": "d", "timeout": 99, "hosts": 2, "l1": {"memory": "1G", "cpus": 2},
             "needs": ["vireo-vmm", "l2-initramfs", "qemu", "rootfs", "vireo-vmm?"], "pass": "OK", "fail": ["BAD"],
             "expect": ["a+", "b"], "results_disk_mib": 8}
            """
        let spec = try JSONDecoder().decode(ScenarioSpec.self, from: Data(json.utf8))
        #expect(spec.description == "d" && spec.timeout == 99 && spec.hosts == 2)
        #expect(spec.l1Memory == "1G" && spec.l1CPUs == 2)
        #expect(spec.needSet == [.vireoVMM, .l2Initramfs, .l2Kernel, .qemu, .rootfs])
        #expect(spec.optionalNeedSet == [.vireoVMM])
        #expect(spec.pass == "OK" && spec.fail == ["BAD"] && spec.expect == ["a+", "b"])
        #expect(spec.resultsDiskMiB == 8)
    }

    @Test func knowsTheVireodNeed() throws {
        let spec = try JSONDecoder().decode(ScenarioSpec.self, from: Data(#"{"needs": ["vireod", "l2-initramfs"]}"#.utf8))
        #expect(spec.needSet == [.vireod, .vireoVMM, .l2Initramfs, .l2Kernel])
    }

    @Test func appliesDefaults() throws {
        let spec = try JSONDecoder().decode(ScenarioSpec.self, from: Data("{}".utf8))
        #expect(spec.timeout == 180 && spec.hosts == 1 && spec.needs.isEmpty)
        #expect(spec.pass == "VIREO-LAB: PASS")
        #expect(spec.fail == ["Kernel panic", "VIREO-LAB: FAIL"])
        #expect(spec.l1Memory == "2048M")
    }

    @Test func rejectsBadSpecs() {
        for json in [#"{"needs": ["warp-drive"]}"#, #"{"hosts": 0}"#, #"{"timeout": 0}"#, #"{"expect": ["(unclosed"]}"#] {
            #expect(throws: (any Error).self, "\(json)") {
                try JSONDecoder().decode(ScenarioSpec.self, from: Data(json.utf8))
            }
        }
    }

    @Test func everyShippedScenarioLoads() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let dir = root.appendingPathComponent("lab/scenarios").path
        let names = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        #expect(names.contains("qemu-l2-baseline"))
        for name in names {
            let scenario = try Scenario(directory: dir + "/" + name)
            #expect(scenario.name == name)
            #expect(!scenario.spec.description.isEmpty)
        }
    }
}

@Suite struct ConsoleMatcherTests {
    @Test func passesWhenExpectationsMatchInOrder() {
        var m = ConsoleMatcher(pass: "PASS!", fail: ["Kernel panic"], expect: ["^cpus=2$", "mem=[0-9]+"])
        #expect(m.feed("booting") == .running)
        #expect(m.feed("mem=100") == .running)  // out of order: not yet
        #expect(m.feed("cpus=2\r") == .running)
        #expect(m.feed("mem=512") == .running)
        #expect(m.feed("all good: PASS!") == .passed)
        #expect(m.feed("Kernel panic") == .passed)  // decided outcomes stick
    }

    @Test func failMarkerWins() {
        var m = ConsoleMatcher(pass: "PASS!", fail: ["Kernel panic", "FAIL"], expect: [])
        guard case .failed(let why) = m.feed("[ 1.0] Kernel panic - not syncing: x") else {
            Issue.record("expected failure"); return
        }
        #expect(why.contains("Kernel panic"))
    }

    @Test func passMarkerWithOpenExpectationFails() {
        var m = ConsoleMatcher(pass: "PASS!", fail: [], expect: ["never"])
        guard case .failed(let why) = m.feed("PASS!") else { Issue.record("expected failure"); return }
        #expect(why.contains("/never/"))
    }

    @Test func lineAssemblerSplitsAndKeepsTail() {
        var a = LineAssembler(tailLimit: 3)
        #expect(a.append(Array("one\r\ntw".utf8)) == ["one"])
        #expect(a.append(Array("o\nthree\nfour\nfi".utf8)) == ["two", "three", "four"])
        #expect(a.tail == ["two", "three", "four"])
        #expect(a.tailWithPending == ["two", "three", "four", "fi"])
        #expect(a.flush() == ["fi"])
    }
}

@Suite struct HostTests {
    @Test func parsesLddOutput() {
        let text = """
            \tlinux-vdso.so.1 (0x00007ffd)
            \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f39)
            \tlibmissing.so => not found
            \t/lib64/ld-linux-x86-64.so.2 (0x00007f39)
            """
        #expect(ArtifactBuilder.parseLdd(text) == ["/lib/x86_64-linux-gnu/libz.so.1", "/lib64/ld-linux-x86-64.so.2"])
    }

    @Test func versionOrdering() {
        #expect(HostEnvironment.versionLess("6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64"))
        #expect(!HostEnvironment.versionLess("6.10.0-1-cloud-amd64", "6.1.0-56-cloud-amd64"))
    }

    @Test func hostKVMReportsSomething() {
        #expect(["native", "emulated (PVM)", "absent"].contains(HostKVM.detect().rawValue))
    }
}

@Suite struct DiagnosticsTests {
    /// QEMU 7.2's `info registers -a` as the monitor sends it (CRLF, the echoed command first).
    static let registers = """
        info registers -a\r
        \r
        CPU#0\r
        RAX=0000000000000000 RBX=ffffffff82a13940 RCX=0000000000000000 RDX=0000000000000000\r
        RIP=ffffffff81a17a0b RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r
        \r
        CPU#1\r
        RAX=0000000000000001 RBX=0000000000000000 RCX=0000000000000000 RDX=0000000000000000\r
        RIP=ffffffffb64969f0 RFL=00000202 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\r

        """

    @Test func cpuLinesSayWhoseCodeEachCPURuns() {
        #expect(LabDiagnostics.cpuLines(registers: Self.registers, symbols: nil) == [
            "CPU 0: RIP ffffffff81a17a0b (L1 kernel text) halted",
            "CPU 1: RIP ffffffffb64969f0 (the L2 guest or L1 user space)",
        ])
        #expect(LabDiagnostics.whoseCode(0xFFFF_FFFF_C0A1_2345) == "an L1 module, such as kvm or kvm-amd")
        #expect(LabDiagnostics.whoseCode(0x0000_5555_0000_1000) == "the L2 guest or L1 user space")
    }

    @Test func aRealSystemMapNamesTheFunction() throws {
        let map = """
            ffffffff81000000 T _stext
            ffffffff81a17a00 T default_idle
            ffffffff81a17a40 t mwait_idle
            ffffffff81a17a80 D some_data
            ffffffff82000000 T _etext
            """
        let symbols = try #require(KernelSymbols(systemMap: map))
        #expect(symbols.name(of: 0xFFFF_FFFF_81A1_7A0B) == "default_idle+0xb")
        #expect(symbols.name(of: 0xFFFF_FFFF_81A1_7A90) == "mwait_idle+0x50")
        #expect(symbols.name(of: 0xFFFF_FFFF_8200_0001) == nil)
        #expect(LabDiagnostics.cpuLines(registers: Self.registers, symbols: symbols).first == "CPU 0: RIP ffffffff81a17a0b (default_idle+0xb) halted")
        // Debian's /boot/System.map is a one-line placeholder pointing at the -dbg package.
        #expect(KernelSymbols(systemMap: "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package") == nil)
    }
}
