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
/// frame, keyed on (ingress interface, the frame's 802.1Q VID or none, destination MAC, source MAC)
/// — the ingress port and the tag fix the VLAN — with what the egress port needs done to the tag
/// (nothing, pop it, push one: `bpf_skb_vlan_pop`/`push`), and only while the switch's table
/// still says so (``revalidate(_:)``, run whenever the table's ``MACTable/generation``
/// moves: an address moved, aged out or was flushed). Anything else (frames with priority bits or
/// inner tags, S-tags, broadcast, multicast, unknown destinations, ports of other kinds) takes the
/// user-space path as before.
/// The program counts what it forwards per flow; ``sweep(_:now:)`` adds that to the ports'
/// counters and refreshes the senders' addresses, so counters and ageing read as if the switch had
/// seen each frame.
///
/// A packet socket sees a frame before tc ingress does, so each uplink's socket carries a filter
/// that drops (before any copy) exactly the frames the program will redirect. Programs run through
/// tcx links, which the kernel detaches when the switch's descriptors close, crash included.
public final class KernelFastPath {
    /// A flow the switch decided: frames from `source` to `destination` arriving on `ingress`
    /// with 802.1Q VID `ingressTag` (0: untagged), in `vlan`.
    public struct Flow: Hashable, Sendable {
        public var ingress: PortID
        public var ingressTag: UInt16
        public var vlan: UInt16
        public var source: MACAddress
        public var destination: MACAddress
        public init(ingress: PortID, ingressTag: UInt16 = 0, vlan: UInt16, source: MACAddress, destination: MACAddress) {
            self.ingress = ingress
            self.ingressTag = ingressTag
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

    /// Map layout. Key: ingress ifindex (u32), VID (u32, 0 untagged), destination MAC, source MAC
    /// (the frame's first 12 bytes). Value: egress ifindex (u32), bpf_redirect flags (u32),
    /// packets (u64), bytes (u64), tag action (u32: ``TagAction``), the VID to push (u32).
    static let keySize = 20
    static let valueSize = 32

    /// What the program does to the frame's tag before redirecting it.
    enum TagAction: UInt32 {
        case keep = 0, pop = 1, push = 2
    }

    private let flowMap: BPFHashMap
    private let forwarder: BPFProgram
    private let socketFilter: BPFProgram
    private var links: [PortID: TCXLink] = [:]
    private var flows: [Flow: Installed] = [:]
    /// Flows the kernel refused (map full): not offered again until the table changes.
    private var refused: Set<Flow> = []
    private var validatedGeneration: UInt64 = .max

    /// Loads the programs; throws when the kernel has no BPF for this process (no CAP_BPF and
    /// CAP_NET_ADMIN, or a kernel before 6.6 without tcx), and the switch then runs without it.
    public init(capacity: Int = MACTable.defaultCapacity) throws(BPFError) {
        flowMap = try BPFHashMap(keySize: Self.keySize, valueSize: Self.valueSize, maxEntries: capacity)
        forwarder = try BPFProgram(.trafficControl, instructions: Self.forwarderProgram(map: flowMap.descriptor.rawValue))
        socketFilter = try BPFProgram(.socketFilter, instructions: Self.socketFilterProgram(map: flowMap.descriptor.rawValue))
    }

    /// Flows installed in the kernel now.
    public var flowCount: Int { flows.count }

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

    /// The switch forwarded a known-unicast frame of `flow` to `egress`, in an 802.1Q tag of VID
    /// `egressTag` (0: untagged): install the flow when both ports take part and the table agrees.
    /// Cheap when the flow is known already.
    public func offer(_ flow: Flow, egress: PortID, egressTag: UInt16 = 0, egressInterface: Int32, table: MACTable, now: UInt64) {
        guard flows[flow] == nil, !refused.contains(flow), links[egress] != nil,
              let ingressLink = links[flow.ingress],
              table.lookup(vlan: flow.vlan, mac: flow.source, now: now) == flow.ingress,
              table.lookup(vlan: flow.vlan, mac: flow.destination, now: now) == egress else { return }
        // The switch never translates VLANs: a tag in and a tag out are the same VID.
        let action: TagAction
        switch (flow.ingressTag, egressTag) {
        case (0, 0): action = .keep
        case (let tag, 0) where tag != 0: action = .pop
        case (0, let tag) where tag != 0: action = .push
        case (let inTag, let outTag) where inTag == outTag: action = .keep
        default: return
        }
        let key = Self.key(interfaceIndex: ingressLink.interfaceIndex, tag: flow.ingressTag, source: flow.source, destination: flow.destination)
        let value = Self.littleEndian(UInt32(bitPattern: egressInterface)) + Self.littleEndian(UInt32(0))  // flags 0: out of the interface
            + [UInt8](repeating: 0, count: 16) + Self.littleEndian(action.rawValue) + Self.littleEndian(UInt32(egressTag))
        do {
            try flowMap.update(key, value)
            flows[flow] = Installed(key: key, egress: egress)
        } catch {
            refused.insert(flow)
        }
    }

    /// Removes flows the switch's table no longer backs (the destination moved or aged out, the
    /// source moved), counting what they carried since the last sweep. Call when
    /// ``MACTable/generation`` may have changed; cheap when it did not.
    public func revalidate(_ fabric: inout Switch, now: UInt64) {
        guard fabric.table.generation != validatedGeneration else { return }
        validatedGeneration = fabric.table.generation
        refused.removeAll()
        for (flow, installed) in flows {
            if fabric.table.lookup(vlan: flow.vlan, mac: flow.destination, now: now) != installed.egress
                || fabric.table.lookup(vlan: flow.vlan, mac: flow.source, now: now) != flow.ingress {
                account(flow, installed, &fabric, now: now)
                remove(flow)
            }
        }
    }

    /// Adds what the kernel forwarded since the last sweep to the ports' counters and refreshes the
    /// senders' addresses; call about once a second, before ageing.
    public func sweep(_ fabric: inout Switch, now: UInt64) {
        for (flow, installed) in flows { account(flow, installed, &fabric, now: now) }
    }

    /// Counts what `flow` carried since it was last counted.
    private func account(_ flow: Flow, _ installed: Installed, _ fabric: inout Switch, now: UInt64) {
        guard let value = try? flowMap.lookup(installed.key) else { return }
        let packets = Self.readU64(value, at: 8), bytes = Self.readU64(value, at: 16)
        guard packets != installed.packets else { return }
        fabric.countForwardedInKernel(from: flow.ingress, to: installed.egress, vlan: flow.vlan, source: flow.source,
                                      packets: packets &- installed.packets, bytes: bytes &- installed.bytes, now: now)
        flows[flow]?.packets = packets
        flows[flow]?.bytes = bytes
    }

    private func remove(_ flow: Flow) {
        guard let installed = flows.removeValue(forKey: flow) else { return }
        _ = try? flowMap.delete(installed.key)
    }

    static func key(interfaceIndex: Int32, tag: UInt16, source: MACAddress, destination: MACAddress) -> [UInt8] {
        littleEndian(UInt32(bitPattern: interfaceIndex)) + littleEndian(UInt32(tag)) + destination.octets + source.octets
    }

    private static func littleEndian(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }

    private static func readU64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    // MARK: Programs

    /// `struct __sk_buff` field offsets (include/uapi/linux/bpf.h).
    fileprivate enum SKBuff {
        static let length: Int16 = 0, vlanPresent: Int16 = 20, vlanTCI: Int16 = 24, vlanProtocol: Int16 = 28
        static let interfaceIndex: Int16 = 40, data: Int16 = 76, dataEnd: Int16 = 80
    }
    /// Kernel helpers (enum bpf_func_id).
    fileprivate enum Helper {
        static let mapLookup: Int32 = 1, vlanPush: Int32 = 18, vlanPop: Int32 = 19, redirect: Int32 = 23, loadBytes: Int32 = 26
    }
    /// The key's place on the program's stack: ifindex at r10-24, VID at -20, addresses at -16.
    fileprivate static let keyOffset: Int16 = -24
    /// 0x8100 and 0x88A8 as a little-endian 16-bit load of their network-order bytes reads them.
    fileprivate static let customerTag: Int32 = 0x0081, serviceTag: Int32 = 0xA888
    /// tcx: "not mine, run what comes next" (TCX_NEXT), so other tc users on the interface still
    /// see the frame; TCX_DROP for a frame whose tag could not be changed.
    private static let tcxNext: Int32 = -1, tcxDrop: Int32 = 2

    /// tcx ingress: look the frame up by (interface, VID, destination, source); on a hit, count
    /// it, pop or push its tag as the flow says, and redirect it. Frames whose tag has priority
    /// bits, a VID of 0 or a TPID other than 0x8100, frames with a tag inside (QinQ), and frames
    /// shorter than an Ethernet header pass on untouched. The kernel has taken an outer tag off
    /// into the skb already (skb_vlan_untag) before tc runs.
    static func forwarderProgram(map: Int32) throws(BPFError) -> [BPFInstruction] {
        var a = BPFAssembler()
        a.move(.r6, .r1)                                   // r6 = skb
        a.storeTag(failing: "pass")
        a.load(.word, .r7, .r6, SKBuff.data)               // r7 = frame
        a.load(.word, .r8, .r6, SKBuff.dataEnd)
        a.move(.r2, .r7)
        a.add(.r2, 14)
        a.jump(if: .r2, .greater, .r8, to: "pass")         // shorter than an Ethernet header
        a.load(.half, .r2, .r7, 12)
        a.passTaggedType(in: .r2, to: "pass")               // a tag inside (QinQ)
        a.load(.word, .r2, .r6, SKBuff.interfaceIndex)     // the key: ifindex, VID (stored above), the frame's 12 address bytes
        a.store(.word, .r10, keyOffset, .r2)
        for word: Int16 in 0..<3 {
            a.load(.word, .r2, .r7, 4 * word)
            a.store(.word, .r10, keyOffset + 8 + 4 * word, .r2)
        }
        a.lookUpFlow(map: map, missing: "pass")
        a.move(.r9, .r0)                                   // r9 = the flow (survives calls)
        a.move(.r1, 1)
        a.atomicAdd(.r9, 8, .r1)                           // packets
        a.load(.word, .r1, .r6, SKBuff.length)
        a.atomicAdd(.r9, 16, .r1)                          // bytes
        a.load(.word, .r2, .r9, 24)                        // the tag action
        a.jump(if: .r2, .equal, Int32(TagAction.keep.rawValue), to: "redirect")
        a.jump(if: .r2, .equal, Int32(TagAction.push.rawValue), to: "push")
        a.move(.r1, .r6)
        a.call(Helper.vlanPop)
        a.jump(if: .r0, .equal, 0, to: "redirect")
        a.jump(to: "drop")
        a.label("push")
        a.move(.r1, .r6)
        a.move(.r2, customerTag)                           // htons(0x8100)
        a.load(.word, .r3, .r9, 28)
        a.call(Helper.vlanPush)
        a.jump(if: .r0, .notEqual, 0, to: "drop")
        a.label("redirect")
        a.load(.word, .r1, .r9, 0)                         // egress ifindex
        a.load(.word, .r2, .r9, 4)                         // flags
        a.call(Helper.redirect)                            // TC_ACT_REDIRECT
        a.exit()
        a.label("pass")
        a.move(.r0, tcxNext)
        a.exit()
        a.label("drop")
        a.move(.r0, tcxDrop)
        a.exit()
        return try a.assemble()
    }

    /// On an uplink's packet socket: drop (return 0 bytes) exactly the frames the forwarder will
    /// redirect, keep the rest whole. The same tests as ``forwarderProgram(map:)``, through
    /// `bpf_skb_load_bytes` (socket filters cannot read packet data directly).
    static func socketFilterProgram(map: Int32) throws(BPFError) -> [BPFInstruction] {
        var a = BPFAssembler()
        a.move(.r6, .r1)
        a.storeTag(failing: "keep")
        a.load(.word, .r2, .r6, SKBuff.interfaceIndex)
        a.store(.word, .r10, keyOffset, .r2)
        a.loadFrameBytes(0..<12, toStack: Int32(keyOffset) + 8, failing: "keep")  // the addresses, after ifindex and VID
        a.loadFrameBytes(12..<14, toStack: Int32(keyOffset) - 8, failing: "keep") // the EtherType
        a.load(.half, .r2, .r10, keyOffset - 8)
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

    /// Stores the key's VID (0 for an untagged frame; skb in r6): the 802.1Q tag the kernel took
    /// off the frame, when it is a plain C-tag (TPID 0x8100, no priority bits, VID ≠ 0); jumps to
    /// `label` for any other tag.
    fileprivate mutating func storeTag(failing label: String) {
        move(.r3, 0)
        load(.word, .r2, .r6, KernelFastPath.SKBuff.vlanPresent)
        jump(if: .r2, .equal, 0, to: "untagged")
        load(.word, .r2, .r6, KernelFastPath.SKBuff.vlanProtocol)
        jump(if: .r2, .notEqual, KernelFastPath.customerTag, to: label)
        load(.word, .r3, .r6, KernelFastPath.SKBuff.vlanTCI)
        jump(if: .r3, .greater, 0x0FFF, to: label)
        jump(if: .r3, .equal, 0, to: label)
        self.label("untagged")
        store(.word, .r10, KernelFastPath.keyOffset + 4, .r3)
    }

    /// Looks up the flow key built at r10-24 in `map`: r0 = the value, or a jump to `missing`.
    fileprivate mutating func lookUpFlow(map: Int32, missing: String) {
        loadMap(.r1, fd: map)
        move(.r2, .r10)
        add(.r2, Int32(KernelFastPath.keyOffset))
        call(KernelFastPath.Helper.mapLookup)
        jump(if: .r0, .equal, 0, to: missing)
    }
}
