/// Decides a scenario's outcome from console lines, one host at a time.
///
/// Rules: a fail marker anywhere fails at once; the `expect` regexes must match lines in order (a line can
/// satisfy one expectation); the host passes when the pass marker appears and every expectation has matched.
/// A pass marker seen with expectations still open is a failure that names the first unmatched one.
public struct ConsoleMatcher: Sendable {
    public enum State: Sendable, Equatable {
        case running
        case passed
        case failed(String)
    }

    public let passMarker: String
    public let failMarkers: [String]
    public let expectations: [String]
    public private(set) var nextExpectation = 0
    public private(set) var state: State = .running

    public init(spec: ScenarioSpec) {
        self.init(pass: spec.pass, fail: spec.fail, expect: spec.expect)
    }

    public init(pass: String, fail: [String], expect: [String]) {
        passMarker = pass
        failMarkers = fail
        expectations = expect
    }

    /// Feeds one console line (without its newline); returns the state after it.
    @discardableResult
    public mutating func feed(_ rawLine: Substring) -> State {
        guard state == .running else { return state }
        let line = rawLine.filter { $0 != "\r" }
        if let marker = failMarkers.first(where: { !$0.isEmpty && line.contains($0) }) {
            state = .failed("fail marker \"\(marker)\" appeared: \(line)")
            return state
        }
        if nextExpectation < expectations.count, let regex = try? Regex(expectations[nextExpectation]),
            line.contains(regex)
        {
            nextExpectation += 1
        }
        if line.contains(passMarker) {
            if nextExpectation < expectations.count {
                state = .failed("pass marker appeared but expectation /\(expectations[nextExpectation])/ never matched")
            } else {
                state = .passed
            }
        }
        return state
    }

    @discardableResult
    public mutating func feed(_ line: String) -> State { feed(Substring(line)) }
}

/// Splits a byte stream into lines, keeping the unfinished tail and the last lines for failure reports.
public struct LineAssembler: Sendable {
    private var pending: [UInt8] = []
    public private(set) var tail: [String] = []
    public let tailLimit: Int

    public init(tailLimit: Int = 40) { self.tailLimit = tailLimit }

    /// Returns the complete lines in `bytes`.
    public mutating func append(_ bytes: some Sequence<UInt8>) -> [String] {
        var lines: [String] = []
        for byte in bytes {
            if byte == 0x0A {
                lines.append(String(decoding: pending, as: UTF8.self).filter { $0 != "\r" })
                pending.removeAll(keepingCapacity: true)
            } else {
                pending.append(byte)
            }
        }
        for line in lines { remember(line) }
        return lines
    }

    /// The unfinished last line, if any (at end of stream).
    public mutating func flush() -> [String] {
        guard !pending.isEmpty else { return [] }
        let line = String(decoding: pending, as: UTF8.self).filter { $0 != "\r" }
        pending.removeAll()
        remember(line)
        return [line]
    }

    private mutating func remember(_ line: String) {
        tail.append(line)
        if tail.count > tailLimit { tail.removeFirst(tail.count - tailLimit) }
    }

    /// The tail including the unfinished line.
    public var tailWithPending: [String] {
        pending.isEmpty ? tail : tail + [String(decoding: pending, as: UTF8.self)]
    }
}
