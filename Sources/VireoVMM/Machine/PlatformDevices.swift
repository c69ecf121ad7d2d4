import Logging
import VireoBoot
import VireoDevices
import VireoKVM
import VireoMemory
import VireoSystem

/// The legacy PC devices every VM has, and where they sit (the I/O port map of a PC/AT):
///
/// | ports        | device                         | IRQ |
/// |--------------|--------------------------------|-----|
/// | 0x3F8–0x3FF  | COM1 16550A UART               | 4   |
/// | 0x60–0x64    | i8042 keyboard controller (0x61: port B, answered by KVM's PIT speaker) | 1 |
/// | 0x70–0x71    | CMOS / RTC                     |     |
/// | 0x80         | POST code port                 |     |
/// | 0xCF8–0xCFF  | PCI configuration mechanism #1 |     |
/// | 0x600–0x602  | ACPI sleep control/status, reset (FADT) |  |
/// | –            | ACPI power button, through the Generic Event Device (DSDT GED0) | 9 |
///
/// The PIC, PIT and IOAPIC are KVM's in-kernel models and never reach userspace.
final class PlatformDevices: Sendable {
    let serial: Serial8250
    let keyboard: I8042
    let console: ConsoleBackend
    /// The GED's interrupt: a pulse is a press of the power button (``pressPowerButton()``).
    let powerButton: KVMInterruptLine

    static let com1Base: UInt64 = 0x3F8
    static let com1IRQ: UInt32 = 4
    static let keyboardIRQ: UInt32 = 1

    init(config: VMConfig, vm: VM, memory: GuestMemory, ioBus: Bus, pciBus: PCIBus, lifecycle: Lifecycle, logger: Logger) throws {
        console = try ConsoleBackend(config.serial, logger: logger)
        serial = Serial8250(interrupt: KVMInterruptLine(vm: vm, gsi: Self.com1IRQ, logger: logger), output: console)
        keyboard = I8042(interrupt: KVMInterruptLine(vm: vm, gsi: Self.keyboardIRQ, logger: logger)) {
            lifecycle.requestExit(.rebootRequested)
        }
        powerButton = KVMInterruptLine(vm: vm, gsi: X86Layout.powerButtonGSI, logger: logger)
        let below4G = memory.regions.first.map { $0.size } ?? 0
        let above4G = memory.totalSize - below4G
        let cmos = CMOS(clock: { Int64(time(nil)) }, memoryBelow4G: below4G, memoryAbove4G: above4G)
        let acpi = AcpiPowerDevice(
            onPowerOff: { lifecycle.requestExit(.poweredOff) },
            onReset: { lifecycle.requestExit(.rebootRequested) })

        try ioBus.register(serial, at: Self.com1Base, length: 8)
        try ioBus.register(keyboard, at: 0x60, length: 5)
        try ioBus.register(cmos, at: 0x70, length: 2)
        try ioBus.register(PostCodePort(), at: 0x80, length: 1)
        try ioBus.register(PCIConfigPorts(bus: pciBus), at: 0xCF8, length: 8)
        try ioBus.register(acpi, at: UInt64(X86Layout.acpiSleepControlPort), length: 3)
    }

    /// Presses the ACPI power button: an edge on the GED's GSI (its `_EVT` notifies PWRB).
    func pressPowerButton() {
        powerButton.setLevel(true)
        powerButton.setLevel(false)
    }

    func startConsoleInput() throws {
        try console.startInput { [serial] bytes in serial.enqueueInput(bytes) }
    }

    func shutdown() {
        serial.flush()
        console.close()
    }
}

/// A GSI of KVM's in-kernel irqchip, driven with `KVM_IRQ_LINE`.
struct KVMInterruptLine: InterruptLine {
    let vm: VM
    let gsi: UInt32
    let logger: Logger

    func setLevel(_ asserted: Bool) {
        do {
            try vm.setIRQLine(gsi, level: asserted)
        } catch {
            logger.error("cannot drive IRQ \(gsi): \(error)")
        }
    }
}

#if canImport(Glibc)
import Glibc
#endif
