#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import Testing
import VireoDevices
import VireoMemory
import VireoQCOW2
@testable import VireoVirtio

/// Records the MSI messages a transport sends.
final class RecordingMSI: MSIController {
    let messages = Mutex<[MSIMessage]>([])
    func signal(vector: Int, message: MSIMessage) { messages.withLock { $0.append(message) } }
    var count: Int { messages.withLock { $0.count } }
}

/// Drives a `VirtioPCIDevice` through BAR 0/1 the way Linux's virtio_pci_modern does (§3.1.1).
struct PCIDriver {
    let transport: VirtioPCIDevice
    let driver: FakeDriver
    let msi = RecordingMSI()

    init(_ device: any VirtioDevice, queueSize: UInt16 = 16, intx: (any InterruptLine)? = nil,
         memoryRegions: [(start: GuestAddress, size: UInt64)]? = nil) throws {
        driver = try FakeDriver(size: queueSize, regions: memoryRegions)
        transport = VirtioPCIDevice(device: device, memory: driver.memory, msi: msi, bar0: 0xC000_0000, msixBar: 0xC000_4000,
                                    intx: intx, logger: Logger(label: "test"))
    }

    func common(_ offset: UInt64, _ size: Int) -> UInt64 { transport.readBar(0, offset: offset, size: size) }
    func setCommon(_ offset: UInt64, _ size: Int, _ value: UInt64) { transport.writeBar(0, offset: offset, size: size, value: value) }
    var status: UInt8 { UInt8(common(0x14, 1)) }

    /// Reset, ACKNOWLEDGE|DRIVER, features, FEATURES_OK, setup of `queue` (0) on the fake driver's rings, MSI-X vector 1 for it, DRIVER_OK.
    func initialise(features: UInt64? = nil, enableQueue: Bool = true, queue: UInt64 = 0) {
        setCommon(0x14, 1, 0)
        setCommon(0x14, 1, 3)
        setCommon(0x00, 4, 0)
        let low = common(0x04, 4)
        setCommon(0x00, 4, 1)
        let high = common(0x04, 4)
        let offered = high << 32 | low
        let wanted = features ?? offered
        setCommon(0x08, 4, 0); setCommon(0x0C, 4, wanted & 0xFFFF_FFFF)
        setCommon(0x08, 4, 1); setCommon(0x0C, 4, wanted >> 32)
        setCommon(0x14, 1, 0x0B)
        // MSI-X: enable in the capability, program vector 1, unmask.
        transport.writeBar(VirtioPCIDevice.msixBar, offset: 16, size: 4, value: 0xFEE0_0000)
        transport.writeBar(VirtioPCIDevice.msixBar, offset: 24, size: 4, value: 0x41)
        transport.writeBar(VirtioPCIDevice.msixBar, offset: 28, size: 4, value: 0)
        enableMSIX()
        setCommon(0x16, 2, queue)
        setCommon(0x18, 2, UInt64(driver.size))
        setCommon(0x1A, 2, 1)
        setCommon(0x20, 8, driver.table.raw)
        setCommon(0x28, 4, driver.avail.raw)
        setCommon(0x2C, 4, 0)
        setCommon(0x30, 8, driver.used.raw)
        if enableQueue { setCommon(0x1C, 2, 1) }
        setCommon(0x14, 1, 0x0F)
    }

    func enableMSIX() {
        var cap = Int(transport.readConfig(offset: 0x34, size: 1))
        while cap != 0 {
            if transport.readConfig(offset: cap, size: 1) == 0x11 {
                transport.writeConfig(offset: cap + 2, size: 2, value: 0x8000)
                return
            }
            cap = Int(transport.readConfig(offset: cap + 1, size: 1))
        }
    }

    func notify(_ queue: Int = 0) { transport.writeBar(0, offset: 0x3000 + UInt64(4 * queue), size: 2, value: UInt64(queue)) }
}

@Suite struct TransportTests {
    @Test func pciIdentityAndCapabilities() throws {
        let pci = try PCIDriver(VirtioRng())
        #expect(pci.transport.readConfig(offset: 0, size: 4) == 0x1044_1AF4)
        #expect(pci.transport.readConfig(offset: 0x06, size: 2) & 0x10 != 0)
        var types: [UInt32] = []
        var cap = Int(pci.transport.readConfig(offset: 0x34, size: 1))
        while cap != 0 {
            if pci.transport.readConfig(offset: cap, size: 1) == 0x09 { types.append(pci.transport.readConfig(offset: cap + 3, size: 1)) }
            cap = Int(pci.transport.readConfig(offset: cap + 1, size: 1))
        }
        #expect(types == [1, 2, 3, 4, 5])
        // BAR sizing: all ones reads back the size mask; both BARs are 64-bit (type 10b), the upper halves all writable.
        for (register, size) in [(0x10, VirtioPCIDevice.bar0Size), (0x18, VirtioPCIDevice.msixBarSize)] {
            pci.transport.writeConfig(offset: register, size: 4, value: 0xFFFF_FFFF)
            pci.transport.writeConfig(offset: register + 4, size: 4, value: 0xFFFF_FFFF)
            #expect(pci.transport.readConfig(offset: register, size: 4) == ~UInt32(size - 1) | 0x4)
            #expect(pci.transport.readConfig(offset: register + 4, size: 4) == 0xFFFF_FFFF)
        }
        // MSI-X table and PBA live in BAR 2 (BIR 2).
        var msix = Int(pci.transport.readConfig(offset: 0x34, size: 1))
        while msix != 0, pci.transport.readConfig(offset: msix, size: 1) != 0x11 { msix = Int(pci.transport.readConfig(offset: msix + 1, size: 1)) }
        #expect(pci.transport.readConfig(offset: msix + 4, size: 4) == 2)
        #expect(pci.transport.readConfig(offset: msix + 8, size: 4) == 0x802)
    }

    /// §4.1.4.9: the VIRTIO_PCI_CAP_PCI_CFG window reaches BAR 0 through configuration space.
    @Test func pciConfigAccessWindow() throws {
        let pci = try PCIDriver(VirtioRng())
        var cap = Int(pci.transport.readConfig(offset: 0x34, size: 1))
        while cap != 0, pci.transport.readConfig(offset: cap + 3, size: 1) != 5 || pci.transport.readConfig(offset: cap, size: 1) != 0x09 {
            cap = Int(pci.transport.readConfig(offset: cap + 1, size: 1))
        }
        #expect(cap != 0)
        pci.transport.writeConfig(offset: cap + 4, size: 1, value: 0)  // bar 0
        pci.transport.writeConfig(offset: cap + 8, size: 4, value: 0x12)  // num_queues
        pci.transport.writeConfig(offset: cap + 12, size: 4, value: 2)
        #expect(pci.transport.readConfig(offset: cap + 16, size: 4) == 1)
        pci.transport.writeConfig(offset: cap + 8, size: 4, value: 0x16)  // queue_select
        pci.transport.writeConfig(offset: cap + 16, size: 4, value: 7)
        #expect(pci.common(0x16, 2) == 7)
        pci.transport.writeConfig(offset: cap + 12, size: 4, value: 3)  // bad length: plain config access
        #expect(pci.transport.readConfig(offset: cap + 16, size: 4) == 0)
    }

    @Test func barDecodingFollowsTheCommandRegisterAndReprogramming() throws {
        let pci = try PCIDriver(VirtioRng())
        let window = PCIMemoryWindow(base: 0xC000_0000, length: 0x1000_0000)
        window.attach(pci.transport)
        #expect(window.read(offset: 0x12, size: 2) == 0xFFFF)  // memory decoding off
        pci.transport.writeConfig(offset: 4, size: 2, value: 2)
        #expect(window.read(offset: 0x12, size: 2) == 1)  // num_queues
        pci.transport.writeConfig(offset: 0x10, size: 4, value: 0xC100_0000)
        #expect(window.read(offset: 0x12, size: 2) == 0xFFFF)
        #expect(window.read(offset: 0x0100_0012, size: 2) == 1)
        // Moved above 4 GiB through the upper BAR register: a 64-bit window there decodes it.
        let high = PCIMemoryWindow(base: 0x1_0000_0000, length: 0x4_0000_0000)
        high.attach(pci.transport)
        pci.transport.writeConfig(offset: 0x14, size: 4, value: 0x2)
        #expect(window.read(offset: 0x0100_0012, size: 2) == 0xFFFF)
        #expect(high.read(offset: 0x1_C100_0012, size: 2) == 1)
        #expect(pci.transport.decodedBar(0)?.base == 0x2_C100_0000)
        #expect(pci.transport.decodedBar(1) == nil)  // the upper half is no BAR of its own
    }

    @Test func rngFillsBuffersAndInterrupts() throws {
        let pci = try PCIDriver(VirtioRng())
        pci.initialise()
        #expect(pci.status == 0x0F)
        try pci.driver.chain(at: 0, [([], 64, true)])
        try pci.driver.makeAvailable(0)
        pci.notify()
        #expect(pci.driver.usedIndex == 1)
        #expect(try pci.driver.usedElement(0) == (0, 64))
        #expect(pci.msi.messages.withLock { $0 } == [MSIMessage(address: 0xFEE0_0000, data: 0x41)])
    }

    /// Without MSI-X (Linux `pci=nomsi`), INTA stays asserted while the ISR is non-zero; reading it releases the line.
    @Test func intxWhenMSIXIsOff() throws {
        let line = LevelRecorder()
        let pci = try PCIDriver(VirtioRng(), intx: line)
        #expect(pci.transport.readConfig(offset: 0x3D, size: 1) == 1)  // interrupt pin INTA
        #expect(try PCIDriver(VirtioRng()).transport.readConfig(offset: 0x3D, size: 1) == 0)
        pci.initialise()
        var cap = Int(pci.transport.readConfig(offset: 0x34, size: 1))
        while pci.transport.readConfig(offset: cap, size: 1) != 0x11 { cap = Int(pci.transport.readConfig(offset: cap + 1, size: 1)) }
        pci.transport.writeConfig(offset: cap + 2, size: 2, value: 0)  // MSI-X off
        try pci.driver.chain(at: 0, [([], 64, true)])
        try pci.driver.makeAvailable(0)
        pci.notify()
        #expect(pci.driver.usedIndex == 1)
        #expect(line.levels == [true])
        #expect(pci.msi.count == 0)
        #expect(pci.transport.readBar(0, offset: 0x1000, size: 1) == 1)  // ISR: queue interrupt
        #expect(line.levels == [true, false])
        // Interrupt Disable (command bit 10) holds the line low; clearing it raises the pending interrupt.
        pci.transport.writeConfig(offset: 4, size: 2, value: 0x406)
        try pci.driver.setUsedEvent(1)  // event index: interrupt after the next used buffer
        try pci.driver.chain(at: 1, [([], 16, true)])
        try pci.driver.makeAvailable(1)
        pci.notify()
        #expect(line.levels == [true, false])
        pci.transport.writeConfig(offset: 4, size: 2, value: 0x006)
        #expect(line.levels == [true, false, true])
        // Enabling MSI-X releases INTx; a device reset does too.
        pci.transport.writeConfig(offset: cap + 2, size: 2, value: 0x8000)
        #expect(line.levels == [true, false, true, false])
    }

    @Test func featuresWithoutVersion1AreRefused() throws {
        let pci = try PCIDriver(VirtioRng())
        pci.setCommon(0x14, 1, 3)
        pci.setCommon(0x08, 4, 0); pci.setCommon(0x0C, 4, 0)
        pci.setCommon(0x14, 1, 0x0B)
        #expect(pci.status & 0x08 == 0)
    }

    @Test func malformedQueueSetsNeedsResetAndResetRecovers() throws {
        let pci = try PCIDriver(VirtioRng())
        pci.initialise()
        try pci.driver.setDescriptor(0, address: 0, length: 4, flags: 1 | 2, next: 0)  // self loop
        try pci.driver.makeAvailable(0)
        pci.notify()
        #expect(pci.status & 0x40 != 0)
        #expect(pci.transport.readBar(0, offset: 0x1000, size: 1) & 2 != 0)  // ISR: config change
        #expect(pci.transport.readBar(0, offset: 0x1000, size: 1) == 0)  // read clears
        pci.setCommon(0x14, 1, 0)
        #expect(pci.status == 0)
    }

    /// The diagnostics snapshot (the control socket's `virtio`) shows both sides of each queue:
    /// what the driver made available and what the device took and returned, and why a device
    /// needs a reset.
    @Test func statusShowsQueueProgressOnBothSides() throws {
        let pci = try PCIDriver(VirtioRng())
        var status = pci.transport.status()
        #expect(status.deviceType == .entropy && status.status == 0 && status.failure == nil)
        pci.initialise()
        for head: UInt16 in 0..<3 { try pci.driver.chain(at: head, [([], 8, true)]) }
        try pci.driver.makeAvailable(0)
        pci.notify()
        try pci.driver.makeAvailable(1)
        try pci.driver.makeAvailable(2)  // not yet notified: the device has not taken these
        status = pci.transport.status()
        #expect(status.status == 0x0F)
        let queue = try #require(status.queues.first)
        #expect(queue.ready && queue.eventIndex && queue.size == pci.driver.size)
        #expect(queue.nextAvail == 1 && queue.nextUsed == 1 && queue.usedIndex == 1)
        #expect(queue.availIndex == 3 && queue.waiting == 2)
        #expect(queue.availEvent == 1)
        let json = status.json(pci: "00:03.0")
        #expect(json.contains(#""pci":"00:03.0","device":"entropy","status":15,"driver_ok":true,"needs_reset":false,"failure":null"#))
        #expect(json.contains(#""next_avail":1,"next_used":1"#) && json.contains(#""avail_idx":3"#) && json.contains(#""waiting":2}"#))

        try pci.driver.setDescriptor(3, address: 0, length: 4, flags: 1 | 2, next: 3)  // a loop
        try pci.driver.makeAvailable(3)
        pci.notify()
        status = pci.transport.status()
        #expect(status.status & 0x40 != 0)
        #expect(status.failure?.contains("queue 0") == true)
        #expect(status.json(pci: "00:03.0").contains(#""needs_reset":true"#))
        pci.setCommon(0x14, 1, 0)
        status = pci.transport.status()
        #expect(status.failure == nil && status.queues.first?.ready == false)
    }

    @Test func badRingSizeAtDriverOKNeedsReset() throws {
        let pci = try PCIDriver(VirtioRng(), queueSize: 16)
        pci.setCommon(0x14, 1, 3)
        pci.setCommon(0x08, 4, 1); pci.setCommon(0x0C, 4, 1)
        pci.setCommon(0x14, 1, 0x0B)
        pci.setCommon(0x18, 2, 3)  // not a power of two
        pci.setCommon(0x1C, 2, 1)
        pci.setCommon(0x14, 1, 0x0F)
        #expect(pci.status & 0x40 != 0)
    }

    @Test func maskedVectorIsPendingUntilUnmasked() throws {
        let pci = try PCIDriver(VirtioRng())
        pci.initialise()
        pci.transport.writeBar(VirtioPCIDevice.msixBar, offset: 28, size: 4, value: 1)  // mask vector 1
        try pci.driver.chain(at: 0, [([], 8, true)])
        try pci.driver.makeAvailable(0)
        pci.notify()
        #expect(pci.msi.count == 0)
        #expect(pci.transport.readBar(VirtioPCIDevice.msixBar, offset: 0x800, size: 8) == 2)
        pci.transport.writeBar(VirtioPCIDevice.msixBar, offset: 28, size: 4, value: 0)
        #expect(pci.msi.count == 1)
    }
}

@Suite struct BlockTests {
    func makeDisk(sectors: Int = 64) throws -> (String, any BlockImage) {
        let path = "/tmp/vireo-virtio-test-\(UInt32.random(in: 0...UInt32.max)).img"
        try RawImage.create(path, size: UInt64(sectors * 512))
        return (path, try openImage(path, options: ImageOptions(writable: true, format: .raw)))
    }

    /// Submits header + data + status as one chain; returns the status byte and the used length.
    func request(_ pci: PCIDriver, type: UInt32, sector: UInt64, out: [UInt8] = [], inLength: Int = 0, head: UInt16 = 0) throws -> (UInt8, UInt32, UInt64?) {
        var header = ByteWriter()
        header.append(type); header.append(UInt32(0)); header.append(sector)
        var parts: [(data: [UInt8], length: Int, writable: Bool)] = [(header.bytes, 16, false)]
        if !out.isEmpty { parts.append((out, out.count, false)) }
        if inLength > 0 { parts.append(([], inLength, true)) }
        parts.append(([0xFF], 1, true))
        let addresses = try pci.driver.chain(at: head, parts)
        try pci.driver.makeAvailable(head)
        pci.notify()
        let used = try pci.driver.usedElement(pci.driver.usedIndex &- 1)
        let status = try pci.driver.memory.readInteger(UInt8.self, at: GuestAddress(addresses.last!))
        return (status, used.length, inLength > 0 ? addresses[addresses.count - 2] : nil)
    }

    @Test func writeReadFlushGetIDAndErrors() throws {
        let (path, image) = try makeDisk()
        defer { unlink(path) }
        let pci = try PCIDriver(VirtioBlock(image: image, readOnly: false, serial: "disk-7", logger: Logger(label: "t")))
        pci.initialise()
        #expect(pci.transport.readBar(0, offset: 0x2000, size: 8) == 64)  // capacity
        let data = (0..<1024).map { UInt8(truncatingIfNeeded: $0 * 7) }
        #expect(try request(pci, type: 1, sector: 3, out: data).0 == 0)
        let (status, length, buffer) = try request(pci, type: 0, sector: 3, inLength: 1024, head: 4)
        #expect(status == 0 && length == 1025)
        #expect(try pci.driver.memory.read(count: 1024, at: GuestAddress(buffer!)) == data)
        #expect(try request(pci, type: 4, sector: 0).0 == 0)
        let id = try request(pci, type: 8, sector: 0, inLength: 20, head: 8)
        #expect(try pci.driver.memory.read(count: 6, at: GuestAddress(id.2!)) == Array("disk-7".utf8))
        #expect(try request(pci, type: 0, sector: 63, inLength: 1024, head: 0).0 == 1)  // past the end
        #expect(try request(pci, type: 0, sector: UInt64.max / 2, inLength: 512, head: 4).0 == 1)  // overflow
        #expect(try request(pci, type: 0, sector: 0, inLength: 100, head: 8).0 == 1)  // not whole sectors
        #expect(try request(pci, type: 99, sector: 0, head: 0).0 == 2)  // unsupported
        // Write zeroes over sector 3.
        var segment = ByteWriter()
        segment.append(UInt64(3)); segment.append(UInt32(1)); segment.append(UInt32(0))
        #expect(try request(pci, type: 13, sector: 0, out: segment.bytes, head: 4).0 == 0)
        let again = try request(pci, type: 0, sector: 3, inLength: 512, head: 8)
        #expect(try pci.driver.memory.read(count: 512, at: GuestAddress(again.2!)) == [UInt8](repeating: 0, count: 512))
        #expect(pci.status & 0x40 == 0)
    }

    @Test func readOnlyDiskRefusesWrites() throws {
        let (path, image) = try makeDisk()
        defer { unlink(path) }
        let block = VirtioBlock(image: image, readOnly: true, serial: "ro", logger: Logger(label: "t"))
        #expect(block.features & VirtioBlock.Feature.readOnly != 0)
        let pci = try PCIDriver(block)
        pci.initialise()
        #expect(try request(pci, type: 1, sector: 0, out: [UInt8](repeating: 1, count: 512)).0 == 1)
    }

    @Test func requestWithoutStatusByteNeedsReset() throws {
        let (path, image) = try makeDisk()
        defer { unlink(path) }
        let pci = try PCIDriver(VirtioBlock(image: image, readOnly: false, serial: "x", logger: Logger(label: "t")))
        pci.initialise()
        try pci.driver.chain(at: 0, [([0, 0, 0, 0], 16, false)])
        try pci.driver.makeAvailable(0)
        pci.notify()
        #expect(pci.status & 0x40 != 0)
    }
}

/// Records the levels a device drives on its INTx line.
final class LevelRecorder: InterruptLine {
    private let calls = Mutex<[Bool]>([])
    func setLevel(_ asserted: Bool) { calls.withLock { $0.append(asserted) } }
    var levels: [Bool] { calls.withLock { $0 } }
}
