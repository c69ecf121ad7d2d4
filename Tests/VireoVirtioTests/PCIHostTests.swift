import Testing
@testable import VireoDevices

@Suite struct PCIHostTests {
    /// What Linux's pci_sanity_check looks for through mechanism #1: a host bridge at 00:00.0.
    @Test func hostBridgeAnswersAt0000() throws {
        let bus = PCIBus()
        try bus.register(PCIHostBridge(), device: 0)
        let ports = PCIConfigPorts(bus: bus)
        ports.write(offset: 0, size: 4, value: 0x8000_0000)
        #expect(ports.read(offset: 4, size: 4) == 0x0008_1B36)
        ports.write(offset: 0, size: 4, value: 0x8000_0008)
        #expect(ports.read(offset: 4, size: 4) >> 8 == 0x06_00_00)
        ports.write(offset: 0, size: 4, value: 0x8000_0800)  // 00:01.0 is empty
        #expect(ports.read(offset: 4, size: 4) == 0xFFFF_FFFF)
    }

    @Test func configSpaceWriteMasks() {
        var space = PCIConfigSpace(vendorID: 1, deviceID: 2, classCode: 0xFF_00_00)
        space.write(offset: 0, size: 4, value: 0xFFFF_FFFF)  // IDs are read-only
        #expect(space.read(offset: 0, size: 4) == 0x0002_0001)
        space.write(offset: 4, size: 2, value: 0xFFFF)
        #expect(space.read(offset: 4, size: 2) == 0x0547)
        space.write(offset: 0x3C, size: 1, value: 11)
        #expect(space.read(offset: 0x3C, size: 1) == 11)
        #expect(space.read(offset: 300, size: 4) == 0)  // beyond 256 bytes
        space.addMemoryBar(index: 2, size: 0x1000, address: 0xC000_0000)
        space.write(offset: 0x18, size: 4, value: 0xFFFF_FFFF)
        #expect(space.read(offset: 0x18, size: 4) == 0xFFFF_F000)
        space.write(offset: 0x18, size: 4, value: 0xD000_0123)
        #expect(space.barAddress(2) == 0xD000_0000)
        #expect(space.barAddress(3) == nil)
    }

    /// §6.2.5.1: a 64-bit memory BAR spans two registers; sizing writes all ones to both.
    @Test func sixtyFourBitBarSizingAndAddress() {
        var space = PCIConfigSpace(vendorID: 0x1AF4, deviceID: 0x1041, classCode: 0)
        space.addMemoryBar64(index: 0, size: 0x4000, address: 0x4_0000_8000)
        #expect(space.read(offset: 0x10, size: 4) == 0x8004)
        #expect(space.read(offset: 0x14, size: 4) == 4)
        #expect(space.barAddress(0) == 0x4_0000_8000)
        #expect(space.barAddress(1) == nil)
        space.write(offset: 0x10, size: 4, value: 0xFFFF_FFFF)
        space.write(offset: 0x14, size: 4, value: 0xFFFF_FFFF)
        #expect(space.read(offset: 0x10, size: 4) == 0xFFFF_C004)  // type bits stay
        #expect(space.read(offset: 0x14, size: 4) == 0xFFFF_FFFF)
        space.write(offset: 0x10, size: 4, value: 0xE000_4000)
        space.write(offset: 0x14, size: 4, value: 0x1)
        #expect(space.barAddress(0) == 0x1_E000_4000)
        space.write(offset: 0x10, size: 1, value: 0xFF)  // low bits are hard-wired
        #expect(space.read(offset: 0x10, size: 4) == 0xE000_4004)
    }

    @Test func barAllocatorAlignsAndStopsAtTheEnd() {
        var allocator = PCIBarAllocator(base: 0xC000_0000, length: 0x1_0000)
        #expect(allocator.allocate(size: 0x1000) == 0xC000_0000)
        #expect(allocator.allocate(size: 0x4000) == 0xC000_4000)
        #expect(allocator.allocate(size: 0x3000) == nil)  // not a power of two
        #expect(allocator.allocate(size: 0x8000) == 0xC000_8000)
        #expect(allocator.allocate(size: 0x1000) == nil)
    }
}
