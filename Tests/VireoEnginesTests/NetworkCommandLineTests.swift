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
