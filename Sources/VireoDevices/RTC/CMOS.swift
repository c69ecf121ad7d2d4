import Logging
import Synchronization

/// The MC146818 real-time clock and its CMOS RAM, at ports 0x70 (index, offset 0) and 0x71 (data, offset 1);
/// register it with length 2.
///
/// Time registers are computed on every read from the host clock (UTC) plus an offset, so the guest's clock
/// never drifts and there is no timer thread. Register A never reports an update in progress (UIP), so
/// readers that wait for UIP to clear (Linux's `mc146818_get_time`) proceed at once.
///
/// Guest writes to the time registers are applied as an offset from the host clock (the other fields stay
/// as they read now), so `hwclock --systohc` works and the clock keeps ticking from the new value. Writes
/// of out-of-range values are ignored; the weekday is derived from the date and writes to it are ignored.
///
/// Register B's data mode (bit 2, binary vs BCD) and hour mode (bit 1, 24 vs 12 hours with PM in bit 7)
/// are honoured for reads and writes. No IRQ8 is wired: the periodic, alarm and update-ended interrupts are
/// not generated, but register C reports the update-ended flag (UF, plus IRQF when UIE is enabled) once
/// per elapsed second, and reading C clears it (MC146818 datasheet, "Register C").
///
/// The memory-size bytes follow the layout SeaBIOS and QEMU use: 0x15/0x16 base memory in KiB,
/// 0x17/0x18 and 0x30/0x31 KiB above 1 MiB (capped at 0xFFFF), 0x34/0x35 RAM between 16 MiB and 4 GiB in
/// 64 KiB units, 0x5B–0x5D RAM above 4 GiB in 64 KiB units (24 bits).
public final class CMOS: BusDevice {
    public static let portBase: UInt64 = 0x70
    public static let portLength: UInt64 = 2

    enum Register {
        static let seconds = 0x00, minutes = 0x02, hours = 0x04, weekday = 0x06
        static let dayOfMonth = 0x07, month = 0x08, year = 0x09
        static let a = 0x0A, b = 0x0B, c = 0x0C, d = 0x0D
        static let century = 0x32
    }
    enum RegisterB {
        static let twentyFourHour: UInt8 = 0x02
        static let binary: UInt8 = 0x04
        static let updateInterruptEnable: UInt8 = 0x10
    }
    enum RegisterC {
        static let irqf: UInt8 = 0x80
        static let updateEnded: UInt8 = 0x10
    }

    struct State: Sendable {
        var index = 0
        var ram = [UInt8](repeating: 0, count: 128)
        /// Seconds added to the host clock: what the guest set minus what the host said at the time.
        var clockOffset: Int64 = 0
        /// The second at which register C was last read, to report one update-ended event per second.
        var lastUpdateSecond: Int64
    }

    private let state: Mutex<State>
    private let clock: @Sendable () -> Int64
    private let logger: Logger

    /// - Parameters:
    ///   - clock: current time in seconds since the Unix epoch (UTC).
    ///   - memoryBelow4G: bytes of guest RAM below 4 GiB (from address 0).
    ///   - memoryAbove4G: bytes of guest RAM from 4 GiB up.
    public init(
        clock: @Sendable @escaping () -> Int64, memoryBelow4G: UInt64, memoryAbove4G: UInt64,
        logger: Logger = Logger(label: "vireo.devices.cmos")
    ) {
        self.clock = clock
        self.logger = logger
        var s = State(lastUpdateSecond: clock())
        s.ram[Register.a] = 0x26  // 32.768 kHz time base, 1024 Hz periodic rate
        s.ram[Register.b] = RegisterB.twentyFourHour  // 24 h, BCD
        s.ram[Register.d] = 0x80  // VRT: RAM and time valid (battery good)

        func store16(_ value: UInt64, at low: Int) {
            s.ram[low] = UInt8(truncatingIfNeeded: value)
            s.ram[low + 1] = UInt8(truncatingIfNeeded: value >> 8)
        }
        let kib: UInt64 = 1024, mib: UInt64 = 1024 * 1024
        store16(640, at: 0x15)
        let extendedKiB = min(memoryBelow4G > mib ? (memoryBelow4G - mib) / kib : 0, 0xFFFF)
        store16(extendedKiB, at: 0x17)
        store16(extendedKiB, at: 0x30)
        store16(min(memoryBelow4G > 16 * mib ? (memoryBelow4G - 16 * mib) / (64 * kib) : 0, 0xFFFF), at: 0x34)
        let high = min(memoryAbove4G / (64 * kib), 0xFF_FFFF)
        store16(high, at: 0x5B)
        s.ram[0x5D] = UInt8(truncatingIfNeeded: high >> 16)
        state = Mutex(s)
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        // The index port is write-only on the real chip.
        guard offset == 1 else { return AccessWidth.allOnes(size) }
        let now = clock()
        return UInt64(state.withLock { readRegister(&$0, now: now) })
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        let byte = UInt8(truncatingIfNeeded: value)
        switch offset {
        case 0:
            // Bit 7 masks NMI on real boards; NMIs are KVM's business, so only the index is kept.
            state.withLock { $0.index = Int(byte & 0x7F) }
        case 1:
            let now = clock()
            state.withLock { writeRegister(byte, &$0, now: now) }
        default:
            break
        }
    }

    // MARK: - Registers

    private func readRegister(_ s: inout State, now: Int64) -> UInt8 {
        let index = s.index
        let b = s.ram[Register.b]
        let time = CivilTime(epochSeconds: now &+ s.clockOffset)
        switch index {
        case Register.seconds: return encode(time.second, b)
        case Register.minutes: return encode(time.minute, b)
        case Register.hours: return encodeHour(time.hour, b)
        case Register.weekday: return encode(time.weekday + 1, b)
        case Register.dayOfMonth: return encode(time.day, b)
        case Register.month: return encode(time.month, b)
        case Register.year: return encode(CivilTime.floorMod(time.year, 100), b)
        case Register.century: return encode(min(max(CivilTime.floorDiv(time.year, 100), 0), 99), b)
        case Register.a: return s.ram[Register.a] & 0x7F  // UIP never set
        case Register.c:
            var flags = s.ram[Register.c]
            if now != s.lastUpdateSecond {
                s.lastUpdateSecond = now
                flags |= RegisterC.updateEnded
            }
            if flags & RegisterC.updateEnded != 0, b & RegisterB.updateInterruptEnable != 0 { flags |= RegisterC.irqf }
            s.ram[Register.c] = 0  // read-clear
            return flags
        case Register.d: return 0x80
        default: return s.ram[index & 0x7F]
        }
    }

    private func writeRegister(_ byte: UInt8, _ s: inout State, now: Int64) {
        let index = s.index
        let b = s.ram[Register.b]
        var time = CivilTime(epochSeconds: now &+ s.clockOffset)
        switch index {
        case Register.seconds:
            guard let v = decode(byte, b), v < 60 else { return rejected(index, byte) }
            time.second = v
        case Register.minutes:
            guard let v = decode(byte, b), v < 60 else { return rejected(index, byte) }
            time.minute = v
        case Register.hours:
            guard let v = decodeHour(byte, b) else { return rejected(index, byte) }
            time.hour = v
        case Register.dayOfMonth:
            guard let v = decode(byte, b), (1...31).contains(v) else { return rejected(index, byte) }
            time.day = v
        case Register.month:
            guard let v = decode(byte, b), (1...12).contains(v) else { return rejected(index, byte) }
            time.month = v
        case Register.year:
            guard let v = decode(byte, b), v < 100 else { return rejected(index, byte) }
            time.year = CivilTime.floorDiv(time.year, 100) &* 100 &+ v
        case Register.century:
            guard let v = decode(byte, b), v < 100 else { return rejected(index, byte) }
            time.year = v * 100 &+ CivilTime.floorMod(time.year, 100)
        case Register.weekday, Register.c, Register.d:
            return  // derived or read-only
        case Register.a:
            s.ram[Register.a] = byte & 0x7F
            return
        default:
            s.ram[index & 0x7F] = byte
            return
        }
        s.clockOffset = time.epochSeconds &- now
    }

    private func rejected(_ index: Int, _ byte: UInt8) {
        logger.debug("cmos: ignored out-of-range write 0x\(String(byte, radix: 16)) to time register 0x\(String(index, radix: 16))")
    }

    // MARK: - BCD / binary and 12 / 24 hours

    /// `value` (0...99) in the data mode of register B.
    private func encode(_ value: Int64, _ b: UInt8) -> UInt8 {
        let v = UInt8(truncatingIfNeeded: min(max(value, 0), 99))
        return b & RegisterB.binary != 0 ? v : (v / 10) << 4 | v % 10
    }

    private func encodeHour(_ hour: Int64, _ b: UInt8) -> UInt8 {
        if b & RegisterB.twentyFourHour != 0 { return encode(hour, b) }
        let twelve = hour % 12 == 0 ? 12 : hour % 12
        return encode(twelve, b) | (hour >= 12 ? 0x80 : 0)
    }

    /// A register byte in the data mode of register B, or nil for malformed BCD.
    private func decode(_ byte: UInt8, _ b: UInt8) -> Int64? {
        if b & RegisterB.binary != 0 { return Int64(byte) }
        let high = byte >> 4, low = byte & 0x0F
        guard high <= 9, low <= 9 else { return nil }
        return Int64(high) * 10 + Int64(low)
    }

    private func decodeHour(_ byte: UInt8, _ b: UInt8) -> Int64? {
        if b & RegisterB.twentyFourHour != 0 {
            guard let hour = decode(byte, b), hour < 24 else { return nil }
            return hour
        }
        guard let twelve = decode(byte & 0x7F, b), (1...12).contains(twelve) else { return nil }
        return twelve % 12 + (byte & 0x80 != 0 ? 12 : 0)
    }
}
