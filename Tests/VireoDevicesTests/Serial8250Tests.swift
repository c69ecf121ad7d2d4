import Testing
import VireoTestSupport
@testable import VireoDevices

/// Register offsets, as named in Linux's include/uapi/linux/serial_reg.h.
private enum Reg {
    static let rx: UInt64 = 0, tx: UInt64 = 0, dll: UInt64 = 0
    static let ier: UInt64 = 1, dlm: UInt64 = 1
    static let iir: UInt64 = 2, fcr: UInt64 = 2
    static let lcr: UInt64 = 3, mcr: UInt64 = 4, lsr: UInt64 = 5, msr: UInt64 = 6, scr: UInt64 = 7
}

@Suite struct Serial8250Tests {
    let irq = RecordingInterruptLine()
    let console = RecordingConsole()
    let uart: Serial8250

    init() { uart = Serial8250(interrupt: irq, output: console) }

    func inb(_ offset: UInt64) -> UInt8 { UInt8(truncatingIfNeeded: uart.read(offset: offset, size: 1)) }
    func outb(_ offset: UInt64, _ value: UInt8) { uart.write(offset: offset, size: 1, value: UInt64(value)) }

    /// The register dance of Linux's drivers/tty/serial/8250/8250_port.c `autoconfig()`.
    @Test func linuxAutoconfigDetects16550A() {
        // IER scratch test: IER must read back 0 and then 0x0F.
        let savedIER = inb(Reg.ier)
        outb(Reg.ier, 0)
        #expect(inb(Reg.ier) & 0x0F == 0)
        outb(Reg.ier, 0x0F)
        #expect(inb(Reg.ier) & 0x0F == 0x0F)
        outb(Reg.ier, savedIER)

        // Loopback test: MCR = LOOP|OUT2|RTS must show DCD|CTS in MSR's status bits.
        let savedMCR = inb(Reg.mcr)
        outb(Reg.mcr, 0x10 | 0x08 | 0x02)
        #expect(inb(Reg.msr) & 0xF0 == 0x90)
        outb(Reg.mcr, savedMCR)

        // FIFO detection: LCR=0xBF, EFR(=reg 2)=0, LCR=0, FCR=enable; IIR>>6 == 3 means a 16550A.
        outb(Reg.lcr, 0xBF)
        outb(Reg.fcr, 0)
        outb(Reg.lcr, 0)
        outb(Reg.fcr, 0x01)
        #expect(inb(Reg.iir) >> 6 == 3)
        // TI16750 check: bit 5 (64-byte FIFO) must never appear.
        outb(Reg.fcr, 0x01 | 0x20)
        #expect(inb(Reg.iir) & 0x20 == 0)
        outb(Reg.fcr, 0)
        #expect(inb(Reg.iir) & 0xC0 == 0)

        // Scratch register.
        outb(Reg.scr, 0xA5)
        #expect(inb(Reg.scr) == 0xA5)
        outb(Reg.scr, 0x5A)
        #expect(inb(Reg.scr) == 0x5A)
        #expect(console.bytes.isEmpty)
    }

    @Test func loopbackRoutesTransmitToReceiver() {
        outb(Reg.mcr, 0x10)
        #expect(inb(Reg.msr) & 0xF0 == 0)
        outb(Reg.mcr, 0x1F)
        #expect(inb(Reg.msr) & 0xF0 == 0xF0)
        outb(Reg.tx, 0x42)
        #expect(inb(Reg.lsr) & 0x01 == 0x01)
        #expect(inb(Reg.rx) == 0x42)
        #expect(inb(Reg.lsr) & 0x01 == 0)
        #expect(console.bytes.isEmpty)
        #expect(uart.statistics.bytesOut == 0)
        outb(Reg.mcr, 0x0B)
        #expect(inb(Reg.msr) & 0xB0 == 0xB0)
    }

    @Test func modemStatusDeltasInLoopback() {
        outb(Reg.mcr, 0x10)
        _ = inb(Reg.msr)
        outb(Reg.ier, 0x08)
        outb(Reg.mcr, 0x10 | 0x02)  // RTS -> CTS changes
        #expect(irq.isAsserted)
        #expect(inb(Reg.iir) & 0x0F == 0x00)
        #expect(inb(Reg.msr) == 0x11)  // CTS | DCTS
        #expect(!irq.isAsserted)
        #expect(inb(Reg.iir) & 0x0F == 0x01)
    }

    @Test func thrEmptyInterruptRaisedByIERAndClearedByIIRRead() {
        #expect(irq.levels.isEmpty)
        outb(Reg.ier, 0x02)
        #expect(irq.levels == [true])
        #expect(inb(Reg.iir) & 0x0F == 0x02)
        #expect(irq.levels == [true, false])
        #expect(inb(Reg.iir) & 0x0F == 0x01)
        // Rewriting IER with ETBEI while idle reasserts THRE (Linux's UART_BUG_THRE test).
        outb(Reg.ier, 0)
        outb(Reg.ier, 0x02)
        #expect(irq.isAsserted)
        #expect(inb(Reg.iir) & 0x0F == 0x02)
        #expect(!irq.isAsserted)
        outb(Reg.ier, 0)
        #expect(irq.levels == [true, false, true, false])
    }

    @Test func thrWriteGivesAFreshEdgePerByte() {
        outb(Reg.ier, 0x02)
        _ = inb(Reg.iir)
        let edgesBefore = irq.risingEdges
        for byte in "abc".utf8 { outb(Reg.tx, byte) }
        #expect(irq.risingEdges == edgesBefore + 3)
        #expect(irq.isAsserted)
        // Only changes are reported.
        let levels = irq.levels
        for (a, b) in zip(levels, levels.dropFirst()) { #expect(a != b) }
    }

    @Test func noInterruptWithoutEnables() {
        outb(Reg.tx, 0x41)
        uart.enqueueInput([1, 2, 3])
        #expect(irq.levels.isEmpty)
        #expect(inb(Reg.iir) == 0x01)
    }

    @Test func outputIsBatchedUntilNewlineOrFlush() {
        for byte in "hello".utf8 { outb(Reg.tx, byte) }
        #expect(console.writes.isEmpty)
        outb(Reg.tx, UInt8(ascii: "\n"))
        #expect(console.writes == [Array("hello\n".utf8)])
        for byte in "$ ".utf8 { outb(Reg.tx, byte) }
        #expect(console.writes.count == 1)
        uart.flush()
        #expect(console.text == "hello\n$ ")
        #expect(console.writes.count == 2)
        uart.flush()
        #expect(console.writes.count == 2)
        #expect(uart.statistics.bytesOut == 8)
    }

    @Test func longLinesAreFlushedAtTheBatchLimit() {
        for _ in 0..<(Serial8250.outputBatchLimit + 10) { outb(Reg.tx, UInt8(ascii: "x")) }
        #expect(console.writes.count == 1)
        #expect(console.writes.first?.count == Serial8250.outputBatchLimit)
    }

    @Test func endOfTransmitBurstFlushes() {
        // Interrupt-driven tty: the driver disables ETBEI once its buffer is drained (a prompt without '\n').
        outb(Reg.ier, 0x02)
        for byte in "login: ".utf8 { outb(Reg.tx, byte) }
        #expect(console.bytes.isEmpty)
        outb(Reg.ier, 0x00)
        #expect(console.text == "login: ")
    }

    @Test func receivedDataInterruptAndLineStatus() {
        outb(Reg.ier, 0x01)
        #expect(inb(Reg.lsr) == 0x60)
        uart.enqueueInput(Array("ok".utf8))
        #expect(irq.levels == [true])
        #expect(inb(Reg.iir) & 0x0F == 0x04)
        #expect(inb(Reg.lsr) == 0x61)
        #expect(inb(Reg.rx) == UInt8(ascii: "o"))
        #expect(irq.isAsserted)
        #expect(inb(Reg.rx) == UInt8(ascii: "k"))
        #expect(irq.levels == [true, false])
        #expect(inb(Reg.lsr) & 0x01 == 0)
        #expect(inb(Reg.iir) & 0x0F == 0x01)
        // Reading an empty RBR returns the last byte and does not crash.
        #expect(inb(Reg.rx) == UInt8(ascii: "k"))
        #expect(uart.statistics.bytesIn == 2)
    }

    @Test func receivedDataOutranksThrEmpty() {
        outb(Reg.ier, 0x03)
        uart.enqueueInput([0x61])
        #expect(inb(Reg.iir) & 0x0F == 0x04)
        _ = inb(Reg.rx)
        #expect(inb(Reg.iir) & 0x0F == 0x02)
    }

    @Test func inputOverflowIsBoundedCountedAndFlagsOverrun() {
        let small = Serial8250(interrupt: irq, output: console, inputCapacity: 4)
        small.write(offset: Reg.ier, size: 1, value: 0x04)
        small.enqueueInput([1, 2, 3, 4, 5, 6])
        #expect(small.statistics == .init(bytesOut: 0, bytesIn: 4, droppedInput: 2))
        #expect(small.read(offset: Reg.iir, size: 1) & 0x0F == 0x06)
        #expect(small.read(offset: Reg.lsr, size: 1) & 0x03 == 0x03)
        #expect(small.read(offset: Reg.lsr, size: 1) & 0x02 == 0)
        #expect(!irq.isAsserted)
        for expected: UInt64 in 1...4 { #expect(small.read(offset: Reg.rx, size: 1) == expected) }
    }

    @Test func fifoControlClearsReceiver() {
        outb(Reg.fcr, 0x01)
        uart.enqueueInput([1, 2, 3])
        outb(Reg.fcr, 0x01 | 0x02)
        #expect(inb(Reg.lsr) & 0x01 == 0)
        #expect(inb(Reg.iir) & 0xC0 == 0xC0)
    }

    @Test func divisorLatchDoesNotDisturbTHRorIER() {
        outb(Reg.ier, 0x05)
        outb(Reg.lcr, 0x80 | 0x03)
        outb(Reg.dll, 0x01)
        outb(Reg.dlm, 0x00)
        #expect(inb(Reg.dll) == 0x01)
        #expect(inb(Reg.dlm) == 0x00)
        outb(Reg.lcr, 0x03)
        #expect(inb(Reg.ier) == 0x05)
        #expect(console.bytes.isEmpty)
        #expect(uart.statistics.bytesOut == 0)
        outb(Reg.lcr, 0x83)
        #expect(inb(Reg.dll) == 0x01)
        #expect(inb(Reg.lcr) == 0x83)
    }

    @Test func garbageAtEveryRegisterAndSizeNeverCrashes() {
        let values: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0x1234, 0xFFFF_FFFF, UInt64.max, 0xA5A5_5A5A_0F0F_F0F0]
        for size in [0, 1, 2, 3, 4, 8, 16, -1] {
            for offset: UInt64 in [0, 1, 2, 3, 4, 5, 6, 7, 8, 0xFFFF, UInt64.max] {
                for value in values {
                    uart.write(offset: offset, size: size, value: value)
                    _ = uart.read(offset: offset, size: size)
                }
            }
        }
        uart.enqueueInput([UInt8](repeating: 0xFF, count: 10))
        for offset: UInt64 in 0...7 { _ = uart.read(offset: offset, size: 1) }
        #expect(uart.read(offset: 8, size: 2) == 0xFFFF)
    }
}
