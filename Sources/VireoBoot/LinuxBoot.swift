import VireoMemory

/// `struct boot_params` ("zero page") offsets, from Linux `Documentation/arch/x86/zero-page.rst`.
/// The setup header lives inside it at 0x1F1 with the same offsets as in the image.
enum BootParams {
    static let acpiRSDPAddr = 0x070
    static let extRamdiskImage = 0x0C0
    static let extRamdiskSize = 0x0C4
    static let extCmdLinePtr = 0x0C8
    static let e820Entries = 0x1E8
    /// First byte after the setup header's space (edd_mbr_sig_buffer starts here).
    static let headerLimit = 0x290
    static let e820Table = 0x2D0
    static let e820MaxEntries = 128
}

/// Loads a bzImage for the 64-bit boot protocol (boot.rst "64-bit BOOT PROTOCOL"): the kernel
/// starts in long mode at load address + 0x200 with %rsi pointing at a filled-in zero page, so
/// none of the real-mode setup code runs and Vireo needs no firmware.
public enum LinuxBoot {
    /// `loader type 0xFF`: a boot loader without an assigned ID (boot.rst, type_of_loader).
    public static let loaderType: UInt8 = 0xFF
    /// End of the setup heap relative to the real-mode code, minus 0x200, as boot.rst asks; the
    /// 64-bit entry never uses it, but CAN_USE_HEAP with a sane value keeps the header consistent.
    public static let heapEndPointer: UInt16 = 0xFE00
    /// Offset of the 64-bit entry point from the protected-mode load address.
    public static let entryOffset64: UInt64 = 0x200
    /// Kernels from 2.14 on read the RSDP address from boot_params instead of scanning.
    static let rsdpFieldVersion: UInt16 = 0x020E
    /// xAPIC IDs are 8 bits and 0xFF is broadcast; the I/O APIC takes the ID after the last CPU.
    public static var maximumCPUCount: Int { MPTable.maximumCPUCount }

    /// Where ``load(kernel:initrd:commandLine:cpuCount:into:)`` put things.
    public struct Placement: Equatable, Sendable {
        public var kernel: GuestAddress
        public var commandLine: GuestAddress
        public var initrd: GuestAddress?
        public var initrdSize: Int
        public var rsdp: GuestAddress
    }

    /// Loads `kernel`, `initrd` and the command line, and writes every boot structure (zero page,
    /// e820, GDT, page tables, MP and ACPI tables). Returns the vCPU 0 register state.
    public static func load(
        kernel: BzImage, initrd: [UInt8]?, commandLine: String, cpuCount: Int, into memory: GuestMemory
    ) throws(BootError) -> LongModeEntry {
        try loadWithPlacement(kernel: kernel, initrd: initrd, commandLine: commandLine, cpuCount: cpuCount, into: memory)
            .entry
    }

    /// ``load(kernel:initrd:commandLine:cpuCount:into:)`` that also reports where it put things.
    public static func loadWithPlacement(
        kernel: BzImage, initrd: [UInt8]?, commandLine: String, cpuCount: Int, into memory: GuestMemory
    ) throws(BootError) -> (entry: LongModeEntry, placement: Placement) {
        guard cpuCount >= 1, cpuCount <= maximumCPUCount else {
            throw .invalidCPUCount(cpuCount, maximum: maximumCPUCount)
        }
        guard let low = memory.regions.first, low.start.raw == 0 else {
            throw .unsupportedMemoryLayout("guest RAM must start at address 0")
        }
        guard low.end > X86Layout.biosAreaEnd else {
            throw .unsupportedMemoryLayout("guest RAM below 4 GiB ends at \(hex(low.end)), not above 1 MiB")
        }

        // Kernel: the protected-mode part at 1 MiB, with room for its decompression footprint.
        let kernelAddress = X86Layout.kernelAddress
        let footprintEnd = kernel.footprintEnd(loadAddress: kernelAddress.raw)
        guard footprintEnd <= low.end else { throw .kernelTooLarge(footprintEnd: footprintEnd, ramEnd: low.end) }
        try memory.store(kernel.protectedModeCode, at: kernelAddress)

        // Command line, NUL-terminated; cmdline_size excludes the NUL.
        let line = Array(commandLine.utf8)
        guard !line.contains(0) else { throw .commandLineContainsNUL }
        let maximumLength = min(Int(kernel.cmdlineSize), X86Layout.commandLineCapacity - 1)
        guard line.count <= maximumLength else {
            throw .commandLineTooLong(length: line.count, maximum: maximumLength)
        }
        try memory.store(line + [0], at: X86Layout.commandLineAddress)

        // Initrd: as high as allowed, so the kernel's own allocations stay contiguous below it.
        var initrdAddress: GuestAddress?
        let initrdSize = initrd?.count ?? 0
        if let initrd, !initrd.isEmpty {
            let ceiling = min(UInt64(kernel.initrdAddrMax) + 1, low.end)
            let floor = (footprintEnd + 0xFFF) & ~0xFFF
            let size = UInt64(initrd.count)
            guard ceiling >= floor, ceiling - floor >= size else {
                throw .initrdTooLarge(size: initrd.count, available: ceiling >= floor ? ceiling - floor : 0)
            }
            let address = GuestAddress((ceiling - size) & ~0xFFF)
            try memory.store(initrd, at: address)
            initrdAddress = address
        }

        try MPTable.write(cpuCount: cpuCount, into: memory)
        try writeResetVectorStub(into: memory)
        let acpi = try ACPITables.write(cpuCount: cpuCount, into: memory)
        try prepareLongMode(in: memory)

        let zeroPage = try buildZeroPage(
            kernel: kernel, commandLine: X86Layout.commandLineAddress, initrd: initrdAddress, initrdSize: initrdSize,
            rsdp: acpi.rsdp, e820: e820Map(memory: memory))
        try memory.store(zeroPage, at: X86Layout.zeroPageAddress)

        let entry = longModeEntry(rip: kernelAddress.raw + entryOffset64, rsi: X86Layout.zeroPageAddress.raw)
        let placement = Placement(
            kernel: kernelAddress, commandLine: X86Layout.commandLineAddress, initrd: initrdAddress,
            initrdSize: initrdSize, rsdp: acpi.rsdp)
        return (entry, placement)
    }

    /// The 4096-byte zero page: the kernel's own setup header, plus the fields boot.rst marks as
    /// "write" for the boot loader, plus the e820 map (zero-page.rst).
    public static func buildZeroPage(
        kernel: BzImage, commandLine: GuestAddress, initrd: GuestAddress?, initrdSize: Int, rsdp: GuestAddress?,
        e820: [E820Entry]
    ) throws(BootError) -> [UInt8] {
        guard e820.count <= BootParams.e820MaxEntries else {
            throw .unsupportedMemoryLayout("\(e820.count) e820 entries exceed the zero page's 128")
        }
        typealias Offset = BzImage.Offset
        var page = ByteWriter(zeros: X86Layout.zeroPageSize)
        page.set(kernel.setupHeader, at: Offset.setupSects)
        page.set(UInt16(0xFFFF), at: Offset.vidMode)  // "normal" video mode
        page.set(loaderType, at: Offset.typeOfLoader)
        page.set(kernel.loadflags | BzImage.canUseHeap, at: Offset.loadflags)
        page.set(heapEndPointer, at: Offset.heapEndPtr)
        page.set(UInt32(truncatingIfNeeded: commandLine.raw), at: Offset.cmdLinePtr)
        page.set(UInt32(truncatingIfNeeded: commandLine.raw >> 32), at: BootParams.extCmdLinePtr)
        let initrdAddress = initrd?.raw ?? 0
        let size = UInt64(initrdSize)
        page.set(UInt32(truncatingIfNeeded: initrdAddress), at: Offset.ramdiskImage)
        page.set(UInt32(truncatingIfNeeded: size), at: Offset.ramdiskSize)
        page.set(UInt32(truncatingIfNeeded: initrdAddress >> 32), at: BootParams.extRamdiskImage)
        page.set(UInt32(truncatingIfNeeded: size >> 32), at: BootParams.extRamdiskSize)
        if let rsdp, kernel.version >= rsdpFieldVersion {
            page.set(rsdp.raw, at: BootParams.acpiRSDPAddr)
        }
        page.set(UInt8(e820.count), at: BootParams.e820Entries)
        for (index, entry) in e820.enumerated() {
            page.set(entry.bytes, at: BootParams.e820Table + index * E820Entry.size)
        }
        return page.bytes
    }

    /// Machine code placed at the real-mode reset vector: `mov al, RESET_VALUE; mov dx, RESET_PORT;
    /// out dx, al; hlt; jmp $-1` — a jump to the BIOS becomes an ACPI reset (FADT RESET_REG).
    public static func resetVectorStub() -> [UInt8] {
        let port = X86Layout.acpiResetPort
        return [0xB0, X86Layout.acpiResetValue, 0xBA, UInt8(port & 0xFF), UInt8(port >> 8), 0xEE, 0xF4, 0xEB, 0xFD]
    }

    static func writeResetVectorStub(into memory: GuestMemory) throws(BootError) {
        do {
            try memory.write(resetVectorStub(), at: X86Layout.realModeResetVector)
        } catch {
            throw .guestMemory(error)
        }
    }
}
