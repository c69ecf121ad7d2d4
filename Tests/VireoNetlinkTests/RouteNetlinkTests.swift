import Foundation
import VireoTestSupport
import Testing
import VireoNetlink

/// A throw-away network namespace (`ip netns add`), deleted with everything in it on `close()`.
final class TestNamespace {
    let name = "vnl" + String(UInt32.random(in: 0x10000..<0xFFFFF), radix: 16)
    var path: String { "/run/netns/\(name)" }

    static let available = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")

    init() throws { try Self.run(["ip", "netns", "add", name]) }
    func close() { _ = try? Self.run(["ip", "netns", "del", name]) }

    @discardableResult
    static func run(_ arguments: [String]) throws -> String {
        let (status, output) = try ChildCommand.run(arguments[0], Array(arguments.dropFirst()))
        guard status == 0 else { throw CommandFailed(command: arguments.joined(separator: " "), output: output) }
        return output
    }

    struct CommandFailed: Error { let command: String, output: String }

    /// `ip -j -d link show` in the namespace, by interface name.
    func ipLinks() throws -> [String: [String: Any]] {
        let output = try Self.run(["ip", "-j", "-d", "-n", name, "link", "show"])
        let list = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [[String: Any]] ?? []
        return Dictionary(uniqueKeysWithValues: list.compactMap { entry in (entry["ifname"] as? String).map { ($0, entry) } })
    }

    /// Whether this kernel's bridges do VLAN filtering, as `ip` finds out.
    func ipSupportsVLANFiltering() -> Bool {
        defer { _ = try? Self.run(["ip", "-n", name, "link", "del", "vfprobe"]) }
        return (try? Self.run(["ip", "-n", name, "link", "add", "vfprobe", "type", "bridge", "vlan_filtering", "1"])) != nil
    }
}

@Suite(.enabled(if: TestNamespace.available, "needs root and ip"), .timeLimit(.minutes(1)))
struct RouteNetlinkTests {
    @Test func bridgeWithTapPortMatchesIPLinkShow() throws {
        let namespace = try TestNamespace()
        defer { namespace.close() }
        let netlink = try RouteNetlink(namespacePath: namespace.path)
        try netlink.createBridge(named: "vmbr0")
        try netlink.createTap(named: "tap100i0")
        try netlink.setMaster("tap100i0", bridge: "vmbr0")
        try netlink.setUp("vmbr0", true)
        try netlink.setUp("tap100i0", true)

        let links = try netlink.links()
        let ip = try namespace.ipLinks()
        #expect(Set(links.map(\.name)) == Set(ip.keys))
        for link in links {
            let entry = try #require(ip[link.name])
            let flags = entry["flags"] as? [String] ?? []
            let info = entry["linkinfo"] as? [String: Any]
            #expect(entry["ifindex"] as? Int == Int(link.index), "\(link.name)")
            #expect(entry["mtu"] as? Int == link.mtu, "\(link.name)")
            #expect(flags.contains("UP") == link.isUp, "\(link.name)")
            #expect(flags.contains("LOWER_UP") == link.hasCarrier, "\(link.name)")
            #expect(entry["address"] as? String == link.address, "\(link.name)")
            #expect(info?["info_kind"] as? String == link.kind, "\(link.name)")
            #expect((entry["operstate"] as? String)?.lowercased() == "\(link.operationalState)".lowercased()
                || entry["operstate"] as? String == "UNKNOWN" && link.operationalState == .unknown, "\(link.name)")
            let master = entry["master"] as? String
            #expect(master == link.masterIndex.flatMap { index in links.first { $0.index == index }?.name }, "\(link.name)")
        }
        let bridge = try #require(links.first { $0.name == "vmbr0" })
        #expect(bridge.isBridge && bridge.isUp && bridge.vlanFiltering == false)
        #expect(((ip["vmbr0"]?["linkinfo"] as? [String: Any])?["info_data"] as? [String: Any])?["vlan_filtering"] as? Int == 0)
        let tap = try #require(try netlink.link(named: "tap100i0"))
        #expect(tap.kind == "tun" && tap.masterIndex == bridge.index && tap.isUp)

        try netlink.setMaster("tap100i0", bridge: nil)
        try netlink.setUp("vmbr0", false)
        #expect(try netlink.link(named: "tap100i0")?.masterIndex == nil)
        #expect(try netlink.link(named: "vmbr0")?.isUp == false)
        #expect(try namespace.ipLinks()["tap100i0"]?["master"] == nil)

        try netlink.deleteLink(named: "tap100i0")
        try netlink.deleteLink(named: "vmbr0")
        #expect(try netlink.links().map(\.name) == ["lo"])
        #expect(Array(try namespace.ipLinks().keys) == ["lo"])
    }

    @Test func vlanFilteringWorksOrIsAClearError() throws {
        let namespace = try TestNamespace()
        defer { namespace.close() }
        let netlink = try RouteNetlink(namespacePath: namespace.path)
        if namespace.ipSupportsVLANFiltering() {
            try netlink.createBridge(named: "vmbr1", vlanFiltering: true)
            #expect(try netlink.link(named: "vmbr1")?.vlanFiltering == true)
            try netlink.createTap(named: "tap1")
            try netlink.setMaster("tap1", bridge: "vmbr1")
            try netlink.addBridgeVLAN(port: "tap1", vid: 10, pvid: true, untagged: true)
            let vlans = try TestNamespace.run(["bridge", "-n", namespace.name, "vlan", "show", "dev", "tap1"])
            #expect(vlans.contains("10 PVID"), "\(vlans)")
        } else {
            #expect(throws: NetlinkError.vlanFilteringUnsupported(bridge: "vmbr1")) { try netlink.createBridge(named: "vmbr1", vlanFiltering: true) }
            #expect(try netlink.link(named: "vmbr1") == nil, "a failed create leaves nothing behind")
            try netlink.createBridge(named: "vmbr1")
            #expect(throws: NetlinkError.vlanFilteringUnsupported(bridge: "vmbr1")) { try netlink.setVLANFiltering(bridge: "vmbr1", enabled: true) }
            try netlink.createTap(named: "tap1")
            try netlink.setMaster("tap1", bridge: "vmbr1")
            #expect(throws: NetlinkError.vlanFilteringUnsupported(bridge: "vmbr1")) { try netlink.addBridgeVLAN(port: "tap1", vid: 10) }
            let message = NetlinkError.vlanFilteringUnsupported(bridge: "vmbr1").description
            #expect(message.contains("CONFIG_BRIDGE_VLAN_FILTERING") && message.contains("vireo-switchd"))
        }
    }

    @Test func mistakesAreClearErrors() throws {
        let namespace = try TestNamespace()
        defer { namespace.close() }
        let netlink = try RouteNetlink(namespacePath: namespace.path)
        #expect(try netlink.link(named: "nope") == nil)
        #expect(throws: NetlinkError.noSuchLink("nope")) { try netlink.deleteLink(named: "nope") }
        #expect(throws: NetlinkError.noSuchLink("nope")) { try netlink.setMaster("lo", bridge: "nope") }
        #expect(throws: NetlinkError.invalidName("a/b")) { try netlink.createBridge(named: "a/b") }
        #expect(throws: NetlinkError.invalidName("sixteen-chars-xx")) { try netlink.createBridge(named: "sixteen-chars-xx") }
        try netlink.createBridge(named: "vmbr2")
        do {
            try netlink.createBridge(named: "vmbr2")
            Issue.record("a second bridge of the same name was created")
        } catch {
            guard case .kernel(_, let errno, _) = error else { Issue.record("\(error)"); return }
            #expect(errno == EEXIST)
            #expect(error.description.hasPrefix("create bridge vmbr2: "))
        }
        #expect(throws: NetlinkError.self) { _ = try RouteNetlink(namespacePath: "/run/netns/does-not-exist") }
    }
}
