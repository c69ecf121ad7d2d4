import Foundation
import VireoSwitch
import VireoSystem

/// Bytes and packets VM NICs moved, from the guest's point of view, as Proxmox reports them:
/// `netin` is what the guest received, `netout` what it sent.
public struct NICTraffic: Sendable, Equatable {
    public var receivedBytes = 0
    public var receivedPackets = 0
    public var transmittedBytes = 0
    public var transmittedPackets = 0

    public init(receivedBytes: Int = 0, receivedPackets: Int = 0, transmittedBytes: Int = 0, transmittedPackets: Int = 0) {
        self.receivedBytes = receivedBytes; self.receivedPackets = receivedPackets
        self.transmittedBytes = transmittedBytes; self.transmittedPackets = transmittedPackets
    }

    public static func + (left: NICTraffic, right: NICTraffic) -> NICTraffic {
        NICTraffic(receivedBytes: left.receivedBytes + right.receivedBytes, receivedPackets: left.receivedPackets + right.receivedPackets,
                   transmittedBytes: left.transmittedBytes + right.transmittedBytes,
                   transmittedPackets: left.transmittedPackets + right.transmittedPackets)
    }
}

/// Reads the traffic of VM NICs where ``HostNetwork/plumb(_:forTapHolder:log:)`` put them, from
/// counters the host keeps anyway, as Proxmox's qemu-server reads its taps' (`vmstatus`):
///
/// - a tap `tap{vmid}i{index}` (a Linux bridge port, or the `uplink:` port of a Vireo switch that
///   QEMU holds): `/sys/class/net/TAP/statistics`. The host transmits what the guest receives, so
///   the guest's received bytes are the tap's `tx_bytes`.
/// - a `vm…` port of a Vireo switch (vireo-vmm attached itself): the switch's `stats`, whose
///   `tx_bytes` are likewise what the switch delivered to the guest.
///
/// Each tap and switch is read once per meter, so the figures of one API request agree; a switch
/// is asked with a short timeout (a hung switch costs one request at most that long). Use one meter
/// per API request; it is not shared between threads. Taps are read in this process's network namespace.
public final class NICTrafficMeter {
    public let switchDirectory: String
    public let switchTimeoutMilliseconds: Int
    /// Each switch's port counters by port name, as its `stats` reported them (nil: no answer).
    private var switchCounters: [String: [String: NICTraffic]?] = [:]
    /// Each tap's counters (nil: no such tap).
    private var tapCounters: [String: NICTraffic?] = [:]

    public init(switchDirectory: String = HostNetwork().switchDirectory, switchTimeoutMilliseconds: Int = 500) {
        self.switchDirectory = switchDirectory
        self.switchTimeoutMilliseconds = switchTimeoutMilliseconds
    }

    /// The sum over the NICs of VM `vmid`; NICs without a bridge (user-mode networking) count nothing.
    public func traffic(vmid: Int, nics: [VMSpec.NIC]) -> NICTraffic {
        nics.reduce(NICTraffic()) { total, nic in total + (traffic(vmid: vmid, nic: nic)?.traffic ?? NICTraffic()) }
    }

    /// Each NIC's traffic by its host-side name (the tap, or the switch port), as Proxmox's
    /// `status/current` reports `nics` by tap; NICs without counters are left out.
    public func trafficByPort(vmid: Int, nics: [VMSpec.NIC]) -> [String: NICTraffic] {
        Dictionary(nics.compactMap { traffic(vmid: vmid, nic: $0) }, uniquingKeysWith: +)
    }

    func traffic(vmid: Int, nic: VMSpec.NIC) -> (port: String, traffic: NICTraffic)? {
        guard let bridge = nic.bridge else { return nil }
        let tap = nic.tapName(vmid: vmid)
        if let traffic = tapTraffic(tap) { return (tap, traffic) }
        let port = VMSpec.NIC.switchPortName(mac: nic.mac)
        return portCounters(switch: bridge)?[port].map { (port, $0) }
    }

    private func tapTraffic(_ tap: String) -> NICTraffic? {
        if let known = tapCounters[tap] { return known }
        let traffic = Self.tapTraffic(tap)
        tapCounters[tap] = traffic
        return traffic
    }

    /// A tap's counters (nil when there is no such interface), turned to the guest's point of view.
    static func tapTraffic(_ tap: String) -> NICTraffic? {
        let directory = "/sys/class/net/\(tap)/statistics/"
        // A counter is one decimal line; read with a buffer its size (lists read many of them).
        func counter(_ name: String) -> Int? {
            let file: FileDescriptor
            do { file = try FileDescriptor.open(directory + name, flags: O_RDONLY) } catch { return nil }
            guard let line = RawDescriptorIO.readSome(file.rawValue, max: 32) else { return nil }
            return Int(String(decoding: line.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self))
        }
        guard let sentToGuest = counter("tx_bytes") else { return nil }
        return NICTraffic(receivedBytes: sentToGuest, receivedPackets: counter("tx_packets") ?? 0,
                          transmittedBytes: counter("rx_bytes") ?? 0, transmittedPackets: counter("rx_packets") ?? 0)
    }

    /// The port counters of switch `name`, turned to the attached guest's point of view; nil when
    /// `name` is no Vireo switch or it did not answer.
    private func portCounters(switch name: String) -> [String: NICTraffic]? {
        if let known = switchCounters[name] { return known }
        var counters: [String: NICTraffic]?
        let path = "\(switchDirectory)/\(name).ctl"
        if FileManager.default.fileExists(atPath: path),
           let reply = try? SwitchControlClient(path: path, timeoutMilliseconds: switchTimeoutMilliseconds).request("stats"),
           let stats = try? JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any] {
            counters = Self.portTraffic(stats)
        }
        switchCounters[name] = counters
        return counters
    }

    /// A switch's `stats` reply as traffic per port name: a port's `rx_*` is what the switch took
    /// from the guest, its `tx_*` what it delivered to it.
    static func portTraffic(_ stats: [String: Any]) -> [String: NICTraffic] {
        var result: [String: NICTraffic] = [:]
        for port in stats["ports"] as? [[String: Any]] ?? [] {
            guard let name = port["name"] as? String else { continue }
            func counter(_ key: String) -> Int { (port[key] as? NSNumber)?.intValue ?? 0 }
            result[name] = NICTraffic(receivedBytes: counter("tx_bytes"), receivedPackets: counter("tx_packets"),
                                      transmittedBytes: counter("rx_bytes"), transmittedPackets: counter("rx_packets"))
        }
        return result
    }
}
