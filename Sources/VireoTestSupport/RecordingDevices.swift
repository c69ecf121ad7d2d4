import Synchronization
import VireoDevices

/// An `InterruptLine` that records every `setLevel` call, so tests can check both the current level and
/// that devices only report changes.
public final class RecordingInterruptLine: InterruptLine {
    private let calls = Mutex<[Bool]>([])

    public init() {}

    public func setLevel(_ asserted: Bool) { calls.withLock { $0.append(asserted) } }

    /// Every level passed to `setLevel`, oldest first.
    public var levels: [Bool] { calls.withLock { $0 } }
    /// The last level set (false before any call, like a deasserted line).
    public var isAsserted: Bool { calls.withLock { $0.last ?? false } }
    /// How many low-to-high transitions were signalled (what an edge-triggered controller would see).
    public var risingEdges: Int {
        calls.withLock { calls in
            var previous = false
            var edges = 0
            for level in calls {
                if level, !previous { edges += 1 }
                previous = level
            }
            return edges
        }
    }

    public func reset() { calls.withLock { $0.removeAll() } }
}

/// A `ConsoleOutput` that collects what the guest wrote, keeping each `write` call as a separate batch.
public final class RecordingConsole: ConsoleOutput {
    private let batches = Mutex<[[UInt8]]>([])

    public init() {}

    public func write(_ bytes: [UInt8]) { batches.withLock { $0.append(bytes) } }

    /// Each `write` call's bytes, in order.
    public var writes: [[UInt8]] { batches.withLock { $0 } }
    /// All bytes written so far.
    public var bytes: [UInt8] { batches.withLock { $0.flatMap { $0 } } }
    /// All bytes written so far, decoded as UTF-8 (invalid sequences repaired).
    public var text: String { String(decoding: bytes, as: UTF8.self) }
}

/// A thread-safe call counter for device callbacks such as `onReset`.
public final class CallCounter: Sendable {
    private let count = Mutex(0)

    public init() {}

    public func increment() { count.withLock { $0 += 1 } }
    public var value: Int { count.withLock { $0 } }
}
