import Logging
import Testing
import VireoTestSupport
@testable import VireoDevices

/// The legacy port layout the VMM builds, wired through a real `Bus`.
@Suite struct LayoutTests {
    let bus = Bus(name: "pio", logger: Logger(label: "test"))
    let console = RecordingConsole()
    let com1Line = RecordingInterruptLine()
    let kbdLine = RecordingInterruptLine()
    let resets = CallCounter()
    let powerOffs = CallCounter()
    let uart: Serial8250
    let post = PostCodePort()

    init() throws {
        let (resets, powerOffs) = (self.resets, self.powerOffs)
        uart = Serial8250(interrupt: com1Line, output: console)
        try bus.register(uart, at: LegacyPorts.com1.base, length: LegacyPorts.com1.length)
        try bus.register(I8042(interrupt: kbdLine, onReset: { resets.increment() }), at: LegacyPorts.i8042.base, length: LegacyPorts.i8042.length)
        try bus.register(CMOS(clock: { 0 }, memoryBelow4G: 1 << 30, memoryAbove4G: 0), at: LegacyPorts.cmos.base, length: LegacyPorts.cmos.length)
        try bus.register(post, at: LegacyPorts.postCode.base, length: LegacyPorts.postCode.length)
        try bus.register(IgnoredPorts(), at: LegacyPorts.dmaPage.base, length: LegacyPorts.dmaPage.length)
        try bus.register(PCIConfigPorts(), at: LegacyPorts.pciConfig.base, length: LegacyPorts.pciConfig.length)
        try bus.register(
            AcpiPowerDevice(onPowerOff: { powerOffs.increment() }, onReset: { resets.increment() }),
            at: LegacyPorts.acpi.base, length: LegacyPorts.acpi.length)
    }

    @Test func portsReachTheirDevices() {
        for byte in "hi\n".utf8 { bus.write(address: 0x3F8, size: 1, value: UInt64(byte)) }
        #expect(console.text == "hi\n")
        #expect(bus.read(address: 0x3FD, size: 1) == 0x60)

        bus.write(address: 0x80, size: 1, value: 0x2A)
        #expect(post.lastCode == 0x2A)
        #expect(bus.read(address: 0x87, size: 1) == 0xFF)

        bus.write(address: 0x70, size: 1, value: 0x0D)
        #expect(bus.read(address: 0x71, size: 1) == 0x80)

        let a = bus.read(address: 0x61, size: 1), b = bus.read(address: 0x61, size: 1)
        #expect((a ^ b) & 0x20 != 0)

        bus.write(address: 0xCF8, size: 4, value: 0x8000_0000)
        #expect(bus.read(address: 0xCF8, size: 4) == 0x8000_0000)
        #expect(bus.read(address: 0xCFC, size: 4) == 0xFFFF_FFFF)

        bus.write(address: 0x64, size: 1, value: 0xFE)
        bus.write(address: 0x602, size: 1, value: 0x01)
        #expect(resets.value == 2)
        bus.write(address: 0x600, size: 1, value: 0x34)
        #expect(powerOffs.value == 1)
    }

    @Test func concurrentVCPUsKeepTheUARTConsistent() async {
        let uart = self.uart
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    for _ in 0..<1000 {
                        uart.write(offset: 0, size: 1, value: UInt64(UInt8(ascii: "x")))
                        _ = uart.read(offset: 2, size: 1)
                        _ = uart.read(offset: 5, size: 1)
                    }
                }
            }
            group.addTask {
                for _ in 0..<1000 { uart.enqueueInput([1, 2, 3]) }
            }
        }
        uart.flush()
        #expect(console.bytes.count == 8000)
        #expect(uart.statistics.bytesOut == 8000)
        #expect(uart.statistics.bytesIn == 3000)
    }
}
