/// Why a frame was dropped. Counted per port; the raw values index ``DropCounters``.
public enum DropReason: Int, Error, CaseIterable, Sendable, CustomStringConvertible {
    /// Shorter than an Ethernet header (14 bytes).
    case runt
    /// Payload longer than the port's MTU.
    case oversized
    /// A VLAN tag that is truncated or carries the reserved VID 4095.
    case malformedTag
    /// Stacked tags (802.1ad QinQ, 0x88A8/0x9100, or two C-tags): not supported by this switch.
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
/// tagged:    dst(6) src(6) 0x8100(2) TCI(2: PCP 3 | DEI 1 | VID 12) type(2) payload
/// ```
public struct FrameHeader: Equatable, Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    /// The tag control information of an 802.1Q C-tag, if the frame carries one.
    public var tagControl: UInt16?
    /// The EtherType (or 802.3 length) after any tag.
    public var etherType: UInt16
    /// 14 untagged, 18 tagged.
    public var headerLength: Int

    /// The tag's VLAN ID; nil for untagged frames, 0 for priority-tagged ones.
    public var vid: UInt16? { tagControl.map { $0 & 0x0FFF } }
    /// True for a tag with VID ≠ 0 (a priority tag alone does not put a frame in a VLAN).
    public var isVLANTagged: Bool { (vid ?? 0) != 0 }

    public static let untaggedLength = 14
    public static let tagLength = 4

    /// Parses and validates a frame (without FCS, as tap devices and packet sockets deliver it).
    ///
    /// - Parameter mtu: the largest payload accepted (after the header and any tag), e.g. 1500.
    public static func parse(_ frame: ArraySlice<UInt8>, mtu: Int) -> Result<FrameHeader, DropReason> {
        let count = frame.count
        guard count >= untaggedLength else { return .failure(.runt) }
        let base = frame.startIndex
        let destination = MACAddress(reading: frame, at: 0)
        let source = MACAddress(reading: frame, at: 6)
        let outerType = UInt16(frame[base + 12]) << 8 | UInt16(frame[base + 13])
        var header = FrameHeader(destination: destination, source: source, tagControl: nil, etherType: outerType, headerLength: untaggedLength)
        switch outerType {
        case VLAN.serviceTPID, VLAN.legacyQinQTPID:
            return .failure(.unsupportedTag)
        case VLAN.customerTPID:
            guard count >= untaggedLength + tagLength else { return .failure(.malformedTag) }
            let tci = UInt16(frame[base + 14]) << 8 | UInt16(frame[base + 15])
            guard tci & 0x0FFF != 0x0FFF else { return .failure(.malformedTag) }
            let inner = UInt16(frame[base + 16]) << 8 | UInt16(frame[base + 17])
            if inner == VLAN.customerTPID || inner == VLAN.serviceTPID || inner == VLAN.legacyQinQTPID {
                return .failure(.unsupportedTag)
            }
            header.tagControl = tci
            header.etherType = inner
            header.headerLength = untaggedLength + tagLength
        default:
            break
        }
        guard count - header.headerLength <= mtu else { return .failure(.oversized) }
        guard !source.isMulticast, source != .zero else { return .failure(.invalidSource) }
        return .success(header)
    }

    public static func parse(_ frame: [UInt8], mtu: Int = 1500) -> Result<FrameHeader, DropReason> {
        parse(frame[...], mtu: mtu)
    }

    /// Writes the frame as it leaves a port into `output` (replacing its contents): untagged
    /// (`vid == nil`, any tag stripped) or tagged with `vid` (a tag inserted, or the existing tag's
    /// VID rewritten with its PCP and DEI kept).
    public func egressFrame(_ frame: ArraySlice<UInt8>, vid: UInt16?, into output: inout [UInt8]) {
        output.removeAll(keepingCapacity: true)
        appendEgressFrame(frame, vid: vid, to: &output)
    }

    /// ``egressFrame(_:vid:into:)`` appending to `output` (after a virtio-net header, say).
    public func appendEgressFrame(_ frame: ArraySlice<UInt8>, vid: UInt16?, to output: inout [UInt8]) {
        let base = frame.startIndex
        output.append(contentsOf: frame[base..<(base + 12)])
        if let vid {
            let tci = (tagControl ?? 0) & 0xF000 | vid & 0x0FFF
            output.append(UInt8(VLAN.customerTPID >> 8))
            output.append(UInt8(VLAN.customerTPID & 0xFF))
            output.append(UInt8(tci >> 8))
            output.append(UInt8(tci & 0xFF))
        }
        output.append(UInt8(etherType >> 8))
        output.append(UInt8(etherType & 0xFF))
        output.append(contentsOf: frame[(base + headerLength)...])
    }

    /// Convenience for tests: the egress frame as a new array.
    public func egressFrame(_ frame: [UInt8], vid: UInt16?) -> [UInt8] {
        var output: [UInt8] = []
        egressFrame(frame[...], vid: vid, into: &output)
        return output
    }
}
