import Testing
import VireoTestSupport
@testable import VireoDevices

@Suite struct I8042Tests {
    let irq = RecordingInterruptLine()
    let resets = CallCounter()
    let kbc: I8042

    init() {
        let resets = self.resets
        kbc = I8042(interrupt: irq, onReset: { resets.increment() })
    }

    func status() -> UInt8 { UInt8(truncatingIfNeeded: kbc.read(offset: 4, size: 1)) }
    func data() -> UInt8 { UInt8(truncatingIfNeeded: kbc.read(offset: 0, size: 1)) }
    func command(_ value: UInt8) { kbc.write(offset: 4, size: 1, value: UInt64(value)) }
    func writeData(_ value: UInt8) { kbc.write(offset: 0, size: 1, value: UInt64(value)) }

    /// Reads every queued byte the way Linux's i8042_flush does.
    func drain() -> [UInt8] {
        var bytes: [UInt8] = []
        while status() & 0x01 != 0, bytes.count < 100 { bytes.append(data()) }
        return bytes
    }

    @Test func resetCommandPulsesResetLine() {
        command(0xFE)
        #expect(resets.value == 1)
        command(0xFF)  // no bits pulsed
        #expect(resets.value == 1)
        // Output port write with bit 0 clear also holds the CPU in reset.
        command(0xD1)
        writeData(0xDF)  // A20 on, reset high: the classic A20 gate, no reset
        #expect(resets.value == 1)
        command(0xD1)
        writeData(0xDE)
        #expect(resets.value == 2)
    }

    @Test func selfTestAndInterfaceTests() {
        #expect(status() & 0x01 == 0)
        command(0xAA)
        #expect(status() & 0x05 == 0x05)  // OBF and system flag
        #expect(data() == 0x55)
        #expect(status() & 0x01 == 0)
        command(0xAB)
        #expect(drain() == [0x00])
        command(0xA9)
        #expect(drain() == [0x00])
    }

    @Test func commandByteReadWriteAndStatusCommandBit() {
        command(0x20)
        #expect(status() & 0x08 == 0x08)
        #expect(drain() == [0x45])
        command(0x60)
        writeData(0x74)
        #expect(status() & 0x08 == 0)
        command(0x20)
        #expect(drain() == [0x74])
        command(0xA8)
        command(0xAE)
        command(0x20)
        #expect(drain() == [0x44])
        command(0xA7)
        command(0xAD)
        command(0x20)
        #expect(drain() == [0x74])
    }

    @Test func ctrlAltDelDeliversSet1ScancodesWithIRQ1() {
        kbc.sendCtrlAltDel()
        #expect(irq.isAsserted)
        var codes: [UInt8] = []
        while status() & 0x01 != 0, codes.count < 20 {
            #expect(irq.isAsserted)
            codes.append(data())
        }
        #expect(codes == [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D])
        #expect(!irq.isAsserted)
        // One rising edge per byte, so an edge-triggered PIC interrupts for each.
        #expect(irq.risingEdges == 8)
        // Stale reads return the last byte and raise nothing.
        #expect(data() == 0x9D)
        #expect(irq.risingEdges == 8)
    }

    @Test func noIRQ1WhenKeyboardInterruptDisabled() {
        command(0x60)
        writeData(0x44)
        kbc.sendCtrlAltDel()
        #expect(irq.levels.isEmpty)
        #expect(status() & 0x01 == 1)
        // Enabling the interrupt with data waiting asserts the line.
        command(0x60)
        writeData(0x45)
        #expect(irq.isAsserted)
    }

    @Test func ctrlAltDelInSet2WhenTranslationIsOff() {
        command(0x60)
        writeData(0x05)
        kbc.sendCtrlAltDel()
        #expect(drain() == [0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14])
    }

    /// What Linux's atkbd_probe/atkbd_activate send: GETID, SETLEDS, SETREP, ENABLE, and RESET_BAT.
    @Test func keyboardAnswersLinuxAtkbdProbe() {
        writeData(0xF2)
        #expect(drain() == [0xFA, 0xAB, 0x41])
        writeData(0xED)
        #expect(drain() == [0xFA])
        writeData(0x00)
        #expect(drain() == [0xFA])
        writeData(0xF3)
        writeData(0x00)
        #expect(drain() == [0xFA, 0xFA])
        writeData(0xF4)
        #expect(drain() == [0xFA])
        writeData(0xFF)
        #expect(drain() == [0xFA, 0xAA])
        writeData(0xF0)
        writeData(0x00)
        #expect(drain() == [0xFA, 0xFA, 0x02])
        writeData(0x01)  // not a command
        #expect(drain() == [0xFE])
    }

    @Test func auxLoopbackEchoesWithAuxBitAndNoIRQ1() {
        command(0x60)
        writeData(0x47)
        irq.reset()
        command(0xD3)
        writeData(0x5A)
        #expect(status() & 0x21 == 0x21)
        #expect(data() == 0x5A)
        #expect(irq.levels.isEmpty)
        command(0xD4)
        writeData(0xF2)  // to the absent mouse: swallowed
        #expect(status() & 0x01 == 0)
    }

    @Test func port61IsServedInsideTheSpan() {
        let first = kbc.read(offset: 1, size: 1)
        let second = kbc.read(offset: 1, size: 1)
        #expect((first ^ second) & 0x20 == 0x20)
        #expect(kbc.read(offset: 2, size: 1) == 0xFF)
        #expect(kbc.read(offset: 3, size: 2) == 0xFFFF)
    }

    @Test func outputQueueIsBounded() {
        for _ in 0..<100 { kbc.sendCtrlAltDel() }
        #expect(drain().count == I8042.outputCapacity)
    }

    @Test func garbageNeverCrashes() {
        for offset: UInt64 in [0, 1, 2, 3, 4, 5, UInt64.max] {
            for value in 0...0x1FF {
                for size in [1, 2, 4, 8] {
                    kbc.write(offset: offset, size: size, value: UInt64(value) | 0xFFFF_0000)
                    _ = kbc.read(offset: offset, size: size)
                }
            }
        }
    }
}

@Suite struct DebugPortTests {
    @Test func postCodeLatchesLastByte() {
        let port = PostCodePort()
        #expect(port.lastCode == nil)
        #expect(port.read(offset: 0, size: 1) == 0xFF)
        port.write(offset: 0, size: 1, value: 0x42)
        #expect(port.lastCode == 0x42)
        #expect(port.read(offset: 0, size: 1) == 0x42)
        port.write(offset: 0, size: 4, value: 0x1234_5600)
        #expect(port.lastCode == 0x00)
    }

    @Test func ignoredPortsFloatHigh() {
        let port = IgnoredPorts()
        port.write(offset: 0, size: 1, value: 0)
        #expect(port.read(offset: 0, size: 1) == 0xFF)
        #expect(port.read(offset: 0, size: 4) == 0xFFFF_FFFF)
    }

    @Test func portBTogglesPIT2OutputSoCalibrationLoopsEnd() {
        let port = SystemControlPortB()
        port.write(offset: 0, size: 1, value: 0xFF)
        var sawHigh = false
        var sawLow = false
        for _ in 0..<4 {
            let value = port.read(offset: 0, size: 1)
            #expect(value & 0x0F == 0x0F)
            if value & 0x20 != 0 { sawHigh = true } else { sawLow = true }
        }
        #expect(sawHigh && sawLow)
    }
}
