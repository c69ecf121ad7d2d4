import Testing
@testable import VireoSwitch

/// Checksum completion and TCP segmentation in software, checked by an independent verifier
/// (every segment's IPv4 header and TCP checksum must sum to 0xFFFF, RFC 1071) and by reassembly.
@Suite struct SoftwareOffloadTests {
    static let a = Frames.mac(0xA), b = Frames.mac(0xB)

    /// A TCP super-frame as a guest's stack hands it to a TSO device: lengths for the whole
    /// thing, the TCP checksum field holding only the pseudo-header sum (CHECKSUM_PARTIAL).
    static func superFrame(ipv6: Bool = false, vid: UInt16? = nil, payload: [UInt8], flags: UInt8 = 0x18, mss: UInt16 = 1448,
                           tcpOptions: Int = 12) -> (frame: [UInt8], header: VirtioNetHeader) {
        let tcpHeaderLength = 20 + tcpOptions
        var tcp = [UInt8](repeating: 0, count: tcpHeaderLength)
        tcp[0] = 0x1F; tcp[1] = 0x90  // source port 8080
        tcp[2] = 0xC3; tcp[3] = 0x50  // destination port 50000
        tcp[4] = 0xFF; tcp[5] = 0xFF; tcp[6] = 0xF0; tcp[7] = 0x00  // a sequence number that wraps
        tcp[12] = UInt8(tcpHeaderLength / 4) << 4
        tcp[13] = flags
        tcp[14] = 0xFF; tcp[15] = 0xFF
        for index in 20..<tcpHeaderLength { tcp[index] = 1 }  // NOP options
        var ip: [UInt8]
        let tcpLength = tcp.count + payload.count
        if ipv6 {
            ip = [0x60, 0, 0, 0, UInt8(tcpLength >> 8), UInt8(tcpLength & 0xFF), 6, 64]
            ip += (0..<16).map { UInt8(0xF0 | $0 & 0xF) } + (0..<16).map { UInt8(0xE0 | $0 & 0xF) }
        } else {
            let total = 20 + tcpLength
            ip = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
            let check = ~UInt16(onesSum(ip[...]))
            ip[10] = UInt8(check >> 8)
            ip[11] = UInt8(check & 0xFF)
        }
        let etherType: UInt16 = ipv6 ? 0x86DD : 0x0800
        var frame = Frames.make(dst: b, src: a, vid: vid, etherType: etherType, payload: ip + tcp + payload)
        let networkOffset = vid == nil ? 14 : 18
        let tcpStart = networkOffset + ip.count
        let pseudo = pseudoHeaderSum(frame, networkOffset: networkOffset, ipv6: ipv6, tcpLength: tcpLength)
        frame[tcpStart + 16] = UInt8(pseudo >> 8)
        frame[tcpStart + 17] = UInt8(pseudo & 0xFF)
        var header = VirtioNetHeader()
        header.flags = VirtioNetHeader.flagNeedsChecksum
        header.gsoType = ipv6 ? VirtioNetHeader.gsoTCPv6 : VirtioNetHeader.gsoTCPv4
        header.gsoSize = mss
        header.checksumStart = UInt16(tcpStart)
        header.checksumOffset = 16
        header.headerLength = UInt16(tcpStart + tcpHeaderLength)
        return (frame, header)
    }

    // An independent ones'-complement sum for verification.
    static func onesSum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var sum: UInt32 = 0
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let high = UInt32(bytes[index]) << 8
            let low = index + 1 < bytes.endIndex ? UInt32(bytes[index + 1]) : 0
            sum += high | low
            index += 2
        }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return sum
    }

    static func pseudoHeaderSum(_ frame: [UInt8], networkOffset ip: Int, ipv6: Bool, tcpLength: Int) -> UInt16 {
        let addresses = ipv6 ? frame[(ip + 8)..<(ip + 40)] : frame[(ip + 12)..<(ip + 20)]
        var sum = onesSum(addresses) + 6 + UInt32(tcpLength)
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        return UInt16(sum)
    }

    /// Checks one segment's headers and checksums; returns its sequence number, flags and payload.
    static func verify(_ segment: [UInt8], networkOffset ip: Int, ipv6: Bool, tcpHeaderLength: Int) -> (seq: UInt32, flags: UInt8, id: UInt16, payload: [UInt8]) {
        let tcpStart = ip + (ipv6 ? 40 : 20)
        let tcpLength = segment.count - tcpStart
        if ipv6 {
            #expect(Int(segment[ip + 4]) << 8 | Int(segment[ip + 5]) == tcpLength, "IPv6 payload length")
        } else {
            #expect(Int(segment[ip + 2]) << 8 | Int(segment[ip + 3]) == segment.count - ip, "IPv4 total length")
            #expect(onesSum(segment[ip..<(ip + 20)]) == 0xFFFF, "IPv4 header checksum")
        }
        let pseudo = UInt32(pseudoHeaderSum(segment, networkOffset: ip, ipv6: ipv6, tcpLength: tcpLength))
        var total = pseudo + onesSum(segment[tcpStart...])
        while total > 0xFFFF { total = (total & 0xFFFF) + (total >> 16) }
        #expect(total == 0xFFFF, "TCP checksum")
        let seq = segment[(tcpStart + 4)..<(tcpStart + 8)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let id = ipv6 ? 0 : UInt16(segment[ip + 4]) << 8 | UInt16(segment[ip + 5])
        return (seq, segment[tcpStart + 13], id, Array(segment[(tcpStart + tcpHeaderLength)...]))
    }

    static let payload = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 8) }

    @Test(arguments: [(false, nil), (true, nil), (false, 10), (true, 20)] as [(Bool, UInt16?)])
    func superFramesBecomeValidSegments(ipv6: Bool, vid: UInt16?) {
        let (frame, header) = Self.superFrame(ipv6: ipv6, vid: vid, payload: Self.payload, flags: 0x19 | 0x80)  // FIN PSH ACK CWR
        let networkOffset = vid == nil ? 14 : 18
        var segments: [[UInt8]] = []
        #expect(SoftwareOffload.resolve(frame[...], header: header, networkOffset: networkOffset, into: &segments))
        #expect(segments.count == 4)  // 5000 bytes at 1448 per segment
        var reassembled: [UInt8] = []
        for (index, segment) in segments.enumerated() {
            #expect(segment[0..<networkOffset] == frame[0..<networkOffset], "link header repeated")
            let (seq, flags, id, payload) = Self.verify(segment, networkOffset: networkOffset, ipv6: ipv6, tcpHeaderLength: 32)
            #expect(seq == 0xFFFF_F000 &+ UInt32(index * 1448))
            if !ipv6 { #expect(id == 0x1234 &+ UInt16(index)) }
            let last = index == segments.count - 1
            #expect(flags & 0x09 == (last ? 0x09 : 0), "FIN and PSH only on the last segment")
            #expect(flags & 0x80 == (index == 0 ? 0x80 : 0), "CWR only on the first segment")
            #expect(flags & 0x10 == 0x10, "ACK on every segment")
            #expect(payload.count == (last ? 5000 - 3 * 1448 : 1448))
            reassembled += payload
        }
        #expect(reassembled == Self.payload)
        #expect(SoftwareOffload.largestPacket(frame[...], header: header, networkOffset: networkOffset) == (ipv6 ? 40 : 20) + 32 + 1448)
    }

    @Test func aSuperFrameThatFitsOneSegmentStillGetsItsChecksum() {
        let (frame, header) = Self.superFrame(payload: Array(Self.payload[0..<100]))
        var segments: [[UInt8]] = []
        #expect(SoftwareOffload.resolve(frame[...], header: header, networkOffset: 14, into: &segments))
        #expect(segments.count == 1)
        #expect(Self.verify(segments[0], networkOffset: 14, ipv6: false, tcpHeaderLength: 32).payload.count == 100)
    }

    @Test func partialChecksumIsCompleted() {
        var (frame, header) = Self.superFrame(payload: Array(Self.payload[0..<999]))
        header.gsoType = VirtioNetHeader.gsoNone
        header.gsoSize = 0
        var segments: [[UInt8]] = []
        #expect(SoftwareOffload.resolve(frame[...], header: header, networkOffset: 14, into: &segments))
        #expect(segments.count == 1)
        _ = Self.verify(segments[0], networkOffset: 14, ipv6: false, tcpHeaderLength: 32)
        // Only the checksum changed.
        frame[14 + 20 + 16] = segments[0][14 + 20 + 16]
        frame[14 + 20 + 17] = segments[0][14 + 20 + 17]
        #expect(segments[0] == frame)
    }

    @Test func headersThatContradictTheOffloadAreRefused() {
        let (frame, header) = Self.superFrame(payload: Self.payload)
        var segments: [[UInt8]] = []
        func refused(_ frame: [UInt8], _ header: VirtioNetHeader) -> Bool {
            !SoftwareOffload.resolve(frame[...], header: header, networkOffset: 14, into: &segments) && segments.isEmpty
        }
        var wrongStart = header
        wrongStart.checksumStart += 4
        #expect(refused(frame, wrongStart))
        var wrongOffset = header
        wrongOffset.checksumOffset = 6  // UDP's, not TCP's
        #expect(refused(frame, wrongOffset))
        var notTCP = frame
        notTCP[14 + 9] = 17
        #expect(refused(notTCP, header))
        var shortDataOffset = frame
        shortDataOffset[14 + 20 + 12] = 0x40  // 16-byte TCP header
        #expect(refused(shortDataOffset, header))
        var hugeDataOffset = Array(frame[0..<(14 + 20 + 40)])
        hugeDataOffset[14 + 20 + 12] = 0xF0  // 60-byte TCP header past the frame's end
        #expect(refused(hugeDataOffset, header))
        var v6Claim = header
        v6Claim.gsoType = VirtioNetHeader.gsoTCPv6  // but the packet is IPv4
        #expect(refused(frame, v6Claim))
    }

    @Test func tagChangesMoveTheOffsets() {
        let (_, header) = Self.superFrame(payload: Self.payload)
        let tagged = header.shifted(by: 4)
        #expect(tagged.checksumStart == header.checksumStart + 4 && tagged.headerLength == header.headerLength + 4)
        #expect(tagged.shifted(by: -4) == header)
        #expect(header.requiredOffloads == [.checksum, .tso4])
        var plain = VirtioNetHeader()
        #expect(plain.shifted(by: 4) == plain)  // nothing to move without NEEDS_CSUM or hdr_len
        plain.flags = VirtioNetHeader.flagDataValid
        #expect(plain.requiredOffloads.isEmpty)
    }

    @Test func announcementsAreTheOnlyHeaderOnlyMessages() {
        let message = OffloadAnnouncement.message([.checksum, .tso6])
        #expect(message.count == VirtioNetHeader.length)
        #expect(OffloadAnnouncement.decode(message[...]) == [.checksum, .tso6])
        #expect(OffloadAnnouncement.decode((message + [0, 0])[...]) == nil)
        var noisy = message
        noisy[5] = 1
        #expect(OffloadAnnouncement.decode(noisy[...]) == nil)
        #expect(OffloadAnnouncement.decode([0xFF] + [UInt8](repeating: 0, count: 11)) == .all)
    }
}

/// The switch core with offload headers: validated on ingress, super-frames measured per segment.
@Suite struct SwitchOffloadTests {
    var fabric = Switch()
    var egress: [Egress] = []

    @Test mutating func superFramesPassTheMTUBySegmentAndBadHeadersAreDropped() throws {
        let p1 = try fabric.addPort(PortConfig.parse("tap:p1,tag=10"))
        _ = try fabric.addPort(PortConfig.parse("tap:p2,tag=10"))
        let (frame, header) = SoftwareOffloadTests.superFrame(payload: SoftwareOffloadTests.payload)
        guard case .forward = fabric.receive(frame, offload: header, on: p1, now: 0, egress: &egress) else {
            Issue.record("a 5000-byte super-frame of 1448-byte segments must pass a 1500-byte MTU")
            return
        }
        var tooBig = header
        tooBig.gsoSize = 1500  // 20 + 32 + 1500 > 1500
        #expect(fabric.receive(frame, offload: tooBig, on: p1, now: 0, egress: &egress) == .drop(.oversized))
        var outside = header
        outside.checksumStart = UInt16(frame.count)
        #expect(fabric.receive(frame, offload: outside, on: p1, now: 0, egress: &egress) == .drop(.badOffload))
        var udp = header
        udp.gsoType = VirtioNetHeader.gsoUDP
        #expect(fabric.receive(frame, offload: udp, on: p1, now: 0, egress: &egress) == .drop(.badOffload))
        var lying = header
        lying.checksumStart = 14 + 24
        #expect(fabric.receive(frame, offload: lying, on: p1, now: 0, egress: &egress) == .drop(.badOffload))
        // The same frame without a header is just too big.
        #expect(fabric.receive(frame, on: p1, now: 0, egress: &egress) == .drop(.oversized))
        #expect(fabric[port: p1]?.counters[drop: .badOffload] == 3)
    }
}
