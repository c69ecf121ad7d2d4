import Testing
import VireoBoot
import VireoMemory

@Suite struct MemoryMapTests {
    static let mib: UInt64 = 1 << 20
    static let gib: UInt64 = 1 << 30

    @Test func ramRangesSplitAroundMMIOHole() {
        let small = X86Layout.ramRanges(memorySize: 64 * Self.mib)
        #expect(small.count == 1 && small[0].start == GuestAddress(0) && small[0].size == 64 * Self.mib)
        let exact = X86Layout.ramRanges(memorySize: 3 * Self.gib)
        #expect(exact.count == 1 && exact[0].size == 3 * Self.gib)
        let large = X86Layout.ramRanges(memorySize: 6 * Self.gib)
        #expect(large.count == 2)
        #expect(large[0].size == 3 * Self.gib)
        #expect(large[1].start == GuestAddress(4 * Self.gib) && large[1].size == 3 * Self.gib)
    }

    func expectLowMap(_ map: [E820Entry], lowEnd: UInt64) {
        #expect(map[0] == E820Entry(address: GuestAddress(0), size: 0x9_FC00, type: .ram))
        #expect(map[1] == E820Entry(address: GuestAddress(0x9_FC00), size: 0x400, type: .reserved))
        #expect(map[2] == E820Entry(address: GuestAddress(0xE_0000), size: 0x2_0000, type: .reserved))
        #expect(map[3] == E820Entry(address: GuestAddress(Self.mib), size: lowEnd - Self.mib, type: .ram))
    }

    let ecam = E820Entry(address: GuestAddress(X86Layout.pciECAMBase), size: X86Layout.pciECAMSize, type: .reserved)

    @Test func e820For64MiB() throws {
        let map = LinuxBoot.e820Map(memory: try makeMemory(64 * Self.mib))
        #expect(map.count == 5)
        expectLowMap(map, lowEnd: 64 * Self.mib)
        #expect(map[4] == ecam)
    }

    @Test func e820For3GiB() throws {
        let map = LinuxBoot.e820Map(memory: try makeMemory(3 * Self.gib))
        #expect(map.count == 5)
        expectLowMap(map, lowEnd: 3 * Self.gib)
        #expect(map[4] == ecam)
    }

    @Test func e820For4GiBHasTwoRAMRanges() throws {
        let map = LinuxBoot.e820Map(memory: try makeMemory(4 * Self.gib))
        #expect(map.count == 6)
        expectLowMap(map, lowEnd: 3 * Self.gib)
        #expect(map[4] == ecam)
        #expect(map[5] == E820Entry(address: GuestAddress(4 * Self.gib), size: Self.gib, type: .ram))
        // Only the ECAM region claims the MMIO hole, and entries are sorted and disjoint.
        for (previous, next) in zip(map, map.dropFirst()) { #expect(previous.end <= next.address.raw) }
        #expect(!map.contains { $0 != ecam && $0.address.raw < 4 * Self.gib && $0.end > X86Layout.mmioHoleStart })
    }

    @Test func e820EntryWireFormat() {
        let entry = E820Entry(address: GuestAddress(0x1_2345_6789), size: 0xABCD, type: .acpi)
        #expect(entry.bytes == [0x89, 0x67, 0x45, 0x23, 0x01, 0, 0, 0, 0xCD, 0xAB, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0])
    }

    /// Translates `virtual` by walking the 4-level tables from CR3, as the MMU would (SDM Vol. 3A §4.5).
    func translate(_ virtual: UInt64, in memory: GuestMemory, cr3: UInt64) throws -> UInt64? {
        let mask: UInt64 = 0x000F_FFFF_FFFF_F000
        let pml4e = try memory.readInteger(UInt64.self, at: GuestAddress(cr3 + ((virtual >> 39) & 0x1FF) * 8))
        guard pml4e & 1 != 0 else { return nil }
        let pdpte = try memory.readInteger(UInt64.self, at: GuestAddress((pml4e & mask) + ((virtual >> 30) & 0x1FF) * 8))
        guard pdpte & 1 != 0, pdpte & 0x80 == 0 else { return nil }
        let pde = try memory.readInteger(UInt64.self, at: GuestAddress((pdpte & mask) + ((virtual >> 21) & 0x1FF) * 8))
        guard pde & 1 != 0, pde & 0x80 != 0, pde & 2 != 0 else { return nil }
        return (pde & 0x000F_FFFF_FFE0_0000) | (virtual & 0x1F_FFFF)
    }

    @Test func pageTablesIdentityMapFirst4GiB() throws {
        let memory = try makeMemory(64 * Self.mib)
        try LinuxBoot.buildPageTables(in: memory)
        let cr3 = LinuxBoot.longModeEntry(rip: 0, rsi: 0).cr3
        for address: UInt64 in [0, 0x1234, 2 * Self.mib, Self.gib + 4096, 3 * Self.gib + 0x1000, 0xFEE0_0000, 4 * Self.gib - 1] {
            #expect(try translate(address, in: memory, cr3: cr3) == address, "address \(address)")
        }
        // Nothing above 4 GiB is mapped.
        #expect(try translate(4 * Self.gib, in: memory, cr3: cr3) == nil)
    }
}
