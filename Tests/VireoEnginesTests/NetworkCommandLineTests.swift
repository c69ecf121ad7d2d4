import Testing
@testable import VireoEngines

/// How NICs on bridges appear on the engines' command lines (the plumbing itself is tested
/// against real bridges and switches in VireoDaemonTests/NetworkTests).
@Suite struct NetworkCommandLineTests {
    let spec = VMSpec(vmid: 100, name: "web", memoryMiB: 256, cores: 1, sockets: 1, kernel: "/boot/vmlinuz", nics: [
        .init(index: 0, model: "virtio", mac: "BC:24:11:00:00:01", bridge: "sw0", tag: 10),
        .init(index: 1, model: "e1000", mac: "BC:24:11:00:00:02", bridge: "vmbr0"),
        .init(index: 2, model: "virtio", mac: "BC:24:11:00:00:03"),
    ])
    let bridges: [Int: HostNetwork.Bridge] = [0: .vireoSwitch("sw0"), 1: .linux("vmbr0")]

    @Test func qemuUsesTheTapsVireodMadeAndUserModeOtherwise() {
        let line = QEMUEngine(executable: "q", accelerator: .tcg).arguments(for: spec, qmp: "q", serial: "s", bridges: bridges).joined(separator: " ")
        #expect(line.contains("-netdev tap,id=net0,ifname=tap100i0,script=no,downscript=no -device virtio-net-pci,netdev=net0,mac=BC:24:11:00:00:01"))
        #expect(line.contains("-netdev tap,id=net1,ifname=tap100i1,script=no,downscript=no -device e1000,netdev=net1"))
        #expect(line.contains("-netdev user,id=net2 -device virtio-net-pci,netdev=net2"))
    }

    @Test func vireoVMMAttachesToTheSwitchItselfOrToTheTap() throws {
        let arguments = try VireoEngine(executable: "v").arguments(for: spec, control: "c", serial: "s", bridges: bridges, switchDirectory: "/run/sw")
        let nets = zip(arguments, arguments.dropFirst()).filter { $0.0 == "--net" }.map(\.1)
        #expect(nets == ["switch=sw0,tag=10,mac=bc:24:11:00:00:01,dir=/run/sw", "tap=tap100i1,mac=bc:24:11:00:00:02"])
    }
}

/// The switch's per-port drop counters, read as what is wrong between a guest and its port.
@Suite struct IngressDropProblemTests {
    @Test func eachMisconfigurationReasonWithDropsIsOneProblem() {
        let problems = NetworkPath.ingressDropProblems(port: "vm525400001001", drops: [
            "flood-limited": 3, "tagged-on-access": 12, "untagged-on-trunk": 0, "vlan-not-allowed": 1, "bad-offload": 2,
            "runt": 5, "transmit-failed": 9,
        ])
        #expect(problems.map(\.code) == ["flood-drops", "tagged-on-access", "vlan-not-allowed", "bad-offload"])
        #expect(problems[1].message == "switch dropped 12 802.1Q-tagged frame(s) from vm525400001001: the guest tags its traffic but its port is an access port (untag in the guest, or attach it to a trunk port)")
        #expect(problems[0].message == "switch dropped 3 flooded frame(s) from vm525400001001 (flood-limit)")
    }

    @Test func noDropsNoProblems() {
        #expect(NetworkPath.ingressDropProblems(port: "p", drops: [:]).isEmpty)
        #expect(NetworkPath.ingressDropProblems(port: "p", drops: ["tagged-on-access": 0, "runt": 4]).isEmpty)
    }
}
