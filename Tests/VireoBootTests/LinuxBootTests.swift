import Testing
import VireoBoot
import VireoMemory

@Suite struct LinuxBootTests {
    static let mib: UInt64 = 1 << 20

    @Test func zeroPageFieldsAtDocumentedOffsets() throws {
        let source = SyntheticKernel()
        let kernel = try source.parsed()
        let memory = try makeMemory(64 * Self.mib)
        let initrd = (0..<(300 * 1024)).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        let commandLine = "console=ttyS0 root=/dev/vda rw"
        let (entry, placement) = try LinuxBoot.loadWithPlacement(
            kernel: kernel, initrd: initrd, commandLine: commandLine, cpuCount: 2, into: memory)

        let zp = try memory.read(count: 4096, at: X86Layout.zeroPageAddress)
        // Setup header copied verbatim, then loader fields.
        #expect(zp.u32(0x202) == 0x5372_6448)
        #expect(zp.u16(0x206) == 0x020F)
        #expect(zp.u16(0x1FA) == 0xFFFF)  // vid_mode
        #expect(zp.u8(0x210) == 0xFF)  // type_of_loader
        #expect(zp.u8(0x211) == 0x81)  // loadflags: LOADED_HIGH | CAN_USE_HEAP
        #expect(zp.u16(0x224) == 0xFE00)  // heap_end_ptr
        #expect(zp.u32(0x228) == 0x2_0000)  // cmd_line_ptr
        #expect(zp.u32(0x0C8) == 0)  // ext_cmd_line_ptr
        #expect(zp.u32(0x238) == 2048)  // cmdline_size kept from the image
        #expect(zp.u32(0x22C) == 0x7FFF_FFFF)  // initrd_addr_max kept

        // Initrd: page-aligned, below initrd_addr_max and the end of RAM, above the kernel footprint.
        let ramdiskImage = try #require(zp.u32(0x218))
        let ramdiskSize = try #require(zp.u32(0x21C))
        #expect(ramdiskSize == UInt32(initrd.count))
        #expect(ramdiskImage % 4096 == 0)
        #expect(UInt64(ramdiskImage) + UInt64(ramdiskSize) <= 64 * Self.mib)
        #expect(UInt64(ramdiskImage) + UInt64(ramdiskSize) - 1 <= UInt64(kernel.initrdAddrMax))
        #expect(UInt64(ramdiskImage) >= kernel.prefAddress + UInt64(kernel.initSize))
        #expect(64 * Self.mib - (UInt64(ramdiskImage) + UInt64(ramdiskSize)) < 4096)  // as high as possible
        #expect(zp.u32(0x0C0) == 0 && zp.u32(0x0C4) == 0)  // ext_ramdisk_*
        #expect(placement.initrd == GuestAddress(UInt64(ramdiskImage)))
        #expect(try memory.read(count: initrd.count, at: GuestAddress(UInt64(ramdiskImage))) == initrd)

        // Command line where cmd_line_ptr says, NUL-terminated.
        let line = try memory.read(count: commandLine.utf8.count + 1, at: GuestAddress(0x2_0000))
        #expect(line == Array(commandLine.utf8) + [0])

        // Payload at 1 MiB.
        #expect(try memory.read(count: source.payload.count, at: GuestAddress(Self.mib)) == source.payload)

        // acpi_rsdp_addr (protocol 2.14+) points at an RSDP.
        let rsdp = try #require(zp.u64(0x070))
        #expect(rsdp == placement.rsdp.raw)
        #expect(try memory.read(count: 8, at: GuestAddress(rsdp)) == Array("RSD PTR ".utf8))

        // e820 table.
        let expected = LinuxBoot.e820Map(memory: memory)
        #expect(zp.u8(0x1E8) == UInt8(expected.count))
        for (index, entry) in expected.enumerated() {
            let base = 0x2D0 + index * 20
            #expect(zp.u64(base) == entry.address.raw)
            #expect(zp.u64(base + 8) == entry.size)
            #expect(zp.u32(base + 16) == entry.type.rawValue)
        }
        #expect(zp.u64(0x2D0 + expected.count * 20) == 0)

        // Register state.
        #expect(entry.rip == 0x10_0200)
        #expect(entry.rsi == 0x7000)
        #expect(entry.cr3 == 0x9000)
        #expect(entry.cr0 == 0x8000_0011)
        #expect(entry.cr4 == 0x20)
        #expect(entry.efer == 0x500)
    }

    @Test func oldProtocolGetsNoRSDPField() throws {
        var source = SyntheticKernel()
        source.version = 0x020C
        let memory = try makeMemory(64 * Self.mib)
        _ = try LinuxBoot.load(kernel: try source.parsed(), initrd: nil, commandLine: "", cpuCount: 1, into: memory)
        let zp = try memory.read(count: 4096, at: X86Layout.zeroPageAddress)
        #expect(zp.u64(0x070) == 0)
        #expect(zp.u32(0x218) == 0 && zp.u32(0x21C) == 0)
    }

    @Test func initrdRespectsInitrdAddrMax() throws {
        var source = SyntheticKernel()
        source.initrdAddrMax = 0x1FF_FFFF  // 32 MiB - 1
        let memory = try makeMemory(64 * Self.mib)
        let initrd = [UInt8](repeating: 0xAB, count: 5000)
        let (_, placement) = try LinuxBoot.loadWithPlacement(
            kernel: try source.parsed(), initrd: initrd, commandLine: "x", cpuCount: 1, into: memory)
        let address = try #require(placement.initrd).raw
        #expect(address == (0x200_0000 - 5000) & ~0xFFF)
    }

    @Test func rejectsOverlongCommandLine() throws {
        var source = SyntheticKernel()
        source.cmdlineSize = 16
        let memory = try makeMemory(64 * Self.mib)
        let kernel = try source.parsed()
        _ = try LinuxBoot.load(kernel: kernel, initrd: nil, commandLine: String(repeating: "a", count: 16), cpuCount: 1, into: memory)
        #expect(throws: BootError.commandLineTooLong(length: 17, maximum: 16)) {
            try LinuxBoot.load(kernel: kernel, initrd: nil, commandLine: String(repeating: "a", count: 17), cpuCount: 1, into: memory)
        }
        #expect(throws: BootError.commandLineContainsNUL) {
            try LinuxBoot.load(kernel: kernel, initrd: nil, commandLine: "a\0b", cpuCount: 1, into: memory)
        }
    }

    @Test func rejectsOversizedInitrd() throws {
        let memory = try makeMemory(64 * Self.mib)
        let kernel = try SyntheticKernel().parsed()
        // Footprint ends at 16 MiB + 4 MiB; 64 MiB of RAM leaves 44 MiB.
        let initrd = [UInt8](repeating: 1, count: 45 << 20)
        #expect(throws: BootError.initrdTooLarge(size: 45 << 20, available: 44 << 20)) {
            try LinuxBoot.load(kernel: kernel, initrd: initrd, commandLine: "", cpuCount: 1, into: memory)
        }
        // Exactly 44 MiB fits.
        _ = try LinuxBoot.load(kernel: kernel, initrd: [UInt8](repeating: 1, count: 44 << 20), commandLine: "", cpuCount: 1, into: memory)
    }

    @Test func rejectsKernelWhoseFootprintExceedsRAM() throws {
        var source = SyntheticKernel()
        source.initSize = 0x300_0000  // 16 MiB + 48 MiB > 32 MiB
        let memory = try makeMemory(32 * Self.mib)
        #expect(throws: BootError.kernelTooLarge(footprintEnd: 0x400_0000, ramEnd: 0x200_0000)) {
            try LinuxBoot.load(kernel: try source.parsed(), initrd: nil, commandLine: "", cpuCount: 1, into: memory)
        }
    }

    @Test func hostileHeaderValuesFailCleanly() throws {
        var source = SyntheticKernel()
        source.prefAddress = .max
        source.initSize = .max
        source.kernelAlignment = .max
        let memory = try makeMemory(64 * Self.mib)
        #expect(throws: BootError.kernelTooLarge(footprintEnd: .max, ramEnd: 64 * Self.mib)) {
            try LinuxBoot.load(kernel: try source.parsed(), initrd: nil, commandLine: "", cpuCount: 1, into: memory)
        }
    }

    @Test func rejectsBadCPUCounts() throws {
        let memory = try makeMemory(64 * Self.mib)
        let kernel = try SyntheticKernel().parsed()
        for count in [0, LinuxBoot.maximumCPUCount + 1] {
            #expect(throws: BootError.invalidCPUCount(count, maximum: LinuxBoot.maximumCPUCount)) {
                try LinuxBoot.load(kernel: kernel, initrd: nil, commandLine: "", cpuCount: count, into: memory)
            }
        }
        _ = try LinuxBoot.load(
            kernel: kernel, initrd: nil, commandLine: "", cpuCount: LinuxBoot.maximumCPUCount, into: memory)
    }

    @Test func gdtAndSegments() throws {
        let memory = try makeMemory(4 * Self.mib)
        try LinuxBoot.prepareLongMode(in: memory)
        let entry = LinuxBoot.longModeEntry(rip: 0x1000, rsi: 0)
        let gdt = try memory.read(count: Int(entry.gdtLimit) + 1, at: GuestAddress(entry.gdtBase))
        #expect(entry.gdtBase == 0x500 && entry.idtBase == 0x530)
        #expect(gdt.u64(0) == 0 && gdt.u64(8) == 0)
        #expect(gdt.u64(0x10) == 0x00AF_9B00_0000_FFFF)
        #expect(gdt.u64(0x18) == 0x00CF_9300_0000_FFFF)
        #expect(gdt.u64(0x20) == 0x008F_8B00_0000_FFFF)
        #expect(gdt.u64(0x28) == 0)  // upper half of the 16-byte TSS descriptor
        // The IDT must not overlap the GDT.
        #expect(entry.idtBase >= entry.gdtBase + UInt64(entry.gdtLimit) + 1)

        #expect(
            entry.code
                == SegmentDescriptor(
                    base: 0, limit: 0xFFFF_FFFF, selector: 0x10, type: 0xB, present: 1, dpl: 0, db: 0, s: 1, l: 1,
                    g: 1, avl: 0))
        #expect(
            entry.data
                == SegmentDescriptor(
                    base: 0, limit: 0xFFFF_FFFF, selector: 0x18, type: 0x3, present: 1, dpl: 0, db: 1, s: 1, l: 0,
                    g: 1, avl: 0))
        #expect(entry.tss.selector == 0x20 && entry.tss.type == 0xB && entry.tss.s == 0 && entry.tss.present == 1)
        #expect(entry.rflags == 0x2)
    }

    @Test func segmentDescriptorDecodesEveryField() {
        // base 0x12345678, limit 0xABCDE (byte granular), access 0xF3 (P, DPL3, S, type 3), AVL and D/B set.
        let segment = SegmentDescriptor(gdtEntry: 0x125A_F334_5678_BCDE, selector: 0x2B)
        #expect(
            segment
                == SegmentDescriptor(
                    base: 0x1234_5678, limit: 0xA_BCDE, selector: 0x2B, type: 3, present: 1, dpl: 3, db: 1, s: 1,
                    l: 0, g: 0, avl: 1))
    }
}
