/// What a receiver without offloads needs done to a packet whose virtio-net header left work to
/// the receiver: the partial checksum completed (`VIRTIO_NET_HDR_F_NEEDS_CSUM`, virtio 1.2
/// §5.1.6.2) and a TCP super-frame cut into MSS-sized segments (`gso_type` TCPv4/TCPv6), each with
/// its own IP length, IPv4 identification and header checksum, TCP sequence number, flags and
/// checksum — what the NIC does for TSO (Linux `tcp_gso_segment`, RFC 9293 §3.1, RFC 791 §3.1).
///
/// The switch uses it when a frame from a port that carries offloads (a tap, a VM whose guest sends
/// TSO) leaves through one that does not (an uplink, a VM whose guest did not negotiate them).
/// Everything in the header and the frame is untrusted: the header was checked with
/// ``VirtioNetHeader/validate(frameLength:allowed:dataValidAllowed:)``, and the IP and TCP headers
/// are checked here against it; what does not add up is refused (`bad-offload`), never guessed.
public enum SoftwareOffload {
    /// The network-layer length of the largest packet `frame` stands for: the frame's own after its
    /// link header, or for a GSO frame the IP and TCP headers plus `gso_size` — what has to fit the
    /// MTU of a port. nil when the GSO frame's headers are inconsistent.
    ///
    /// - Parameter networkOffset: where the IP header starts (the Ethernet header's length, 14 or 18).
    public static func largestPacket(_ frame: ArraySlice<UInt8>, header: VirtioNetHeader, networkOffset: Int) -> Int? {
        guard header.isSegmentationOffload else { return frame.count - networkOffset }
        guard let layout = TCPLayout(frame, header: header, networkOffset: networkOffset) else { return nil }
        return min(frame.count - networkOffset, layout.payloadStart - networkOffset + Int(header.gsoSize))
    }

    /// Resolves `frame` into the frames a port without offloads may be sent: the frame itself
    /// (checksum completed, if it needed one) or its TCP segments. `segments` is cleared first.
    /// Returns false (and leaves `segments` empty) when the IP or TCP headers contradict `header`.
    ///
    /// - Parameter networkOffset: where the IP header starts (14 untagged, 18 with an 802.1Q tag).
    public static func resolve(_ frame: ArraySlice<UInt8>, header: VirtioNetHeader, networkOffset: Int, into segments: inout [[UInt8]]) -> Bool {
        segments.removeAll(keepingCapacity: true)
        if header.isSegmentationOffload {
            guard let layout = TCPLayout(frame, header: header, networkOffset: networkOffset) else { return false }
            segment(Array(frame), layout: layout, mss: Int(header.gsoSize), into: &segments)
            return true
        }
        var whole = Array(frame)
        if header.flags & VirtioNetHeader.flagNeedsChecksum != 0 {
            let start = Int(header.checksumStart), field = start + Int(header.checksumOffset)
            guard start >= networkOffset, field + 2 <= whole.count else { return false }
            // The field holds the pseudo-header sum already (§5.1.6.2): fold in the rest.
            store(complement(of: sum(whole, start..<whole.count)), in: &whole, at: field)
        }
        segments.append(whole)
        return true
    }

    // MARK: TCP segmentation

    /// Where the headers of a TCP GSO frame are, checked against each other and the virtio-net header.
    struct TCPLayout {
        var networkOffset: Int
        var isIPv4: Bool
        var tcpStart: Int
        /// First payload byte: the end of the TCP header (and of what every segment repeats).
        var payloadStart: Int

        init?(_ frame: ArraySlice<UInt8>, header: VirtioNetHeader, networkOffset: Int) {
            let base = frame.startIndex, count = frame.count
            func byte(_ at: Int) -> UInt8 { frame[base + at] }
            guard networkOffset >= FrameHeader.untaggedLength, networkOffset + 40 <= count else { return nil }
            // A sender's super-frame asks for its checksum (NEEDS_CSUM at the TCP checksum field,
            // csum_offset 16, RFC 9293 §3.1); one the kernel coalesced may carry DATA_VALID instead,
            // and then the IP header alone says where TCP starts.
            let needsChecksum = header.flags & VirtioNetHeader.flagNeedsChecksum != 0
            guard !needsChecksum || header.checksumOffset == 16 else { return nil }
            let version = byte(networkOffset) >> 4
            let tcpStart: Int
            switch header.gsoType & ~VirtioNetHeader.gsoECN {
            case VirtioNetHeader.gsoTCPv4:
                let ihl = Int(byte(networkOffset) & 0x0F) * 4
                guard version == 4, ihl >= 20, byte(networkOffset + 9) == 6 else { return nil }
                tcpStart = networkOffset + ihl
                guard !needsChecksum || Int(header.checksumStart) == tcpStart else { return nil }
                isIPv4 = true
            case VirtioNetHeader.gsoTCPv6:
                guard version == 6 else { return nil }
                if needsChecksum {
                    // Extension headers, if any, sit between the fixed header and TCP and are repeated as they are.
                    tcpStart = Int(header.checksumStart)
                    guard tcpStart >= networkOffset + 40 else { return nil }
                } else {
                    guard byte(networkOffset + 6) == 6 else { return nil }
                    tcpStart = networkOffset + 40
                }
                isIPv4 = false
            default:
                return nil
            }
            guard tcpStart + 20 <= count else { return nil }
            let tcpHeaderLength = Int(byte(tcpStart + 12) >> 4) * 4
            guard tcpHeaderLength >= 20, tcpStart + tcpHeaderLength <= count else { return nil }
            self.networkOffset = networkOffset
            self.tcpStart = tcpStart
            payloadStart = tcpStart + tcpHeaderLength
        }
    }

    /// TCP flags cleared on all but the last segment (FIN, PSH) and on all but the first (CWR).
    static let finPush: UInt8 = 0x01 | 0x08
    static let congestionWindowReduced: UInt8 = 0x80

    static func segment(_ frame: [UInt8], layout: TCPLayout, mss: Int, into segments: inout [[UInt8]]) {
        let headers = frame[..<layout.payloadStart]
        let payloadLength = frame.count - layout.payloadStart
        let firstSequence = read32(frame, layout.tcpStart + 4)
        let firstIdentification = layout.isIPv4 ? read16(frame, layout.networkOffset + 4) : 0
        let flagsAt = layout.tcpStart + 13
        var offset = 0, index = 0
        repeat {
            let chunk = min(mss, payloadLength - offset)
            var out = [UInt8]()
            out.reserveCapacity(layout.payloadStart + chunk)
            out.append(contentsOf: headers)
            out.append(contentsOf: frame[(layout.payloadStart + offset)..<(layout.payloadStart + offset + chunk)])
            let isLast = offset + chunk >= payloadLength
            if !isLast { out[flagsAt] &= ~finPush }
            if index > 0 { out[flagsAt] &= ~congestionWindowReduced }
            write32(&out, layout.tcpStart + 4, firstSequence &+ UInt32(truncatingIfNeeded: offset))
            let tcpLength = out.count - layout.tcpStart
            let ip = layout.networkOffset
            var pseudo: UInt32
            if layout.isIPv4 {
                let ihl = layout.tcpStart - ip
                write16(&out, ip + 2, UInt16(out.count - ip))
                write16(&out, ip + 4, firstIdentification &+ UInt16(truncatingIfNeeded: index))
                write16(&out, ip + 10, 0)
                write16(&out, ip + 10, complement(of: sum(out, ip..<(ip + ihl))))
                pseudo = sum(out, (ip + 12)..<(ip + 20))  // source and destination addresses
            } else {
                write16(&out, ip + 4, UInt16(out.count - ip - 40))
                pseudo = sum(out, (ip + 8)..<(ip + 40))
            }
            pseudo &+= 6 &+ UInt32(tcpLength)
            write16(&out, layout.tcpStart + 16, 0)
            write16(&out, layout.tcpStart + 16, complement(of: pseudo &+ sum(out, layout.tcpStart..<out.count)))
            segments.append(out)
            offset += chunk
            index += 1
        } while offset < payloadLength
    }

    // MARK: The Internet checksum (RFC 1071)

    /// The 32-bit running sum of `bytes[range]` as big-endian 16-bit words (an odd last byte is
    /// padded with zero). Folded by ``complement(of:)``; sums of several ranges may be added first.
    static func sum(_ bytes: [UInt8], _ range: Range<Int>) -> UInt32 {
        var total: UInt64 = 0
        var index = range.lowerBound
        let end = range.upperBound
        while index + 1 < end {
            total &+= UInt64(bytes[index]) << 8 | UInt64(bytes[index + 1])
            index += 2
        }
        if index < end { total &+= UInt64(bytes[index]) << 8 }
        while total > 0xFFFF_FFFF { total = (total & 0xFFFF_FFFF) + (total >> 32) }
        return UInt32(total)
    }

    /// The ones' complement of the folded sum: the value stored in a checksum field. A result of
    /// zero is sent as 0xFFFF (the same value in ones' complement; UDP reserves 0 for "none").
    static func complement(of sum: UInt32) -> UInt16 {
        var folded = UInt64(sum)
        while folded > 0xFFFF { folded = (folded & 0xFFFF) + (folded >> 16) }
        let result = ~UInt16(folded)
        return result == 0 ? 0xFFFF : result
    }

    static func read16(_ bytes: [UInt8], _ at: Int) -> UInt16 { UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1]) }
    static func read32(_ bytes: [UInt8], _ at: Int) -> UInt32 { UInt32(read16(bytes, at)) << 16 | UInt32(read16(bytes, at + 2)) }
    static func write16(_ bytes: inout [UInt8], _ at: Int, _ value: UInt16) {
        bytes[at] = UInt8(value >> 8)
        bytes[at + 1] = UInt8(value & 0xFF)
    }
    static func write32(_ bytes: inout [UInt8], _ at: Int, _ value: UInt32) {
        write16(&bytes, at, UInt16(value >> 16))
        write16(&bytes, at + 2, UInt16(value & 0xFFFF))
    }
    static func store(_ value: UInt16, in bytes: inout [UInt8], at: Int) { write16(&bytes, at, value) }
}

extension VirtioNetHeader {
    /// True for a TCP GSO super-frame (`gso_type` TCPv4 or TCPv6, with or without ECN).
    public var isSegmentationOffload: Bool { gsoType & ~Self.gsoECN != Self.gsoNone }

    /// The offloads a receiver must carry to take this packet as it is.
    public var requiredOffloads: NetOffloads {
        var needed: NetOffloads = flags & Self.flagNeedsChecksum != 0 ? .checksum : []
        switch gsoType & ~Self.gsoECN {
        case Self.gsoTCPv4: needed.insert(.tso4)
        case Self.gsoTCPv6: needed.insert(.tso6)
        default: break
        }
        if gsoType & Self.gsoECN != 0 { needed.insert(.tsoECN) }
        return needed
    }

    /// The header for the same packet after its link header grew by `delta` bytes (4 when a tag
    /// is inserted, -4 when one is removed): `csum_start` and `hdr_len` count from the frame's start.
    public func shifted(by delta: Int) -> VirtioNetHeader {
        guard delta != 0 else { return self }
        var moved = self
        if flags & Self.flagNeedsChecksum != 0 { moved.checksumStart = UInt16(clamping: Int(checksumStart) + delta) }
        if headerLength != 0 { moved.headerLength = UInt16(clamping: Int(headerLength) + delta) }
        return moved
    }

    /// The header as a receiver that carries only `offloads` may see it: DATA_VALID (a checksum
    /// already verified) is kept only for one that takes checksum offload. The packet must need
    /// no more than `offloads` (``requiredOffloads``).
    public func forReceiver(carrying offloads: NetOffloads) -> VirtioNetHeader {
        var header = self
        header.numBuffers = 0
        if !offloads.contains(.checksum) { header.flags &= ~Self.flagDataValid }
        return header
    }
}
