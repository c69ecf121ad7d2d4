#if canImport(Glibc)
import Glibc
#endif
import Testing
import VireoDevices
import VireoSwitch

/// The tap backend against a real tap (`/dev/net/tun`, needs root): every offload combination is
/// accepted by TUNSETOFFLOAD, and a frame the kernel refuses is a drop. (Traffic through the tap,
/// with offloads negotiated by a Linux guest, is the virtio-net lab scenario's.)
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
}
