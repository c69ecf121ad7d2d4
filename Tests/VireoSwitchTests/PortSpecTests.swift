import Testing
@testable import VireoSwitch

@Suite struct PortSpecTests {
    @Test func access() throws {
        let config = try PortConfig.parse("tap:vm1,tag=10")
        #expect(config.kind == .tap && config.name == "vm1" && config.mode == .access(vlan: 10))
        #expect(config.spec == "tap:vm1,tag=10")
    }

    @Test func offloadDefaultsByKind() throws {
        #expect(try PortConfig.parse("tap:t0").offload)
        #expect(try !PortConfig.parse("vm:n0").offload)
        #expect(try PortConfig.parse("uplink:e0").offload)
        #expect(try PortConfig.parse("uplink:e0,offload=off").spec == "uplink:e0,tag=1,offload=off")
        let vm = try PortConfig.parse("vm:n0,offload=on")
        #expect(vm.offload && vm.spec == "vm:n0,tag=1,offload=on")
        #expect(try PortConfig.parse(vm.spec) == vm)
        let tap = try PortConfig.parse("tap:t0,offload=off")
        #expect(!tap.offload && tap.spec == "tap:t0,tag=1,offload=off")
    }

    @Test func defaultIsVLAN1() throws {
        #expect(try PortConfig.parse("vm:nic0").mode == .access(vlan: 1))
    }

    @Test func trunkWithListRangeAndNative() throws {
        let config = try PortConfig.parse("uplink:eth0,trunk=10,20,30-32,native=1,mtu=9000,mac-limit=4")
        #expect(config.mode == .trunk(allowed: VLANSet([10, 20, 30, 31, 32]), native: 1))
        #expect(config.mtu == 9000 && config.macLimit == 4)
        #expect(config.spec == "uplink:eth0,trunk=10,20,30-32,native=1,mtu=9000,mac-limit=4")
        #expect(try PortConfig.parse(config.spec) == config)
    }

    @Test(arguments: [
        "eth0", "nic:eth0,tag=1", "tap:,tag=1", "tap:x,tag=0", "tap:x,tag=4095", "tap:x,tag=1,trunk=2",
        "tap:x,native=1", "tap:x,trunk=20-10", "tap:x,colour=red", "tap:x,5", "tap:waytoolonginterfacename",
        "tap:a/b", "tap:x,mtu=10", "tap:x,tag=1,2", "vm:x,offload=yes",
    ])
    func rejects(spec: String) {
        #expect(throws: PortSpecError.self) { try PortConfig.parse(spec) }
    }

    @Test func vlanSetDescription() {
        #expect(VLANSet([1, 2, 3, 5, 7, 8]).description == "1-3,5,7-8")
        #expect(VLANSet().isEmpty && VLANSet().description == "")
        var set = VLANSet([4094])
        #expect(set.contains(4094) && !set.contains(4093))
        set.remove(4094)
        #expect(set.isEmpty)
    }
}
