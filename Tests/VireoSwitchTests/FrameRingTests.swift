#if canImport(Glibc)
import Glibc
#endif
import Testing
import VireoMemory
import VireoSwitch
import VireoSystem

/// The shared-memory frame rings (`CVireoFrameRing.h`) in one process: records in order across
/// the wrap, back-pressure, kicks, and a hostile peer's positions, lengths and regions refused.
struct FrameRingTests {
    static let capacity: UInt32 = 1 << 17

    /// A byte pattern that differs per record, so a record read from the wrong place shows.
    static func record(_ index: Int, length: Int) -> [UInt8] {
        (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index &* 7) }
    }

    /// Writes `value` at `offset` in the region's control page through a second mapping: what a peer can do.
    static func poke(_ region: FrameRingRegion, offset: Int, _ value: UInt32) throws {
        let size = 4096 + 2 * Int(region.capacity)
        let mapping = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, region.descriptor.rawValue, 0)
        guard let mapping, mapping != MAP_FAILED else { throw SystemError("mmap", errno: errno) }
        defer { munmap(mapping, size) }
        mapping.storeBytes(of: value, toByteOffset: offset, as: UInt32.self)
    }

    /// A plain file, not a memfd: it carries no seals.
    static func unsealedFile() -> Int32 {
        let path = "/tmp/vireo-unsealed-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        unlink(path)
        return fd
    }

    /// Control page offsets of ring 0 (CVireoFrameRing.h): producer, consumer, waiting.
    static let producerOffset = 64, consumerOffset = 128, dataOffset = 4096

    @Test func recordsArriveInOrderAcrossManyWraps() throws {
        let region = try FrameRingRegion(capacity: Self.capacity)
        #expect(region.hasValidHeader)
        var producer = region.ring(0, producer: true)
        var consumer = region.ring(0, producer: false)
        var buffer: [UInt8] = []
        // Sizes from 1 byte to the largest record, so pads at the end of the ring come in every shape.
        let lengths = [1, 60, 1514, 9000, FrameRing.maxRecord, 7, 65_000, 13, 40_000, 2048]
        var next = 0
        for index in 0..<300 {
            let frame = Self.record(index, length: lengths[index % lengths.count])
            var result = producer.push(frame[...])
            while result == .full {
                // Consume one to make room, checking it.
                guard case .record(let length) = consumer.pop(into: &buffer) else { Issue.record("full but nothing to pop"); return }
                #expect(Array(buffer[0..<length]) == Self.record(next, length: lengths[next % lengths.count]))
                next += 1
                result = producer.push(frame[...])
            }
            #expect(result == .pushed)
        }
        while case .record(let length) = consumer.pop(into: &buffer) {
            #expect(Array(buffer[0..<length]) == Self.record(next, length: lengths[next % lengths.count]))
            next += 1
        }
        #expect(next == 300)
        let step1 = consumer.pop(into: &buffer)
        #expect(step1 == .empty)
    }

    @Test func aRecordIsTwoPartsJoined() throws {
        let region = try FrameRingRegion(capacity: Self.capacity)
        var producer = region.ring(1, producer: true)
        var consumer = region.ring(1, producer: false)
        let step2 = producer.push([1, 2, 3], [4, 5])
        #expect(step2 == .pushed)
        let step3 = producer.push([], [6])
        #expect(step3 == .pushed)
        var buffer: [UInt8] = []
        let step4 = consumer.pop(into: &buffer)
        #expect(step4 == .record(5))
        #expect(Array(buffer[0..<5]) == [1, 2, 3, 4, 5])
        let step5 = consumer.pop(into: &buffer)
        #expect(step5 == .record(1))
        #expect(buffer[0] == 6)
    }

    /// A VMM's header and a frame gathered from guest memory make one record; a frame in more
    /// pieces than one `iovec` list holds is still whole (gathered first).
    @Test func aRecordIsGatheredFromGuestMemory() throws {
        let region = try FrameRingRegion(capacity: Self.capacity)
        var producer = region.ring(0, producer: true)
        var consumer = region.ring(0, producer: false)
        let memory = try GuestMemory(ranges: [(GuestAddress(0), 1 << 20)])
        let frame = Self.record(1, length: 3000)
        try memory.write(frame, at: GuestAddress(0x1000))
        var buffer: [UInt8] = []
        for pieceLength in [1000, 2] {  // 3 pieces, then 1500 (more than IOV_MAX)
            let ranges = stride(from: 0, to: frame.count, by: pieceLength).map {
                (address: GuestAddress(0x1000 + UInt64($0)), length: UInt64(min(pieceLength, frame.count - $0)))
            }
            let result = try memory.withIOVectors(ranges) { vectors in producer.push([9, 9][...], vectors: vectors) }
            #expect(result == .pushed)
            let popped = consumer.pop(into: &buffer)
            #expect(popped == .record(frame.count + 2))
            #expect(Array(buffer[0..<(frame.count + 2)]) == [9, 9] + frame)
        }
    }

    /// A peeked record stays in the ring (peeked again, the producer's room not given back) until
    /// it is released; its bytes can be copied out in parts or pushed on from where they lie.
    @Test func aPeekedRecordStaysUntilReleased() throws {
        let region = try FrameRingRegion(capacity: Self.capacity)
        var producer = region.ring(0, producer: true)
        var consumer = region.ring(0, producer: false)
        var onward = region.ring(1, producer: true)
        var last = region.ring(1, producer: false)
        let first = Self.record(1, length: 5000), second = Self.record(2, length: 60)
        #expect(producer.push(first[...]) == .pushed && producer.push(second[...]) == .pushed)
        #expect(consumer.peek() == .record(first.count))
        #expect(consumer.peek() == .record(first.count), "not taken until released")
        var buffer: [UInt8] = []
        consumer.copyPeeked(0..<100, into: &buffer)
        consumer.copyPeeked(100..<first.count, into: &buffer)
        #expect(Array(buffer[0..<first.count]) == first)
        let pushed = consumer.withPeeked(100..<first.count) { onward.push([7, 7][...], vectors: $0) }
        #expect(pushed == .pushed)
        consumer.release()
        #expect(consumer.peek() == .record(second.count))
        consumer.release()
        #expect(consumer.peek() == .empty)
        consumer.release()  // nothing peeked: nothing taken
        #expect(last.pop(into: &buffer) == .record(first.count - 98))
        #expect(Array(buffer[0..<(first.count - 98)]) == [7, 7] + first[100...])
    }

    @Test func emptyAndOversizedRecordsAreRefused() throws {
        let region = try FrameRingRegion(capacity: Self.capacity)
        var producer = region.ring(0, producer: true)
        let step6 = producer.push([])
        #expect(step6 == .broken)
        let step7 = producer.push([UInt8](repeating: 0, count: FrameRing.maxRecord + 1)[...])
        #expect(step7 == .broken)
        let step8 = producer.push([UInt8](repeating: 0, count: FrameRing.maxRecord)[...])
        #expect(step8 == .pushed)
    }

    @Test func aWaitingConsumerIsKickedOnce() throws {
        let region = try FrameRingRegion(capacity: Self.capacity)
        var producer = region.ring(0, producer: true)
        var consumer = region.ring(0, producer: false)
        let step9 = producer.kickNeeded()
        #expect(!step9, "nobody waits yet")
        let step10 = consumer.arm()
        #expect(!step10, "an empty ring: the consumer may sleep")
        let step11 = producer.push([1])
        #expect(step11 == .pushed)
        let step12 = producer.kickNeeded()
        #expect(step12)
        let step13 = producer.push([2])
        #expect(step13 == .pushed)
        let step14 = producer.kickNeeded()
        #expect(!step14, "one kick per sleep")
        #expect(consumer.hasRecords)
        let step15 = consumer.arm()
        #expect(step15, "records came while arming: go on instead of sleeping")
        let step16 = producer.kickNeeded()
        #expect(!step16, "arming that found records clears the flag again")
    }

    /// Version 2: a producer that found the ring full announces that it waits for room; the
    /// consumer kicks it once after taking records, and not again until it waits anew.
    @Test func aProducerWaitingForRoomIsKickedOnce() throws {
        let region = try FrameRingRegion(capacity: Self.capacity)
        var producer = region.ring(0, producer: true)
        var consumer = region.ring(0, producer: false)
        let big = Self.record(1, length: 60_000)
        var pushed = 0
        while producer.push(big[...]) == .pushed { pushed += 1 }
        #expect(pushed == 2, "two 60,000-byte records fill 128 KiB")
        let nothingTaken = consumer.roomKickNeeded()
        #expect(!nothingTaken, "nobody waits for room yet")
        let fitsNow = producer.waitForRoom(length: big.count)
        #expect(!fitsNow, "still full: the producer may sleep")
        var buffer: [UInt8] = []
        let popped = consumer.pop(into: &buffer)
        #expect(popped == .record(big.count))
        let kick = consumer.roomKickNeeded()
        #expect(kick, "the waiting producer is kicked")
        let second = consumer.roomKickNeeded()
        #expect(!second, "one kick per wait")
        let pushedAfter = producer.push(big[...])
        #expect(pushedAfter == .pushed)
        // Room appearing between the full push and the announcement: the producer goes on at once.
        let full = producer.push(big[...])
        #expect(full == .full)
        _ = consumer.pop(into: &buffer)
        let raced = producer.waitForRoom(length: big.count)
        #expect(raced, "room came before the announcement: push now instead of sleeping")
        let noKick = consumer.roomKickNeeded()
        #expect(!noKick, "a producer that found room cleared its flag again")
    }

    @Test func aHostileProducerPositionOrLengthBreaksTheRing() throws {
        for (offset, value) in [
            (Self.producerOffset, Self.capacity + 8),  // more than the ring holds
            (Self.producerOffset, 12),  // not a multiple of 8
            (Self.dataOffset, 0),  // a zero length
            (Self.dataOffset, UInt32(FrameRing.maxRecord + 1)),  // longer than any record
            (Self.dataOffset, 100),  // longer than what was published
        ] {
            let region = try FrameRingRegion(capacity: Self.capacity)
            var producer = region.ring(0, producer: true)
            var consumer = region.ring(0, producer: false)
            let step17 = producer.push([UInt8](repeating: 7, count: 60)[...])
            #expect(step17 == .pushed)
            try Self.poke(region, offset: offset, value)
            var buffer: [UInt8] = []
            let step18 = consumer.pop(into: &buffer)
            #expect(step18 == .broken, "offset \(offset) = \(value)")
        }
    }

    @Test func aHostileConsumerPositionBreaksTheProducer() throws {
        let region = try FrameRingRegion(capacity: Self.capacity)
        var producer = region.ring(0, producer: true)
        let step19 = producer.push([1])
        #expect(step19 == .pushed)
        try Self.poke(region, offset: Self.consumerOffset, 0x8000_0000)
        let step20 = producer.push([2])
        #expect(step20 == .broken)
    }

    @Test func regionsMustBeSealedBigEnoughAndOfAValidCapacity() throws {
        // Unsealed: a peer could shrink it under the other side's mapping.
        let unsealed = Self.unsealedFile()
        #expect(unsealed >= 0)
        #expect(ftruncate(unsealed, off_t(4096 + 2 * Int(Self.capacity))) == 0)
        #expect(throws: SystemError.self) { try FrameRingRegion(mapping: FileDescriptor(adopting: unsealed), capacity: Self.capacity) }
        // Sealed but too small for the capacity claimed.
        let small = try FrameRingRegion(capacity: Self.capacity)
        let duplicate = dup(small.descriptor.rawValue)
        #expect(throws: SystemError.self) { try FrameRingRegion(mapping: FileDescriptor(adopting: duplicate), capacity: Self.capacity * 2) }
        for bad: UInt32 in [0, 4096, (1 << 17) + 8, 1 << 25] {
            #expect(!FrameRingRegion.isValid(capacity: bad))
            #expect(throws: SystemError.self) { try FrameRingRegion(capacity: bad) }
        }
        // The right size and seals, but not initialised: no header.
        let fresh = try FrameRingRegion(capacity: Self.capacity)
        try Self.poke(fresh, offset: 0, 0)
        #expect(!fresh.hasValidHeader)
    }

    @Test func aRegionTravelsOverAUnixSocket() throws {
        var pair: [Int32] = [-1, -1]
        #expect(socketpair(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        let left = FileDescriptor(adopting: pair[0])
        let right = FileDescriptor(adopting: pair[1])
        let region = try FrameRingRegion(capacity: Self.capacity)
        try FrameChannel.sendMessage(left.rawValue, RingHandshake.offer(capacity: Self.capacity), descriptors: [region.descriptor.rawValue])
        let received = try FrameChannel.receiveMessage(right.rawValue, capacity: 64)
        #expect(received.flatMap { RingHandshake.decodeOffer($0.message)?.capacity } == Self.capacity)
        guard let received, let memfd = received.descriptors.take(0) else { Issue.record("no descriptor"); return }
        let takenTwice = received.descriptors.take(0) != nil
        #expect(!takenTwice, "a descriptor is taken once")
        let peer = try FrameRingRegion(mapping: memfd, capacity: Self.capacity)
        var producer = region.ring(0, producer: true)
        var consumer = peer.ring(0, producer: false)
        let step21 = producer.push([9, 8, 7])
        #expect(step21 == .pushed)
        var buffer: [UInt8] = []
        let step22 = consumer.pop(into: &buffer)
        #expect(step22 == .record(3))
        #expect(Array(buffer[0..<3]) == [9, 8, 7])
        #expect(try FrameChannel.receiveMessage(right.rawValue, capacity: 64) == nil, "nothing more queued")
    }

    @Test func handshakeMessagesAreRecognisedAndNothingElseIs() {
        #expect(RingHandshake.decodeOffer(RingHandshake.offer(capacity: 1 << 20))?.capacity == 1 << 20)
        #expect(RingHandshake.decodeOffer(RingHandshake.offer(capacity: 1 << 20))?.version == RingHandshake.version)
        let oldRefusal = RingHandshake.reply(.refused, offeredVersion: 1)
        #expect(oldRefusal[4..<8] == [1, 0, 0, 0], "a refusal goes out in the offerer's version")
        #expect(RingHandshake.decodeReply(RingHandshake.reply(.accepted)) == .accepted)
        #expect(RingHandshake.decodeReply(RingHandshake.reply(.refused)) == .refused)
        let frame = [UInt8](repeating: 0xff, count: 16)
        #expect(RingHandshake.decodeOffer(frame) == nil && RingHandshake.decodeReply(frame) == nil)
        #expect(RingHandshake.decodeOffer(Array(RingHandshake.offer(capacity: 1 << 20).prefix(15))) == nil)
        #expect(RingHandshake.isKick(RingHandshake.kick[...]))
    }
}
