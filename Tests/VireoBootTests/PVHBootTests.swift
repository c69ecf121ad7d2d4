import Testing
import VireoBoot
import VireoMemory

/// A minimal ELF64 x86-64 image: one PT_NOTE with the Xen PHYS32_ENTRY note, one PT_LOAD.
func makeVmlinux(entry: UInt32 = 0x100_0040, loadAddress: UInt64 = 0x100_0000, withNote: Bool = true) -> [UInt8] {
    let payload: [UInt8] = (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 3) }
    var note = ByteWriter()
    note.append(UInt32(4))  // namesz "Xen\0"
    note.append(UInt32(4))  // descsz
    note.append(withNote ? UInt32(18) : UInt32(17))
    note.append(Array("Xen".utf8) + [0])
    note.append(entry)
    let phoff = 64
    let noteOffset = phoff + 2 * 56
    let loadOffset = noteOffset + note.count
    var elf = ByteWriter(zeros: 64)
    elf.set([0x7F, 0x45, 0x4C, 0x46, 2, 1, 1] as [UInt8], at: 0)
    elf.set(UInt16(2), at: 0x10)  // ET_EXEC
    elf.set(UInt16(62), at: 0x12)  // EM_X86_64
    elf.set(UInt64(phoff), at: 0x20)
    elf.set(UInt16(56), at: 0x36)
    elf.set(UInt16(2), at: 0x38)
    for (type, offset, address, size, memsz) in [
        (UInt32(4), noteOffset, UInt64(0), note.count, UInt64(note.count)),
        (UInt32(1), loadOffset, loadAddress, payload.count, UInt64(payload.count + 4096)),
    ] {
        elf.append(type)
        elf.append(UInt32(5))
        elf.append(UInt64(offset))
        elf.append(address | 0xFFFF_FFFF_8000_0000)  // p_vaddr
        elf.append(address)  // p_paddr
        elf.append(UInt64(size))
        elf.append(memsz)
        elf.append(UInt64(0x1000))
    }
    elf.append(note.bytes)
    elf.append(payload)
    return elf.bytes
}

@Suite struct PVHBootTests {
    @Test func parsesEntryNoteAndSegments() throws {
        let image = try PVHBoot.Image(makeVmlinux())
        #expect(image.entry == 0x100_0040)
        #expect(image.segments.count == 1)
        #expect(image.segments[0].physicalAddress == 0x100_0000)
        #expect(image.end == 0x100_0000 + 512 + 4096)
    }

    @Test func rejectsImagesWithoutPVHNoteOrELFMagic() {
        #expect(throws: BootError.invalidELF("no XEN_ELFNOTE_PHYS32_ENTRY note: the kernel lacks PVH support")) {
            try PVHBoot.Image(makeVmlinux(withNote: false))
        }
        #expect(throws: BootError.self) { try PVHBoot.Image(Array(makeVmlinux().prefix(100))) }
        #expect(throws: BootError.self) { try PVHBoot.Image([UInt8](repeating: 0, count: 200)) }
    }

    @Test func loadsStartInfoAndSegments() throws {
        let memory = try makeMemory(64 << 20)
        try memory.write([UInt8](repeating: 0xEE, count: 4096), at: GuestAddress(0x100_0200))  // must be zeroed (bss)
        let image = try PVHBoot.Image(makeVmlinux())
        let initrd = [UInt8](repeating: 0x5A, count: 10_000)
        let entry = try PVHBoot.load(kernel: image, initrd: initrd, commandLine: "console=ttyS0", cpuCount: 2, into: memory)
        #expect(entry.rip == 0x100_0040 && entry.rbx == 0x7000)
        #expect(entry.cr0 == 0x11 && entry.cr4 == 0 && entry.efer == 0)
        #expect(entry.code.l == 0 && entry.code.db == 1 && entry.code.type == 0xB && entry.code.selector == 0x10)

        #expect(try memory.read(count: 512, at: GuestAddress(0x100_0000)) == (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 3) })
        #expect(try memory.read(count: 4096, at: GuestAddress(0x100_0200)) == [UInt8](repeating: 0, count: 4096))

        let info = try memory.read(count: 56, at: GuestAddress(0x7000))
        #expect(info.u32(0) == 0x336E_C578 && info.u32(4) == 1)
        #expect(info.u32(12) == 1)
        let cmdline = try #require(info.u64(24))
        #expect(try memory.read(count: 14, at: GuestAddress(cmdline)) == Array("console=ttyS0".utf8) + [0])
        let rsdp = try #require(info.u64(32))
        #expect(try memory.read(count: 8, at: GuestAddress(rsdp)) == Array("RSD PTR ".utf8))
        let module = try memory.read(count: 32, at: GuestAddress(try #require(info.u64(16))))
        let initrdAddress = try #require(module.u64(0))
        #expect(initrdAddress % 4096 == 0 && module.u64(8) == 10_000)
        #expect(try memory.read(count: 10_000, at: GuestAddress(initrdAddress)) == initrd)
        let count = Int(try #require(info.u32(48)))
        let map = try memory.read(count: count * 24, at: GuestAddress(try #require(info.u64(40))))
        let expected = LinuxBoot.e820Map(memory: memory)
        #expect(count == expected.count)
        for (index, entry) in expected.enumerated() {
            #expect(map.u64(index * 24) == entry.address.raw && map.u64(index * 24 + 8) == entry.size)
            #expect(map.u32(index * 24 + 16) == entry.type.rawValue)
        }
    }

    @Test func rejectsSegmentsOutsideRAM() throws {
        let memory = try makeMemory(16 << 20)
        let image = try PVHBoot.Image(makeVmlinux(loadAddress: 0x200_0000))
        #expect(throws: BootError.self) {
            try PVHBoot.load(kernel: image, initrd: nil, commandLine: "", cpuCount: 1, into: memory)
        }
    }
}
