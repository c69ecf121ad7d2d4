/// The messages that move a `vm:` port's frames from its socket into shared-memory rings
/// (docs/network.md, "Shared-memory rings").
///
/// 1. The VMM connects to the port's SOCK_SEQPACKET socket and, before anything else, sends an
///    **offer**: 16 bytes (`VRNG`, version, ring capacity, reserved) with one descriptor, a sealed
///    memfd made by `FrameRingRegion` (ring 0: VMM to switch, ring 1: switch to VMM).
/// 2. The switch maps it after checking seals, size and capacity, and answers with a **reply**
///    (`VRNG`, version, status, reserved): status 0 means frames now travel in the rings, anything
///    else that the port stays on messages. Frames the switch sent before the reply are ordinary
///    messages, and the VMM takes them as such.
/// 3. From then on the socket carries only **kicks** (one byte: "the ring has records and you
///    said you were waiting"), offload announcements and the end of the connection.
///
/// A peer that sends anything else first (a frame) stays on messages, as before rings existed.
///
/// Versions: 2 adds the producer's "waiting for room" flag (`CVireoFrameRing.h`), so that a VMM
/// waits for room in a full ring instead of dropping the frame. The switch accepts only its own
/// version and refuses others in the offerer's version, which the offerer can read, so that a
/// VMM never waits for a kick the switch does not send.
public enum RingHandshake {
    static let magic: [UInt8] = Array("VRNG".utf8)
    public static let version: UInt32 = 2
    public static let length = 16
    /// A wake-up: one byte, shorter than any frame.
    public static let kick: [UInt8] = [0x4B]

    public static func isKick(_ message: ArraySlice<UInt8>) -> Bool { message.count == 1 }

    /// The offer for rings of `capacity` bytes each way.
    public static func offer(capacity: UInt32) -> [UInt8] {
        magic + littleEndian(version) + littleEndian(capacity) + littleEndian(0)
    }

    /// The offer's version and ring capacity, or nil when `message` is not an offer.
    public static func decodeOffer(_ message: [UInt8]) -> (version: UInt32, capacity: UInt32)? {
        decode(message)
    }

    public enum Status: UInt32, Sendable {
        case accepted = 0
        /// The region was refused (seals, size, capacity or header): the port stays on messages.
        case refused = 1
    }

    /// The answer to an offer of `offeredVersion` (refusals go out in the offerer's version).
    public static func reply(_ status: Status, offeredVersion: UInt32 = version) -> [UInt8] {
        magic + littleEndian(offeredVersion) + littleEndian(status.rawValue) + littleEndian(0)
    }

    /// The reply's status, or nil when `message` is not a reply (a frame sent before it, say).
    /// An unknown status reads as refused.
    public static func decodeReply(_ message: [UInt8]) -> Status? {
        guard let (second, third) = decode(message), second == version else { return nil }
        return Status(rawValue: third) ?? .refused
    }

    private static func decode(_ message: [UInt8]) -> (UInt32, UInt32)? {
        guard message.count == length, Array(message[0..<4]) == magic else { return nil }
        return (message[4..<8].littleEndianUInt32, message[8..<12].littleEndianUInt32)
    }

    private static func littleEndian(_ value: UInt32) -> [UInt8] {
        (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) }
    }
}

extension ArraySlice<UInt8> {
    fileprivate var littleEndianUInt32: UInt32 {
        enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * $1.offset) }
    }
}
