import VireoMemory

/// The Intel MultiProcessor Specification 1.4 tables: how a guest booted with `acpi=off` (or an
/// old kernel) finds its CPUs, IOAPIC and ISA interrupt routing.
///
/// Layout at ``X86Layout/mpTableAddress``: the 16-byte floating pointer structure (§4.1), then the
/// configuration table (§4.2) immediately after it. Linux finds the pointer by scanning 16-byte
/// boundaries of the places §4 names, the BIOS ROM area 0xF0000–0xFFFFF among them. (The EBDA's one
/// KiB, where it used to be, holds only 40 CPUs' entries.)
public enum MPTable {
    public static let specRevision: UInt8 = 4  // MP spec 1.4
    public static let lapicVersion: UInt8 = 0x14
    public static let ioapicVersion: UInt8 = 0x11
    /// Family 6, model 0xF, stepping 1 (§4.3.1 Table 4-5 encoding) — a plausible P6-class signature.
    public static let cpuSignature: UInt32 = 0x0000_06F1
    /// CPUID.1:EDX FPU (bit 0) and APIC (bit 9): what the spec says to report (§4.3.1 Table 4-6).
    public static let cpuFeatures: UInt32 = 0x0000_0201

    public static let floatingPointerSize = 16
    public static let headerSize = 44
    public static let processorEntrySize = 20
    public static let shortEntrySize = 8
    static let isaIRQCount = 16

    /// Entry types (§4.3, Table 4-3).
    enum EntryType: UInt8 {
        case processor = 0, bus = 1, ioapic = 2, ioInterrupt = 3, localInterrupt = 4
    }

    /// Interrupt types (§4.3.4, Table 4-10).
    enum InterruptType: UInt8 {
        case int = 0, nmi = 1, smi = 2, extINT = 3
    }

    /// Total bytes (pointer plus configuration table) for `cpuCount` CPUs.
    public static func size(cpuCount: Int) -> Int {
        floatingPointerSize + headerSize + cpuCount * processorEntrySize
            + shortEntrySize * (1 + 1 + isaIRQCount + 2)
    }

    /// xAPIC IDs are 8 bits and 0xFF is broadcast; the I/O APIC takes the ID after the last CPU.
    public static let maximumCPUCount = 254
    /// Bytes the tables may take: from their address up to the reset-vector stub.
    public static let capacity = Int(X86Layout.realModeResetVector.raw - X86Layout.mpTableAddress.raw)

    /// Builds the floating pointer and configuration table for a table placed at `address`.
    public static func build(cpuCount: Int, address: GuestAddress = X86Layout.mpTableAddress) throws(BootError) -> [UInt8] {
        guard cpuCount >= 1, cpuCount <= maximumCPUCount, size(cpuCount: cpuCount) <= capacity else {
            throw .invalidCPUCount(cpuCount, maximum: maximumCPUCount)
        }
        let ioapicID = UInt8(cpuCount)
        let isaBusID: UInt8 = 0

        var table = ByteWriter(capacity: size(cpuCount: cpuCount))
        // Configuration table header (§4.2, Table 4-2); lengths and checksum patched below.
        table.append(ascii: "PCMP", width: 4)
        table.append(UInt16(0))  // base table length
        table.append(specRevision)
        table.append(UInt8(0))  // checksum
        table.append(ascii: "VIREO", width: 8)  // OEM ID
        table.append(ascii: "VIREOVMM", width: 12)  // product ID
        table.append(UInt32(0))  // OEM table pointer
        table.append(UInt16(0))  // OEM table size
        table.append(UInt16(0))  // entry count
        table.append(UInt32(X86Layout.lapicAddress))
        table.append(UInt16(0))  // extended table length: no extended entries
        table.append(UInt8(0))  // extended table checksum
        table.append(UInt8(0))  // reserved

        var entryCount: UInt16 = 0
        // Processor entries (§4.3.1): enabled; the BSP flag on APIC ID 0.
        for cpu in 0..<cpuCount {
            table.append(EntryType.processor.rawValue)
            table.append(UInt8(cpu))  // local APIC ID
            table.append(lapicVersion)
            table.append(UInt8(0x01 | (cpu == 0 ? 0x02 : 0)))  // EN | BP
            table.append(cpuSignature)
            table.append(cpuFeatures)
            table.append(UInt64(0))  // reserved
            entryCount += 1
        }
        // Bus entry (§4.3.2): one ISA bus; the type string is space-padded to 6 bytes.
        table.append(EntryType.bus.rawValue)
        table.append(isaBusID)
        table.append(ascii: "ISA", width: 6)
        entryCount += 1
        // I/O APIC entry (§4.3.3): its ID follows the CPUs' APIC IDs so they never collide.
        table.append(EntryType.ioapic.rawValue)
        table.append(ioapicID)
        table.append(ioapicVersion)
        table.append(UInt8(0x01))  // EN
        table.append(UInt32(X86Layout.ioapicAddress))
        entryCount += 1
        // I/O interrupt assignments (§4.3.4): ISA IRQ n → IOAPIC pin n, polarity/trigger per bus
        // (flags 0), matching KVM's default GSI routing.
        for irq in 0..<UInt8(isaIRQCount) {
            table.append(EntryType.ioInterrupt.rawValue)
            table.append(InterruptType.int.rawValue)
            table.append(UInt16(0))  // flags: conforms to bus
            table.append(isaBusID)
            table.append(irq)  // source bus IRQ
            table.append(ioapicID)
            table.append(irq)  // destination INTIN#
            entryCount += 1
        }
        // Local interrupt assignments (§4.3.5): LINT0 is the 8259's ExtINT, LINT1 NMI, on all LAPICs.
        for (type, lint) in [(InterruptType.extINT, UInt8(0)), (InterruptType.nmi, UInt8(1))] {
            table.append(EntryType.localInterrupt.rawValue)
            table.append(type.rawValue)
            table.append(UInt16(0))
            table.append(isaBusID)
            table.append(UInt8(0))  // source bus IRQ
            table.append(UInt8(0xFF))  // destination: all local APICs
            table.append(lint)
            entryCount += 1
        }
        table.set(UInt16(table.count), at: 4)
        table.set(entryCount, at: 34)
        table.set(table.bytes.checksumComplement, at: 7)

        // Floating pointer structure (§4.1, Table 4-1).
        var pointer = ByteWriter(capacity: floatingPointerSize)
        pointer.append(ascii: "_MP_", width: 4)
        pointer.append(UInt32(truncatingIfNeeded: address.raw + UInt64(floatingPointerSize)))  // config table
        pointer.append(UInt8(1))  // length in 16-byte paragraphs
        pointer.append(specRevision)
        pointer.append(UInt8(0))  // checksum
        pointer.append(UInt8(0))  // feature 1: 0 = a configuration table is present
        pointer.append(UInt8(0))  // feature 2: IMCRP clear, virtual-wire mode
        pointer.append([0, 0, 0] as [UInt8])
        pointer.set(pointer.bytes.checksumComplement, at: 10)

        return pointer.bytes + table.bytes
    }

    /// Writes the MP tables at ``X86Layout/mpTableAddress``.
    public static func write(cpuCount: Int, into memory: GuestMemory) throws(BootError) {
        try memory.store(try build(cpuCount: cpuCount), at: X86Layout.mpTableAddress)
    }
}
