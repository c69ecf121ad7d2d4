import Synchronization
import Testing
import VireoDevices
import VireoMemory
@testable import VireoVirtio

final class CollectingOutput: ConsoleOutput {
    let bytes = Mutex<[UInt8]>([])
    func write(_ data: [UInt8]) { bytes.withLock { $0 += data } }
}

@Suite struct ConsoleTests {
    @Test func transmitReachesTheOutputAndInputFillsPostedBuffers() throws {
        let output = CollectingOutput()
        let console = VirtioConsole(output: output)
        let pci = try PCIDriver(console)
        // Receive queue 0 on the fake driver's rings, transmit queue 1 on a second set.
        let second = try FakeDriverRings(memory: pci.driver.memory, base: 0x8_0000, size: 16)
        pci.setCommon(0x14, 1, 0)
        pci.setCommon(0x14, 1, 3)
        pci.setCommon(0x08, 4, 1); pci.setCommon(0x0C, 4, 1)
        pci.setCommon(0x14, 1, 0x0B)
        for (queue, rings) in [(0, (pci.driver.table, pci.driver.avail, pci.driver.used)), (1, (second.table, second.avail, second.used))] {
            pci.setCommon(0x16, 2, UInt64(queue))
            pci.setCommon(0x18, 2, 16)
            pci.setCommon(0x20, 8, rings.0.raw)
            pci.setCommon(0x28, 8, rings.1.raw)
            pci.setCommon(0x30, 8, rings.2.raw)
            pci.setCommon(0x1C, 2, 1)
        }
        pci.setCommon(0x14, 1, 0x0F)
        #expect(pci.status == 0x0F)

        try second.post(memory: pci.driver.memory, data: Array("hello hvc0".utf8), writable: false)
        pci.notify(1)
        #expect(output.bytes.withLock { $0 } == Array("hello hvc0".utf8))

        // Input waits for a receive buffer.
        console.enqueueInput(Array("typed".utf8))
        #expect(pci.driver.usedIndex == 0)
        let buffer = try pci.driver.buffer(length: 64)
        try pci.driver.setDescriptor(0, address: buffer, length: 64, flags: 2)
        try pci.driver.makeAvailable(0)
        pci.notify(0)
        #expect(pci.driver.usedIndex == 1)
        #expect(try pci.driver.usedElement(0).length == 5)
        #expect(try pci.driver.memory.read(count: 5, at: GuestAddress(buffer)) == Array("typed".utf8))
        // With no input left, a posted buffer stays with the device.
        try pci.driver.makeAvailable(0)
        pci.notify(0)
        #expect(pci.driver.usedIndex == 1)
    }
}

/// A second split queue's rings in the same memory, for devices with several queues.
struct FakeDriverRings {
    let table: GuestAddress
    let avail: GuestAddress
    let used: GuestAddress
    let size: UInt16
    var heap: UInt64

    init(memory: GuestMemory, base: UInt64, size: UInt16) throws {
        self.size = size
        table = GuestAddress(base)
        avail = GuestAddress(base + 16 * UInt64(size))
        used = GuestAddress(base + 0x1000)
        heap = base + 0x2000
    }

    /// One-descriptor chain at index 0 made available as the first entry.
    func post(memory: GuestMemory, data: [UInt8], writable: Bool) throws {
        try memory.write(data, at: GuestAddress(heap))
        try memory.writeInteger(heap, at: table)
        try memory.writeInteger(UInt32(data.count), at: GuestAddress(table.raw + 8))
        try memory.writeInteger(UInt16(writable ? 2 : 0), at: GuestAddress(table.raw + 12))
        try memory.writeInteger(UInt16(0), at: GuestAddress(avail.raw + 4))
        try memory.writeInteger(UInt16(1), at: GuestAddress(avail.raw + 2))
    }
}
