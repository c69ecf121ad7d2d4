import Testing
import VireoBoot
import VireoMemory

@Suite struct MPTableTests {
    func entries(_ table: [UInt8]) -> [(type: UInt8, bytes: ArraySlice<UInt8>)] {
        var result: [(UInt8, ArraySlice<UInt8>)] = []
        var offset = 16 + 44
        while offset < table.count {
            let length = table[offset] == 0 ? 20 : 8
            result.append((table[offset], table[offset..<(offset + length)]))
            offset += length
        }
        return result
    }

    @Test(arguments: [1, 4])
    func checksumsAndCounts(cpuCount: Int) throws {
        let table = try MPTable.build(cpuCount: cpuCount)
        #expect(table.count == MPTable.size(cpuCount: cpuCount))
        // Floating pointer (MP spec §4.1).
        let pointer = Array(table[0..<16])
        #expect(pointer.ascii(0, 4) == "_MP_")
        #expect(pointer.u32(4) == 0xF_0010)
        #expect(pointer.u8(8) == 1 && pointer.u8(9) == 4)
        #expect(pointer.byteSum == 0)
        // Configuration table (§4.2).
        let config = Array(table[16...])
        #expect(config.ascii(0, 4) == "PCMP")
        #expect(config.u16(4) == UInt16(config.count))
        #expect(config.byteSum == 0)
        #expect(config.u32(36) == 0xFEE0_0000)
        #expect(config.u16(40) == 0 && config.u8(42) == 0)

        let all = entries(table)
        #expect(config.u16(34) == UInt16(all.count))
        let processors = all.filter { $0.type == 0 }
        #expect(processors.count == cpuCount)
        for (index, processor) in processors.enumerated() {
            let bytes = Array(processor.bytes)
            #expect(bytes[1] == UInt8(index))  // APIC ID
            #expect(bytes[2] == 0x14)
            #expect(bytes[3] == (index == 0 ? 0x03 : 0x01))  // EN, BP on CPU 0
        }
        let buses = all.filter { $0.type == 1 }
        #expect(buses.count == 1 && Array(buses[0].bytes).ascii(2, 6) == "ISA   ")
        let ioapics = all.filter { $0.type == 2 }.map { Array($0.bytes) }
        #expect(ioapics.count == 1)
        #expect(ioapics[0][1] == UInt8(cpuCount) && ioapics[0][2] == 0x11 && ioapics[0][3] == 1)
        #expect(ioapics[0].u32(4) == 0xFEC0_0000)
        let irqs = all.filter { $0.type == 3 }.map { Array($0.bytes) }
        #expect(irqs.count == 16)
        for (irq, entry) in irqs.enumerated() {
            #expect(entry[1] == 0 && entry[5] == UInt8(irq) && entry[6] == UInt8(cpuCount) && entry[7] == UInt8(irq))
        }
        let lints = all.filter { $0.type == 4 }.map { Array($0.bytes) }
        #expect(lints.count == 2)
        #expect(lints[0][1] == 3 && lints[0][6] == 0xFF && lints[0][7] == 0)  // ExtINT on LINT0
        #expect(lints[1][1] == 1 && lints[1][6] == 0xFF && lints[1][7] == 1)  // NMI on LINT1
    }

    @Test func holds254CPUsBelowTheResetVectorAndRejectsMore() throws {
        #expect(MPTable.maximumCPUCount == 254)
        let table = try MPTable.build(cpuCount: 254)
        #expect(table.count <= MPTable.capacity)
        #expect(X86Layout.mpTableAddress.raw + UInt64(table.count) <= X86Layout.realModeResetVector.raw)
        #expect(Array(table[16...]).u16(34) == UInt16(254 + 1 + 1 + 16 + 2))  // CPUs, bus, IOAPIC, IRQs, LINTs
        for count in [0, 255] {
            #expect(throws: BootError.invalidCPUCount(count, maximum: 254)) { try MPTable.build(cpuCount: count) }
        }
    }
}

@Suite struct ACPITableTests {
    static let memorySize: UInt64 = 64 << 20

    struct Loaded {
        let memory: GuestMemory
        let layout: ACPITables.Layout
        let rsdp: [UInt8]
        let xsdt: [UInt8]
        let fadt: [UInt8]
        let madt: [UInt8]
        let dsdt: [UInt8]
    }

    func load(cpuCount: Int) throws -> Loaded {
        let memory = try makeMemory(Self.memorySize)
        let layout = try ACPITables.write(cpuCount: cpuCount, into: memory)
        let rsdp = try memory.read(count: 36, at: layout.rsdp)
        let xsdt = try memory.table(at: try #require(rsdp.u64(24)))
        let fadtAddress = try #require(xsdt.u64(36))
        let madtAddress = try #require(xsdt.u64(44))
        let fadt = try memory.table(at: fadtAddress)
        let madt = try memory.table(at: madtAddress)
        let dsdt = try memory.table(at: try #require(fadt.u64(140)))
        return Loaded(memory: memory, layout: layout, rsdp: rsdp, xsdt: xsdt, fadt: fadt, madt: madt, dsdt: dsdt)
    }

    @Test func rsdpAndPointerChain() throws {
        let tables = try load(cpuCount: 2)
        #expect(tables.layout.rsdp == GuestAddress(0xE_0000))
        #expect(tables.rsdp.ascii(0, 8) == "RSD PTR ")
        #expect(Array(tables.rsdp[0..<20]).byteSum == 0)
        #expect(tables.rsdp.byteSum == 0)
        #expect(tables.rsdp.u8(15) == 2 && tables.rsdp.u32(20) == 36)
        #expect(tables.rsdp.ascii(9, 6) == "VIREO ")

        #expect(tables.xsdt.ascii(0, 4) == "XSDT")
        #expect(tables.xsdt.count == 36 + 24)
        #expect(tables.fadt.ascii(0, 4) == "FACP")
        #expect(tables.madt.ascii(0, 4) == "APIC")
        #expect(tables.dsdt.ascii(0, 4) == "DSDT")
        #expect(tables.fadt.u32(40).map(UInt64.init) == tables.fadt.u64(140))  // DSDT and X_DSDT agree
        for table in [tables.xsdt, tables.fadt, tables.madt, tables.dsdt] {
            #expect(table.byteSum == 0, "\(table.ascii(0, 4)) checksum")
            #expect(table.ascii(10, 6) == "VIREO ")
            #expect(table.ascii(16, 8) == "VIREOVMM")
            #expect(table.ascii(28, 4) == "VIRO")
        }
        // All tables live in the reserved BIOS area and 16-byte aligned.
        for address in [tables.layout.rsdp, tables.layout.xsdt, tables.layout.fadt, tables.layout.madt, tables.layout.dsdt] {
            #expect(address.raw >= 0xE_0000 && address.raw < 0x10_0000 && address.raw % 16 == 0)
        }
    }

    /// PCI Firmware spec 3.0 §4.1.2: one ECAM allocation for segment 0, buses 0–255, which the e820 map reserves.
    @Test func mcfgPointsAtTheReservedECAMRegion() throws {
        let tables = try load(cpuCount: 1)
        let mcfg = try tables.memory.table(at: try #require(tables.xsdt.u64(52)))
        #expect(mcfg.ascii(0, 4) == "MCFG" && mcfg.byteSum == 0)
        #expect(mcfg.count == 36 + 8 + 16)
        #expect(mcfg.u64(44) == X86Layout.pciECAMBase)
        #expect(mcfg.u16(52) == 0 && mcfg.u8(54) == 0 && mcfg.u8(55) == 0xFF)
        let map = LinuxBoot.e820Map(memory: tables.memory)
        #expect(map.contains(E820Entry(address: GuestAddress(X86Layout.pciECAMBase), size: 256 << 20, type: .reserved)))
        // The ECAM region lies in the MMIO hole, outside the host bridge's 32-bit BAR window.
        #expect(X86Layout.pciECAMBase >= X86Layout.pciMMIO32Base + X86Layout.pciMMIO32Size)
        #expect(X86Layout.pciECAMBase + X86Layout.pciECAMSize <= X86Layout.ioapicAddress)
    }

    @Test func fadtFlagsAndRegisters() throws {
        let fadt = try load(cpuCount: 1).fadt
        #expect(fadt.count == 276)
        #expect(fadt.u8(8) == 6 && fadt.u8(131) == 0)  // FADT 6.0
        let flags = try #require(fadt.u32(112))
        #expect(flags & (1 << 20) != 0)  // HW_REDUCED_ACPI
        #expect(flags & (1 << 10) != 0)  // RESET_REG_SUP
        #expect(fadt.u16(109) == 0x0006)  // 8042 present, VGA not present
        // RESET_REG: System I/O, 8 bits, byte access, port 0x602; RESET_VALUE 1.
        #expect(Array(fadt[116..<120]) == [1, 8, 0, 1] && fadt.u64(120) == 0x602)
        #expect(fadt.u8(128) == 1)
        #expect(Array(fadt[244..<248]) == [1, 8, 0, 1] && fadt.u64(248) == 0x600)  // SLEEP_CONTROL_REG
        #expect(Array(fadt[256..<260]) == [1, 8, 0, 1] && fadt.u64(260) == 0x601)  // SLEEP_STATUS_REG
        #expect(fadt.ascii(268, 8).hasPrefix("VIREO"))
    }

    @Test(arguments: [1, 4, 16])
    func madtDescribesEveryCPU(cpuCount: Int) throws {
        let madt = try load(cpuCount: cpuCount).madt
        #expect(madt.u32(36) == 0xFEE0_0000)
        #expect(madt.u32(40) == 1)  // PCAT_COMPAT
        var offset = 44
        var lapics: [(uid: UInt8, id: UInt8, flags: UInt32)] = []
        var ioapics: [[UInt8]] = []
        var nmis: [[UInt8]] = []
        while offset < madt.count {
            let type = madt[offset]
            let length = Int(madt[offset + 1])
            let entry = Array(madt[offset..<(offset + length)])
            switch type {
            case 0: lapics.append((entry[2], entry[3], entry.u32(4) ?? 0))
            case 1: ioapics.append(entry)
            case 4: nmis.append(entry)
            default: Issue.record("unexpected MADT entry type \(type)")
            }
            offset += length
        }
        #expect(offset == madt.count)
        #expect(lapics.count == cpuCount)
        for (index, lapic) in lapics.enumerated() {
            #expect(lapic.uid == UInt8(index) && lapic.id == UInt8(index) && lapic.flags & 1 == 1)
        }
        #expect(ioapics.count == 1 && ioapics[0].count == 12)
        #expect(ioapics[0][2] == UInt8(cpuCount) && ioapics[0].u32(4) == 0xFEC0_0000 && ioapics[0].u32(8) == 0)
        #expect(nmis.count == 1 && nmis[0] == [4, 6, 0xFF, 0, 0, 1])
    }

    @Test func dsdtDefinesS5AndCOM1AndTheKeyboardController() throws {
        let dsdt = try load(cpuCount: 1).dsdt
        #expect(dsdt.u8(8) == 2)
        let aml = Array(dsdt[36...])
        let s5: [UInt8] = [0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00]
        #expect(Array(aml.prefix(s5.count)) == s5)
        let rest = Array(aml[s5.count...])
        // Scope (\_SB_) whose PkgLength (ACPI 6.4 §20.2.4) covers exactly the rest of the table.
        #expect(rest[0] == 0x10)
        let (scopeLength, scopeLengthBytes) = pkgLength(rest, at: 1)
        #expect(scopeLength == rest.count - 1)
        let nameAt = 1 + scopeLengthBytes
        #expect(Array(rest[nameAt..<(nameAt + 5)]) == [0x5C] + Array("_SB_".utf8))
        #expect(Array(rest[(nameAt + 5)..<(nameAt + 7)]) == [0x5B, 0x82])  // DeviceOp
        let (_, deviceLengthBytes) = pkgLength(rest, at: nameAt + 7)
        #expect(rest.ascii(nameAt + 7 + deviceLengthBytes, 4) == "COM1")
        #expect(contains(rest, Array("_HID".utf8) + [0x0C, 0x41, 0xD0, 0x05, 0x01]))  // EISAID("PNP0501")
        #expect(contains(rest, Array("_UID".utf8) + [0x00]))
        #expect(contains(rest, [0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00]))
        // PS2K: EISAID("PNP0303"), ports 0x60 and 0x64, IRQ 1.
        #expect(contains(rest, Array("PS2K".utf8)))
        #expect(contains(rest, Array("_HID".utf8) + [0x0C, 0x41, 0xD0, 0x03, 0x03]))
        #expect(contains(rest, [0x47, 0x01, 0x60, 0x00, 0x60, 0x00, 0x01, 0x01, 0x47, 0x01, 0x64, 0x00, 0x64, 0x00, 0x01, 0x01, 0x22, 0x02, 0x00, 0x79, 0x00]))
    }

    /// Decodes an AML PkgLength: returns the encoded length and how many bytes encode it.
    func pkgLength(_ bytes: [UInt8], at offset: Int) -> (Int, Int) {
        let lead = Int(bytes[offset])
        let follow = lead >> 6
        if follow == 0 { return (lead & 0x3F, 1) }
        var length = lead & 0x0F
        for index in 0..<follow { length |= Int(bytes[offset + 1 + index]) << (4 + 8 * index) }
        return (length, 1 + follow)
    }

    @Test func rejectsBadCPUCount() throws {
        let memory = try makeMemory(Self.memorySize)
        #expect(throws: BootError.self) { try ACPITables.write(cpuCount: 0, into: memory) }
    }

    func contains(_ haystack: [UInt8], _ needle: [UInt8]) -> Bool {
        guard needle.count <= haystack.count else { return false }
        return (0...(haystack.count - needle.count)).contains { Array(haystack[$0..<($0 + needle.count)]) == needle }
    }
}
