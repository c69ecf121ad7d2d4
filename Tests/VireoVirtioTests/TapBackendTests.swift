#if canImport(Glibc)
import Glibc
#endif
import Testing
import VireoDevices
import VireoMemory
import VireoNetlink
import VireoSwitch
import VireoSystem
@testable import VireoVirtio

/// The tap backend against a real tap (`/dev/net/tun`, needs root): every offload combination is
/// accepted by TUNSETOFFLOAD, and a frame the kernel refuses is a drop. (Traffic through the tap,
/// with offloads negotiated by a Linux guest, is the virtio-net lab scenario's.) A packet the guest
/// split over descriptors leaves through the tap whole, gathered by `writev` from guest memory.
@Suite(.enabled(if: access("/dev/net/tun", R_OK | W_OK) == 0 && geteuid() == 0, "needs /dev/net/tun and root"))
struct TapBackendTests {
    @Test func receiveOffloadsReachTheTapAndRefusedFramesAreDrops() throws {
        let backend = try TapBackend(name: "vtb\(getpid() % 100_000)")
        #expect(backend.offloads == .all)
        #expect(backend.enableReceiveOffloads(.all))
        #expect(backend.enableReceiveOffloads([.tso4]))  // TSO without checksum: the tap gets none
        #expect(backend.enableReceiveOffloads([]))
        // Nothing to read from a tap that is down.
        #expect(backend.receive() == nil)
        // The kernel refuses writes to a tap that is down: the send is a drop, not a crash.
        #expect(backend.send(VirtioNetHeader().bytes + [UInt8](repeating: 0xFF, count: 60)) == .dropped)
    }

    @Test func aPacketSplitOverDescriptorsLeavesThroughTheTapWhole() throws {
        let name = "vtg\(getpid() % 100_000)"
        let tap = try TapBackend(name: name)
        try RouteNetlink().setUp(name, true)
        let capture = try FrameChannel.openPacketSocket(interface: name)
        let h = try NetHarness(realBackend: tap)
        // To a foreign MAC with the local experimental EtherType: the host stack ignores it.
        let frame: [UInt8] = [0x02, 0, 0, 0, 0, 0x09, 0x52, 0x54, 0, 1, 2, 3, 0x88, 0xB5] + (0..<200).map { UInt8($0) }
        let packet = VirtioNetHeader().bytes + frame
        try h.transmit(packet, splitAt: [0..<7, 7..<40, 40..<41, 41..<packet.count])
        #expect(h.net.counters.txPackets == 1)
        // The capture also sees what the kernel itself sends on a new interface: look for ours.
        var buffer = [UInt8](repeating: 0, count: 2048)
        var seen: [UInt8]?
        for _ in 0..<64 where seen == nil {
            guard FrameChannel.waitReadable(capture.rawValue, timeoutMilliseconds: 10_000),
                  let length = try FrameChannel.receivePacket(capture.rawValue, into: &buffer) else { break }
            if length >= 14, buffer[12] == 0x88, buffer[13] == 0xB5 { seen = Array(buffer[..<length]) }
        }
        #expect(seen == frame)
    }

    /// Frames the host sends through the tap reach the guest's receive buffers whole and in
    /// order: the first by `readv` straight into them, the next (small ones) through arrays.
    @Test func framesFromTheTapReachTheGuestsBuffersInOrder() throws {
        let name = "vtr\(getpid() % 100_000)"
        let tap = try TapBackend(name: name)
        try RouteNetlink().setUp(name, true)
        let injector = try FrameChannel.openPacketSocket(interface: name)
        let h = try NetHarness(extraFeatures: VirtioNet.featureMergeableRxBuffers, realBackend: tap)
        var addresses: [UInt64] = []
        for head: UInt16 in 0..<16 {
            addresses += try h.driver.chain(at: head, [(data: [], length: 8192, writable: true)])
            try h.driver.makeAvailable(head)
        }
        // To the device's MAC, with the local experimental EtherType, numbered by their length.
        let frames = [300, 1000, 1514].map { length in
            [0x52, 0x54, 0, 1, 2, 3, 0x02, 0, 0, 0, 0, 0x09, 0x88, 0xB5] + (0..<(length - 14)).map { UInt8(truncatingIfNeeded: $0 &+ length) }
        }
        for frame in frames { #expect(FrameChannel.write(injector.rawValue, frame)) }
        // The kernel may send frames of its own through a new interface: keep ours, in order.
        var ours: [[UInt8]] = []
        var slot: UInt16 = 0
        while ours.count < frames.count, FrameChannel.waitReadable(tap.tap.rawValue, timeoutMilliseconds: 10_000) {
            h.net.backendReadable()
            while slot < h.driver.usedIndex {
                let element = try h.driver.usedElement(slot)
                let bytes = try h.driver.memory.read(count: Int(element.length), at: GuestAddress(addresses[Int(element.id)]))
                #expect(VirtioNetHeader(bytes)?.numBuffers == 1)
                if bytes.count >= 26, bytes[24] == 0x88, bytes[25] == 0xB5 { ours.append(Array(bytes[12...])) }
                slot += 1
            }
        }
        #expect(ours == frames)
    }
}
