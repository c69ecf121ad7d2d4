import VireoMemory

/// Vireo's ACPI 6.0 tables for a hardware-reduced platform: RSDP → XSDT → {FADT → DSDT, MADT, MCFG}.
///
/// Hardware-reduced ACPI (§4.1) avoids emulating the PM1 event/control blocks, GPEs and the SCI:
/// power-off and reset become single byte writes to ports the VMM traps
/// (``X86Layout/acpiSleepControlPort``, ``X86Layout/acpiResetPort``).
public enum ACPITables {
    public static let oemID = "VIREO "
    public static let oemTableID = "VIREOVMM"
    public static let creatorID = "VIRO"
    public static let oemRevision: UInt32 = 1
    public static let creatorRevision: UInt32 = 1

    public static let headerSize = 36
    public static let rsdpSize = 36
    public static let fadtSize = 276

    /// FADT Flags (§5.2.9, Table 5-34).
    public static let fadtResetRegSupported: UInt32 = 1 << 10
    public static let fadtHardwareReduced: UInt32 = 1 << 20
    /// IA-PC boot architecture flags (§5.2.9.3): an i8042 exists; there is no VGA.
    public static let bootArch8042: UInt16 = 1 << 1
    public static let bootArchVGANotPresent: UInt16 = 1 << 2
    /// MADT flag PCAT_COMPAT (§5.2.12, Table 5-44): dual 8259s are present too.
    public static let madtPCATCompat: UInt32 = 1 << 0

    /// Generic Address Structure address-space IDs (§5.2.3.2).
    enum AddressSpace: UInt8 { case systemMemory = 0, systemIO = 1 }

    /// The 36-byte System Description Table Header (§5.2.6), with length and checksum patched in
    /// by ``finish(_:)``.
    static func header(signature: String, revision: UInt8) -> ByteWriter {
        var table = ByteWriter(capacity: 64)
        table.append(ascii: signature, width: 4)
        table.append(UInt32(0))  // length
        table.append(revision)
        table.append(UInt8(0))  // checksum
        table.append(ascii: oemID, width: 6)
        table.append(ascii: oemTableID, width: 8)
        table.append(oemRevision)
        table.append(ascii: creatorID, width: 4)
        table.append(creatorRevision)
        return table
    }

    /// Sets the header's length and makes the whole table sum to zero.
    static func finish(_ table: ByteWriter) -> [UInt8] {
        var table = table
        table.set(UInt32(table.count), at: 4)
        table.set(table.bytes.checksumComplement, at: 9)
        return table.bytes
    }

    /// Generic Address Structure (§5.2.3.2): a byte-wide register in I/O space at `port`.
    static func ioRegister(port: UInt16) -> [UInt8] {
        var gas = ByteWriter(capacity: 12)
        gas.append(AddressSpace.systemIO.rawValue)
        gas.append(UInt8(8))  // register bit width
        gas.append(UInt8(0))  // bit offset
        gas.append(UInt8(1))  // access size: byte
        gas.append(UInt64(port))
        return gas.bytes
    }

    /// RSDP, revision 2 (§5.2.5.3): the first checksum covers the ACPI 1.0 part (20 bytes), the
    /// extended one all 36. RsdtAddress is 0: only the XSDT is provided.
    public static func rsdp(xsdtAddress: GuestAddress) -> [UInt8] {
        var rsdp = ByteWriter(capacity: rsdpSize)
        rsdp.append(ascii: "RSD PTR ", width: 8)
        rsdp.append(UInt8(0))  // checksum
        rsdp.append(ascii: oemID, width: 6)
        rsdp.append(UInt8(2))  // revision
        rsdp.append(UInt32(0))  // RsdtAddress
        rsdp.append(UInt32(rsdpSize))
        rsdp.append(xsdtAddress.raw)
        rsdp.append(UInt8(0))  // extended checksum
        rsdp.append([0, 0, 0] as [UInt8])
        rsdp.set(rsdp.bytes[0..<20].checksumComplement, at: 8)
        rsdp.set(rsdp.bytes.checksumComplement, at: 32)
        return rsdp.bytes
    }

    /// XSDT (§5.2.8): 64-bit pointers to every other top-level table.
    public static func xsdt(entries: [GuestAddress]) -> [UInt8] {
        var table = header(signature: "XSDT", revision: 1)
        for entry in entries { table.append(entry.raw) }
        return finish(table)
    }

    /// FADT, revision 6.0 (§5.2.9, Table 5-33). Hardware-reduced, so every PM block is zero and
    /// sleep/reset go through SLEEP_CONTROL_REG, SLEEP_STATUS_REG and RESET_REG.
    public static func fadt(dsdtAddress: GuestAddress) -> [UInt8] {
        var table = header(signature: "FACP", revision: 6)
        table.append(UInt32(0))  // 36 FIRMWARE_CTRL: no FACS on hardware-reduced platforms
        table.append(UInt32(truncatingIfNeeded: dsdtAddress.raw))  // 40 DSDT
        table.append(UInt8(0))  // 44 reserved
        table.append(UInt8(0))  // 45 Preferred_PM_Profile: unspecified
        table.append(UInt16(0))  // 46 SCI_INT: no SCI
        table.append(UInt32(0))  // 48 SMI_CMD: no SMM, ACPI is always enabled
        table.append([UInt8](repeating: 0, count: 4))  // 52 ACPI_ENABLE, ACPI_DISABLE, S4BIOS_REQ, PSTATE_CNT
        table.append([UInt8](repeating: 0, count: 32))  // 56 PM1a/b EVT, PM1a/b CNT, PM2 CNT, PM TMR, GPE0/1 blocks
        table.append([UInt8](repeating: 0, count: 8))  // 88 block lengths, GPE1_BASE, CST_CNT
        table.append([UInt8](repeating: 0, count: 8))  // 96 P_LVL2/3_LAT, FLUSH_SIZE/STRIDE
        table.append([UInt8](repeating: 0, count: 5))  // 104 DUTY_OFFSET/WIDTH, DAY/MON_ALRM, CENTURY
        table.append(bootArch8042 | bootArchVGANotPresent)  // 109 IAPC_BOOT_ARCH
        table.append(UInt8(0))  // 111 reserved
        table.append(fadtHardwareReduced | fadtResetRegSupported)  // 112 Flags
        table.append(ioRegister(port: X86Layout.acpiResetPort))  // 116 RESET_REG
        table.append(X86Layout.acpiResetValue)  // 128 RESET_VALUE
        table.append(UInt16(0))  // 129 ARM_BOOT_ARCH
        table.append(UInt8(0))  // 131 FADT minor version: 6.0
        table.append(UInt64(0))  // 132 X_FIRMWARE_CTRL
        table.append(dsdtAddress.raw)  // 140 X_DSDT
        table.append([UInt8](repeating: 0, count: 12 * 8))  // 148 X_PM1a_EVT_BLK … X_GPE1_BLK
        table.append(ioRegister(port: X86Layout.acpiSleepControlPort))  // 244 SLEEP_CONTROL_REG
        table.append(ioRegister(port: X86Layout.acpiSleepStatusPort))  // 256 SLEEP_STATUS_REG
        table.append(ascii: "VIREO", width: 8)  // 268 Hypervisor Vendor Identity
        precondition(table.count == fadtSize, "FADT layout is \(table.count) bytes, expected \(fadtSize)")
        return finish(table)
    }

    /// MADT, revision 4 (§5.2.12): one enabled Processor Local APIC per CPU (ACPI UID = APIC ID
    /// = index), the I/O APIC with GSI base 0 and ID `cpuCount`, and LINT1 as NMI on every CPU.
    public static func madt(cpuCount: Int) -> [UInt8] {
        var table = header(signature: "APIC", revision: 4)
        table.append(UInt32(X86Layout.lapicAddress))
        table.append(madtPCATCompat)
        for cpu in 0..<cpuCount {
            table.append([0, 8, UInt8(cpu), UInt8(cpu)] as [UInt8])  // type 0, length, UID, APIC ID
            table.append(UInt32(1))  // flags: enabled
        }
        table.append([1, 12, UInt8(cpuCount), 0] as [UInt8])  // type 1, length, I/O APIC ID, reserved
        table.append(UInt32(X86Layout.ioapicAddress))
        table.append(UInt32(0))  // global system interrupt base
        table.append([4, 6, 0xFF] as [UInt8])  // type 4 Local APIC NMI, length, all processors
        table.append(UInt16(0))  // MPS INTI flags: conforms to bus
        table.append(UInt8(1))  // LINT#
        return finish(table)
    }

    /// The AML body of the DSDT:
    /// ```
    /// Name (_S5, Package (4) { 5, 0, 0, 0 })   // SLP_TYPa = 5 for soft-off (§7.4.2)
    /// Scope (\_SB) {
    ///     Device (COM1) {
    ///         Name (_HID, EisaId ("PNP0501"))     // 16550-compatible UART
    ///         Name (_UID, 0)
    ///         Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 1, 8)  IRQNoFlags () {4} })
    ///     }
    ///     Device (PS2K) { … }                       // the i8042
    ///     Device (PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, 0) }
    ///     Device (GED0) {
    ///         Name (_HID, "ACPI0013")               // Generic Event Device (§5.6.9)
    ///         Name (_UID, 0)
    ///         Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {9} })
    ///         Method (_EVT, 1) { Notify (PWRB, 0x80) }
    ///     }
    ///     Device (PCI0) { … }
    /// }
    /// ```
    /// `_S5_` encodes as `08 '_S5_' 12 07 04 0A 05 00 00 00`: NameOp, the NameSeg, PackageOp,
    /// PkgLength 7 (itself, NumElements and five bytes of elements), 4 elements, BytePrefix 5, three ZeroOps.
    public static func dsdtAML(ramEnd: UInt64 = X86Layout.highRAMStart) -> [UInt8] {
        let s5 = AML.name("_S5_", AML.package([UInt32(X86Layout.s5SleepType), 0, 0, 0]))
        let resources =
            AML.Resource.io(port: 0x3F8, length: 8) + AML.Resource.irqNoFlags(4) + AML.Resource.endTag
        let com1 = AML.device(
            "COM1",
            AML.name("_HID", AML.eisaID("PNP0501")) + AML.name("_UID", AML.integer(0))
                + AML.name("_CRS", AML.buffer(resources)))
        // The i8042 (PS/2 keyboard controller). On a hardware-reduced ACPI platform Linux maps no
        // legacy ISA IRQs by itself, so the keyboard driver only finds its controller and IRQ 1
        // through this PNP0303 device (Ctrl-Alt-Del reaches the guest through it).
        let keyboardResources =
            AML.Resource.io(port: 0x60, length: 1) + AML.Resource.io(port: 0x64, length: 1)
            + AML.Resource.irqNoFlags(1) + AML.Resource.endTag
        let keyboard = AML.device(
            "PS2K",
            AML.name("_HID", AML.eisaID("PNP0303")) + AML.name("_UID", AML.integer(0))
                + AML.name("_CRS", AML.buffer(keyboardResources)))
        return s5 + AML.scope(root: "_SB_", com1 + keyboard + powerButton() + pciHostBridge(ramEnd: ramEnd))
    }

    /// The power button of a hardware-reduced platform (§4.8.2.2.1.3, §5.6.9): without fixed
    /// hardware events or an SCI, a control-method power button (PNP0C0C) is told of a press by
    /// the Generic Event Device, whose interrupt (``X86Layout/powerButtonGSI``) the VMM pulses;
    /// the GED's `_EVT` then sends Notify(PWRB, 0x80), "button pressed" (§5.6.6), and the guest's
    /// button driver reports KEY_POWER: the guest shuts itself down, as a PC does on its button.
    static func powerButton() -> [UInt8] {
        let button = AML.device("PWRB", AML.name("_HID", AML.eisaID("PNP0C0C")) + AML.name("_UID", AML.integer(0)))
        let interrupt = AML.Resource.edgeInterrupt(gsi: X86Layout.powerButtonGSI) + AML.Resource.endTag
        let events = AML.device(
            "GED0",
            AML.name("_HID", AML.string("ACPI0013")) + AML.name("_UID", AML.integer(0))
                + AML.name("_CRS", AML.buffer(interrupt))
                + AML.method("_EVT", arguments: 1, AML.notify("PWRB", 0x80)))
        return button + events
    }

    /// The PCI host bridge (PCI Firmware spec 3.0 §4.1; ACPI §6.1, §6.4.3.5): a PNP0A03 root
    /// bridge for segment 0, buses 0–255, whose `_CRS` gives the windows it forwards:
    /// the configuration ports 0xCF8–0xCFF, I/O 0x0000–0x0CF7 and 0x0D00–0xFFFF, the 32-bit memory
    /// window (``X86Layout/pciMMIO32Base``, up to the ECAM region) and a 64-bit window above RAM; and
    /// whose `_PRT` (§6.2.13) wires INTA–INTD of slots 1–31 straight to IOAPIC GSIs
    /// (``X86Layout/pciINTxGSI(slot:pin:)``), for drivers that do not use MSI-X.
    static func pciHostBridge(ramEnd: UInt64) -> [UInt8] {
        let window64 = X86Layout.pciMMIO64Window(ramEnd: ramEnd)
        let resources =
            AML.Resource.wordBusNumber(first: 0, last: 0xFF)
            + AML.Resource.io(port: 0xCF8, length: 8)
            + AML.Resource.dwordIO(first: 0x0000, last: 0x0CF7)
            + AML.Resource.dwordIO(first: 0x0D00, last: 0xFFFF)
            + AML.Resource.dwordMemory(
                first: UInt32(X86Layout.pciMMIO32Base), last: UInt32(X86Layout.pciMMIO32Base + X86Layout.pciMMIO32Size - 1))
            + AML.Resource.qwordMemory(first: window64.base, last: window64.base + window64.size - 1)
            + AML.Resource.endTag
        return AML.device(
            "PCI0",
            AML.name("_HID", AML.eisaID("PNP0A03")) + AML.name("_UID", AML.integer(0))
                + AML.name("_SEG", AML.integer(0)) + AML.name("_BBN", AML.integer(0))
                + AML.name("_CRS", AML.buffer(resources))
                + AML.name("_PRT", AML.package(of: pciRoutingTable())))
    }

    /// `_PRT` entries: {address 0xSSSS_FFFF (slot, any function), pin, source 0 (a GSI), GSI}.
    static func pciRoutingTable() -> [[UInt32]] {
        (1...31).flatMap { (slot: UInt8) in
            (0...3).map { (pin: UInt8) in
                [UInt32(slot) << 16 | 0xFFFF, UInt32(pin), 0, X86Layout.pciINTxGSI(slot: slot, pin: pin)]
            }
        }
    }

    /// MCFG (PCI Firmware spec 3.0 §4.1.2): one allocation for segment 0, buses 0–255, at
    /// ``X86Layout/pciECAMBase``.
    public static func mcfg() -> [UInt8] {
        var table = header(signature: "MCFG", revision: 1)
        table.append(UInt64(0))  // reserved
        table.append(X86Layout.pciECAMBase)
        table.append(UInt16(0))  // PCI segment group
        table.append(UInt8(0))  // start bus
        table.append(UInt8(UInt64(X86Layout.pciECAMSize >> 20) - 1))  // end bus
        table.append(UInt32(0))  // reserved
        return finish(table)
    }

    /// DSDT, revision 2 (64-bit AML integers), §5.2.11.1.
    public static func dsdt(ramEnd: UInt64 = X86Layout.highRAMStart) -> [UInt8] {
        var table = header(signature: "DSDT", revision: 2)
        table.append(dsdtAML(ramEnd: ramEnd))
        return finish(table)
    }

    /// Where each table lands when written at `base`.
    public struct Layout: Equatable, Sendable {
        public var rsdp: GuestAddress
        public var dsdt: GuestAddress
        public var fadt: GuestAddress
        public var madt: GuestAddress
        public var mcfg: GuestAddress
        public var xsdt: GuestAddress
    }

    /// Builds every table and writes them, 16-byte aligned, from `base` (RSDP first, since Linux
    /// finds it by scanning 16-byte boundaries of 0xE0000–0xFFFFF). Returns the addresses; the
    /// RSDP's goes into `boot_params.acpi_rsdp_addr`.
    @discardableResult
    public static func write(
        cpuCount: Int, into memory: GuestMemory, at base: GuestAddress = X86Layout.acpiAddress
    ) throws(BootError) -> Layout {
        guard cpuCount >= 1, cpuCount <= LinuxBoot.maximumCPUCount else {
            throw .invalidCPUCount(cpuCount, maximum: LinuxBoot.maximumCPUCount)
        }
        var cursor = base.raw
        func place(_ size: Int) -> GuestAddress {
            let address = GuestAddress(cursor)
            cursor = (cursor + UInt64(size) + 15) & ~15
            return address
        }
        let dsdt = dsdt(ramEnd: memory.regions.last?.end ?? 0)
        let fadtTable: [UInt8]
        let madt = madt(cpuCount: cpuCount)
        let mcfg = mcfg()
        let layout = Layout(
            rsdp: place(rsdpSize), dsdt: place(dsdt.count), fadt: place(fadtSize), madt: place(madt.count),
            mcfg: place(mcfg.count), xsdt: place(headerSize + 3 * 8))
        fadtTable = fadt(dsdtAddress: layout.dsdt)
        guard cursor <= X86Layout.mpTableAddress.raw else {
            throw .unsupportedMemoryLayout("ACPI tables for \(cpuCount) CPUs run into the MP tables at \(X86Layout.mpTableAddress)")
        }
        try memory.store(rsdp(xsdtAddress: layout.xsdt), at: layout.rsdp)
        try memory.store(dsdt, at: layout.dsdt)
        try memory.store(fadtTable, at: layout.fadt)
        try memory.store(madt, at: layout.madt)
        try memory.store(mcfg, at: layout.mcfg)
        try memory.store(xsdt(entries: [layout.fadt, layout.madt, layout.mcfg]), at: layout.xsdt)
        return layout
    }
}
