import Testing
@testable import VireoSwitch

@Suite struct FrameTests {
    let a = Frames.mac(1), b = Frames.mac(2)

    @Test func parsesUntagged() throws {
        let header = try FrameHeader.parse(Frames.make(dst: b, src: a)).get()
        #expect(header.destination == b && header.source == a)
        #expect(header.tagControl == nil && header.etherType == 0x0800 && header.headerLength == 14)
        #expect(!header.isVLANTagged)
    }

    @Test func parsesTagged() throws {
        let header = try FrameHeader.parse(Frames.make(dst: b, src: a, vid: 42, pcp: 5, etherType: 0x86DD)).get()
        #expect(header.vid == 42 && header.isVLANTagged && header.headerLength == 18 && header.etherType == 0x86DD)
        #expect(header.tagControl == UInt16(0xA02A))
    }

    @Test func priorityTagIsNotAVLAN() throws {
        let header = try FrameHeader.parse(Frames.make(dst: b, src: a, vid: 0, pcp: 3)).get()
        #expect(header.vid == 0 && !header.isVLANTagged)
    }

    @Test(arguments: [0, 1, 13])
    func runts(length: Int) {
        let frame = Array(Frames.make(dst: b, src: a).prefix(length))
        #expect(FrameHeader.parse(frame) == .failure(.runt))
    }

    @Test func fourteenBytesIsAFrame() {
        #expect((try? FrameHeader.parse(Frames.make(dst: b, src: a, payloadLength: 0)).get()) != nil)
    }

    @Test func mtuBoundary() {
        #expect((try? FrameHeader.parse(Frames.make(dst: b, src: a, payloadLength: 1500)).get()) != nil)
        #expect(FrameHeader.parse(Frames.make(dst: b, src: a, payloadLength: 1501)) == .failure(.oversized))
        // A tag does not count against the MTU.
        #expect((try? FrameHeader.parse(Frames.make(dst: b, src: a, vid: 7, payloadLength: 1500)).get()) != nil)
        #expect(FrameHeader.parse(Frames.make(dst: b, src: a, vid: 7, payloadLength: 1501)) == .failure(.oversized))
        #expect((try? FrameHeader.parse(Frames.make(dst: b, src: a, payloadLength: 9000)).get()) == nil)
        #expect((try? FrameHeader.parse(Frames.make(dst: b, src: a, payloadLength: 9000)[...], mtu: 9000).get()) != nil)
    }

    @Test func malformedTags() {
        // Truncated tag: TPID present, TCI/type cut off.
        let tagged = Frames.make(dst: b, src: a, vid: 10, payloadLength: 0)
        for length in 14..<18 {
            #expect(FrameHeader.parse(Array(tagged.prefix(length))) == .failure(.malformedTag))
        }
        // Reserved VID 4095.
        #expect(FrameHeader.parse(Frames.make(dst: b, src: a, vid: 0xFFF)) == .failure(.malformedTag))
    }

    @Test func stackedTagsAreUnsupported() {
        #expect(FrameHeader.parse(Frames.make(dst: b, src: a, etherType: 0x88A8)) == .failure(.unsupportedTag))
        #expect(FrameHeader.parse(Frames.make(dst: b, src: a, etherType: 0x9100)) == .failure(.unsupportedTag))
        #expect(FrameHeader.parse(Frames.make(dst: b, src: a, vid: 10, etherType: 0x8100)) == .failure(.unsupportedTag))
    }

    @Test func invalidSources() {
        #expect(FrameHeader.parse(Frames.make(dst: b, src: .broadcast)) == .failure(.invalidSource))
        #expect(FrameHeader.parse(Frames.make(dst: b, src: MACAddress(0x01, 0, 0x5E, 0, 0, 1))) == .failure(.invalidSource))
        #expect(FrameHeader.parse(Frames.make(dst: b, src: .zero)) == .failure(.invalidSource))
    }

    @Test func egressRewrites() throws {
        let untagged = Frames.make(dst: b, src: a, payloadLength: 20)
        let header = try FrameHeader.parse(untagged).get()
        let tagged = header.egressFrame(untagged, vid: 10)
        #expect(tagged == Frames.make(dst: b, src: a, vid: 10, payloadLength: 20))
        #expect(header.egressFrame(untagged, vid: nil) == untagged)

        let inbound = Frames.make(dst: b, src: a, vid: 10, pcp: 6, payloadLength: 20)
        let inHeader = try FrameHeader.parse(inbound).get()
        #expect(inHeader.egressFrame(inbound, vid: nil) == untagged)
        #expect(inHeader.egressFrame(inbound, vid: 10) == inbound)
        #expect(inHeader.egressFrame(inbound, vid: 20) == Frames.make(dst: b, src: a, vid: 20, pcp: 6, payloadLength: 20))
    }

    @Test func sliceWithNonZeroStart() throws {
        let frame = [0xAA, 0xBB] + Frames.make(dst: b, src: a, vid: 5, payloadLength: 4)
        let slice = frame[2...]
        let header = try FrameHeader.parse(slice, mtu: 1500).get()
        #expect(header.source == a && header.vid == 5)
        var out: [UInt8] = []
        header.egressFrame(slice, vid: nil, into: &out)
        #expect(out == Frames.make(dst: b, src: a, payloadLength: 4))
    }

    /// Random bytes never crash the parser, and whatever it accepts re-encodes consistently.
    @Test func fuzzParser() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...80, using: &generator)
            var frame = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            if length > 13, Bool.random() { frame[12] = 0x81; frame[13] = 0x00 }
            if case .success(let header) = FrameHeader.parse(frame[...], mtu: 60) {
                #expect(header.headerLength <= frame.count)
                let out = header.egressFrame(frame, vid: nil)
                #expect(out.count == frame.count - header.headerLength + 14)
            }
        }
    }

    @Test func macAddressText() {
        #expect(MACAddress("02:00:00:00:00:0a") == Frames.mac(10))
        #expect(Frames.mac(10).description == "02:00:00:00:00:0a")
        #expect(MACAddress("02:00:00:00:00") == nil)
        #expect(MACAddress("zz:00:00:00:00:00") == nil)
        #expect(MACAddress.broadcast.isMulticast && !Frames.mac(1).isMulticast)
    }
}
