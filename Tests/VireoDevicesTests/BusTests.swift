import Logging
import Synchronization
import Testing
@testable import VireoDevices

/// Remembers the last access so tests can see which offset a bus routed to it.
final class ProbeDevice: BusDevice {
    let tag: UInt64
    let lastWrite = Mutex<(offset: UInt64, size: Int, value: UInt64)?>(nil)
    init(tag: UInt64) { self.tag = tag }
    func read(offset: UInt64, size: Int) -> UInt64 { tag << 8 | offset }
    func write(offset: UInt64, size: Int, value: UInt64) { lastWrite.withLock { $0 = (offset, size, value) } }
}

@Suite struct BusTests {
    let bus = Bus(name: "pio", logger: Logger(label: "test"))

    @Test func overlappingRangesAreRejected() throws {
        try bus.register(ProbeDevice(tag: 1), at: 0x3F8, length: 8)
        #expect(throws: BusError.self) { try bus.register(ProbeDevice(tag: 2), at: 0x3FF, length: 1) }
        #expect(throws: BusError.self) { try bus.register(ProbeDevice(tag: 2), at: 0x3F0, length: 9) }
        #expect(throws: BusError.self) { try bus.register(ProbeDevice(tag: 2), at: 0x3F0, length: 0x100) }
        #expect(throws: BusError.self) { try bus.register(ProbeDevice(tag: 2), at: 0x3FA, length: 2) }
        // Adjacent ranges on either side are fine.
        try bus.register(ProbeDevice(tag: 3), at: 0x3F0, length: 8)
        try bus.register(ProbeDevice(tag: 4), at: 0x400, length: 1)
        do {
            try bus.register(ProbeDevice(tag: 5), at: 0x3F9, length: 1)
            Issue.record("overlap accepted")
        } catch let error as BusError {
            #expect(error.description.contains("0x3f8"))
            #expect(error.description.contains("overlaps"))
        }
    }

    @Test func emptyAndWrappingRangesAreRejected() throws {
        #expect(throws: BusError.self) { try bus.register(ProbeDevice(tag: 1), at: 0x10, length: 0) }
        #expect(throws: BusError.self) { try bus.register(ProbeDevice(tag: 1), at: UInt64.max, length: 2) }
        try bus.register(ProbeDevice(tag: 1), at: UInt64.max, length: 1)
        #expect(bus.read(address: UInt64.max, size: 2) == 0x100)
    }

    @Test func lookupAtRangeEdges() throws {
        try bus.register(ProbeDevice(tag: 1), at: 0x60, length: 5)
        try bus.register(ProbeDevice(tag: 2), at: 0x70, length: 2)
        try bus.register(ProbeDevice(tag: 3), at: 0x40, length: 4)
        #expect(bus.read(address: 0x60, size: 2) == 0x100)
        #expect(bus.read(address: 0x64, size: 2) == 0x104)
        #expect(bus.read(address: 0x70, size: 2) == 0x200)
        #expect(bus.read(address: 0x71, size: 2) == 0x201)
        #expect(bus.read(address: 0x43, size: 2) == 0x303)
        #expect(bus.read(address: 0x65, size: 1) == 0xFF)
        #expect(bus.read(address: 0x5F, size: 1) == 0xFF)
        #expect(bus.read(address: 0x72, size: 1) == 0xFF)
        #expect(bus.read(address: 0x0, size: 1) == 0xFF)
    }

    @Test func unknownReadsAreAllOnesOfTheAccessWidth() {
        #expect(bus.read(address: 0x1234, size: 1) == 0xFF)
        #expect(bus.read(address: 0x1234, size: 2) == 0xFFFF)
        #expect(bus.read(address: 0x1234, size: 4) == 0xFFFF_FFFF)
        #expect(bus.read(address: 0x1234, size: 8) == UInt64.max)
        bus.write(address: 0x1234, size: 4, value: 0xDEAD)  // ignored, must not crash
    }

    @Test func writesAreRoutedWithOffsetAndTruncated() throws {
        let device = ProbeDevice(tag: 1)
        try bus.register(device, at: 0xCF8, length: 8)
        bus.write(address: 0xCFE, size: 2, value: 0x1_2345)
        let last = device.lastWrite.withLock { $0 }
        #expect(last?.offset == 6)
        #expect(last?.size == 2)
        #expect(last?.value == 0x2345)
    }

    @Test func manyRangesStaySorted() throws {
        // Register in scrambled order and check every range is found.
        var bases: [UInt64] = (0..<64).map { UInt64($0) * 0x10 }
        bases.shuffle()
        for base in bases { try bus.register(ProbeDevice(tag: base / 0x10 + 1), at: base, length: 0x8) }
        for index in 0..<64 {
            let base = UInt64(index) * 0x10
            #expect(bus.read(address: base + 7, size: 1) == ((UInt64(index) + 1) << 8 | 7) & 0xFF)
            #expect(bus.read(address: base + 8, size: 1) == 0xFF)
        }
    }
}
