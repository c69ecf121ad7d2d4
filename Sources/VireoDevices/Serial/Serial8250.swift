import Logging
import Synchronization

/// A 16550A-compatible UART (National Semiconductor PC16550D datasheet), enough for Linux's 8250 driver
/// to probe it as a 16550A and run both the polled console and the interrupt-driven tty on it.
///
/// Register map (offsets 0–7 from the base, usually port 0x3F8 / COM1):
/// 0 RBR (read) / THR (write), or DLL when LCR.DLAB; 1 IER, or DLM when LCR.DLAB; 2 IIR (read) / FCR (write);
/// 3 LCR; 4 MCR; 5 LSR; 6 MSR; 7 SCR. Registers are byte wide: an access of any size touches only the
/// register at `offset`, and offsets past 7 read all ones.
///
/// Transmission is instantaneous, so THR and the transmitter are always empty (LSR.THRE|TEMT). Output bytes are
/// batched to save host writes and flushed on '\n', when the batch reaches `outputBatchLimit`, when the guest
/// turns the THRE interrupt off or reads IIR (both mark the end of a transmit burst, e.g. a shell prompt),
/// and on `flush()`.
///
/// The receive FIFO is larger than the 16 bytes of a real 16550 (`inputCapacity`, 64 KiB by default) so pasted
/// host input is not lost while the guest is busy; bytes beyond it are dropped, counted and reported as overrun.
///
/// Callbacks (`InterruptLine.setLevel`, `ConsoleOutput.write`) are made with the device lock held so that level
/// changes and output keep the order of the accesses that caused them; they must not call back into this UART.
public final class Serial8250: BusDevice {
    /// Traffic counters, for diagnostics and the control plane.
    public struct Statistics: Sendable, Equatable {
        /// Bytes the guest transmitted to the console (loopback traffic excluded).
        public var bytesOut: UInt64 = 0
        /// Host bytes accepted into the receive FIFO.
        public var bytesIn: UInt64 = 0
        /// Host bytes dropped because the receive FIFO was full.
        public var droppedInput: UInt64 = 0
    }

    public static let defaultInputCapacity = 64 * 1024
    /// Output is handed to the console at least every this many bytes, even without a newline.
    public static let outputBatchLimit = 256

    // Register bits, named as in the PC16550D datasheet.
    enum IER {
        static let erbfi: UInt8 = 0x01  // received data available
        static let etbei: UInt8 = 0x02  // transmitter holding register empty
        static let elsi: UInt8 = 0x04  // receiver line status
        static let edssi: UInt8 = 0x08  // modem status
    }
    enum IIR {
        static let noInterrupt: UInt8 = 0x01
        static let lineStatus: UInt8 = 0x06
        static let receivedData: UInt8 = 0x04
        static let thrEmpty: UInt8 = 0x02
        static let modemStatus: UInt8 = 0x00
        static let fifoEnabled: UInt8 = 0xC0
    }
    enum LSR {
        static let dataReady: UInt8 = 0x01
        static let overrun: UInt8 = 0x02
        static let thrEmpty: UInt8 = 0x20
        static let transmitterEmpty: UInt8 = 0x40
    }
    enum MCR {
        static let dtr: UInt8 = 0x01
        static let rts: UInt8 = 0x02
        static let out1: UInt8 = 0x04
        static let out2: UInt8 = 0x08
        static let loop: UInt8 = 0x10
    }
    enum MSR {
        static let cts: UInt8 = 0x10
        static let dsr: UInt8 = 0x20
        static let ri: UInt8 = 0x40
        static let dcd: UInt8 = 0x80
    }
    static let dlab: UInt8 = 0x80

    struct State: Sendable {
        var ier: UInt8 = 0
        var lcr: UInt8 = 0
        var mcr: UInt8 = 0
        var scr: UInt8 = 0
        /// Divisor 12 = 9600 baud from the 1.8432 MHz clock; the value is only stored, never used.
        var dll: UInt8 = 0x0C
        var dlm: UInt8 = 0
        var fifoEnabled = false
        /// The THRE interrupt condition: set when THR becomes empty, cleared by reading IIR (while it is the
        /// reported source) or by writing THR.
        var thrInterruptPending = false
        var overrun = false
        /// MSR bits 0–3 (DCTS, DDSR, TERI, DDCD), cleared by reading MSR.
        var msrDelta: UInt8 = 0
        /// Value returned when RBR is read with nothing received (the last byte, as on hardware).
        var lastReceived: UInt8 = 0
        var rx: ByteQueue
        var outBatch: [UInt8] = []
        var irqLevel = false
        var stats = Statistics()
        var loggedDrop = false
    }

    private let state: Mutex<State>
    private let interrupt: any InterruptLine
    private let output: any ConsoleOutput
    private let logger: Logger

    public init(
        interrupt: any InterruptLine, output: any ConsoleOutput,
        inputCapacity: Int = Serial8250.defaultInputCapacity,
        logger: Logger = Logger(label: "vireo.devices.serial")
    ) {
        self.interrupt = interrupt
        self.output = output
        self.logger = logger
        var initial = State(rx: ByteQueue(capacity: inputCapacity))
        initial.outBatch.reserveCapacity(Self.outputBatchLimit)
        state = Mutex(initial)
    }

    /// Traffic counters so far.
    public var statistics: Statistics { state.withLock { $0.stats } }

    /// Queues host bytes (e.g. from the VMM's stdin thread) for the guest to read from RBR.
    /// Bytes that do not fit are dropped, counted in `statistics.droppedInput`, and flag LSR.OE.
    public func enqueueInput(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        state.withLock { s in
            var dropped: UInt64 = 0
            for byte in bytes where !s.rx.push(byte) { dropped += 1 }
            s.stats.bytesIn += UInt64(bytes.count) - dropped
            if dropped > 0 {
                s.stats.droppedInput += dropped
                s.overrun = true
                if !s.loggedDrop {
                    s.loggedDrop = true
                    logger.warning("serial: receive buffer full, dropping input (further drops are only counted)")
                }
            }
            updateInterrupt(&s)
        }
    }

    /// Hands any batched output to the console now.
    public func flush() {
        state.withLock { flushOutput(&$0) }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard offset < 8 else { return AccessWidth.allOnes(size) }
        return UInt64(state.withLock { readRegister(Int(offset), &$0) })
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard offset < 8 else { return }
        let byte = UInt8(truncatingIfNeeded: value)
        state.withLock { writeRegister(Int(offset), byte, &$0) }
    }

    // MARK: - Register semantics

    private func readRegister(_ register: Int, _ s: inout State) -> UInt8 {
        let dlab = s.lcr & Self.dlab != 0
        switch register {
        case 0:
            if dlab { return s.dll }
            if let byte = s.rx.pop() { s.lastReceived = byte }
            updateInterrupt(&s)
            return s.lastReceived
        case 1:
            return dlab ? s.dlm : s.ier
        case 2:
            let source = interruptSource(s)
            // Reading IIR while THRE is the reported source acknowledges it (PC16550D table 4).
            if source == IIR.thrEmpty {
                s.thrInterruptPending = false
                updateInterrupt(&s)
            }
            flushOutput(&s)
            return source | (s.fifoEnabled ? IIR.fifoEnabled : 0)
        case 3:
            return s.lcr
        case 4:
            return s.mcr
        case 5:
            var lsr = LSR.thrEmpty | LSR.transmitterEmpty
            if !s.rx.isEmpty { lsr |= LSR.dataReady }
            if s.overrun {
                lsr |= LSR.overrun
                s.overrun = false  // OE is cleared by reading LSR
                updateInterrupt(&s)
            }
            return lsr
        case 6:
            let msr = modemStatus(s) | s.msrDelta
            if s.msrDelta != 0 {
                s.msrDelta = 0
                updateInterrupt(&s)
            }
            return msr
        default:
            return s.scr
        }
    }

    private func writeRegister(_ register: Int, _ byte: UInt8, _ s: inout State) {
        let dlab = s.lcr & Self.dlab != 0
        switch register {
        case 0:
            if dlab { s.dll = byte; return }
            transmit(byte, &s)
        case 1:
            if dlab { s.dlm = byte; return }
            let old = s.ier
            // Bits 4–7 are reserved and read as 0; Linux's probe checks that IER reads back 0x0F.
            s.ier = byte & 0x0F
            // THR is always empty, so enabling (or re-enabling) ETBEI raises THRE at once: Linux's startup
            // test expects a real 16550 to reassert it every time ETBEI is written while idle.
            if s.ier & IER.etbei != 0 { s.thrInterruptPending = true }
            if old & IER.etbei != 0, s.ier & IER.etbei == 0 { flushOutput(&s) }
            updateInterrupt(&s)
        case 2:
            // FCR: bit 0 enables the FIFOs (changing it clears them), bit 1 clears the receive FIFO,
            // bit 2 the transmit FIFO (always empty here). Trigger levels and DMA mode are ignored.
            let enable = byte & 0x01 != 0
            if enable != s.fifoEnabled || byte & 0x02 != 0 { s.rx.removeAll() }
            s.fifoEnabled = enable
            updateInterrupt(&s)
        case 3:
            s.lcr = byte
        case 4:
            let before = modemStatus(s)
            s.mcr = byte & 0x1F
            let after = modemStatus(s)
            let changed = before ^ after
            if changed & MSR.cts != 0 { s.msrDelta |= 0x01 }
            if changed & MSR.dsr != 0 { s.msrDelta |= 0x02 }
            if before & MSR.ri != 0, after & MSR.ri == 0 { s.msrDelta |= 0x04 }  // trailing edge of RI
            if changed & MSR.dcd != 0 { s.msrDelta |= 0x08 }
            updateInterrupt(&s)
        case 5, 6:
            break  // LSR/MSR writes are for factory testing only; ignore them.
        default:
            s.scr = byte
        }
    }

    private func transmit(_ byte: UInt8, _ s: inout State) {
        // Writing THR clears the THRE interrupt...
        s.thrInterruptPending = false
        updateInterrupt(&s)
        if s.mcr & MCR.loop != 0 {
            // Loopback: the transmitter output is wired to the receiver input (PC16550D §8.6).
            if !s.rx.push(byte) { s.overrun = true }
        } else {
            s.outBatch.append(byte)
            s.stats.bytesOut += 1
            if byte == UInt8(ascii: "\n") || s.outBatch.count >= Self.outputBatchLimit { flushOutput(&s) }
        }
        // ...and, the byte being sent instantly, THR is empty again: re-raise it. The low-high transition
        // gives edge-triggered interrupt controllers a fresh edge for every byte.
        s.thrInterruptPending = true
        updateInterrupt(&s)
    }

    /// MSR bits 4–7. In loopback they mirror MCR (DTR→DSR, RTS→CTS, OUT1→RI, OUT2→DCD); otherwise a
    /// terminal is always attached (DCD, DSR, CTS), which keeps getty and flow control happy.
    private func modemStatus(_ s: State) -> UInt8 {
        guard s.mcr & MCR.loop != 0 else { return MSR.dcd | MSR.dsr | MSR.cts }
        var msr: UInt8 = 0
        if s.mcr & MCR.dtr != 0 { msr |= MSR.dsr }
        if s.mcr & MCR.rts != 0 { msr |= MSR.cts }
        if s.mcr & MCR.out1 != 0 { msr |= MSR.ri }
        if s.mcr & MCR.out2 != 0 { msr |= MSR.dcd }
        return msr
    }

    /// The highest-priority enabled pending interrupt, as IIR bits 0–3 (PC16550D table 4).
    private func interruptSource(_ s: State) -> UInt8 {
        if s.overrun, s.ier & IER.elsi != 0 { return IIR.lineStatus }
        if !s.rx.isEmpty, s.ier & IER.erbfi != 0 { return IIR.receivedData }
        if s.thrInterruptPending, s.ier & IER.etbei != 0 { return IIR.thrEmpty }
        if s.msrDelta != 0, s.ier & IER.edssi != 0 { return IIR.modemStatus }
        return IIR.noInterrupt
    }

    private func updateInterrupt(_ s: inout State) {
        let pending = interruptSource(s) != IIR.noInterrupt
        guard pending != s.irqLevel else { return }
        s.irqLevel = pending
        interrupt.setLevel(pending)
    }

    private func flushOutput(_ s: inout State) {
        guard !s.outBatch.isEmpty else { return }
        output.write(s.outBatch)
        s.outBatch.removeAll(keepingCapacity: true)
    }
}
