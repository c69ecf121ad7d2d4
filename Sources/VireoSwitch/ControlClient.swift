import VireoSystem

/// Why a request to a switch's control socket failed.
public enum SwitchControlError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The socket could not be reached, or the switch went away mid-request.
    case unreachable(path: String, SystemError)
    /// The switch sent no complete reply in time, or something that is not a reply.
    case badReply(path: String, String)
    /// The switch refused the command: its `{"error":…}` message.
    case refused(command: String, message: String)

    public var description: String {
        switch self {
        case .unreachable(let path, let error): "switch control socket \(path): \(error)"
        case .badReply(let path, let detail): "switch control socket \(path): \(detail)"
        case .refused(let command, let message): "switch refused '\(command)': \(message)"
        }
    }
}

/// A client of `vireo-switchd`'s control socket (`DIR/NAME.ctl`, docs/network.md): one command
/// line out, one JSON line back. Each request uses its own short-lived connection, so a client
/// never holds the switch's event loop.
public struct SwitchControlClient: Sendable {
    public let path: String
    public let timeoutMilliseconds: Int

    public init(path: String, timeoutMilliseconds: Int = 5000) {
        self.path = path
        self.timeoutMilliseconds = timeoutMilliseconds
    }

    /// The control socket of switch `name` whose sockets live in `directory`.
    public init(switch name: String, directory: String) {
        self.init(path: "\(directory)/\(name).ctl")
    }

    /// Sends `command` and returns the reply line (JSON text); a `{"error":…}` reply throws ``SwitchControlError/refused(command:message:)``.
    public func request(_ command: String) throws(SwitchControlError) -> String {
        let connection: FileDescriptor
        do { connection = try UnixSocket.connect(path: path) } catch { throw .unreachable(path: path, error) }
        FrameChannel.setReceiveTimeout(connection.rawValue, milliseconds: timeoutMilliseconds)
        do { try connection.writeAll(Array((command + "\n").utf8)) } catch { throw .unreachable(path: path, error) }
        var reply: [UInt8] = []
        while !reply.contains(UInt8(ascii: "\n")) {
            let chunk: [UInt8]
            do { chunk = try connection.read(upTo: 4096) } catch { throw .badReply(path: path, "no reply to '\(command)' (\(error))") }
            guard !chunk.isEmpty else { throw .badReply(path: path, "connection closed before the reply to '\(command)'") }
            reply += chunk
            guard reply.count <= 1 << 20 else { throw .badReply(path: path, "reply to '\(command)' longer than 1 MiB") }
        }
        let line = String(decoding: reply.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
        if let message = Self.errorMessage(line) { throw .refused(command: command, message: message) }
        return line
    }

    /// Adds a port (`add-port SPEC`); returns the JSON reply.
    @discardableResult
    public func addPort(_ config: PortConfig) throws(SwitchControlError) -> String {
        try request("add-port \(config.spec)")
    }

    /// Deletes a port (`del-port NAME`).
    public func removePort(named name: String) throws(SwitchControlError) {
        _ = try request("del-port \(name)")
    }

    /// The socket path of `vm:` port `port` on switch `name` in `directory`.
    public static func vmSocketPath(switch name: String, port: String, directory: String) -> String {
        "\(directory)/\(name)-\(port).sock"
    }

    /// The message of an `{"error":"…"}` reply (the switch writes exactly that shape), or nil.
    static func errorMessage(_ line: String) -> String? {
        let prefix = "{\"error\":\""
        guard line.hasPrefix(prefix), line.hasSuffix("\"}") else { return nil }
        var message = ""
        var escaped = false
        for character in line.dropFirst(prefix.count).dropLast(2) {
            if escaped {
                switch character {
                case "n": message.append("\n")
                case "t": message.append("\t")
                case "r": message.append("\r")
                default: message.append(character)
                }
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else {
                message.append(character)
            }
        }
        return message
    }
}
