import Foundation
import Testing
import VireoNetlink
import VireoSystem
@testable import VireoEngines

/// ``NICTrafficMeter`` turns the host's counters to the guest's point of view (Proxmox's
/// `netin` = what the guest received). Against real vireod, VMs, bridges and switches in
/// VireoDaemonTests/NetworkTests.
@Suite struct NICTrafficTests {
    @Test func aSwitchPortsTransmitIsWhatItsGuestReceived() {
        let stats: [String: Any] = ["ports": [
            ["name": "vm525400000001", "rx_bytes": 100, "rx_packets": 1, "tx_bytes": 5000, "tx_packets": 7],
            ["name": "uplink0", "rx_bytes": 1, "rx_packets": 1, "tx_bytes": 1, "tx_packets": 1],
        ]]
        #expect(NICTrafficMeter.portTraffic(stats)["vm525400000001"]
            == NICTraffic(receivedBytes: 5000, receivedPackets: 7, transmittedBytes: 100, transmittedPackets: 1))
    }

    /// A tap held here as a VMM holds it: one frame written by the "guest", two sent by the host.
    @Test(.enabled(if: getuid() == 0)) func aTapsTransmitIsWhatItsGuestReceived() async throws {
        let vmid = Int.random(in: 90_000...99_999)
        let nic = VMSpec.NIC(index: 0, model: "virtio", mac: "52:54:00:00:00:01", bridge: "vmbr0")
        let name = nic.tapName(vmid: vmid)
        var deviceName = ""
        let guestSide = try FrameChannel.openTap(named: name, deviceName: &deviceName)
        // No IPv6 on the tap: the host would send its own router solicitations into it.
        try "1".write(toFile: "/proc/sys/net/ipv6/conf/\(name)/disable_ipv6", atomically: false, encoding: .utf8)
        try RouteNetlink().setUp(name, true)
        let hostSide = try FrameChannel.openPacketSocket(interface: name)
        let frame: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02, 0, 0, 0, 0, 1, 0x88, 0xB5] + [UInt8](repeating: 7, count: 46)

        #expect(FrameChannel.write(guestSide.rawValue, frame))
        for _ in 0..<2 { #expect(FrameChannel.write(hostSide.rawValue, frame)) }
        // tun counts a transmitted frame once the tap's holder has read it.
        var buffer = [UInt8](repeating: 0, count: 2048), read = 0
        let deadline = ContinuousClock.now + .seconds(30)
        while read < 2, ContinuousClock.now < deadline {
            if try FrameChannel.read(guestSide.rawValue, into: &buffer) != nil { read += 1 } else { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(read == 2)

        let traffic = NICTrafficMeter(switchDirectory: "/nonexistent").traffic(vmid: vmid, nics: [nic])
        #expect(traffic == NICTraffic(receivedBytes: 2 * frame.count, receivedPackets: 2, transmittedBytes: frame.count, transmittedPackets: 1))
        #expect(NICTrafficMeter().traffic(vmid: vmid, nics: [VMSpec.NIC(index: 0, model: "virtio", mac: "52:54:00:00:00:01")]) == NICTraffic(),
                "a NIC without a bridge (user-mode networking) has no host-side counters")
    }
}
