import Foundation
import VireoSystem

/// A line-oriented JSON conversation on a unix socket: QMP and vireo-vmm's control socket both
/// send one JSON object per line. Blocking I/O with a timeout, run off the cooperative pool.
final class LineSocket: @unchecked Sendable {
    // SAFETY (@unchecked): used by one caller at a time (each engine call opens its own connection).
    private let fd: Int32
    private var pending: [UInt8] = []

    /// `timeout` bounds each read and write.
    init(path: String, timeout: Duration = .seconds(5)) throws {
        let owned = try UnixSocket.connect(path: path)
        fd = owned.release()
        let (seconds, attoseconds) = timeout.components
        ProcessControl.setSocketTimeout(fd, seconds: Double(seconds) + Double(attoseconds) / 1e18)
    }

    deinit { RawDescriptorIO.close(fd) }

    func send(_ line: String) throws {
        guard RawDescriptorIO.writeAll(fd, Array((line + "\n").utf8)) else { throw EngineError("write to VMM socket failed") }
    }

    /// The next line, parsed as a JSON object.
    func receive() throws -> [String: Any] {
        while true {
            if let newline = pending.firstIndex(of: 0x0A) {
                let line = Data(pending[..<newline])
                pending.removeSubrange(...newline)
                if line.isEmpty { continue }
                guard let object = try JSONSerialization.jsonObject(with: line) as? [String: Any] else {
                    throw EngineError("VMM sent a line that is not a JSON object")
                }
                return object
            }
            guard let bytes = RawDescriptorIO.readSome(fd) else { throw EngineError("VMM closed the socket or timed out") }
            pending += bytes
            if pending.count > 1 << 20 { throw EngineError("VMM reply too long") }
        }
    }

    /// Sends a command and returns the first reply that is not an asynchronous event.
    func command(_ line: String) throws -> [String: Any] {
        try send(line)
        while true {
            let reply = try receive()
            if reply["event"] != nil { continue }
            if let error = reply["error"] {
                if let object = error as? [String: Any], let text = object["desc"] as? String { throw EngineError(text) }
                throw EngineError("\(error)")
            }
            return reply
        }
    }
}

/// Runs blocking work on a thread outside Swift's cooperative pool.
func offPool<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
    }
}
