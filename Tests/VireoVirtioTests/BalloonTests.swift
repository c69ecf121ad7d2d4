import Logging
import Testing
import VireoDevices
import VireoMemory
@testable import VireoVirtio

@Suite struct BalloonTests {
    @Test func inflateDiscardsPagesAndTargetRaisesAConfigInterrupt() throws {
        let balloon = VirtioBalloon(targetPages: 16, logger: Logger(label: "t"))
        let pci = try PCIDriver(balloon)
        #expect(pci.transport.readBar(0, offset: 0x2000, size: 4) == 16)
        pci.initialise()  // queue 0 = inflate on the fake driver's rings
        pci.setCommon(0x10, 2, 1)  // config vector 1
        // A page full of data, then the balloon takes it.
        let page: UInt64 = 0x30_0000
        try pci.driver.memory.write([UInt8](repeating: 0xAB, count: 4096), at: GuestAddress(page))
        var pfns = ByteWriter()
        pfns.append(UInt32(page >> 12))
        pfns.append(UInt32(0xFFFF_FFF0))  // outside RAM: ignored, not fatal
        try pci.driver.chain(at: 0, [(pfns.bytes, 8, false)])
        try pci.driver.makeAvailable(0)
        pci.notify(0)
        #expect(pci.driver.usedIndex == 1)
        #expect(balloon.discardedPages == 1)
        #expect(try pci.driver.memory.read(count: 4096, at: GuestAddress(page)) == [UInt8](repeating: 0, count: 4096))
        #expect(pci.status & 0x40 == 0)
        // The driver reports its size; the host changes the target.
        pci.transport.writeBar(0, offset: 0x2004, size: 4, value: 1)
        #expect(balloon.actualPages == 1)
        let before = pci.msi.count
        balloon.setTarget(pages: 32)
        #expect(pci.transport.readBar(0, offset: 0x2000, size: 4) == 32)
        #expect(pci.msi.count == before + 1)
    }

    /// §5.5.6.3: the driver's statistics buffer is kept until the host asks, then returned, refilled and read again.
    @Test func statisticsQueueKeepsTheBufferUntilAsked() throws {
        let balloon = VirtioBalloon(logger: Logger(label: "t"))
        #expect(balloon.features & VirtioBalloon.Feature.statsVQ != 0)
        #expect(balloon.features & VirtioBalloon.Feature.deflateOnOOM == 0)
        #expect(VirtioBalloon(deflateOnOOM: true, logger: Logger(label: "t")).features & VirtioBalloon.Feature.deflateOnOOM != 0)
        #expect(balloon.requestStatistics() == false)  // nothing offered yet
        let pci = try PCIDriver(balloon)
        func offer(free: UInt64, total: UInt64, notify: Bool = true) throws {
            var stats = ByteWriter()
            stats.append(UInt16(4)); stats.append(free)  // VIRTIO_BALLOON_S_MEMFREE
            stats.append(UInt16(5)); stats.append(total)  // VIRTIO_BALLOON_S_MEMTOT
            stats.append(UInt16(99)); stats.append(UInt64(7))  // unknown tag: skipped
            try pci.driver.chain(at: 0, [(stats.bytes, 30, false)])
            try pci.driver.makeAvailable(0)
            if notify { pci.notify(2) }
        }
        // Like Linux: the first buffer is queued before DRIVER_OK; activation picks it up.
        try offer(free: 100 << 20, total: 256 << 20, notify: false)
        pci.initialise(queue: 2)
        #expect(pci.driver.usedIndex == 0)  // kept
        #expect(balloon.statistics.generation == 1)
        #expect(balloon.statistics.values == ["free-memory": 100 << 20, "total-memory": 256 << 20])
        // The host asks: the buffer is returned used, with an interrupt.
        let before = pci.msi.count
        #expect(balloon.requestStatistics())
        #expect(pci.driver.usedIndex == 1)
        #expect(try pci.driver.usedElement(0).id == 0)
        #expect(pci.msi.count == before + 1)
        #expect(balloon.requestStatistics() == false)  // until the driver sends it back
        try offer(free: 50 << 20, total: 256 << 20)
        #expect(balloon.statistics.generation == 2)
        #expect(balloon.statistics.values["free-memory"] == 50 << 20)
        #expect(pci.status & 0x40 == 0)
    }
}
