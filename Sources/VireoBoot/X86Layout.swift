import VireoMemory

/// Vireo's x86-64 guest-physical memory map.
///
/// Everything the loader writes below 1 MiB sits where a PC BIOS would leave it, because Linux
/// still scans those places: the RSDP in 0xE0000–0xFFFFF (ACPI 6.x §5.2.5.1) and the MP floating
/// pointer in the BIOS ROM area 0xF0000–0xFFFFF (Intel MP spec 1.4 §4). Boot structures use the low
/// scratch pages that boot.rst leaves free for the loader.
public enum X86Layout {
    public static let kib: UInt64 = 1 << 10
    public static let mib: UInt64 = 1 << 20
    public static let gib: UInt64 = 1 << 30

    /// Start of the 32-bit MMIO hole (PCI BARs, IOAPIC, LAPIC); RAM resumes at 4 GiB.
    public static let mmioHoleStart: UInt64 = 0xC000_0000
    /// First address above the MMIO hole.
    public static let highRAMStart: UInt64 = 4 * gib

    /// Global descriptor table (see ``LinuxBoot/gdtEntries``).
    public static let gdtAddress = GuestAddress(0x500)
    /// An empty IDT: any exception before the kernel installs its own triple-faults, which KVM
    /// reports as a shutdown rather than running garbage handlers. It follows the 48-byte GDT
    /// (0x500–0x52F); 0x520 would overlap the GDT's TSS descriptor at selector 0x20.
    public static let idtAddress = GuestAddress(0x530)
    /// Initial stack pointer for hand-written guests; Linux's 64-bit entry sets its own stack.
    public static let bootStackPointer: UInt64 = 0x8FF0
    /// The zero page (`struct boot_params`, boot.rst "64-bit BOOT PROTOCOL").
    public static let zeroPageAddress = GuestAddress(0x7000)
    public static let zeroPageSize = 4096
    /// Identity-mapping page tables: PML4, one PDPT, four page directories.
    public static let pml4Address = GuestAddress(0x9000)
    public static let pdptAddress = GuestAddress(0xA000)
    public static let pageDirectoryAddress = GuestAddress(0xB000)
    public static let pageDirectoryCount = 4
    /// Kernel command line; boot.rst allows it anywhere below the zero page's limit, we use 64 KiB.
    public static let commandLineAddress = GuestAddress(0x2_0000)
    public static let commandLineCapacity = 0x1_0000
    /// Extended BIOS data area, the last KiB of 640 KiB: reserved in the e820 map as on a PC, and empty.
    public static let ebdaAddress = GuestAddress(0x9_FC00)
    public static let ebdaSize: UInt64 = 0x400
    /// End of conventional memory; 0xA0000–0xDFFFF is the legacy VGA/option-ROM hole.
    public static let conventionalMemoryEnd: UInt64 = 0xA_0000
    /// RSDP and the ACPI tables, in the BIOS area Linux scans for "RSD PTR " (up to ``mpTableAddress``).
    public static let acpiAddress = GuestAddress(0xE_0000)
    /// The MP tables: the floating pointer, then the configuration table, at the start of the BIOS ROM
    /// area (up to ``realModeResetVector``: room for every CPU the tables can name).
    public static let mpTableAddress = GuestAddress(0xF_0000)
    public static let biosAreaEnd: UInt64 = 0x10_0000
    /// Protected-mode kernel load address (boot.rst: "loaded at 0x100000").
    public static let kernelAddress = GuestAddress(0x10_0000)
    /// The real-mode reset vector F000:FFF0. Linux's last-resort restart (`machine_real_restart`,
    /// reached for instance when a hardware-reduced ACPI platform makes it try EFI and then the BIOS)
    /// jumps here; Vireo has no BIOS, so a stub asks for the reset through the ACPI reset register.
    public static let realModeResetVector = GuestAddress(0xF_FFF0)
    public static let ioapicAddress: UInt64 = 0xFEC0_0000
    public static let lapicAddress: UInt64 = 0xFEE0_0000

    /// I/O port of the ACPI hardware-reduced SLEEP_CONTROL_REG (ACPI 6.x §4.8.3.7).
    public static let acpiSleepControlPort: UInt16 = 0x600
    /// I/O port of SLEEP_STATUS_REG (ACPI 6.x §4.8.3.8).
    public static let acpiSleepStatusPort: UInt16 = 0x601
    /// I/O port of the FADT RESET_REG (ACPI 6.x §4.8.3.6).
    public static let acpiResetPort: UInt16 = 0x602
    /// Value the guest writes to ``acpiResetPort`` to reset.
    public static let acpiResetValue: UInt8 = 0x01
    /// SLP_TYP the DSDT's `\_S5_` package gives: a write of `(5 << 2) | SLP_EN (0x20)` to
    /// ``acpiSleepControlPort`` means power off.
    public static let s5SleepType: UInt8 = 5

    /// The PCI host bridge's 32-bit memory window (DSDT `PCI0._CRS`): from the start of the MMIO
    /// hole up to the ECAM region. The VMM places BARs here.
    public static let pciMMIO32Base: UInt64 = mmioHoleStart
    public static let pciMMIO32Size: UInt64 = pciECAMBase - mmioHoleStart
    /// The GSI of the ACPI Generic Event Device through which the power button is pressed (the
    /// DSDT's GED0 `_CRS`): ISA IRQ 9, a PC's SCI line, free on this machine and edge-triggered here.
    public static let powerButtonGSI: UInt32 = 9

    /// The IOAPIC inputs PCI INTx lines are wired to: GSIs 16–23 (above the ISA IRQs), level-triggered
    /// and active-low as ACPI `_PRT` GSI entries are (ACPI 6.x §6.2.13).
    public static let pciINTxFirstGSI: UInt32 = 16
    public static let pciINTxGSICount: UInt32 = 8

    /// The GSI that INTx `pin` (0 = INTA … 3 = INTD) of the device in `slot` of bus 0 raises: the
    /// usual swizzle, (slot + pin) mod 8, over ``pciINTxFirstGSI``.
    public static func pciINTxGSI(slot: UInt8, pin: UInt8) -> UInt32 {
        pciINTxFirstGSI + (UInt32(slot) + UInt32(pin)) % pciINTxGSICount
    }

    /// PCI Express enhanced configuration access (ECAM, PCIe base spec §7.2.2): 4 KiB of configuration
    /// space per function, 1 MiB per bus, buses 0–255. The MCFG table points at it and the e820 map
    /// reserves it (Linux uses MMCONFIG only where firmware reserved it).
    public static let pciECAMBase: UInt64 = 0xE000_0000
    public static let pciECAMSize: UInt64 = 256 * mib
    /// Size of the 64-bit memory window that starts at the first 1 GiB boundary above RAM.
    public static let pciMMIO64Size: UInt64 = 16 * gib

    /// The 64-bit PCI memory window for a guest whose RAM ends at `ramEnd`.
    public static func pciMMIO64Window(ramEnd: UInt64) -> (base: UInt64, size: UInt64) {
        let base = (max(ramEnd, highRAMStart) + gib - 1) & ~(gib - 1)
        return (base, pciMMIO64Size)
    }

    /// Guest RAM for `memorySize` bytes: `[0, min(size, 3 GiB))`, and the rest at 4 GiB so
    /// that the 32-bit MMIO hole is never backed by RAM.
    public static func ramRanges(memorySize: UInt64) -> [(start: GuestAddress, size: UInt64)] {
        let low = min(memorySize, mmioHoleStart)
        var ranges: [(start: GuestAddress, size: UInt64)] = [(GuestAddress(0), low)]
        if memorySize > mmioHoleStart {
            ranges.append((GuestAddress(highRAMStart), memorySize - mmioHoleStart))
        }
        return ranges
    }
}
