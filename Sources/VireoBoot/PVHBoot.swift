import VireoMemory

/// The register state for the PVH entry point (Xen `docs/misc/pvh.pandoc`, "Boot ABI"): 32-bit
/// protected mode with paging off, flat 4 GiB segments, %ebx = physical address of
/// `hvm_start_info`. The field set mirrors ``LongModeEntry`` so the VMM applies it the same way.
public struct ProtectedModeEntry: Equatable, Sendable {
    public var rip: UInt64
    /// Address of `struct hvm_start_info`.
    public var rbx: UInt64
    public var rflags: UInt64
    public var cr0: UInt64
    public var cr3: UInt64
    public var cr4: UInt64
    public var efer: UInt64
    public var gdtBase: UInt64
    public var gdtLimit: UInt16
    public var idtBase: UInt64
    public var idtLimit: UInt16
    public var code: SegmentDescriptor
    public var data: SegmentDescriptor
    public var tss: SegmentDescriptor
}

/// Boots an uncompressed ELF `vmlinux` through its PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY),
/// as Firecracker and cloud-hypervisor can: no bzImage setup header or zero page is involved; the
/// kernel reads `hvm_start_info` (arch/x86/include/xen/interface/hvm/start_info.h) instead.
public enum PVHBoot {
    /// `XEN_ELFNOTE_PHYS32_ENTRY`: the note's descriptor is the 32-bit physical entry address.
    public static let phys32EntryNoteType: UInt32 = 18
    /// `XEN_HVM_START_MAGIC_VALUE`.
    public static let startInfoMagic: UInt32 = 0x336E_C578
    /// Version 1 adds the memory map.
    public static let startInfoVersion: UInt32 = 1
    public static let startInfoAddress = X86Layout.zeroPageAddress
    static let startInfoSize = 56
    static let moduleListAddress = GuestAddress(X86Layout.zeroPageAddress.raw + 0x40)
    static let memoryMapAddress = GuestAddress(X86Layout.zeroPageAddress.raw + 0x80)
    static let memoryMapEntrySize = 24
    static let maximumMemoryMapEntries = (X86Layout.zeroPageSize - 0x80) / 24

    /// PVH starts in 32-bit mode, so slot 2 (selector 0x10) is a 32-bit code segment: as
    /// ``LinuxBoot/gdtEntries`` but L=0, D=1 (SDM Vol. 3A §3.4.5).
    public static let gdtEntries: [UInt64] = {
        var entries = LinuxBoot.gdtEntries
        entries[2] = 0x00CF_9B00_0000_FFFF
        return entries
    }()

    /// One loadable segment of the ELF image.
    public struct Segment: Equatable, Sendable {
        public var physicalAddress: UInt64
        public var fileOffset: Int
        public var fileSize: Int
        public var memorySize: UInt64
    }

    /// A parsed ELF64 x86-64 `vmlinux` with a PVH entry note.
    public struct Image: Sendable {
        public let bytes: [UInt8]
        public let entry: UInt32
        public let segments: [Segment]

        /// One past the highest byte any segment occupies.
        public var end: UInt64 { segments.map { $0.physicalAddress + $0.memorySize }.max() ?? 0 }

        public init(_ bytes: [UInt8]) throws(BootError) {
            func field<T: FixedWidthInteger>(_: T.Type, _ offset: Int, _ name: String) throws(BootError) -> T {
                guard let value = bytes.littleEndianInteger(T.self, at: offset) else {
                    throw .truncated(what: name, offset: offset, imageSize: bytes.count)
                }
                return value
            }
            // ELF header (System V gABI, "ELF Header"): 64-bit, little-endian, EM_X86_64.
            guard bytes.count >= 64, bytes[0..<4] == [0x7F, 0x45, 0x4C, 0x46] else {
                throw .invalidELF("missing the \\x7fELF magic")
            }
            guard bytes[4] == 2, bytes[5] == 1 else { throw .invalidELF("not a little-endian ELF64 file") }
            guard try field(UInt16.self, 0x12, "e_machine") == 62 else { throw .invalidELF("e_machine is not x86-64") }
            let phoff = try field(UInt64.self, 0x20, "e_phoff")
            let phentsize = Int(try field(UInt16.self, 0x36, "e_phentsize"))
            let phnum = Int(try field(UInt16.self, 0x38, "e_phnum"))
            guard phentsize >= 56, let tableStart = Int(exactly: phoff), tableStart <= bytes.count else {
                throw .invalidELF("program header table is malformed")
            }

            var segments: [Segment] = []
            var entry: UInt32?
            for index in 0..<phnum {
                let header = tableStart + index * phentsize
                let type = try field(UInt32.self, header, "p_type")
                let offset = try field(UInt64.self, header + 8, "p_offset")
                let fileSize = try field(UInt64.self, header + 32, "p_filesz")
                guard let start = Int(exactly: offset), let size = Int(exactly: fileSize),
                    start <= bytes.count, size <= bytes.count - start
                else { throw .truncated(what: "segment \(index)", offset: Int(clamping: offset), imageSize: bytes.count) }
                switch type {
                case 1:  // PT_LOAD
                    let memorySize = try field(UInt64.self, header + 40, "p_memsz")
                    guard memorySize >= fileSize else { throw .invalidELF("segment \(index) has p_memsz < p_filesz") }
                    segments.append(
                        Segment(
                            physicalAddress: try field(UInt64.self, header + 24, "p_paddr"), fileOffset: start,
                            fileSize: size, memorySize: memorySize))
                case 4:  // PT_NOTE
                    entry = entry ?? Self.phys32Entry(in: bytes[start..<(start + size)])
                default: break
                }
            }
            guard let entry else { throw .invalidELF("no XEN_ELFNOTE_PHYS32_ENTRY note: the kernel lacks PVH support") }
            guard !segments.isEmpty else { throw .invalidELF("no PT_LOAD segments") }
            self.bytes = bytes
            self.entry = entry
            self.segments = segments
        }

        /// Walks a PT_NOTE segment (gABI "Note Section": namesz, descsz, type, 4-byte-padded name
        /// and desc) for the "Xen" PHYS32_ENTRY note.
        static func phys32Entry(in notes: ArraySlice<UInt8>) -> UInt32? {
            let notes = Array(notes)
            var offset = 0
            func padded(_ size: Int) -> Int { (size + 3) & ~3 }
            while let nameSize = notes.littleEndianInteger(UInt32.self, at: offset),
                let descSize = notes.littleEndianInteger(UInt32.self, at: offset + 4),
                let type = notes.littleEndianInteger(UInt32.self, at: offset + 8)
            {
                let nameStart = offset + 12
                let descStart = nameStart + padded(Int(nameSize))
                let next = descStart + padded(Int(descSize))
                guard nameSize < 1 << 16, descSize < 1 << 16, next <= notes.count else { return nil }
                let name = notes[nameStart..<(nameStart + Int(nameSize))].prefix { $0 != 0 }
                if type == PVHBoot.phys32EntryNoteType, Array(name) == Array("Xen".utf8), descSize >= 4 {
                    return notes.littleEndianInteger(UInt32.self, at: descStart)
                }
                offset = next
            }
            return nil
        }
    }

    /// Loads the segments, command line, optional initrd (as module 0), MP and ACPI tables and
    /// `hvm_start_info` with an e820-style memory map. Returns vCPU 0's entry state.
    public static func load(
        kernel: Image, initrd: [UInt8]?, commandLine: String, cpuCount: Int, into memory: GuestMemory
    ) throws(BootError) -> ProtectedModeEntry {
        guard cpuCount >= 1, cpuCount <= LinuxBoot.maximumCPUCount else {
            throw .invalidCPUCount(cpuCount, maximum: LinuxBoot.maximumCPUCount)
        }
        guard let low = memory.regions.first, low.start.raw == 0, low.end > X86Layout.biosAreaEnd else {
            throw .unsupportedMemoryLayout("guest RAM must start at 0 and extend past 1 MiB")
        }
        for segment in kernel.segments {
            guard segment.physicalAddress >= X86Layout.biosAreaEnd else {
                throw .invalidELF("segment at \(hex(segment.physicalAddress)) overlaps the boot data below 1 MiB")
            }
            guard segment.physicalAddress <= low.end, segment.memorySize <= low.end - segment.physicalAddress
            else { throw .kernelTooLarge(footprintEnd: segment.physicalAddress &+ segment.memorySize, ramEnd: low.end) }
            let address = GuestAddress(segment.physicalAddress)
            try memory.store(kernel.bytes[segment.fileOffset..<(segment.fileOffset + segment.fileSize)], at: address)
            let tail = segment.memorySize - UInt64(segment.fileSize)
            if tail > 0 { try memory.clear(count: Int(tail), at: GuestAddress(address.raw + UInt64(segment.fileSize))) }
        }

        let line = Array(commandLine.utf8)
        guard !line.contains(0) else { throw .commandLineContainsNUL }
        guard line.count < X86Layout.commandLineCapacity else {
            throw .commandLineTooLong(length: line.count, maximum: X86Layout.commandLineCapacity - 1)
        }
        try memory.store(line + [0], at: X86Layout.commandLineAddress)

        // The start-info page holds hvm_start_info, the module list and the memory map.
        try memory.clear(count: X86Layout.zeroPageSize, at: startInfoAddress)
        var modules = 0
        if let initrd, !initrd.isEmpty {
            let floor = (kernel.end + 0xFFF) & ~0xFFF
            let size = UInt64(initrd.count)
            guard low.end >= floor, low.end - floor >= size else {
                throw .initrdTooLarge(size: initrd.count, available: low.end >= floor ? low.end - floor : 0)
            }
            let address = (low.end - size) & ~0xFFF
            try memory.store(initrd, at: GuestAddress(address))
            // struct hvm_modlist_entry: paddr, size, cmdline_paddr, reserved.
            var module = ByteWriter(capacity: 32)
            module.append(address)
            module.append(size)
            module.append(UInt64(0))
            module.append(UInt64(0))
            try memory.store(module.bytes, at: moduleListAddress)
            modules = 1
        }

        try MPTable.write(cpuCount: cpuCount, into: memory)
        let acpi = try ACPITables.write(cpuCount: cpuCount, into: memory)
        var gdt = ByteWriter(capacity: gdtEntries.count * 8)
        for entry in gdtEntries { gdt.append(entry) }
        try memory.store(gdt.bytes, at: X86Layout.gdtAddress)
        try memory.clear(count: 16, at: X86Layout.idtAddress)

        // struct hvm_memmap_table_entry: addr, size, type (e820 values), reserved.
        let map = LinuxBoot.e820Map(memory: memory)
        guard map.count <= maximumMemoryMapEntries else {
            throw .unsupportedMemoryLayout("\(map.count) memory map entries exceed \(maximumMemoryMapEntries)")
        }
        var table = ByteWriter(capacity: map.count * memoryMapEntrySize)
        for entry in map {
            table.append(entry.address.raw)
            table.append(entry.size)
            table.append(entry.type.rawValue)
            table.append(UInt32(0))
        }
        try memory.store(table.bytes, at: memoryMapAddress)

        var info = ByteWriter(capacity: startInfoSize)
        info.append(startInfoMagic)
        info.append(startInfoVersion)
        info.append(UInt32(0))  // flags
        info.append(UInt32(modules))
        info.append(modules > 0 ? moduleListAddress.raw : 0)
        info.append(X86Layout.commandLineAddress.raw)
        info.append(acpi.rsdp.raw)
        info.append(memoryMapAddress.raw)
        info.append(UInt32(map.count))
        info.append(UInt32(0))  // reserved
        try memory.store(info.bytes, at: startInfoAddress)

        return ProtectedModeEntry(
            rip: UInt64(kernel.entry),
            rbx: startInfoAddress.raw,
            rflags: 0x2,
            cr0: LinuxBoot.cr0PE | LinuxBoot.cr0ET,
            cr3: 0,
            cr4: 0,
            efer: 0,
            gdtBase: X86Layout.gdtAddress.raw,
            gdtLimit: UInt16(gdtEntries.count * 8 - 1),
            idtBase: X86Layout.idtAddress.raw,
            idtLimit: 0,
            code: SegmentDescriptor(gdtEntry: gdtEntries[2], selector: LinuxBoot.codeSelector),
            data: SegmentDescriptor(gdtEntry: gdtEntries[3], selector: LinuxBoot.dataSelector),
            tss: SegmentDescriptor(gdtEntry: gdtEntries[4], selector: LinuxBoot.tssSelector))
    }
}
