import Testing
import VireoDevices
import VireoMemory
import VireoSwitch
import VireoSystem
@testable import VireoVirtio

/// Offloads (virtio 1.2 §5.1.6.2, §5.1.6.4), mergeable receive buffers and link status on the
/// fake driver.
@Suite struct NetOffloadTests {
    static let allOffloadFeatures = VirtioNet.featureCsum | VirtioNet.featureGuestCsum
        | VirtioNet.featureHostTSO4 | VirtioNet.featureHostTSO6 | VirtioNet.featureHostECN
        | VirtioNet.featureGuestTSO4 | VirtioNet.featureGuestTSO6 | VirtioNet.featureGuestECN

    /// A TCP/IPv4 frame of `length` bytes (Ethernet 14 + IPv4 20 + TCP 20 + payload).
    static func tcpFrame(length: Int) -> [UInt8] {
        var frame: [UInt8] = [0x52, 0x54, 0, 9, 9, 9, 0x52, 0x54, 0, 1, 2, 3, 0x08, 0x00]
        frame += (0..<(length - 14)).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        return frame
    }

    /// A TSO header for a TCPv4 super-frame: checksum at 34 + 16, MSS 1448.
    static func tsoHeader(gsoType: UInt8 = VirtioNetHeader.gsoTCPv4) -> VirtioNetHeader {
        var header = VirtioNetHeader()
        header.flags = VirtioNetHeader.flagNeedsChecksum
        header.gsoType = gsoType
        header.headerLength = 54
        header.gsoSize = 1448
        header.checksumStart = 34
        header.checksumOffset = 16
        return header
    }

    /// Sends `packet` as one two-descriptor chain (header, frame) on the transmit queue.
    static func transmit(_ packet: [UInt8], on h: NetHarness, slot: UInt16 = 0) throws {
        let head = slot * 2
        let headerAddress = try h.driver.buffer(Array(packet[..<12]))
        let frameAddress = try h.driver.buffer(Array(packet[12...]))
        try h.driver.setDescriptor(head, address: headerAddress, length: 12, flags: 1, next: head + 1, in: h.tx.table)
        try h.driver.setDescriptor(head + 1, address: frameAddress, length: UInt32(packet.count - 12), in: h.tx.table)
        try h.makeTxAvailable(head, slot: slot)
        h.net.queueNotified(VirtioNet.transmitQueue)
    }

    @Test func offeredFeaturesFollowTheBackendsOffloads() {
        let plain = VirtioNet(mac: [2, 0, 0, 0, 0, 1], backend: MemoryNetBackend())
        #expect(plain.features & Self.allOffloadFeatures == 0)
        #expect(plain.features & VirtioNet.featureMergeableRxBuffers != 0)
        let full = VirtioNet(mac: [2, 0, 0, 0, 0, 1], backend: MemoryNetBackend(offloads: .all))
        #expect(full.features & Self.allOffloadFeatures == Self.allOffloadFeatures)
        // TSO without the checksum offload is not offered (§5.1.3.1).
        let tsoOnly = VirtioNet(mac: [2, 0, 0, 0, 0, 1], backend: MemoryNetBackend(offloads: [.tso4]))
        #expect(tsoOnly.features & Self.allOffloadFeatures == 0)
    }

    @Test func activationEnablesTheNegotiatedReceiveOffloadsAndResetClearsThem() throws {
        let h = try NetHarness(offloads: .all, extraFeatures: VirtioNet.featureGuestCsum | VirtioNet.featureGuestTSO4 | VirtioNet.featureCsum)
        #expect(h.backend.enabled.withLock { $0 } == [.checksum, .tso4])
        h.net.reset()
        #expect(h.backend.enabled.withLock { $0 } == [])
        // GUEST_TSO6 without GUEST_CSUM breaks §5.1.3.1: only the consistent part (nothing) is enabled.
        let broken = try NetHarness(offloads: .all, extraFeatures: VirtioNet.featureGuestTSO6)
        #expect(broken.backend.enabled.withLock { $0 } == [])
    }

    @Test func negotiatedTSOFrameReachesTheBackendWithItsHeader() throws {
        let h = try NetHarness(offloads: .all, extraFeatures: Self.allOffloadFeatures)
        var header = Self.tsoHeader()
        header.gsoType |= VirtioNetHeader.gsoECN
        let packet = header.bytes + Self.tcpFrame(length: 20_000)
        try Self.transmit(packet, on: h)
        #expect(h.backend.sent.withLock { $0 } == [packet])
        #expect(h.net.counters.txPackets == 1)
        #expect(h.net.counters.txInvalidHeader == 0)
    }

    /// A valid TSO header broken one way.
    enum HostileHeader: String, CaseIterable, Sendable {
        case unknownFlag, dataValidOnTransmit, checksumBeforeIPHeader, checksumFieldPastTheFrame
        case udpFragmentation, unknownGSOType, ecnWithoutGSO, gsoWithoutNeedsChecksum, gsoSizeZero, headerLengthPastTheFrame

        var header: VirtioNetHeader {
            var h = NetOffloadTests.tsoHeader()
            switch self {
            case .unknownFlag: h.flags = 0x40
            case .dataValidOnTransmit: h.flags |= VirtioNetHeader.flagDataValid
            case .checksumBeforeIPHeader: h.checksumStart = 4
            case .checksumFieldPastTheFrame: h.checksumOffset = 0xFFFF
            case .udpFragmentation: h.gsoType = VirtioNetHeader.gsoUDP
            case .unknownGSOType: h.gsoType = 0x7F
            case .ecnWithoutGSO: h.gsoType = VirtioNetHeader.gsoECN
            case .gsoWithoutNeedsChecksum: h.flags = 0
            case .gsoSizeZero: h.gsoSize = 0
            case .headerLengthPastTheFrame: h.headerLength = 0xFFFF
            }
            return h
        }
    }

    @Test(arguments: HostileHeader.allCases)
    func hostileTransmitHeaderIsDroppedAndCounted(_ hostile: HostileHeader) throws {
        let name = hostile.rawValue
        let h = try NetHarness(offloads: .all, extraFeatures: Self.allOffloadFeatures)
        try Self.transmit(hostile.header.bytes + Self.tcpFrame(length: 5000), on: h)
        #expect(h.backend.sent.withLock { $0.isEmpty }, "\(name)")
        #expect(h.net.counters.txInvalidHeader == 1, "\(name)")
        #expect(h.txUsedIndex == 1, "\(name): the chain is returned")
        #expect(h.failures.withLock { $0.isEmpty }, "\(name): a bad header is not a bad queue")
        // The device keeps working: a valid frame afterwards goes through.
        try Self.transmit(Self.tsoHeader().bytes + Self.tcpFrame(length: 5000), on: h, slot: 1)
        #expect(h.backend.sent.withLock { $0.count } == 1, "\(name)")
    }

    @Test func offloadsThatWereNotNegotiatedAreRefusedOnTransmit() throws {
        // Offered by the backend but not negotiated by this driver.
        let h = try NetHarness(offloads: .all, extraFeatures: VirtioNet.featureCsum | VirtioNet.featureHostTSO4)
        try Self.transmit(Self.tsoHeader(gsoType: VirtioNetHeader.gsoTCPv6).bytes + Self.tcpFrame(length: 3000), on: h, slot: 0)
        try Self.transmit(Self.tsoHeader(gsoType: VirtioNetHeader.gsoTCPv4 | VirtioNetHeader.gsoECN).bytes + Self.tcpFrame(length: 3000), on: h, slot: 1)
        #expect(h.net.counters.txInvalidHeader == 2)
        // No offload at all: NEEDS_CSUM is refused.
        let plain = try NetHarness()
        var header = VirtioNetHeader()
        header.flags = VirtioNetHeader.flagNeedsChecksum
        header.checksumStart = 34
        header.checksumOffset = 16
        try Self.transmit(header.bytes + Self.tcpFrame(length: 100), on: plain)
        #expect(plain.net.counters.txInvalidHeader == 1)
        #expect(plain.backend.sent.withLock { $0.isEmpty })
    }

    @Test func receivedOffloadPacketsNeedTheGuestsFeatures() throws {
        let h = try NetHarness(offloads: .all)
        // GSO to a guest without GUEST_TSO4: dropped. DATA_VALID without GUEST_CSUM: cleared.
        h.backend.incoming.withLock { $0.append(Self.tsoHeader().bytes + Self.tcpFrame(length: 3000)) }
        var valid = VirtioNetHeader()
        valid.flags = VirtioNetHeader.flagDataValid
        h.backend.incoming.withLock { $0.append(valid.bytes + Self.tcpFrame(length: 100)) }
        try h.driver.chain(at: 0, [(data: [], length: 1526, writable: true)])
        try h.driver.makeAvailable(0)
        h.net.backendReadable()
        #expect(h.net.counters.rxInvalidHeader == 1)
        #expect(h.driver.usedIndex == 1)
        let delivered = try h.driver.memory.read(count: 12, at: GuestAddress(0x10_0000))
        #expect(VirtioNetHeader(delivered)?.flags == 0)
        #expect(VirtioNetHeader(delivered)?.numBuffers == 1)
    }

    @Test func largeReceivedFrameSpreadsOverMergeableBuffers() throws {
        let h = try NetHarness(offloads: .all, extraFeatures: VirtioNet.featureMergeableRxBuffers | Self.allOffloadFeatures)
        var addresses: [UInt64] = []
        for head: UInt16 in 0..<3 {
            addresses += try h.driver.chain(at: head, [(data: [], length: 1024, writable: true)])
            try h.driver.makeAvailable(head)
        }
        let header = Self.tsoHeader()
        let frame = Self.tcpFrame(length: 2500)
        h.backend.incoming.withLock { $0.append(header.bytes + frame) }
        h.net.backendReadable()
        #expect(h.driver.usedIndex == 3)
        #expect(try (0..<3).map { try h.driver.usedElement($0).id } == [0, 1, 2])
        #expect(try (0..<3).map { try h.driver.usedElement($0).length } == [1024, 1024, 464])
        var received: [UInt8] = []
        for (address, length) in zip(addresses, [1024, 1024, 464]) {
            received += try h.driver.memory.read(count: length, at: GuestAddress(address))
        }
        var expectedHeader = header
        expectedHeader.numBuffers = 3
        #expect(received == expectedHeader.bytes + frame)
        #expect(h.interrupt.queues.withLock { $0 } == [VirtioNet.receiveQueue])
        #expect(h.net.counters.rxPackets == 1)
    }

    /// A backend that can write into the guest's buffers itself (as a tap's `readv` does).
    final class InPlaceBackend: NetBackend, @unchecked Sendable {
        var incoming: [[UInt8]] = []
        var inPlaceReads = 0
        func send(_ packet: [UInt8]) -> NetSendResult { .sent }
        func receive() -> [UInt8]? { incoming.isEmpty ? nil : incoming.removeFirst() }
        func receive(into buffers: borrowing IOVectors) -> Int? {
            guard !incoming.isEmpty else { return nil }
            let packet = incoming.removeFirst()
            #expect(buffers.count >= VirtioNet.maxPacket, "room for the largest packet")
            buffers.store(packet, at: 0)
            inPlaceReads += 1
            return packet.count
        }
        var receivesInPlace: Bool { true }
        var pollDescriptor: Int32? { nil }
        var offloads: NetOffloads { .all }
    }

    /// Large packets land straight in the guest's buffers while the posted buffers cover the
    /// largest packet; each takes the buffers it needs (`num_buffers`), the rest stay posted; once
    /// fewer are posted the next packet goes through an array, in order. A header the guest did
    /// not negotiate is refused and its buffers reused.
    @Test func receivedPacketsLandInPlaceWhileBuffersCoverTheLargest() throws {
        let backend = InPlaceBackend()
        let h = try NetHarness(extraFeatures: VirtioNet.featureMergeableRxBuffers | VirtioNet.featureGuestCsum, realBackend: backend)
        var addresses: [UInt64] = []
        for head: UInt16 in 0..<11 {
            addresses += try h.driver.chain(at: head, [(data: [], length: 8192, writable: true)])
            try h.driver.makeAvailable(head)
        }
        let packets = [VirtioNetHeader().bytes + Self.tcpFrame(length: 9000),
                       Self.tsoHeader().bytes + Self.tcpFrame(length: 6000),  // GUEST_TSO4 not negotiated
                       VirtioNetHeader().bytes + Self.tcpFrame(length: 9000),
                       VirtioNetHeader().bytes + Self.tcpFrame(length: 100)]
        backend.incoming = packets
        h.net.backendReadable()
        // 11 buffers of 8 KiB: packets 1 and 3 in place (2 buffers each; the refused one in between
        // left its buffers for the next), then 7 left cover less than 64 KiB: packet 4 by copy.
        #expect(backend.inPlaceReads == 3)
        #expect(h.net.counters.rxInvalidHeader == 1)
        #expect(h.net.counters.rxPackets == 3)
        #expect(h.driver.usedIndex == 5)
        #expect(try (0..<5).map { try h.driver.usedElement($0).id } == [0, 1, 2, 3, 4])
        #expect(try (0..<5).map { try h.driver.usedElement($0).length } == [8192, 820, 8192, 820, 112])
        func delivered(_ buffers: Range<Int>, length: Int) throws -> [UInt8] {
            var bytes: [UInt8] = []
            for index in buffers { bytes += try h.driver.memory.read(count: min(8192, length - bytes.count), at: GuestAddress(addresses[index])) }
            return bytes
        }
        for (buffers, packet) in [(0..<2, packets[0]), (2..<4, packets[2]), (4..<5, packets[3])] {
            var header = VirtioNetHeader()
            header.numBuffers = UInt16(buffers.count)
            #expect(try delivered(buffers, length: packet.count) == header.bytes + packet[12...])
        }
    }

    /// A small packet received in place turns the device to arrays (cheaper for small packets),
    /// and a large one received through an array turns it back.
    @Test func smallPacketsGoThroughArraysAndLargeOnesInPlace() throws {
        let backend = InPlaceBackend()
        let h = try NetHarness(extraFeatures: VirtioNet.featureMergeableRxBuffers, realBackend: backend)
        for head: UInt16 in 0..<16 {
            try h.driver.chain(at: head, [(data: [], length: 8192, writable: true)])
            try h.driver.makeAvailable(head)
        }
        let small = VirtioNetHeader().bytes + Self.tcpFrame(length: 100)
        let large = VirtioNetHeader().bytes + Self.tcpFrame(length: 5000)
        backend.incoming = [small, small, large]
        h.net.backendReadable()
        #expect(backend.inPlaceReads == 1, "the first small packet in place, then arrays")
        #expect(h.net.counters.rxPackets == 3)
        backend.incoming = [large, small]
        h.net.backendReadable()
        #expect(backend.inPlaceReads == 3, "after a large packet, in place again until a small one")
        #expect(h.net.counters.rxPackets == 5)
        #expect(h.driver.usedIndex == 5)
    }

    @Test func mergeablePacketWaitsUntilEnoughBuffersArePosted() throws {
        let h = try NetHarness(extraFeatures: VirtioNet.featureMergeableRxBuffers)
        try h.driver.chain(at: 0, [(data: [], length: 1024, writable: true)])
        try h.driver.makeAvailable(0)
        h.backend.incoming.withLock { $0.append(VirtioNetHeader().bytes + Self.tcpFrame(length: 1500)) }
        h.net.backendReadable()
        #expect(h.driver.usedIndex == 0, "one buffer is not enough: nothing is published")
        try h.driver.chain(at: 1, [(data: [], length: 1024, writable: true)])
        try h.driver.makeAvailable(1)
        h.net.queueNotified(VirtioNet.receiveQueue)
        #expect(h.driver.usedIndex == 2)
        #expect(try h.driver.usedElement(0).id == 0)
        #expect(try h.driver.usedElement(1).length == 12 + 1500 - 1024)
        #expect(try h.driver.memory.readInteger(UInt16.self, at: GuestAddress(0x10_0000 + 10)) == 2)
    }

    @Test func mergeableBufferSmallerThanTheHeaderNeedsAReset() throws {
        let h = try NetHarness(extraFeatures: VirtioNet.featureMergeableRxBuffers)
        try h.driver.chain(at: 0, [(data: [], length: 8, writable: true)])
        try h.driver.makeAvailable(0)
        h.backend.incoming.withLock { $0.append(VirtioNetHeader().bytes + Self.tcpFrame(length: 60)) }
        h.net.backendReadable()
        #expect(h.failures.withLock { $0.count } == 1)
        #expect(h.driver.usedIndex == 0)
    }

    @Test func linkDownDropsBothWaysAndUpRestores() throws {
        let h = try NetHarness()
        h.net.setLink(up: false)
        #expect(h.net.readConfig(offset: 6, size: 2) == 0)
        #expect(h.interrupt.configChanges.load(ordering: .relaxed) == 1)
        try Self.transmit(VirtioNetHeader().bytes + Self.tcpFrame(length: 100), on: h)
        #expect(h.backend.sent.withLock { $0.isEmpty })
        #expect(h.net.counters.txDropped == 1)
        #expect(h.txUsedIndex == 1)
        try h.driver.chain(at: 0, [(data: [], length: 1526, writable: true)])
        try h.driver.makeAvailable(0)
        h.backend.incoming.withLock { $0.append(VirtioNetHeader().bytes + Self.tcpFrame(length: 100)) }
        h.net.backendReadable()
        #expect(h.driver.usedIndex == 0)
        #expect(h.net.counters.rxDropped == 1)

        h.net.setLink(up: true)
        h.net.setLink(up: true)  // no change: no interrupt
        #expect(h.net.readConfig(offset: 6, size: 2) == 1)
        #expect(h.interrupt.configChanges.load(ordering: .relaxed) == 2)
        h.backend.incoming.withLock { $0.append(VirtioNetHeader().bytes + Self.tcpFrame(length: 100)) }
        h.net.backendReadable()
        #expect(h.driver.usedIndex == 1)
        try Self.transmit(VirtioNetHeader().bytes + Self.tcpFrame(length: 100), on: h, slot: 1)
        #expect(h.backend.sent.withLock { $0.count } == 1)
    }

    @Test func afterResetTheDeviceLeavesTheRingsAlone() throws {
        let h = try NetHarness(extraFeatures: VirtioNet.featureMergeableRxBuffers)
        try h.driver.chain(at: 0, [(data: [], length: 1526, writable: true)])
        try h.driver.makeAvailable(0)
        h.net.reset()
        h.backend.incoming.withLock { $0.append(VirtioNetHeader().bytes + Self.tcpFrame(length: 100)) }
        h.net.backendReadable()
        h.net.queueNotified(VirtioNet.receiveQueue)
        try Self.transmit(VirtioNetHeader().bytes + Self.tcpFrame(length: 100), on: h)
        #expect(h.driver.usedIndex == 0)
        #expect(h.txUsedIndex == 0)
        #expect(h.backend.sent.withLock { $0.isEmpty })
    }
}
