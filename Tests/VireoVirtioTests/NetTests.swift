import Synchronization
import Testing
import VireoDevices
import VireoMemory
import VireoSwitch
@testable import VireoVirtio

/// An in-memory `NetBackend`: records what the device sends, hands out queued packets.
final class MemoryNetBackend: NetBackend {
    let sent = Mutex<[[UInt8]]>([])
    let incoming = Mutex<[[UInt8]]>([])
    let offloads: NetOffloads
    let enabled = Mutex<NetOffloads?>(nil)
    init(offloads: NetOffloads = []) { self.offloads = offloads }
    func enableReceiveOffloads(_ offloads: NetOffloads) -> Bool {
        enabled.withLock { $0 = offloads }
        return true
    }
    /// When set, how many packets the backend takes in all before it reports itself busy.
    let room = Mutex<Int?>(nil)
    func send(_ packet: [UInt8]) -> NetSendResult {
        room.withLock { room in
            sent.withLock { sent in
                if let room, sent.count >= room { return .busy }
                sent.append(packet)
                return .sent
            }
        }
    }
    func receive() -> [UInt8]? { incoming.withLock { $0.isEmpty ? nil : $0.removeFirst() } }
    var pollDescriptor: Int32? { nil }
    let peer = Atomic<Bool>(true)
    var isLinkUp: Bool { peer.load(ordering: .relaxed) }
}

final class RecordingInterrupt: VirtioInterrupt {
    let queues = Mutex<[Int]>([])
    let configChanges = Atomic<Int>(0)
    func notifyQueue(_ index: Int) { queues.withLock { $0.append(index) } }
    func notifyConfigChange() { configChanges.add(1, ordering: .relaxed) }
}

/// The reasons a device asked for DEVICE_NEEDS_RESET.
final class FailureLog: Sendable {
    let reasons = Mutex<[String]>([])
    func withLock<T>(_ body: (inout [String]) -> T) -> T { reasons.withLock { body(&$0) } }
}

/// A virtio-net activated directly on fake rings: receiveq on `driver`, transmitq on `tx`.
struct NetHarness {
    let driver: FakeDriver
    let tx: FakeDriverRings
    let net: VirtioNet
    let backend: MemoryNetBackend
    let interrupt = RecordingInterrupt()
    let failures = FailureLog()

    /// `extraFeatures`: what the driver negotiates beyond VERSION_1, MAC and STATUS; `realBackend`
    /// replaces the in-memory one (which then sees nothing).
    init(offloads: NetOffloads = [], extraFeatures: UInt64 = 0, realBackend: (any NetBackend)? = nil) throws {
        driver = try FakeDriver(size: 16)
        tx = try FakeDriverRings(memory: driver.memory, base: 0x8_0000, size: 16)
        backend = MemoryNetBackend(offloads: offloads)
        net = VirtioNet(mac: [0x52, 0x54, 0, 1, 2, 3], backend: realBackend ?? backend)
        var txQueue = SplitQueue(maxSize: 256)
        txQueue.size = 16
        txQueue.descriptorTable = tx.table
        txQueue.availRing = tx.avail
        txQueue.usedRing = tx.used
        txQueue.ready = true
        let features = VirtioFeature.version1 | VirtioNet.featureMAC | VirtioNet.featureStatus | extraFeatures
        try txQueue.activate(features: features, memory: driver.memory)
        let failures = self.failures
        net.activate(ActiveQueues(VirtioActivation(
            features: features, memory: driver.memory, queues: [try driver.queue(features: features), txQueue],
            interrupt: interrupt, fail: { reason in failures.withLock { $0.append(reason) } })))
    }

    /// Makes `packet` available on the transmit queue as one chain of descriptors holding
    /// `pieces` of it, and notifies the device.
    func transmit(_ packet: [UInt8], splitAt pieces: [Range<Int>]) throws {
        for (index, range) in pieces.enumerated() {
            let address = try driver.buffer(Array(packet[range]))
            let last = index == pieces.count - 1
            try driver.setDescriptor(UInt16(index), address: address, length: UInt32(range.count),
                                     flags: last ? 0 : 1, next: last ? 0 : UInt16(index + 1), in: tx.table)
        }
        try makeTxAvailable(0, slot: 0)
        net.queueNotified(VirtioNet.transmitQueue)
    }

    var txUsedIndex: UInt16 { (try? driver.memory.readInteger(UInt16.self, at: GuestAddress(tx.used.raw + 2))) ?? 0 }

    /// Makes descriptor chain head `head` available on the transmit queue (slot `slot`).
    func makeTxAvailable(_ head: UInt16, slot: UInt16) throws {
        try driver.memory.writeInteger(head, at: GuestAddress(tx.avail.raw + 4 + 2 * UInt64(slot)))
        try driver.memory.writeInteger(slot + 1, at: GuestAddress(tx.avail.raw + 2))
    }
}

@Suite struct NetTests {
    static let header = [UInt8](repeating: 0, count: 12)
    static let frame: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x52, 0x54, 0, 1, 2, 3, 0x08, 0x06] + Array(repeating: 0xAB, count: 46)

    @Test func configSpaceHoldsTheMACAndLinkStatus() throws {
        let h = try NetHarness()
        #expect(h.net.features & VirtioNet.featureMAC != 0)
        #expect(h.net.readConfig(offset: 0, size: 4) == 0x0100_5452)
        #expect(h.net.readConfig(offset: 4, size: 2) == 0x0302)
        #expect(h.net.readConfig(offset: 6, size: 2) == 1)
        h.net.setLink(up: false)
        #expect(h.net.readConfig(offset: 6, size: 2) == 0)
        #expect(h.interrupt.configChanges.load(ordering: .relaxed) == 1)
    }

    @Test func backendLosingItsPeerTakesTheLinkDown() throws {
        let h = try NetHarness()
        h.net.backendReadable()
        #expect(h.net.readConfig(offset: 6, size: 2) == 1)
        h.backend.peer.store(false, ordering: .relaxed)
        h.net.backendReadable()
        #expect(h.net.readConfig(offset: 6, size: 2) == 0)
        #expect(h.interrupt.configChanges.load(ordering: .relaxed) == 1)
        h.net.backendReadable()
        #expect(h.interrupt.configChanges.load(ordering: .relaxed) == 1, "one interrupt per change")
    }

    @Test func transmitChainReachesTheBackend() throws {
        let h = try NetHarness()
        // Header and frame in two descriptors, as Linux sends them.
        let headerAddress = try h.driver.buffer(Self.header)
        let frameAddress = try h.driver.buffer(Self.frame)
        try h.driver.setDescriptor(0, address: headerAddress, length: 12, flags: 1, next: 1, in: h.tx.table)
        try h.driver.setDescriptor(1, address: frameAddress, length: UInt32(Self.frame.count), in: h.tx.table)
        try h.makeTxAvailable(0, slot: 0)
        h.net.queueNotified(VirtioNet.transmitQueue)
        #expect(h.backend.sent.withLock { $0 } == [Self.header + Self.frame])
        #expect(h.txUsedIndex == 1)
        #expect(h.net.counters.txPackets == 1)
        #expect(h.failures.withLock { $0.isEmpty })
    }

    /// The device checks its own copy of the header and hands the backend that copy and the frame
    /// where the guest left it, however the driver split them over descriptors.
    @Test func aPacketSplitOverManyDescriptorsReachesTheBackendWhole() throws {
        let h = try NetHarness()
        let packet = Self.header + Self.frame
        // Header in two pieces, the second also holding the frame's start; the frame in three.
        try h.transmit(packet, splitAt: [0..<5, 5..<20, 20..<21, 21..<50, 50..<packet.count])
        #expect(h.backend.sent.withLock { $0 } == [packet])
        #expect(h.net.counters.txPackets == 1)
        #expect(h.failures.withLock { $0.isEmpty })
    }

    /// Makes `count` one-descriptor packets available on the transmit queue, each ending in its index.
    private func queueTransmitPackets(_ h: NetHarness, _ count: Int) throws {
        for index in 0..<count {
            let packet = Self.header + Self.frame + [UInt8(index)]
            let address = try h.driver.buffer(packet)
            try h.driver.setDescriptor(UInt16(index), address: address, length: UInt32(packet.count), in: h.tx.table)
            try h.makeTxAvailable(UInt16(index), slot: UInt16(index))
        }
    }

    /// A busy backend (a switch port whose ring is full) leaves the guest's packets in the
    /// transmit queue; once it is readable again (the switch's kick) they go out in order, none lost.
    @Test func aBusyBackendHoldsTransmitPacketsInOrder() throws {
        let h = try NetHarness()
        h.backend.room.withLock { $0 = 2 }
        try queueTransmitPackets(h, 5)
        h.net.queueNotified(VirtioNet.transmitQueue)
        #expect(h.backend.sent.withLock { $0.count } == 2)
        #expect(h.txUsedIndex == 2, "the packet the backend had no room for stays with the driver")
        #expect(h.net.counters.txWaits == 1 && h.net.counters.txDropped == 0)
        #expect(h.net.counterValues.first { $0.name == "tx_waiting" }?.value == 1)
        h.net.queueNotified(VirtioNet.transmitQueue)
        #expect(h.net.counters.txWaits == 1, "a guest kick does not retry a packet waiting for the backend")
        h.net.backendReadable()  // still no room: nothing moves, nothing is lost
        #expect(h.txUsedIndex == 2 && h.net.counters.txDropped == 0)
        h.backend.room.withLock { $0 = nil }
        h.net.backendReadable()
        #expect(h.backend.sent.withLock { $0.map { $0.last! } } == [0, 1, 2, 3, 4])
        #expect(h.txUsedIndex == 5)
        #expect(h.net.counters.txPackets == 5 && h.net.counters.txDropped == 0)
        #expect(h.failures.withLock { $0.isEmpty })
    }

    /// With receive polling paused (the guest posts no receive buffers), nothing would wake
    /// packets waiting for a busy backend: they are dropped instead, and later ones too until
    /// polling resumes.
    @Test func aBusyBackendDropsWhileReceivePollingIsPaused() throws {
        final class NullPolling: ReceivePolling {
            func pause() {}
            func resume() {}
        }
        let h = try NetHarness()
        h.net.attachPolling(NullPolling())
        h.backend.room.withLock { $0 = 1 }
        try queueTransmitPackets(h, 3)
        h.net.queueNotified(VirtioNet.transmitQueue)
        #expect(h.txUsedIndex == 1 && h.net.counters.txWaits == 1)
        h.backend.incoming.withLock { incoming in
            for _ in 0...VirtioNet.maxPending { incoming.append(Self.header + Self.frame) }
        }
        h.net.backendReadable()
        #expect(h.txUsedIndex == 3, "the waiting packets were let go when receive polling paused")
        #expect(h.net.counters.txDropped == 2)
        #expect(h.net.counterValues.first { $0.name == "tx_waiting" }?.value == 0)
    }

    @Test func shortTransmitChainIsDroppedAndCounted() throws {
        let h = try NetHarness()
        let address = try h.driver.buffer([1, 2, 3])
        try h.driver.setDescriptor(0, address: address, length: 3, in: h.tx.table)
        try h.makeTxAvailable(0, slot: 0)
        h.net.queueNotified(VirtioNet.transmitQueue)
        #expect(h.backend.sent.withLock { $0.isEmpty })
        #expect(h.net.counters.txDropped == 1)
        #expect(h.txUsedIndex == 1)
    }

    @Test func receivedFrameLandsInAPostedBufferWithItsHeader() throws {
        let h = try NetHarness()
        h.backend.incoming.withLock { $0.append(Self.header + Self.frame) }
        h.net.backendReadable()
        // No buffer yet: the packet waits.
        #expect(h.driver.usedIndex == 0)
        try h.driver.chain(at: 0, [(data: [], length: 1526, writable: true)])
        try h.driver.makeAvailable(0)
        h.net.queueNotified(VirtioNet.receiveQueue)
        #expect(h.driver.usedIndex == 1)
        let element = try h.driver.usedElement(0)
        #expect(element.length == UInt32(12 + Self.frame.count))
        var expected = Self.header + Self.frame
        expected[10] = 1  // num_buffers
        #expect(try h.driver.memory.read(count: expected.count, at: GuestAddress(0x10_0000)) == expected)
        #expect(h.net.counters.rxPackets == 1)
        #expect(h.interrupt.queues.withLock { $0 } == [VirtioNet.receiveQueue])
    }

    /// With ``VirtioNet/maxPending`` packets waiting for guest buffers the device stops taking
    /// packets from the backend (they wait there, nothing is dropped), and polls again once the
    /// guest has taken half of them.
    @Test func aFullReceiveQueuePausesTheBackendInsteadOfDropping() throws {
        final class RecordingPolling: ReceivePolling {
            let calls = Mutex<[String]>([])
            func pause() { calls.withLock { $0.append("pause") } }
            func resume() { calls.withLock { $0.append("resume") } }
        }
        let h = try NetHarness()
        let polling = RecordingPolling()
        h.net.attachPolling(polling)
        let total = VirtioNet.maxPending + 60
        h.backend.incoming.withLock { incoming in
            for index in 0..<total { incoming.append(Self.header + Self.frame + [UInt8(index & 0xFF), UInt8(index >> 8)]) }
        }
        h.net.backendReadable()
        #expect(polling.calls.withLock { $0 } == ["pause"])
        #expect(h.backend.incoming.withLock { $0.count } == 60)
        #expect(h.net.counterValues.first { $0.name == "rx_pending" }?.value == VirtioNet.maxPending)

        var head: UInt16 = 0
        var buffers: [UInt16: UInt64] = [:]
        /// Posts one ring's worth of buffers and tells the device, as the guest's NAPI refill does.
        func refill() throws {
            for _ in 0..<h.driver.size {
                buffers[head] = try h.driver.chain(at: head, [(data: [], length: 1526, writable: true)])[0]
                try h.driver.makeAvailable(head)
                head = (head + 1) % h.driver.size
            }
            h.net.queueNotified(VirtioNet.receiveQueue)
        }
        var refills = 0
        while polling.calls.withLock({ $0.count }) == 1 {
            try refill()
            refills += 1
        }
        #expect(polling.calls.withLock { $0 } == ["pause", "resume"])
        #expect(h.net.counters.rxPackets == refills * Int(h.driver.size))
        #expect(h.net.counters.rxPackets >= VirtioNet.maxPending / 2)
        // The poller reads again on its own thread; here, the test does.
        h.net.backendReadable()
        #expect(h.backend.incoming.withLock { $0.isEmpty })
        while h.net.counters.rxPackets < total { try refill() }
        #expect(h.net.counters.rxPackets == total)
        #expect(h.net.counters.rxDropped == 0)
        // The last packet delivered is the last one the backend had: nothing was reordered.
        let last = try h.driver.usedElement(UInt16(total - 1))
        #expect(last.length == UInt32(12 + Self.frame.count + 2))
        let address = try #require(buffers[UInt16(last.id)])
        let sequence = try h.driver.memory.read(count: 2, at: GuestAddress(address + UInt64(12 + Self.frame.count)))
        #expect(Int(sequence[0]) | Int(sequence[1]) << 8 == total - 1)
        #expect(h.failures.withLock { $0.isEmpty })
    }

    @Test func frameLargerThanTheBufferIsDropped() throws {
        let h = try NetHarness()
        try h.driver.chain(at: 0, [(data: [], length: 32, writable: true)])
        try h.driver.makeAvailable(0)
        h.backend.incoming.withLock { $0.append(Self.header + Self.frame) }
        h.net.backendReadable()
        #expect(h.net.counters.rxDropped == 1)
        #expect(h.driver.usedIndex == 1)
        #expect(try h.driver.usedElement(0).length == 0)
        #expect(h.failures.withLock { $0.isEmpty })
    }

    @Test func malformedChainsNeedAReset() throws {
        let h = try NetHarness()
        // Transmit descriptor pointing outside guest RAM.
        try h.driver.setDescriptor(0, address: 0xFFFF_0000_0000, length: 64, in: h.tx.table)
        try h.makeTxAvailable(0, slot: 0)
        h.net.queueNotified(VirtioNet.transmitQueue)
        #expect(h.failures.withLock { $0.count } == 1)
        #expect(h.backend.sent.withLock { $0.isEmpty })

        // Receive chain that loops.
        let r = try NetHarness()
        let buffer = try r.driver.buffer(length: 64)
        try r.driver.setDescriptor(0, address: buffer, length: 64, flags: 3, next: 1)
        try r.driver.setDescriptor(1, address: buffer, length: 64, flags: 3, next: 0)
        try r.driver.makeAvailable(0)
        r.backend.incoming.withLock { $0.append(Self.header + Self.frame) }
        r.net.backendReadable()
        #expect(r.failures.withLock { $0.count } == 1)
        // Broken: further notifications do nothing and do not trap.
        r.net.queueNotified(VirtioNet.receiveQueue)
        r.net.queueNotified(VirtioNet.transmitQueue)
        #expect(r.failures.withLock { $0.count } == 1)
    }
}
