import Testing
import VireoMemory
@testable import VireoVirtio

@Suite struct SplitQueueTests {
    @Test func popsAValidChainWithReadableThenWritableBuffers() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        try driver.chain(at: 0, [([1, 2, 3], 3, false), ([4, 5], 2, false), ([], 8, true)])
        try driver.makeAvailable(0)
        let chain = try #require(try queue.pop(driver.memory))
        #expect(chain.head == 0)
        #expect(chain.readable.count == 2 && chain.writable.count == 1)
        var reader = chain.reader(driver.memory)
        #expect(try reader.read(5) == [1, 2, 3, 4, 5])
        #expect(throws: VirtqueueError.self) { try reader.read(1) }
        var writer = chain.writer(driver.memory)
        try writer.write([9, 9, 9])
        #expect(writer.written == 3)
        #expect(try queue.pop(driver.memory) == nil)
        try queue.pushUsed(head: chain.head, length: writer.written, driver.memory)
        #expect(driver.usedIndex == 1)
        #expect(try driver.usedElement(0) == (0, 3))
    }

    @Test(arguments: [UInt16(0), 3, 12, 512])
    func rejectsBadQueueSizes(size: UInt16) throws {
        let driver = try FakeDriver()
        var queue = SplitQueue(maxSize: 256)
        queue.size = size
        queue.descriptorTable = driver.table
        queue.availRing = driver.avail
        queue.usedRing = driver.used
        #expect(throws: VirtqueueError.invalidSize(size)) { try queue.activate(features: 0, memory: driver.memory) }
    }

    @Test func rejectsRingsOutsideMemoryOrMisaligned() throws {
        let driver = try FakeDriver()
        var queue = SplitQueue(maxSize: 256)
        queue.size = 16
        queue.descriptorTable = GuestAddress(0xFFFF_F000)
        queue.availRing = driver.avail
        queue.usedRing = driver.used
        #expect(throws: VirtqueueError.self) { try queue.activate(features: 0, memory: driver.memory) }
        queue.descriptorTable = GuestAddress(driver.table.raw + 8)
        #expect(throws: VirtqueueError.self) { try queue.activate(features: 0, memory: driver.memory) }
        queue.descriptorTable = driver.table
        queue.usedRing = GuestAddress(driver.used.raw + 2)
        #expect(throws: VirtqueueError.self) { try queue.activate(features: 0, memory: driver.memory) }
    }

    @Test func rejectsHeadAndNextOutOfRange() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        try driver.makeAvailable(16)
        #expect(throws: VirtqueueError.descriptorIndexOutOfRange(16, tableSize: 16)) { try queue.pop(driver.memory) }
        try driver.setDescriptor(0, address: try driver.buffer(length: 4), length: 4, flags: 1, next: 40)
        try driver.makeAvailable(0)
        #expect(throws: VirtqueueError.descriptorIndexOutOfRange(40, tableSize: 16)) { try queue.pop(driver.memory) }
    }

    @Test func detectsLoops() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        let data = try driver.buffer(length: 4)
        try driver.setDescriptor(0, address: data, length: 4, flags: 1, next: 1)
        try driver.setDescriptor(1, address: data, length: 4, flags: 1, next: 0)
        try driver.makeAvailable(0)
        #expect(throws: VirtqueueError.chainLoop(head: 0)) { try queue.pop(driver.memory) }
        // A self-loop.
        try driver.setDescriptor(2, address: data, length: 4, flags: 1, next: 2)
        try driver.makeAvailable(2)
        #expect(throws: VirtqueueError.chainLoop(head: 2)) { try queue.pop(driver.memory) }
    }

    @Test func rejectsBuffersOutsideGuestMemory() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        try driver.setDescriptor(0, address: 0xFFFF_FFFF_FFFF_FFF0, length: 0x100)
        try driver.makeAvailable(0)
        #expect(throws: VirtqueueError.self) { try queue.pop(driver.memory) }
        // Starts inside RAM, runs past its end.
        try driver.setDescriptor(1, address: (4 << 20) - 8, length: 16)
        try driver.makeAvailable(1)
        #expect(throws: VirtqueueError.self) { try queue.pop(driver.memory) }
    }

    @Test func zeroLengthBuffersAreDropped() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        try driver.setDescriptor(0, address: 0xDEAD_BEEF_0000, length: 0, flags: 1, next: 1)
        try driver.setDescriptor(1, address: try driver.buffer(length: 8), length: 8, flags: 2)
        try driver.makeAvailable(0)
        let chain = try #require(try queue.pop(driver.memory))
        #expect(chain.readable.isEmpty && chain.writable.count == 1)
    }

    @Test func readableAfterWritableIsRefused() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        try driver.chain(at: 0, [([], 4, true), ([1], 1, false)])
        try driver.makeAvailable(0)
        #expect(throws: VirtqueueError.readableAfterWritable(head: 0)) { try queue.pop(driver.memory) }
    }

    @Test func followsIndirectTables() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        let indirect = GuestAddress(try driver.buffer(length: 48))
        let a = try driver.buffer([7, 7], length: 2)
        let b = try driver.buffer(length: 4)
        try driver.setDescriptor(0, address: a, length: 2, flags: 1, next: 1, in: indirect)
        try driver.setDescriptor(1, address: b, length: 4, flags: 2, in: indirect)
        try driver.setDescriptor(3, address: indirect.raw, length: 32, flags: 4)
        try driver.makeAvailable(3)
        let chain = try #require(try queue.pop(driver.memory))
        #expect(chain.head == 3 && chain.readableLength == 2 && chain.writableLength == 4)
    }

    @Test func refusesMalformedIndirectTables() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        let inner = GuestAddress(try driver.buffer(length: 32))
        let outer = GuestAddress(try driver.buffer(length: 32))
        try driver.setDescriptor(0, address: inner.raw, length: 16, flags: 4, in: outer)  // indirect in indirect
        try driver.setDescriptor(0, address: outer.raw, length: 16, flags: 4)
        try driver.makeAvailable(0)
        #expect(throws: VirtqueueError.nestedIndirect(head: 0)) { try queue.pop(driver.memory) }

        try driver.setDescriptor(1, address: inner.raw, length: 16, flags: 4 | 1, next: 2)
        try driver.makeAvailable(1)
        #expect(throws: VirtqueueError.indirectWithNext(head: 1)) { try queue.pop(driver.memory) }

        for length: UInt32 in [0, 15, 17] {
            try driver.setDescriptor(2, address: inner.raw, length: length, flags: 4)
            try driver.makeAvailable(2)
            #expect(throws: VirtqueueError.invalidIndirectLength(length)) { try queue.pop(driver.memory) }
        }
        // Loop inside an indirect table.
        try driver.setDescriptor(0, address: inner.raw, length: 4, flags: 1, next: 1, in: inner)
        try driver.setDescriptor(1, address: inner.raw, length: 4, flags: 1, next: 0, in: inner)
        try driver.setDescriptor(4, address: inner.raw, length: 32, flags: 4)
        try driver.makeAvailable(4)
        #expect(throws: VirtqueueError.chainLoop(head: 4)) { try queue.pop(driver.memory) }
    }

    @Test func indirectWithoutTheFeatureIsRefused() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue(features: 0)
        try driver.setDescriptor(0, address: try driver.buffer(length: 16), length: 16, flags: 4)
        try driver.makeAvailable(0)
        #expect(throws: VirtqueueError.indirectNotNegotiated(head: 0)) { try queue.pop(driver.memory) }
    }

    @Test func availIndexJumpIsFatal() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        try driver.memory.writeInteger(UInt16(17), at: GuestAddress(driver.avail.raw + 2))
        #expect(throws: VirtqueueError.availIndexJump(avail: 17, consumed: 0, size: 16)) { try queue.pop(driver.memory) }
    }

    @Test func indexesWrapAround() throws {
        let driver = try FakeDriver(size: 4)
        var queue = try driver.queue()
        try driver.chain(at: 0, [([], 4, true)])
        for round in 0..<70_000 {
            try driver.makeAvailable(0)
            let chain = try #require(try queue.pop(driver.memory), "round \(round)")
            try queue.pushUsed(head: chain.head, length: 0, driver.memory)
        }
        #expect(driver.usedIndex == UInt16(truncatingIfNeeded: 70_000))
    }

    @Test func eventIndexSuppressesNotifications() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue()
        try driver.chain(at: 0, [([], 4, true)])
        try driver.setUsedEvent(0)
        try driver.makeAvailable(0)
        let first = try #require(try queue.pop(driver.memory))
        #expect(driver.availEvent == 1)
        try queue.pushUsed(head: first.head, length: 0, driver.memory)
        do { let notify = queue.needsNotification(driver.memory); #expect(notify) }  // used_event 0 crossed
        try driver.makeAvailable(0)
        let second = try #require(try queue.pop(driver.memory))
        try queue.pushUsed(head: second.head, length: 0, driver.memory)
        do { let notify = queue.needsNotification(driver.memory); #expect(!notify) }  // driver still wants an interrupt at 0 only
        try driver.setUsedEvent(5)
        do { let notify = queue.needsNotification(driver.memory); #expect(!notify) }
    }

    @Test func noInterruptFlagWithoutEventIndex() throws {
        let driver = try FakeDriver()
        var queue = try driver.queue(features: 0)
        try driver.chain(at: 0, [([], 4, true)])
        try driver.makeAvailable(0)
        let chain = try #require(try queue.pop(driver.memory))
        try queue.pushUsed(head: chain.head, length: 0, driver.memory)
        do { let notify = queue.needsNotification(driver.memory); #expect(notify) }
        try driver.memory.writeInteger(UInt16(1), at: driver.avail)
        do { let notify = queue.needsNotification(driver.memory); #expect(!notify) }
    }
}

/// Hostile rings: random descriptor tables and available rings must give a chain or a
/// `VirtqueueError`, never a trap, and every accepted buffer lies inside guest memory.
@Suite struct SplitQueueFuzzTests {
    @Test func randomTablesNeverTrap() throws {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let driver = try FakeDriver(size: 8, memorySize: 2 << 20)
            var queue = try driver.queue()
            var table = [UInt8](repeating: 0, count: 16 * 8)
            for index in table.indices { table[index] = generator.next() }
            // Keep some addresses inside RAM so chains get past the first descriptor.
            for entry in 0..<8 where Bool.random(using: &generator) {
                let address = UInt64.random(in: 0..<(2 << 20), using: &generator)
                for byte in 0..<8 { table[16 * entry + byte] = UInt8(truncatingIfNeeded: address >> (8 * byte)) }
                table[16 * entry + 10] = 0
                table[16 * entry + 11] = 0
                table[16 * entry + 14] = UInt8.random(in: 0..<10, using: &generator)
                table[16 * entry + 15] = 0
            }
            try driver.memory.write(table, at: driver.table)
            for _ in 0..<4 { try driver.makeAvailable(UInt16.random(in: 0..<10, using: &generator)) }
            for _ in 0..<4 {
                guard let chain = try? queue.pop(driver.memory) else { continue }
                for buffer in chain.readable + chain.writable {
                    #expect(driver.memory.isValid(buffer.address, length: UInt64(buffer.length)))
                }
            }
        }
    }
}
