#if canImport(Glibc)
import Glibc
#endif
import VireoSystem

/// The switch's kernel fast path: for frames between two `uplink:` ports (host interfaces: a QEMU
/// VM's tap, a veth, a NIC) whose forwarding the switch has already decided, an eBPF program on
/// the ingress interface sends each frame straight to the egress interface (`bpf_redirect`), so
/// they never cross into user space. This is how the switch keeps up with the Linux bridge for TCP:
/// the bridge passes a 64 KiB super-frame by pointer, while the user-space path reads and writes it.
///
/// The switch stays the one that decides (the OpenFlow/OVS split of a slow path that learns and a
/// flow cache that forwards): a flow is installed only after the switch forwarded a known-unicast
/// frame that arrived untagged and leaves untagged, keyed on (ingress interface, destination MAC,
/// source MAC) — the ingress port fixes the VLAN of an untagged frame — and only while the
/// switch's table still says so (``revalidate(_:)``, run whenever the table's ``MACTable/generation``
/// moves: an address moved, aged out or was flushed). Anything else (tagged frames, broadcast,
/// multicast, unknown destinations, ports of other kinds) takes the user-space path as before.
/// The program counts what it forwards per flow; ``sweep(_:now:)`` adds that to the ports'
/// counters and refreshes the senders' addresses, so counters and ageing read as if the switch had
/// seen each frame.
///
/// A packet socket sees a frame before tc ingress does, so each uplink's socket carries a filter
/// that drops (before any copy) exactly the frames the program will redirect. Programs run through
/// tcx links, which the kernel detaches when the switch's descriptors close, crash included.
public final class KernelFastPath {
    /// A flow the switch decided: frames from `source` to `destination` arriving untagged on
    /// `ingress` (in `vlan`).
    public struct Flow: Hashable, Sendable {
        public var ingress: PortID
        public var vlan: UInt16
        public var source: MACAddress
        public var destination: MACAddress
        public init(ingress: PortID, vlan: UInt16, source: MACAddress, destination: MACAddress) {
            self.ingress = ingress
            self.vlan = vlan
            self.source = source
            self.destination = destination
        }
    }

    private struct Installed {
        var key: [UInt8]
        var egress: PortID
        /// The kernel's counts at the last ``sweep(_:now:)``.
        var packets: UInt64 = 0
        var bytes: UInt64 = 0
    }

    /// Map layout. Key: ingress ifindex (u32), destination MAC, source MAC (the frame's first 12
    /// bytes). Value: egress ifindex (u32), bpf_redirect flags (u32), packets (u64), bytes (u64).
    static let keySize = 16
    static let valueSize = 24

    private let flowMap: BPFHashMap
    private let forwarder: BPFProgram
    private let socketFilter: BPFProgram
    private var links: [PortID: TCXLink] = [:]
    private var flows: [Flow: Installed] = [:]
    /// Flows the kernel refused (map full): not offered again until the table changes.
    private var refused: Set<Flow> = []
    private var validatedGeneration: UInt64 = .max
    public let capacity: Int

    /// Loads the programs; throws when the kernel has no BPF for this process (no CAP_BPF and
    /// CAP_NET_ADMIN, or a kernel before 6.6 without tcx), and the switch then runs without it.
    public init(capacity: Int = MACTable.defaultCapacity) throws(BPFError) {
        self.capacity = capacity
        flowMap = try BPFHashMap(keySize: Self.keySize, valueSize: Self.valueSize, maxEntries: capacity)
        forwarder = try BPFProgram(.trafficControl, instructions: Self.forwarderProgram(map: flowMap.descriptor.rawValue))
        socketFilter = try BPFProgram(.socketFilter, instructions: Self.socketFilterProgram(map: flowMap.descriptor.rawValue))
    }

    /// Flows installed in the kernel now.
    public var flowCount: Int { flows.count }

    /// Whether `port` takes part (its interface carries the program).
    public func isAttached(_ port: PortID) -> Bool { links[port] != nil }

    /// Lets `port`, an uplink on interface `interfaceIndex` whose packet socket is `socket`, take
    /// part: the filter goes on the socket first, then the program on the interface's ingress.
    public func attach(_ port: PortID, interfaceIndex: Int32, socket: Int32) throws(SystemError) {
        try socketFilter.attach(toSocket: socket)
        links[port] = try TCXLink(forwarder, interfaceIndex: interfaceIndex, egress: false)
    }

    /// Takes `port` out: its flows, both ways, are removed and its program detached.
    public func detach(_ port: PortID) {
        for (flow, installed) in flows where flow.ingress == port || installed.egress == port { remove(flow) }
        links[port] = nil
    }

    /// The switch forwarded a known-unicast frame of `flow` untagged to `egress`: install the flow
    /// when both ports take part and the table agrees. Cheap when the flow is known already.
    public func offer(_ flow: Flow, egress: PortID, egressInterface: Int32, table: MACTable, now: UInt64) {
        guard flows[flow] == nil, !refused.contains(flow), links[egress] != nil,
              let ingressLink = links[flow.ingress],
              table.lookup(vlan: flow.vlan, mac: flow.source, now: now) == flow.ingress,
              table.lookup(vlan: flow.vlan, mac: flow.destination, now: now) == egress else { return }
        let key = Self.key(interfaceIndex: ingressLink.interfaceIndex, source: flow.source, destination: flow.destination)
        var value = withUnsafeBytes(of: UInt32(bitPattern: egressInterface).littleEndian, Array.init)
        value += [UInt8](repeating: 0, count: Self.valueSize - value.count)  // flags 0: out of the interface
        do {
            try flowMap.update(key, value)
            flows[flow] = Installed(key: key, egress: egress)
        } catch {
            refused.insert(flow)
        }
    }

    /// Removes flows the switch's table no longer backs: the destination moved or aged out, the
    /// source moved. Call when ``MACTable/generation`` changed; cheap when it did not.
    public func revalidate(_ table: MACTable, now: UInt64) {
        guard table.generation != validatedGeneration else { return }
        validatedGeneration = table.generation
        refused.removeAll()
        for (flow, installed) in flows {
            if table.lookup(vlan: flow.vlan, mac: flow.destination, now: now) != installed.egress
                || table.lookup(vlan: flow.vlan, mac: flow.source, now: now) != flow.ingress {
                remove(flow)
            }
        }
    }

    /// Adds what the kernel forwarded since the last sweep to the ports' counters and refreshes the
    /// senders' addresses; call about once a second, before ageing.
    public func sweep(_ fabric: inout Switch, now: UInt64) {
        for (flow, installed) in flows {
            guard let value = try? flowMap.lookup(installed.key) else { continue }
            let packets = Self.readU64(value, at: 8), bytes = Self.readU64(value, at: 16)
            guard packets != installed.packets else { continue }
            fabric.countForwardedInKernel(from: flow.ingress, to: installed.egress, vlan: flow.vlan, source: flow.source,
                                          packets: packets &- installed.packets, bytes: bytes &- installed.bytes, now: now)
            flows[flow]?.packets = packets
            flows[flow]?.bytes = bytes
        }
    }

    /// Forgets every flow (the table was flushed).
    public func removeAll() {
        for flow in flows.keys { remove(flow) }
    }

    private func remove(_ flow: Flow) {
        guard let installed = flows.removeValue(forKey: flow) else { return }
        _ = try? flowMap.delete(installed.key)
    }

    static func key(interfaceIndex: Int32, source: MACAddress, destination: MACAddress) -> [UInt8] {
        withUnsafeBytes(of: UInt32(bitPattern: interfaceIndex).littleEndian, Array.init) + destination.octets + source.octets
    }

    private static func readU64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    // MARK: Programs

    /// `struct __sk_buff` field offsets (include/uapi/linux/bpf.h).
    private enum SKBuff {
        static let length: Int16 = 0, vlanPresent: Int16 = 20, interfaceIndex: Int16 = 40, data: Int16 = 76, dataEnd: Int16 = 80
    }
    /// Kernel helpers (enum bpf_func_id).
    fileprivate enum Helper {
        static let mapLookup: Int32 = 1, redirect: Int32 = 23, loadBytes: Int32 = 26
    }
    /// 0x8100 and 0x88A8 as a little-endian 16-bit load of their network-order bytes reads them.
    fileprivate static let customerTag: Int32 = 0x0081, serviceTag: Int32 = 0xA888
    /// tcx: "not mine, run what comes next" (TCX_NEXT), so other tc users on the interface still see the frame.
    private static let tcxNext: Int32 = -1

    /// tcx ingress: look the frame up by (interface, destination, source); on a hit, count it and
    /// redirect it. Frames with a VLAN tag (in the packet or taken off by the NIC), and frames
    /// shorter than an Ethernet header, pass on untouched.
    static func forwarderProgram(map: Int32) throws(BPFError) -> [BPFInstruction] {
        var a = BPFAssembler()
        a.move(.r6, .r1)                                   // r6 = skb
        a.load(.word, .r2, .r6, SKBuff.vlanPresent)
        a.jump(if: .r2, .notEqual, 0, to: "pass")
        a.load(.word, .r7, .r6, SKBuff.data)               // r7 = frame
        a.load(.word, .r8, .r6, SKBuff.dataEnd)
        a.move(.r2, .r7)
        a.add(.r2, 14)
        a.jump(if: .r2, .greater, .r8, to: "pass")         // shorter than an Ethernet header
        a.load(.half, .r2, .r7, 12)
        a.passTaggedType(in: .r2, to: "pass")               // a tag inside (QinQ)
        a.load(.word, .r2, .r6, SKBuff.interfaceIndex)     // key at r10-16: ifindex, then the frame's 12 address bytes
        a.store(.word, .r10, -16, .r2)
        for word in 0..<3 {
            a.load(.word, .r2, .r7, Int16(4 * word))
            a.store(.word, .r10, Int16(-12 + 4 * word), .r2)
        }
        a.lookUpFlow(map: map, missing: "pass")
        a.move(.r1, 1)
        a.atomicAdd(.r0, 8, .r1)                           // packets
        a.load(.word, .r1, .r6, SKBuff.length)
        a.atomicAdd(.r0, 16, .r1)                          // bytes
        a.load(.word, .r1, .r0, 0)                         // egress ifindex
        a.load(.word, .r2, .r0, 4)                         // flags
        a.call(Helper.redirect)                            // TC_ACT_REDIRECT
        a.exit()
        a.label("pass")
        a.move(.r0, tcxNext)
        a.exit()
        return try a.assemble()
    }

    /// On an uplink's packet socket: drop (return 0 bytes) exactly the frames the forwarder will
    /// redirect, keep the rest whole. The same tests as ``forwarderProgram(map:)``, through
    /// `bpf_skb_load_bytes` (socket filters cannot read packet data directly).
    static func socketFilterProgram(map: Int32) throws(BPFError) -> [BPFInstruction] {
        var a = BPFAssembler()
        a.move(.r6, .r1)
        a.load(.word, .r2, .r6, SKBuff.vlanPresent)
        a.jump(if: .r2, .notEqual, 0, to: "keep")
        a.load(.word, .r2, .r6, SKBuff.interfaceIndex)
        a.store(.word, .r10, -16, .r2)
        a.loadFrameBytes(0..<12, toStack: -12, failing: "keep")   // the addresses, after the ifindex
        a.loadFrameBytes(12..<14, toStack: -24, failing: "keep")  // the EtherType
        a.load(.half, .r2, .r10, -24)
        a.passTaggedType(in: .r2, to: "keep")
        a.lookUpFlow(map: map, missing: "keep")
        a.move(.r0, 0)
        a.exit()
        a.label("keep")
        a.move(.r0, 0x7FFF_FFFF)
        a.exit()
        return try a.assemble()
    }
}

extension BPFAssembler {
    /// Jumps to `label` when `register` holds an EtherType that is a VLAN tag (as loaded from the frame).
    fileprivate mutating func passTaggedType(in register: BPFRegister, to label: String) {
        jump(if: register, .equal, KernelFastPath.customerTag, to: label)
        jump(if: register, .equal, KernelFastPath.serviceTag, to: label)
    }

    /// Copies bytes `range` of the frame (skb in r6) to the stack at r10+`stackOffset` with
    /// `bpf_skb_load_bytes`; jumps to `label` when the frame is shorter.
    fileprivate mutating func loadFrameBytes(_ range: Range<Int32>, toStack stackOffset: Int32, failing label: String) {
        move(.r1, .r6)
        move(.r2, range.lowerBound)
        move(.r3, .r10)
        add(.r3, stackOffset)
        move(.r4, Int32(range.count))
        call(KernelFastPath.Helper.loadBytes)
        jump(if: .r0, .notEqual, 0, to: label)
    }

    /// Looks up the flow key built at r10-16 in `map`: r0 = the value, or a jump to `missing`.
    fileprivate mutating func lookUpFlow(map: Int32, missing: String) {
        loadMap(.r1, fd: map)
        move(.r2, .r10)
        add(.r2, -16)
        call(KernelFastPath.Helper.mapLookup)
        jump(if: .r0, .equal, 0, to: missing)
    }
}
