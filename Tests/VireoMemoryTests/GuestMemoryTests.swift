import Testing
import VireoMemory

/// Unit tier: guest RAM refuses every access that is not wholly inside one region.
struct GuestMemoryTests {
    let memory: GuestMemory

    init() throws {
        // Two regions with a hole between them, like RAM around the 32-bit MMIO hole.
        memory = try GuestMemory(ranges: [(GuestAddress(0), 0x10000), (GuestAddress(0x20000), 0x1000)])
    }

    @Test func readsBackWhatWasWritten() throws {
        try memory.write([1, 2, 3, 4], at: GuestAddress(0xFFFC))
        #expect(try memory.read(count: 4, at: GuestAddress(0xFFFC)) == [1, 2, 3, 4])
        try memory.writeInteger(UInt32(0xDEAD_BEEF), at: GuestAddress(0x20FFC))
        #expect(try memory.readInteger(UInt32.self, at: GuestAddress(0x20FFC)) == 0xDEAD_BEEF)
        #expect(try memory.read(count: 4, at: GuestAddress(0x20FFC)) == [0xEF, 0xBE, 0xAD, 0xDE])  // little-endian
    }

    @Test func accessesOutsideRAMAreErrors() {
        #expect(throws: GuestMemoryError.invalidAddress(GuestAddress(0x10000))) {
            try memory.read(count: 1, at: GuestAddress(0x10000))
        }
        #expect(throws: GuestMemoryError.outOfBounds(GuestAddress(0xFFFF), length: 2)) {
            try memory.write([0, 0], at: GuestAddress(0xFFFF))
        }
        #expect(throws: GuestMemoryError.self) { try memory.readInteger(UInt64.self, at: GuestAddress(UInt64.max - 3)) }
        #expect(throws: GuestMemoryError.self) { try memory.read(count: -1, at: GuestAddress(0)) }
        #expect(!memory.isValid(GuestAddress(0x20000), length: 0x1001))
        #expect(memory.isValid(GuestAddress(0x20000), length: 0x1000))
    }

    @Test func accessesNeverSpanTwoRegions() {
        let memory = try! GuestMemory(ranges: [(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)])
        #expect(throws: GuestMemoryError.self) { try memory.read(count: 8, at: GuestAddress(0xFFC)) }
    }

    @Test func invalidLayoutsAreRefused() {
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(GuestAddress(0), 0x1001)]) }
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(GuestAddress(0), 0x2000), (GuestAddress(0x1000), 0x1000)]) }
        #expect(throws: GuestMemoryError.self) { try GuestMemory(ranges: [(GuestAddress(UInt64.max - 0xFFF), 0x2000)]) }
    }

    @Test func discardedPagesReadAsZeros() throws {
        try memory.write([UInt8](repeating: 0xAA, count: 0x2000), at: GuestAddress(0x1000))
        try memory.discard(GuestAddress(0x1000), length: 0x1000)
        #expect(try memory.read(count: 0x1000, at: GuestAddress(0x1000)).allSatisfy { $0 == 0 })
        #expect(try memory.read(count: 0x1000, at: GuestAddress(0x2000)).allSatisfy { $0 == 0xAA })
    }

    @Test func checkedAddressArithmetic() {
        #expect(GuestAddress(UInt64.max).checkedAdding(1) == nil)
        #expect(GuestAddress(10).checkedOffset(from: GuestAddress(11)) == nil)
        #expect(GuestAddress(0x1000).description == "0x1000")
    }

    @Test func byteWriterChecksums() {
        var writer = ByteWriter()
        writer.append(ascii: "RSD PTR ", width: 8)
        writer.append(UInt32(0x1234_5678))
        let bytes = writer.bytes + [writer.bytes.checksumComplement]
        #expect(bytes.reduce(UInt8(0), &+) == 0)
        #expect(bytes.littleEndianInteger(UInt32.self, at: 8) == 0x1234_5678)
        #expect(bytes.littleEndianInteger(UInt32.self, at: 10) == nil)
    }
}
