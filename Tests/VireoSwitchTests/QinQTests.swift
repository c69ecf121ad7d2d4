import Testing
@testable import VireoSwitch

/// 802.1ad (QinQ): provider ports whose tags are S-tags (`tpid=88a8`) and customer tunnel ports
/// (`tunnel=on`) whose frames, tags and all, ride inside a service VLAN.
@Suite struct QinQTests {
    let a = Frames.mac(0xA), b = Frames.mac(0xB)

    /// `frame` with an S-tag of `vid` in front of whatever it carries.
    static func sTagged(_ frame: [UInt8], vid: UInt16) -> [UInt8] {
        Array(frame[0..<12]) + [0x88, 0xA8, UInt8(vid >> 8), UInt8(vid & 0xFF)] + frame[12...]
    }

    @Test func portSpecsCarryTheTagTypeAndTheTunnel() throws {
        let tunnel = try PortConfig.parse("vm:cust,tag=100,tunnel=on")
        #expect(tunnel.tunnel && tunnel.tagType == VLAN.customerTPID && tunnel.spec == "vm:cust,tag=100,tunnel=on")
        let provider = try PortConfig.parse("uplink:eth0,trunk=100-102,tpid=88a8")
        #expect(provider.tagType == VLAN.serviceTPID && provider.spec == "uplink:eth0,trunk=100-102,tpid=88a8")
        #expect(try PortConfig.parse(provider.spec) == provider && PortConfig.parse(tunnel.spec) == tunnel)
        for (spec, words) in [("tap:x,tunnel=on", "needs tag="), ("tap:x,trunk=5,tunnel=on", "needs tag="), ("tap:x,tpid=9100", "tpid is 8100"),
                              ("tap:x,tag=5,tunnel=yes", "tunnel is on or off")] {
            #expect(throws: PortSpecError.self, "\(spec)") { try PortConfig.parse(spec) }
            do { _ = try PortConfig.parse(spec) } catch { #expect(error.description.contains(words), "\(spec): \(error)") }
        }
    }

    @Test func aProviderPortReadsTheSTagAndCarriesTheCustomerTag() throws {
        let customer = Frames.make(dst: b, src: a, vid: 5, payloadLength: 1500)
        let header = try FrameHeader.parse(Self.sTagged(customer, vid: 100), tagType: VLAN.serviceTPID).get()
        #expect(header.vid == 100 && header.headerLength == 18 && header.innerTagLength == 4 && header.networkOffset == 22)
        #expect(header.etherType == VLAN.customerTPID)
        // The customer's 1500-byte payload fits a 1500 MTU: tags are not payload.
        #expect(header.egressFrame(Self.sTagged(customer, vid: 100), vid: nil) == customer, "popping the S-tag gives the customer's frame back")
        // A C-tagged frame on a provider port is S-untagged: its tag is the customer's.
        let untagged = try FrameHeader.parse(customer, tagType: VLAN.serviceTPID).get()
        #expect(untagged.vid == nil && untagged.innerTagLength == 4)
        // An S-tag inside an S-tag, and S-tags on an 802.1Q port, are refused.
        #expect(FrameHeader.parse(Self.sTagged(Self.sTagged(customer, vid: 7), vid: 100), tagType: VLAN.serviceTPID) == .failure(.unsupportedTag))
        #expect(FrameHeader.parse(Self.sTagged(customer, vid: 100)) == .failure(.unsupportedTag))
        #expect(FrameHeader.parse(Self.sTagged(Frames.make(dst: b, src: a), vid: 4095), tagType: VLAN.serviceTPID) == .failure(.malformedTag))
    }

    @Test func aTunnelPortTakesTheCustomersTagsAsPayload() throws {
        let customer = Frames.make(dst: b, src: a, vid: 5, payloadLength: 1500)
        let header = try FrameHeader.parse(customer, tunnel: true).get()
        #expect(header.vid == nil && header.headerLength == 14 && header.innerTagLength == 4 && !header.isVLANTagged)
        // Pushing the service VLAN's S-tag keeps the customer's C-tag inside.
        #expect(header.egressFrame(customer, vid: 100, tagType: VLAN.serviceTPID) == Self.sTagged(customer, vid: 100))
        // A customer sending S-tags, or a truncated C-tag, is refused.
        #expect(FrameHeader.parse(Self.sTagged(customer, vid: 9), tunnel: true) == .failure(.unsupportedTag))
        #expect(FrameHeader.parse(Array(customer.prefix(16)), tunnel: true) == .failure(.malformedTag))
        #expect(FrameHeader.parse(Frames.make(dst: b, src: a, payloadLength: 1501), tunnel: true) == .failure(.oversized))
    }

    @Test func customerVLANsCrossTheProviderInsideTheServiceVLAN() throws {
        var fabric = Switch()
        var egress: [Egress] = []
        let tunnel = try fabric.addPort(PortConfig.parse("vm:cust,tag=100,tunnel=on"))
        let provider = try fabric.addPort(PortConfig.parse("uplink:core,trunk=100,200,tpid=88a8"))
        let other = try fabric.addPort(PortConfig.parse("vm:cust2,tag=200,tunnel=on"))
        let plain = try fabric.addPort(PortConfig.parse("tap:t100,tag=100"))
        // Any customer frame, C-tagged or not, joins service VLAN 100 and leaves the provider port S-tagged.
        for vid: UInt16? in [5, nil] {
            let verdict = fabric.receive(Frames.make(dst: .broadcast, src: a, vid: vid), on: tunnel, now: 0, egress: &egress)
            guard case .forward(_, let vlan, _) = verdict else { Issue.record("dropped: \(verdict)"); return }
            #expect(vlan == 100)
            #expect(egress == [Egress(port: provider, vid: 100, tagType: VLAN.serviceTPID), Egress(port: plain, vid: nil)])
        }
        // From the provider side, S-VLAN 100 goes to the customer untagged (its C-tag intact), never to VLAN 200's customer.
        let verdict = fabric.receive(Self.sTagged(Frames.make(dst: a, src: b, vid: 5), vid: 100), on: provider, now: 0, egress: &egress)
        guard case .forward(_, let vlan, let flooded) = verdict else { Issue.record("dropped: \(verdict)"); return }
        #expect(vlan == 100 && !flooded && egress == [Egress(port: tunnel, vid: nil)])
        #expect(!egress.contains { $0.port == other })
        // A C-tagged frame on the provider port has no native VLAN to join.
        #expect(fabric.receive(Frames.make(dst: a, src: b, vid: 100), on: provider, now: 0, egress: &egress) == .drop(.untaggedOnTrunk))
    }
}
