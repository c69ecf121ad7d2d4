/// Why a frame was dropped. Counted per port; the raw values index ``DropCounters``.
public enum DropReason: Int, Error, CaseIterable, Sendable, CustomStringConvertible {
    /// Shorter than an Ethernet header (14 bytes).
    case runt
    /// Payload longer than the port's MTU.
    case oversized
    /// A VLAN tag that is truncated or carries the reserved VID 4095.
    case malformedTag
    /// A tag the port does not take: an S-tag (0x88A8) or a pre-standard 0x9100 tag on an 802.1Q
    /// port, two C-tags, an S-tag inside an S-tag, or an S-tag from a tunnel port's customer.
    case unsupportedTag
    /// Multicast or all-zero source address: never valid on the wire, never learned.
    case invalidSource
    /// A frame with a VLAN tag (VID ≠ 0) arrived on an access port.
    case taggedOnAccess
    /// An untagged frame arrived on a trunk port that has no native VLAN.
    case untaggedOnTrunk
    /// A tagged frame whose VLAN is not in the trunk's allowed list.
    case vlanNotAllowed
    /// The destination was learned on the ingress port itself (nothing to forward).
    case sameSegment
    /// Broadcast, multicast or unknown unicast over the port's `flood-limit` (storm control).
    case floodLimited
    /// Egress: the port has no peer connected (a VM socket with no VMM yet).
    case noPeer
    /// Egress: the write failed or would block (the receiver is not keeping up).
    case transmitFailed
    /// A virtio-net header (checksum or segmentation offload) that does not fit its frame, or a
    /// super-frame whose IP and TCP headers contradict it: the frame cannot be resolved safely.
    case badOffload

    public var description: String {
        switch self {
        case .runt: "runt"
        case .oversized: "oversized"
        case .malformedTag: "malformed-tag"
        case .unsupportedTag: "unsupported-tag"
        case .invalidSource: "invalid-source"
        case .taggedOnAccess: "tagged-on-access"
        case .untaggedOnTrunk: "untagged-on-trunk"
        case .vlanNotAllowed: "vlan-not-allowed"
        case .sameSegment: "same-segment"
        case .floodLimited: "flood-limited"
        case .noPeer: "no-peer"
        case .transmitFailed: "transmit-failed"
        case .badOffload: "bad-offload"
        }
    }
}

/// The decoded Ethernet II / 802.1Q header of a frame (IEEE 802.3 §3.1, 802.1Q §9).
///
/// ```
/// untagged:  dst(6) src(6) type(2) payload
/// tagged:    dst(6) src(6) TPID(2) TCI(2: PCP 3 | DEI 1 | VID 12) type(2) payload
/// QinQ:      dst(6) src(6) 0x88A8(2) S-TCI(2) 0x8100(2) C-TCI(2) type(2) payload
/// ```
///
/// The switch's own tag is the outer one, of the port's TPID (0x8100 C-tags, or 0x88A8 S-tags on
/// a provider port, 802.1ad). A customer's C-tag inside an S-tag, or any tag from a tunnel port's
/// customer, is payload: it travels untouched and ``innerTagLength`` says how long it is, so the
/// MTU check and offloads still find the network header.
public struct FrameHeader: Equatable, Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    /// The tag control information of an 802.1Q C-tag, if the frame carries one.
    public var tagControl: UInt16?
    /// The EtherType (or 802.3 length) after any tag.
    public var etherType: UInt16
    /// 14 untagged, 18 tagged.
    public var headerLength: Int
    /// Bytes of customer tags after the switch's own header (0 or 4): payload to the switch.
    public var innerTagLength = 0
    /// Where the network (IP) header starts.
    public var networkOffset: Int { headerLength + innerTagLength }

    /// The tag's VLAN ID; nil for untagged frames, 0 for priority-tagged ones.
    public var vid: UInt16? { tagControl.map { $0 & 0x0FFF } }
    /// True for a tag with VID ≠ 0 (a priority tag alone does not put a frame in a VLAN).
    public var isVLANTagged: Bool { (vid ?? 0) != 0 }

    public static let untaggedLength = 14
    public static let tagLength = 4

    /// Parses and validates a frame (without FCS, as tap devices and packet sockets deliver it).
    ///
    /// - Parameters:
    ///   - mtu: the largest payload accepted (after the header, any tag and any customer tag), e.g. 1500.
    ///   - tagType: the TPID of the port's own tags (``VLAN/customerTPID`` or ``VLAN/serviceTPID``).
    ///   - tunnel: a tunnel port's customer frame: a C-tag it carries is payload, not the switch's.
    public static func parse(
        _ frame: ArraySlice<UInt8>, mtu: Int, tagType: UInt16 = VLAN.customerTPID, tunnel: Bool = false
    ) -> Result<FrameHeader, DropReason> {
        let count = frame.count
        guard count >= untaggedLength else { return .failure(.runt) }
        let base = frame.startIndex
        let destination = MACAddress(reading: frame, at: 0)
        let source = MACAddress(reading: frame, at: 6)
        func type(at offset: Int) -> UInt16 { UInt16(frame[base + offset]) << 8 | UInt16(frame[base + offset + 1]) }
        func isTag(_ type: UInt16) -> Bool { type == VLAN.customerTPID || type == VLAN.serviceTPID || type == VLAN.legacyQinQTPID }
        /// A customer C-tag at `offset` (payload to the switch): its length, or why the frame is refused.
        func customerTag(at offset: Int) -> Result<Int, DropReason> {
            let tpid = type(at: offset)
            guard isTag(tpid) else { return .success(0) }
            guard tpid == VLAN.customerTPID else { return .failure(.unsupportedTag) }
            guard count >= offset + tagLength + 2, type(at: offset + 2) & 0x0FFF != 0x0FFF else { return .failure(.malformedTag) }
            return isTag(type(at: offset + tagLength)) ? .failure(.unsupportedTag) : .success(tagLength)
        }
        let outerType = type(at: 12)
        var header = FrameHeader(destination: destination, source: source, tagControl: nil, etherType: outerType, headerLength: untaggedLength)
        if tunnel || (tagType == VLAN.serviceTPID && outerType == VLAN.customerTPID) {
            // A customer's frame, or a C-tagged frame on a provider port (S-untagged): its tag is payload.
            switch customerTag(at: 12) {
            case .success(let length): header.innerTagLength = length
            case .failure(let reason): return .failure(reason)
            }
        } else if outerType == tagType {
            guard count >= untaggedLength + tagLength else { return .failure(.malformedTag) }
            let tci = type(at: 14)
            guard tci & 0x0FFF != 0x0FFF else { return .failure(.malformedTag) }
            header.tagControl = tci
            header.etherType = type(at: 16)
            header.headerLength = untaggedLength + tagLength
            if tagType == VLAN.serviceTPID {
                switch customerTag(at: 16) {
                case .success(let length): header.innerTagLength = length
                case .failure(let reason): return .failure(reason)
                }
            } else if isTag(header.etherType) {
                return .failure(.unsupportedTag)
            }
        } else if isTag(outerType) {
            return .failure(.unsupportedTag)
        }
        guard count - header.networkOffset <= mtu else { return .failure(.oversized) }
        guard !source.isMulticast, source != .zero else { return .failure(.invalidSource) }
        return .success(header)
    }

    public static func parse(
        _ frame: [UInt8], mtu: Int = 1500, tagType: UInt16 = VLAN.customerTPID, tunnel: Bool = false
    ) -> Result<FrameHeader, DropReason> {
        parse(frame[...], mtu: mtu, tagType: tagType, tunnel: tunnel)
    }

    /// Writes the frame as it leaves a port into `output` (replacing its contents): untagged
    /// (`vid == nil`, the switch's tag stripped) or tagged with `vid` in a tag of `tagType` (a tag
    /// inserted, or the existing tag's VID rewritten with its PCP and DEI kept). Customer tags
    /// inside stay as they are.
    public func egressFrame(_ frame: ArraySlice<UInt8>, vid: UInt16?, tagType: UInt16 = VLAN.customerTPID, into output: inout [UInt8]) {
        output.removeAll(keepingCapacity: true)
        appendEgressFrame(frame, vid: vid, tagType: tagType, to: &output)
    }

    /// ``egressFrame(_:vid:tagType:into:)`` appending to `output` (after a virtio-net header, say).
    public func appendEgressFrame(_ frame: ArraySlice<UInt8>, vid: UInt16?, tagType: UInt16 = VLAN.customerTPID, to output: inout [UInt8]) {
        let base = frame.startIndex
        output.append(contentsOf: frame[base..<(base + 12)])
        if let vid {
            let tci = (tagControl ?? 0) & 0xF000 | vid & 0x0FFF
            output.append(UInt8(tagType >> 8))
            output.append(UInt8(tagType & 0xFF))
            output.append(UInt8(tci >> 8))
            output.append(UInt8(tci & 0xFF))
        }
        output.append(UInt8(etherType >> 8))
        output.append(UInt8(etherType & 0xFF))
        output.append(contentsOf: frame[(base + headerLength)...])
    }

    /// Convenience for tests: the egress frame as a new array.
    public func egressFrame(_ frame: [UInt8], vid: UInt16?, tagType: UInt16 = VLAN.customerTPID) -> [UInt8] {
        var output: [UInt8] = []
        egressFrame(frame[...], vid: vid, tagType: tagType, into: &output)
        return output
    }
}
