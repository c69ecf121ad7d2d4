import VireoMemory

/// A segment register's hidden state, with exactly the fields of KVM's `struct kvm_segment`,
/// so the VMM can copy it into `kvm_sregs` field by field.
///
/// `limit` is the byte-granular limit (already scaled by 4 KiB when `g` is set), as KVM and the
/// VMCS expect; the GDT entry stores it in 20 bits (Intel SDM Vol. 3A §3.4.5).
public struct SegmentDescriptor: Equatable, Sendable {
    public var base: UInt64
    public var limit: UInt32
    public var selector: UInt16
    public var type: UInt8
    public var present: UInt8
    public var dpl: UInt8
    public var db: UInt8
    public var s: UInt8
    public var l: UInt8
    public var g: UInt8
    public var avl: UInt8
    public var unusable: UInt8

    public init(
        base: UInt64, limit: UInt32, selector: UInt16, type: UInt8, present: UInt8, dpl: UInt8,
        db: UInt8, s: UInt8, l: UInt8, g: UInt8, avl: UInt8, unusable: UInt8 = 0
    ) {
        self.base = base
        self.limit = limit
        self.selector = selector
        self.type = type
        self.present = present
        self.dpl = dpl
        self.db = db
        self.s = s
        self.l = l
        self.g = g
        self.avl = avl
        self.unusable = unusable
    }

    /// Decodes an 8-byte GDT descriptor (SDM Vol. 3A §3.4.5, Figure 3-8). For 16-byte system
    /// descriptors only the low half is decoded; Vireo's have base[63:32] = 0.
    public init(gdtEntry entry: UInt64, selector: UInt16) {
        let rawLimit = UInt32(truncatingIfNeeded: (entry & 0xFFFF) | ((entry >> 32) & 0xF_0000))
        let g = UInt8((entry >> 55) & 1)
        self.init(
            base: ((entry >> 16) & 0xFF_FFFF) | ((entry >> 32) & 0xFF00_0000),
            limit: g == 1 ? (rawLimit << 12) | 0xFFF : rawLimit,
            selector: selector,
            type: UInt8((entry >> 40) & 0xF),
            present: UInt8((entry >> 47) & 1),
            dpl: UInt8((entry >> 45) & 3),
            db: UInt8((entry >> 54) & 1),
            s: UInt8((entry >> 44) & 1),
            l: UInt8((entry >> 53) & 1),
            g: g,
            avl: UInt8((entry >> 52) & 1))
    }
}

/// The vCPU state in which a 64-bit kernel (or a hand-assembled test guest) starts: long mode,
/// paging on through the identity map, flat segments from Vireo's GDT (boot.rst "64-bit BOOT PROTOCOL").
public struct LongModeEntry: Equatable, Sendable {
    public var rip: UInt64
    /// Linux's 64-bit entry takes the zero-page address in %rsi.
    public var rsi: UInt64
    public var rsp: UInt64
    /// Bit 1 of RFLAGS is reserved and must be 1; interrupts start disabled.
    public var rflags: UInt64
    public var cr0: UInt64
    public var cr3: UInt64
    public var cr4: UInt64
    public var efer: UInt64
    public var gdtBase: UInt64
    public var gdtLimit: UInt16
    public var idtBase: UInt64
    public var idtLimit: UInt16
    /// CS: selector 0x10 (__BOOT_CS).
    public var code: SegmentDescriptor
    /// DS, ES, FS, GS, SS: selector 0x18 (__BOOT_DS).
    public var data: SegmentDescriptor
    /// TR: selector 0x20; VMX refuses to enter a guest without a usable busy TSS.
    public var tss: SegmentDescriptor
}

extension LinuxBoot {
    /// CR0.PE: protected mode; paging requires it (SDM Vol. 3A §2.5).
    public static let cr0PE: UInt64 = 1 << 0
    /// CR0.ET: hard-wired to 1 on modern processors.
    public static let cr0ET: UInt64 = 1 << 4
    /// CR0.PG: paging, which with EFER.LME activates long mode (SDM Vol. 3A §9.8.5).
    public static let cr0PG: UInt64 = 1 << 31
    /// CR4.PAE: required for IA-32e paging.
    public static let cr4PAE: UInt64 = 1 << 5
    /// EFER.LME | EFER.LMA: long mode enabled and active (KVM_SET_SREGS sets both at once).
    public static let eferLME: UInt64 = 1 << 8
    public static let eferLMA: UInt64 = 1 << 10

    public static let codeSelector: UInt16 = 0x10
    public static let dataSelector: UInt16 = 0x18
    public static let tssSelector: UInt16 = 0x20

    /// Vireo's GDT (8-byte slots). boot.rst requires __BOOT_CS = 0x10 and __BOOT_DS = 0x18, so
    /// slots 0 and 1 are null.
    /// - 2: 64-bit code: P, DPL0, S, type 0xB (exec/read, accessed), L=1, G=1.
    /// - 3: data: P, DPL0, S, type 0x3 (read/write, accessed), D/B=1, G=1.
    /// - 4–5: a 16-byte 64-bit busy TSS descriptor (SDM Vol. 3A §8.2.3): type 0xB, P, G=1,
    ///   limit 0xFFFFF, base 0; slot 5 holds base[63:32] = 0. Only TR's hidden state matters
    ///   (Linux loads its own TSS), but a complete descriptor keeps `ltr 0x20` well-defined.
    public static let gdtEntries: [UInt64] = [
        0,
        0,
        0x00AF_9B00_0000_FFFF,
        0x00CF_9300_0000_FFFF,
        0x008F_8B00_0000_FFFF,
        0,
    ]

    /// The GDT as bytes.
    public static func buildGDT() -> [UInt8] {
        var writer = ByteWriter(capacity: gdtEntries.count * 8)
        for entry in gdtEntries { writer.append(entry) }
        return writer.bytes
    }

    /// Identity maps the first 4 GiB with 2 MiB pages: PML4[0] → PDPT, PDPT[0..3] → four page
    /// directories of 512 PS entries each (SDM Vol. 3A §4.5, Table 4-17). The MMIO hole is mapped
    /// too so the kernel can reach the LAPIC/IOAPIC before it builds its own tables.
    public static func buildPageTables(in memory: GuestMemory) throws(BootError) {
        let presentWritable: UInt64 = 0x3
        let pageSize2M: UInt64 = 0x80
        var pml4 = ByteWriter(zeros: 4096)
        pml4.set(X86Layout.pdptAddress.raw | presentWritable, at: 0)
        try memory.store(pml4.bytes, at: X86Layout.pml4Address)

        var pdpt = ByteWriter(zeros: 4096)
        for index in 0..<X86Layout.pageDirectoryCount {
            let directory = X86Layout.pageDirectoryAddress.raw + UInt64(index) * 4096
            pdpt.set(directory | presentWritable, at: index * 8)
        }
        try memory.store(pdpt.bytes, at: X86Layout.pdptAddress)

        var directories = ByteWriter(capacity: X86Layout.pageDirectoryCount * 4096)
        for page in 0..<UInt64(X86Layout.pageDirectoryCount * 512) {
            directories.append((page << 21) | presentWritable | pageSize2M)
        }
        try memory.store(directories.bytes, at: X86Layout.pageDirectoryAddress)
    }

    /// Writes the GDT, an empty IDT and the identity page tables: everything a 64-bit guest
    /// needs in memory to start in ``longModeEntry(rip:rsi:)``'s state.
    public static func prepareLongMode(in memory: GuestMemory) throws(BootError) {
        try memory.store(buildGDT(), at: X86Layout.gdtAddress)
        try memory.clear(count: 16, at: X86Layout.idtAddress)
        try buildPageTables(in: memory)
    }

    /// Register state for entering 64-bit code at `rip` with `rsi` as its argument, using the
    /// structures ``prepareLongMode(in:)`` writes.
    public static func longModeEntry(rip: UInt64, rsi: UInt64) -> LongModeEntry {
        LongModeEntry(
            rip: rip,
            rsi: rsi,
            rsp: X86Layout.bootStackPointer,
            rflags: 0x2,
            cr0: cr0PE | cr0ET | cr0PG,
            cr3: X86Layout.pml4Address.raw,
            cr4: cr4PAE,
            efer: eferLME | eferLMA,
            gdtBase: X86Layout.gdtAddress.raw,
            gdtLimit: UInt16(gdtEntries.count * 8 - 1),
            idtBase: X86Layout.idtAddress.raw,
            idtLimit: 0,
            code: SegmentDescriptor(gdtEntry: gdtEntries[Int(codeSelector >> 3)], selector: codeSelector),
            data: SegmentDescriptor(gdtEntry: gdtEntries[Int(dataSelector >> 3)], selector: dataSelector),
            tss: SegmentDescriptor(gdtEntry: gdtEntries[Int(tssSelector >> 3)], selector: tssSelector))
    }
}
