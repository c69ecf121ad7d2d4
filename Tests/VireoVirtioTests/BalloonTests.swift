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
}
