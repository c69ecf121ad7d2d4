import Logging
import Synchronization
import Testing
import VireoSystem
@testable import VireoVMM

/// The I/O thread's descriptor polling: virtio-net mutes a backend while the guest has no room
/// and unmutes it later (receive back-pressure).
@Suite struct IOThreadTests {
    final class Calls: Sendable {
        let count = Atomic<Int>(0)
        var value: Int { count.load(ordering: .acquiring) }
    }

    @Test func aMutedDescriptorIsNotReportedUntilUnmuted() throws {
        let io = try IOThread(logger: Logger(label: "test"))
        try io.start()
        defer { io.stop() }
        let muted = try EventFD(nonBlocking: true), other = try EventFD(nonBlocking: true)
        let mutedCalls = Calls(), otherCalls = Calls()
        let polling = try io.watch(descriptor: muted.rawValue) {
            if muted.drain() > 0 { mutedCalls.count.add(1, ordering: .releasing) }
        }
        try io.watch(descriptor: other.rawValue) {
            if other.drain() > 0 { otherCalls.count.add(1, ordering: .releasing) }
        }
        polling.pause()
        try muted.signal()
        // Two rounds through the loop on the other descriptor: a reported `muted` would have run by then.
        try other.signal()
        try awaitCondition { otherCalls.value == 1 }
        try other.signal()
        try awaitCondition { otherCalls.value == 2 }
        #expect(mutedCalls.value == 0)
        polling.resume()
        try awaitCondition { mutedCalls.value == 1 }
    }

    /// A ring port's peer kicks only a reader that said it sleeps, so unmuting runs the handler
    /// once even when the descriptor has nothing to report.
    @Test func unmutingRunsTheHandlerOnceWithNothingToRead() throws {
        let io = try IOThread(logger: Logger(label: "test"))
        try io.start()
        defer { io.stop() }
        let quiet = try EventFD(nonBlocking: true)
        let calls = Calls()
        let polling = try io.watch(descriptor: quiet.rawValue) { calls.count.add(1, ordering: .releasing) }
        polling.resume()  // not muted: the handler still runs once
        try awaitCondition { calls.value == 1 }
        polling.pause()
        polling.pause()
        polling.resume()
        try awaitCondition { calls.value == 2 }
    }
}
