import Logging
import Synchronization

/// An Intel 8042 keyboard controller with a minimal PS/2 keyboard behind it and no mouse.
///
/// It exists for three reasons: Linux's i8042 and atkbd drivers probe it at boot, command 0xFE pulses the
/// CPU reset line (the traditional reboot path, `reboot=k`), and `sendCtrlAltDel()` lets the control plane
/// ask the guest for a graceful shutdown the way a keyboard would.
///
/// Register it once over ports 0x60–0x64 (`I8042.portBase`, `I8042.portLength`): offset 0 is the data
/// port, offset 4 the status (read) / command (write) port. Port 0x61 falls inside that span, so offset 1
/// is served by an embedded `SystemControlPortB` (`portB`); offsets 2 and 3 read all ones.
///
/// Output bytes (controller replies, keyboard replies and scancodes) queue up and are presented one at a
/// time in the output buffer; IRQ1 is asserted while a keyboard byte is in it and the command byte's
/// interrupt bit (bit 0) is set. Between two queued bytes the line drops and rises again, so an
/// edge-triggered PIC sees one interrupt per byte, like the real controller.
///
/// Not emulated: a mouse (writes to the auxiliary device, command 0xD4, are swallowed as if nothing were
/// attached, so drivers time out cleanly; aux loopback, 0xD3, echoes with the AUX status bit but without
/// IRQ12), the inhibit/disable clock semantics (bytes are delivered even while the keyboard is disabled),
/// typematic repeat and LEDs (acknowledged and ignored).
public final class I8042: BusDevice {
    public static let portBase: UInt64 = 0x60
    public static let portLength: UInt64 = 5
    /// Bound on queued output; a guest that never reads cannot make it grow.
    static let outputCapacity = 64

    enum Status {
        static let outputFull: UInt8 = 0x01
        static let systemFlag: UInt8 = 0x04
        static let command: UInt8 = 0x08  // last write went to port 0x64
        static let unlocked: UInt8 = 0x10  // keyboard not inhibited by the key lock
        static let auxData: UInt8 = 0x20
    }
    enum CommandByte {
        static let keyboardInterrupt: UInt8 = 0x01
        static let auxInterrupt: UInt8 = 0x02
        static let systemFlag: UInt8 = 0x04
        static let keyboardDisabled: UInt8 = 0x10
        static let auxDisabled: UInt8 = 0x20
        static let translate: UInt8 = 0x40
    }
    /// PS/2 keyboard replies.
    enum Reply {
        static let ack: UInt8 = 0xFA
        static let resend: UInt8 = 0xFE
        static let selfTestPassed: UInt8 = 0xAA
    }

    struct OutputByte: Sendable {
        var value: UInt8
        var aux = false
    }

    /// What the next byte written to the data port means.
    enum PendingWrite: Sendable {
        case keyboard  // a byte for the keyboard (command or its parameter)
        case commandByte  // after 0x60
        case outputPort  // after 0xD1
        case keyboardOutput  // after 0xD2: echo as keyboard data
        case auxOutput  // after 0xD3: echo as aux data
        case auxDevice  // after 0xD4: byte for the (absent) mouse
    }

    /// A keyboard command that takes a parameter byte.
    enum KeyboardParameter: Sendable {
        case none, leds, scancodeSet, typematic
    }

    struct State: Sendable {
        /// Interrupts on, system flag, scancode translation to set 1 (what a PC BIOS leaves behind).
        var commandByte: UInt8 = CommandByte.keyboardInterrupt | CommandByte.systemFlag | CommandByte.translate
        var lastWriteWasCommand = false
        var pending: PendingWrite = .keyboard
        var keyboardParameter: KeyboardParameter = .none
        var queue: [OutputByte] = []
        /// The byte in the output buffer (OBF set) when non-nil.
        var outputBuffer: OutputByte?
        /// What the data port returns when the output buffer is empty: the last byte read, as on hardware.
        var lastRead: UInt8 = 0
        var irqLevel = false
        var droppedOutput: UInt64 = 0
    }

    /// Port 0x61, which sits inside the registered span (offset 1).
    public let portB = SystemControlPortB()

    private let state = Mutex(State())
    private let interrupt: any InterruptLine
    private let onReset: @Sendable () -> Void
    private let logger: Logger

    public init(
        interrupt: any InterruptLine, onReset: @Sendable @escaping () -> Void,
        logger: Logger = Logger(label: "vireo.devices.i8042")
    ) {
        self.interrupt = interrupt
        self.onReset = onReset
        self.logger = logger
    }

    /// Queues the make and break codes of Ctrl, Alt and Delete, as a keyboard would send them.
    /// Set 1 codes (what the controller delivers with translation on, the default); set 2 when the guest
    /// has turned translation off.
    public func sendCtrlAltDel() {
        state.withLock { s in
            let codes: [UInt8] =
                s.commandByte & CommandByte.translate != 0
                ? [0x1D, 0x38, 0xE0, 0x53, 0xE0, 0xD3, 0xB8, 0x9D]
                : [0x14, 0x11, 0xE0, 0x71, 0xE0, 0xF0, 0x71, 0xF0, 0x11, 0xF0, 0x14]
            for code in codes { enqueue(OutputByte(value: code), &s) }
            updateInterrupt(&s)
        }
        logger.info("i8042: sent Ctrl-Alt-Del to the guest")
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        switch offset {
        case 0:
            return UInt64(state.withLock { readData(&$0) })
        case 1:
            return portB.read(offset: 0, size: size)
        case 4:
            return UInt64(state.withLock { status($0) })
        default:
            return AccessWidth.allOnes(size)
        }
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let byte = UInt8(truncatingIfNeeded: value)
        switch offset {
        case 0, 4:
            let reset = state.withLock { offset == 0 ? writeData(byte, &$0) : writeCommand(byte, &$0) }
            if reset {
                // Called without the lock: the VMM may tear the VM down from here.
                logger.info("i8042: guest reset the CPU (command 0x\(String(byte, radix: 16)) to port 0x\(String(0x60 + offset, radix: 16)))")
                onReset()
            }
        case 1:
            portB.write(offset: 0, size: size, value: value)
        default:
            break
        }
    }

    // MARK: - Ports

    private func status(_ s: State) -> UInt8 {
        var status = Status.unlocked | (s.commandByte & CommandByte.systemFlag != 0 ? Status.systemFlag : 0)
        if let byte = s.outputBuffer {
            status |= Status.outputFull
            if byte.aux { status |= Status.auxData }
        }
        if s.lastWriteWasCommand { status |= Status.command }
        return status
    }

    private func readData(_ s: inout State) -> UInt8 {
        guard let byte = s.outputBuffer else { return s.lastRead }
        s.lastRead = byte.value
        s.outputBuffer = nil
        updateInterrupt(&s)  // OBF cleared: the line drops...
        refill(&s)
        updateInterrupt(&s)  // ...and rises again if another byte is waiting.
        return byte.value
    }

    /// Returns true when the command pulses the reset line.
    private func writeCommand(_ command: UInt8, _ s: inout State) -> Bool {
        s.lastWriteWasCommand = true
        s.pending = .keyboard
        switch command {
        case 0x20:  // read command byte
            reply(s.commandByte, &s)
        case 0x60:  // write command byte: next data byte
            s.pending = .commandByte
        case 0xA7:  // disable aux interface
            s.commandByte |= CommandByte.auxDisabled
        case 0xA8:  // enable aux interface
            s.commandByte &= ~CommandByte.auxDisabled
        case 0xA9, 0xAB:  // aux / keyboard interface test: 0x00 = no error
            reply(0x00, &s)
        case 0xAA:  // controller self test
            s.commandByte |= CommandByte.systemFlag
            reply(0x55, &s)
        case 0xAD:  // disable keyboard interface
            s.commandByte |= CommandByte.keyboardDisabled
        case 0xAE:  // enable keyboard interface
            s.commandByte &= ~CommandByte.keyboardDisabled
        case 0xC0:  // read input port: nothing special strapped
            reply(0x00, &s)
        case 0xD0:  // read output port: reset deasserted (bit 0), A20 enabled (bit 1)
            reply(0x03, &s)
        case 0xD1:
            s.pending = .outputPort
        case 0xD2:
            s.pending = .keyboardOutput
        case 0xD3:
            s.pending = .auxOutput
        case 0xD4:
            s.pending = .auxDevice
        case 0xF0...0xFF:
            // Pulse output port bits 0–3 low for those bits clear in the command; bit 0 is CPU reset,
            // so 0xFE (and any even value) resets the machine.
            return command & 0x01 == 0
        default:
            logger.debug("i8042: ignored controller command 0x\(String(command, radix: 16))")
        }
        return false
    }

    /// Returns true when the write holds the CPU in reset (output port bit 0 cleared).
    private func writeData(_ byte: UInt8, _ s: inout State) -> Bool {
        s.lastWriteWasCommand = false
        let pending = s.pending
        s.pending = .keyboard
        switch pending {
        case .commandByte:
            s.commandByte = byte
            updateInterrupt(&s)
        case .outputPort:
            // Output port bit 0 low holds the CPU in reset; A20 (bit 1) is always on for us.
            return byte & 0x01 == 0
        case .keyboardOutput:
            reply(byte, &s)
        case .auxOutput:
            enqueue(OutputByte(value: byte, aux: true), &s)
            updateInterrupt(&s)
        case .auxDevice:
            break  // no mouse attached
        case .keyboard:
            keyboardCommand(byte, &s)
        }
        return false
    }

    // MARK: - PS/2 keyboard

    /// The subset of the PS/2 keyboard protocol Linux's atkbd uses at probe: it needs ACKs and the ID
    /// to bind, and the driver must bind for Ctrl-Alt-Del to reach the guest's init.
    private func keyboardCommand(_ byte: UInt8, _ s: inout State) {
        let parameter = s.keyboardParameter
        s.keyboardParameter = .none
        switch parameter {
        case .leds, .typematic:
            reply(Reply.ack, &s)
            return
        case .scancodeSet:
            reply(Reply.ack, &s)
            if byte == 0 { reply(0x02, &s) }  // "which set": we speak set 2 (translated to set 1)
            return
        case .none:
            break
        }
        switch byte {
        case 0xED:
            s.keyboardParameter = .leds
            reply(Reply.ack, &s)
        case 0xEE:  // echo
            reply(0xEE, &s)
        case 0xF0:
            s.keyboardParameter = .scancodeSet
            reply(Reply.ack, &s)
        case 0xF2:  // identify: an MF2 keyboard; the controller translates 0x83 to 0x41
            reply(Reply.ack, &s)
            reply(0xAB, &s)
            reply(s.commandByte & CommandByte.translate != 0 ? 0x41 : 0x83, &s)
        case 0xF3:
            s.keyboardParameter = .typematic
            reply(Reply.ack, &s)
        case 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0xFB, 0xFC, 0xFD:
            reply(Reply.ack, &s)
        case 0xFE:  // resend: we have nothing buffered to repeat
            reply(Reply.ack, &s)
        case 0xFF:  // reset: ACK, then basic assurance test passed
            reply(Reply.ack, &s)
            reply(Reply.selfTestPassed, &s)
        default:
            reply(Reply.resend, &s)
        }
    }

    // MARK: - Output buffer

    private func reply(_ value: UInt8, _ s: inout State) {
        enqueue(OutputByte(value: value), &s)
        updateInterrupt(&s)
    }

    private func enqueue(_ byte: OutputByte, _ s: inout State) {
        guard s.queue.count + (s.outputBuffer == nil ? 0 : 1) < Self.outputCapacity else {
            s.droppedOutput += 1
            return
        }
        s.queue.append(byte)
        refill(&s)
    }

    private func refill(_ s: inout State) {
        guard s.outputBuffer == nil, !s.queue.isEmpty else { return }
        s.outputBuffer = s.queue.removeFirst()
    }

    private func updateInterrupt(_ s: inout State) {
        // IRQ12 (aux) is not wired; aux bytes never assert IRQ1.
        let pending =
            s.commandByte & CommandByte.keyboardInterrupt != 0 && s.outputBuffer.map { !$0.aux } == true
        guard pending != s.irqLevel else { return }
        s.irqLevel = pending
        interrupt.setLevel(pending)
    }
}
