import Logging
import Synchronization

/// The fixed-hardware power registers our ACPI tables point at (ACPI 6.x): the sleep control register
/// (§4.8.3.7), the sleep status register (§4.8.3.8) and the reset register (§4.8.3.6), each one byte, at
/// offsets 0, 1 and 2. The VMM registers it at port 0x600 with length 3 and describes the same addresses in
/// the FADT (SLEEP_CONTROL_REG, SLEEP_STATUS_REG, RESET_REG with RESET_VALUE) and the `_S5` package in the DSDT.
///
/// Sleep control: writing SLP_EN (bit 5) with SLP_TYP (bits 2–4) equal to the `_S5` type powers off; other
/// sleep states are not supported and are logged and ignored. Sleep status reads WAK_STS (bit 7) clear: we
/// never resume. Writing `resetValue` to the reset register resets. Wider accesses are split into bytes.
public final class AcpiPowerDevice: BusDevice {
    public static let portBase: UInt64 = 0x600
    public static let portLength: UInt64 = 3

    static let sleepEnable: UInt8 = 0x20

    /// The SLP_TYP value the DSDT's `_S5` package must carry.
    public let s5SleepType: UInt8
    /// The RESET_VALUE the FADT must carry.
    public let resetValue: UInt8

    private let onPowerOff: @Sendable () -> Void
    private let onReset: @Sendable () -> Void
    private let logger: Logger
    /// Last SLP_TYP written, read back from the control register (SLP_EN is write-only and reads 0).
    private let sleepType = Atomic<UInt8>(0)

    public init(
        onPowerOff: @Sendable @escaping () -> Void, onReset: @Sendable @escaping () -> Void,
        s5SleepType: UInt8 = 5, resetValue: UInt8 = 0x01,
        logger: Logger = Logger(label: "vireo.devices.acpi")
    ) {
        self.onPowerOff = onPowerOff
        self.onReset = onReset
        self.s5SleepType = s5SleepType & 0x07
        self.resetValue = resetValue
        self.logger = logger
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        var value: UInt64 = 0
        for i in 0..<min(max(size, 0), 8) {
            let (register, overflow) = offset.addingReportingOverflow(UInt64(i))
            value |= UInt64(overflow ? 0xFF : readByte(register)) << UInt64(8 * i)
        }
        return value
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        for i in 0..<min(max(size, 0), 8) {
            let (register, overflow) = offset.addingReportingOverflow(UInt64(i))
            guard !overflow else { break }
            writeByte(register, UInt8(truncatingIfNeeded: value >> UInt64(8 * i)))
        }
    }

    private func readByte(_ register: UInt64) -> UInt8 {
        switch register {
        case 0: sleepType.load(ordering: .relaxed) << 2
        case 1: 0  // WAK_STS clear
        case 2: 0
        default: 0xFF
        }
    }

    private func writeByte(_ register: UInt64, _ byte: UInt8) {
        switch register {
        case 0:
            let type = (byte >> 2) & 0x07
            sleepType.store(type, ordering: .relaxed)
            guard byte & Self.sleepEnable != 0 else { return }
            if type == s5SleepType {
                logger.info("acpi: guest entered S5 (soft off)")
                onPowerOff()
            } else {
                logger.info("acpi: guest requested unsupported sleep type \(type); ignored")
            }
        case 2:
            if byte == resetValue {
                logger.info("acpi: guest wrote the reset register")
                onReset()
            } else {
                logger.debug("acpi: ignored reset register write 0x\(String(byte, radix: 16))")
            }
        default:
            break  // sleep status bits are write-1-to-clear and none are ever set
        }
    }
}
