import Synchronization
import Testing
import VireoTestSupport
@testable import VireoDevices

/// A config space of 256 bytes with a vendor/device ID, recording writes.
final class FakePCIFunction: PCIDevice {
    let space = Mutex([UInt8](repeating: 0, count: 256))
    init() {
        space.withLock { $0[0] = 0x86; $0[1] = 0x80; $0[2] = 0x37; $0[3] = 0x12 }
    }
    func readConfig(offset: Int, size: Int) -> UInt32 {
        space.withLock { space in
            guard offset >= 0, offset + size <= space.count else { return .max }
            return (0..<size).reduce(0) { $0 | UInt32(space[offset + $1]) << (8 * $1) }
        }
    }
    func writeConfig(offset: Int, size: Int, value: UInt32) {
        space.withLock { space in
            guard offset >= 0, offset + size <= space.count else { return }
            for i in 0..<size { space[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
        }
    }
}

@Suite struct PCIConfigPortsTests {
    let ports = PCIConfigPorts()

    func address(bus: UInt32 = 0, device: UInt32, function: UInt32 = 0, register: UInt32) -> UInt64 {
        UInt64(0x8000_0000 | bus << 16 | device << 11 | function << 8 | register)
    }

    @Test func addressLatchReadsBack() {
        ports.write(offset: 0, size: 4, value: 0x8000_0000)
        #expect(ports.read(offset: 0, size: 4) == 0x8000_0000)
        // Reserved bits 30-28 and 1-0 read as zero.
        ports.write(offset: 0, size: 4, value: 0xFFFF_FFFF)
        #expect(ports.read(offset: 0, size: 4) == 0x8FFF_FFFC)
    }

    /// Linux's pci_check_type1: outb(0x01, 0xCFB); save = inl(0xCF8); outl(0x80000000, 0xCF8); check; restore.
    @Test func byteAccessToCFBDoesNotLatch() {
        ports.write(offset: 0, size: 4, value: 0x8000_1234 & ~3)
        ports.write(offset: 3, size: 1, value: 0x01)
        ports.write(offset: 0, size: 1, value: 0x00)
        ports.write(offset: 0, size: 2, value: 0x00)
        #expect(ports.read(offset: 0, size: 4) == 0x8000_1234 & ~3)
        #expect(ports.read(offset: 3, size: 1) == 0xFF)
        #expect(ports.read(offset: 0, size: 2) == 0xFFFF)
    }

    @Test func dataReadsAllOnesWithNoDevice() {
        ports.write(offset: 0, size: 4, value: address(device: 0, register: 0))
        #expect(ports.read(offset: 4, size: 4) == 0xFFFF_FFFF)
        #expect(ports.read(offset: 4, size: 2) == 0xFFFF)
        #expect(ports.read(offset: 7, size: 1) == 0xFF)
        ports.write(offset: 4, size: 4, value: 0)  // ignored
        #expect(ports.read(offset: 4, size: 4) == 0xFFFF_FFFF)
    }

    @Test func registeredFunctionIsReachable() throws {
        let function = FakePCIFunction()
        try ports.bus.register(function, device: 3)
        #expect(throws: PCIBusError.self) { try ports.bus.register(FakePCIFunction(), device: 3) }
        #expect(throws: PCIBusError.self) { try ports.bus.register(FakePCIFunction(), device: 32) }
        #expect(ports.bus.device(bus: 0, device: 3, function: 0) === function)
        #expect(ports.bus.device(bus: 0, device: 40, function: 9) == nil)

        ports.write(offset: 0, size: 4, value: address(device: 3, register: 0))
        #expect(ports.read(offset: 4, size: 4) == 0x1237_8086)
        #expect(ports.read(offset: 6, size: 2) == 0x1237)
        #expect(ports.read(offset: 5, size: 1) == 0x80)
        // Access crossing 0xCFF: all ones.
        #expect(ports.read(offset: 6, size: 4) == 0xFFFF_FFFF)
        // Disabled: all ones.
        ports.write(offset: 0, size: 4, value: address(device: 3, register: 0) & 0x7FFF_FFFF)
        #expect(ports.read(offset: 4, size: 4) == 0xFFFF_FFFF)
        // Writes go to register | port offset.
        ports.write(offset: 0, size: 4, value: address(device: 3, register: 0x3C))
        ports.write(offset: 5, size: 1, value: 0x0A)
        #expect(function.readConfig(offset: 0x3D, size: 1) == 0x0A)
        // Other functions and buses stay empty.
        ports.write(offset: 0, size: 4, value: address(device: 3, function: 1, register: 0))
        #expect(ports.read(offset: 4, size: 4) == 0xFFFF_FFFF)
        ports.write(offset: 0, size: 4, value: address(bus: 1, device: 3, register: 0))
        #expect(ports.read(offset: 4, size: 4) == 0xFFFF_FFFF)
    }

    @Test func garbageNeverCrashes() throws {
        try ports.bus.register(FakePCIFunction(), device: 0)
        for latch: UInt64 in [0, 0x8000_0000, 0xFFFF_FFFF, 0x8F00_00FC, UInt64.max] {
            ports.write(offset: 0, size: 4, value: latch)
            for offset: UInt64 in [0, 1, 2, 3, 4, 5, 6, 7, 8, UInt64.max] {
                for size in [0, 1, 2, 3, 4, 8, -4] {
                    ports.write(offset: offset, size: size, value: .max)
                    _ = ports.read(offset: offset, size: size)
                }
            }
        }
    }
}

@Suite struct AcpiPowerDeviceTests {
    let powerOffs = CallCounter()
    let resets = CallCounter()
    let device: AcpiPowerDevice

    init() {
        let (powerOffs, resets) = (self.powerOffs, self.resets)
        device = AcpiPowerDevice(onPowerOff: { powerOffs.increment() }, onReset: { resets.increment() })
    }

    @Test func s5PowersOff() {
        device.write(offset: 0, size: 1, value: 5 << 2 | 0x20)
        #expect(powerOffs.value == 1)
        #expect(resets.value == 0)
        #expect(device.read(offset: 0, size: 1) == 5 << 2)
    }

    @Test func otherSleepTypesAndTypeWithoutEnableDoNothing() {
        for type: UInt64 in [0, 1, 3, 4, 7] { device.write(offset: 0, size: 1, value: type << 2 | 0x20) }
        device.write(offset: 0, size: 1, value: 5 << 2)  // SLP_TYP S5 without SLP_EN
        #expect(powerOffs.value == 0)
        #expect(resets.value == 0)
    }

    @Test func resetValueResets() {
        device.write(offset: 2, size: 1, value: 0x02)
        #expect(resets.value == 0)
        device.write(offset: 2, size: 1, value: 0x01)
        #expect(resets.value == 1)
        #expect(powerOffs.value == 0)
    }

    @Test func sleepStatusReportsNoWake() {
        #expect(device.read(offset: 1, size: 1) & 0x80 == 0)
        #expect(device.read(offset: 3, size: 1) == 0xFF)
    }

    @Test func wideAccessesSplitIntoBytes() {
        // A word write at offset 1 reaches the reset register at offset 2.
        device.write(offset: 1, size: 2, value: 0x0100)
        #expect(resets.value == 1)
        #expect(device.read(offset: 0, size: 4) == 0xFF00_0000)
        device.write(offset: .max, size: 8, value: .max)
        _ = device.read(offset: .max, size: 8)
    }
}

/// ECAM (PCIe base spec §7.2.2): bus in offset bits 27–20, device 19–15, function 14–12, register 11–0.
@Suite struct PCIECAMTests {
    @Test func routesByOffsetAndRejectsBadAccesses() throws {
        let bus = PCIBus()
        let function = FakePCIFunction()
        try bus.register(function, device: 3)
        let ecam = PCIECAM(bus: bus)
        let base: UInt64 = 3 << 15
        #expect(ecam.read(offset: base, size: 4) == 0x1237_8086)
        #expect(ecam.read(offset: base + 2, size: 2) == 0x1237)
        ecam.write(offset: base + 0x3C, size: 1, value: 0x0B)
        #expect(function.readConfig(offset: 0x3C, size: 1) == 0x0B)
        // Crossing a dword, odd sizes, other functions, buses and out-of-window offsets: all ones.
        #expect(ecam.read(offset: base + 2, size: 4) == 0xFFFF_FFFF)
        #expect(ecam.read(offset: base, size: 8) == UInt64.max)
        #expect(ecam.read(offset: base | 1 << 12, size: 4) == 0xFFFF_FFFF)
        #expect(ecam.read(offset: base | 1 << 20, size: 4) == 0xFFFF_FFFF)
        #expect(ecam.read(offset: 1 << 28, size: 2) == 0xFFFF)
        for _ in 0..<2000 {
            let offset = UInt64.random(in: 0...UInt64.max)
            ecam.write(offset: offset, size: [1, 2, 3, 4, 8].randomElement()!, value: .random(in: 0...UInt64.max))
            _ = ecam.read(offset: offset, size: [1, 2, 4, 8, 0].randomElement()!)
        }
    }
}
