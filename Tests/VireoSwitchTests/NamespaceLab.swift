import Foundation
import VireoTestSupport
import Testing
import VireoSwitch
import VireoSystem

/// A throw-away network lab for one test: a `vireo-switchd` process, network namespaces as
/// endpoints (tap ports moved into them, or veth pairs on uplink ports), all removed on `close()`.
/// Traffic only ever goes to addresses inside the lab's own namespaces.
final class NamespaceLab {
    /// Where `vireo-switchd` is: `$VIREO_SWITCHD`, or next to the test bundle (same build directory).
    static let switchdPath: String? = {
        if let path = ProcessInfo.processInfo.environment["VIREO_SWITCHD"], FileManager.default.isExecutableFile(atPath: path) { return path }
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        for candidate in [directory, directory.deletingLastPathComponent()] {
            let path = candidate.appendingPathComponent("vireo-switchd").path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }()

    /// Root, `ip` and a built `vireo-switchd`: the namespace tests run only where all three are present.
    static let available: Bool = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/ping") && switchdPath != nil

    static func hasTool(_ path: String) -> Bool { FileManager.default.isExecutableFile(atPath: path) }

    let tag: String
    let directory: String
    let subnet: Int
    private(set) var namespaces: [String] = []
    private var links: [String] = []
    private var process: Process?
    private let logPath: String

    /// Removes what labs of test processes that died without cleaning up (SIGKILL) left behind:
    /// each lab directory names its owner's PID; the switch itself stops with its parent.
    private static let sweptStaleLabs: Void = {
        let temporary = NSTemporaryDirectory()
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: temporary)) ?? []
        let namespaces = ((try? run(["ip", "netns", "list"], allowFailure: true).output) ?? "").split(separator: "\n").compactMap { $0.split(separator: " ").first.map(String.init) }
        let links = ((try? run(["ip", "-o", "link", "show"], allowFailure: true).output) ?? "").split(separator: "\n").compactMap { line -> String? in
            let fields = line.split(separator: " ")
            return fields.count > 1 ? String(fields[1].split(separator: "@").first ?? "").trimmingCharacters(in: CharacterSet(charactersIn: ":")) : nil
        }
        for entry in entries where entry.hasPrefix("vsw-") {
            let directory = temporary + entry
            guard let owner = (try? String(contentsOfFile: directory + "/owner", encoding: .utf8)).flatMap({ Int32($0) }) else { continue }
            guard kill(owner, 0) != 0, errno == ESRCH else { continue }
            let prefix = "v" + entry.dropFirst(4)
            for namespace in namespaces where namespace.hasPrefix(prefix) { _ = try? run(["ip", "netns", "del", namespace], allowFailure: true) }
            for link in links where link.hasPrefix(prefix) { _ = try? run(["ip", "link", "del", link], allowFailure: true) }
            try? FileManager.default.removeItem(atPath: directory)
        }
    }()

    init() {
        Self.sweptStaleLabs
        tag = String(UInt32.random(in: 0x10000..<0xFFFFF), radix: 16)
        directory = NSTemporaryDirectory() + "vsw-\(tag)"
        subnet = Int.random(in: 1...250)
        logPath = directory + "/switchd.log"
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        FileManager.default.createFile(atPath: directory + "/owner", contents: Data("\(getpid())".utf8))
    }

    var switchName: String { "t\(tag)" }
    var controlPath: String { "\(directory)/\(switchName).ctl" }
    func socketPath(port: String) -> String { "\(directory)/\(switchName)-\(port).sock" }

    /// An interface or namespace name unique to this lab (≤ 15 characters).
    func name(_ role: String) -> String { "v\(tag)\(role)" }

    /// `10.S.N.host` addresses; `S` is random per lab so parallel labs never overlap.
    func address(_ host: Int) -> String { "10.\(subnet).\(host % 256).\(host)" }

    // MARK: Processes

    @discardableResult
    static func run(_ arguments: [String], allowFailure: Bool = false) throws -> (status: Int32, output: String) {
        let (status, output) = try ChildCommand.run(arguments[0], Array(arguments.dropFirst()))
        if !allowFailure && status != 0 {
            throw LabError.command(arguments.joined(separator: " "), output)
        }
        return (status, output)
    }

    enum LabError: Error, CustomStringConvertible {
        case command(String, String)
        case timeout(String)
        var description: String {
            switch self {
            case .command(let command, let output): "\(command) failed: \(output)"
            case .timeout(let what): "timed out: \(what)"
            }
        }
    }

    /// Starts the switch with `ports` (specs as on the command line) and waits for its control socket.
    /// The running switch's process ID (to stop and continue it).
    var switchPID: Int32? { process?.processIdentifier }

    func startSwitch(ports: [String], extra: [String] = []) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.switchdPath!)
        process.arguments = ["--name", switchName, "--socket-dir", directory] + ports.flatMap { ["--port", $0] } + ["--exit-with-parent"] + extra
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        for _ in 0..<100 {
            if FileManager.default.fileExists(atPath: controlPath) { return }
            guard process.isRunning else { break }
            usleep(50_000)
        }
        throw LabError.timeout("vireo-switchd control socket; log: \(switchLog)")
    }

    var switchLog: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    var switchIsRunning: Bool { process?.isRunning ?? false }

    /// A namespace with `interface` (a tap the switch created, now moved in) at `address(host)`, IPv6 off.
    func addNamespace(_ role: String, interface: String, host: Int) throws {
        let namespace = name(role)
        try Self.run(["ip", "netns", "add", namespace])
        namespaces.append(namespace)
        try Self.run(["ip", "netns", "exec", namespace, "sh", "-c",
                      "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"])
        try Self.run(["ip", "link", "set", interface, "netns", namespace])
        try Self.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        try Self.run(["ip", "-n", namespace, "addr", "add", "\(address(host))/16", "dev", interface])
        try Self.run(["ip", "-n", namespace, "link", "set", interface, "up"])
    }

    /// A veth pair: the host end (returned) stays in the host namespace for an uplink port; the
    /// other end goes into a new namespace at `address(host)`.
    func addVethNamespace(_ role: String, host: Int) throws -> String {
        let namespace = name(role)
        let hostEnd = name(role + "h"), inner = name(role + "i")
        try Self.run(["ip", "netns", "add", namespace])
        namespaces.append(namespace)
        try Self.run(["ip", "netns", "exec", namespace, "sh", "-c",
                      "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6"])
        try Self.run(["ip", "link", "add", hostEnd, "type", "veth", "peer", "name", inner])
        links.append(hostEnd)
        try Self.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/\(hostEnd)/disable_ipv6"], allowFailure: true)
        try Self.run(["ip", "link", "set", inner, "netns", namespace])
        try Self.run(["ip", "link", "set", hostEnd, "up"])
        try Self.run(["ip", "-n", namespace, "link", "set", "lo", "up"])
        try Self.run(["ip", "-n", namespace, "addr", "add", "\(address(host))/16", "dev", inner])
        try Self.run(["ip", "-n", namespace, "link", "set", inner, "up"])
        return hostEnd
    }

    /// `ping` from a namespace to a lab address; true if every reply came back.
    func ping(from role: String, to host: Int, count: Int = 2, wait: Int = 1) -> Bool {
        let result = try? Self.run(["ip", "netns", "exec", name(role), "ping", "-n", "-q", "-c", "\(count)", "-i", "0.2", "-W", "\(wait)", address(host)], allowFailure: true)
        return result?.status == 0
    }

    /// Sends `megabytes` MiB of a seeded stream over TCP from namespace `from` to `address(host)`
    /// in namespace `to`; returns both ends' byte counts and SHA-256 digests ("count digest"), or
    /// nil for an end that failed (each end gives up after 60 s).
    func transfer(from: String, to: String, host: Int, megabytes: Int) throws -> (sent: String?, received: String?) {
        guard Self.hasTool("/usr/bin/python3") else { throw LabError.timeout("python3 is missing") }
        let ready = "\(directory)/listening-\(to)"
        // A file left by an earlier transfer to the same namespace would send the sender off before
        // this receiver listens (connection refused, then the receiver waits out its time-out).
        try? FileManager.default.removeItem(atPath: ready)
        let receiver = Process()
        receiver.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        receiver.arguments = ["netns", "exec", name(to), "/usr/bin/python3", "-c", """
            import hashlib, socket, sys
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.settimeout(60)
            s.bind((sys.argv[1], 5201)); s.listen(1); open(sys.argv[2], "w").close()
            c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0
            while True:
                b = c.recv(1 << 20)
                if not b: break
                h.update(b); n += len(b)
            print(n, h.hexdigest())
            """, address(host), ready]
        let receiverOutput = Pipe()
        receiver.standardOutput = receiverOutput
        try receiver.run()
        for _ in 0..<200 where !FileManager.default.fileExists(atPath: ready) && receiver.isRunning { usleep(50_000) }
        let sender = Process()
        sender.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        sender.arguments = ["netns", "exec", name(from), "/usr/bin/python3", "-c", """
            import hashlib, random, socket, sys
            c = socket.create_connection((sys.argv[1], 5201), timeout=60)
            rng = random.Random(11); h = hashlib.sha256(); n = 0
            for _ in range(int(sys.argv[2])):
                b = rng.randbytes(1 << 20); c.sendall(b); h.update(b); n += len(b)
            c.shutdown(socket.SHUT_WR); c.recv(1)
            print(n, h.hexdigest())
            """, address(host), "\(megabytes)"]
        let senderOutput = Pipe()
        sender.standardOutput = senderOutput
        try sender.run()
        let sent = String(decoding: senderOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        sender.waitUntilExit()
        if sender.terminationStatus != 0, receiver.isRunning { receiver.terminate() }
        let received = String(decoding: receiverOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        receiver.waitUntilExit()
        func line(_ text: String, _ process: Process) -> String? {
            process.terminationStatus == 0 ? text.trimmingCharacters(in: .whitespacesAndNewlines) : nil
        }
        return (line(sent, sender), line(received, receiver))
    }

    /// The MAC address of an interface inside a namespace.
    func mac(in role: String, interface: String) throws -> String {
        let output = try Self.run(["ip", "-n", name(role), "-o", "link", "show", interface]).output
        guard let range = output.range(of: "link/ether ") else { throw LabError.command("ip link show", output) }
        return String(output[range.upperBound...].prefix(17))
    }

    // MARK: Control socket

    /// Sends one control command and returns the parsed JSON reply.
    func control(_ command: String) throws -> [String: Any] {
        let socket = try UnixSocket.connect(path: controlPath)
        FrameChannel.setReceiveTimeout(socket.rawValue, milliseconds: 3000)
        guard RawDescriptorIO.writeAll(socket.rawValue, Array((command + "\n").utf8)) else { throw LabError.command(command, "write failed") }
        var reply: [UInt8] = []
        while !reply.contains(UInt8(ascii: "\n")) {
            guard let chunk = RawDescriptorIO.readSome(socket.rawValue, max: 65_536) else { throw LabError.timeout("reply to \(command)") }
            reply += chunk
        }
        let object = try JSONSerialization.jsonObject(with: Data(reply))
        return object as? [String: Any] ?? [:]
    }

    func stats(port: String) throws -> [String: Any] {
        let ports = try control("stats")["ports"] as? [[String: Any]] ?? []
        return ports.first { $0["name"] as? String == port } ?? [:]
    }

    func drops(port: String, _ reason: String) throws -> Int {
        (try stats(port: port)["drops"] as? [String: Any])?[reason] as? Int ?? -1
    }

    func fdb() throws -> [(vlan: Int, mac: String, port: String)] {
        (try control("fdb")["entries"] as? [[String: Any]] ?? []).map {
            ($0["vlan"] as? Int ?? -1, $0["mac"] as? String ?? "", $0["port"] as? String ?? "")
        }
    }

    // MARK: Teardown

    /// Stops the switch and deletes every namespace and link the lab made; safe to call twice.
    func close() {
        if let process, process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        process = nil
        for namespace in namespaces { _ = try? Self.run(["ip", "netns", "del", namespace], allowFailure: true) }
        for link in links { _ = try? Self.run(["ip", "link", "del", link], allowFailure: true) }
        namespaces = []
        links = []
        try? FileManager.default.removeItem(atPath: directory)
    }

    deinit { close() }
}

/// A VM NIC stand-in: a SOCK_SEQPACKET connection to a `vm:` port, one frame per message.
final class FakeVMNIC {
    let socket: FileDescriptor

    init(path: String) throws {
        socket = try FrameChannel.connectSeqPacket(path: path)
        FrameChannel.setReceiveTimeout(socket.rawValue, milliseconds: 300)
    }

    /// Sends one frame, waiting while the socket buffer is full (the switch drains it).
    func send(_ frame: [UInt8]) {
        for _ in 0..<10_000 {
            if FrameChannel.sendMessage(socket.rawValue, frame) { return }
            usleep(100)
        }
    }

    /// The next frame, or nil after the receive timeout.
    func receive() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 70_000)
        guard let length = try? FrameChannel.read(socket.rawValue, into: &buffer), length > 0 else { return nil }
        return Array(buffer.prefix(length))
    }

    /// Frames received until `deadline` seconds pass with nothing matching, or one matches.
    func receive(matching predicate: ([UInt8]) -> Bool, within seconds: Double = 3) -> [UInt8]? {
        let end = Date().addingTimeInterval(seconds)
        while Date() < end {
            if let frame = receive(), predicate(frame) { return frame }
        }
        return nil
    }
}

/// ARP frames (RFC 826) for tests that talk to a namespace's IP stack directly.
enum ARP {
    static func ipv4(_ text: String) -> [UInt8] { text.split(separator: ".").map { UInt8($0)! } }

    static func request(from mac: MACAddress, ip: String, asking target: String, vid: UInt16? = nil) -> [UInt8] {
        let body: [UInt8] = [0, 1, 8, 0, 6, 4, 0, 1] + mac.octets + ipv4(ip) + [0, 0, 0, 0, 0, 0] + ipv4(target)
        return Frames.make(dst: .broadcast, src: mac, vid: vid, etherType: 0x0806, payload: body + [UInt8](repeating: 0, count: 18))
    }

    /// Is `frame` an ARP reply (optionally 802.1Q-tagged) addressed to `mac`?
    static func isReply(_ frame: [UInt8], to mac: MACAddress) -> Bool {
        guard case .success(let header) = FrameHeader.parse(frame), header.etherType == 0x0806, header.destination == mac else { return false }
        let opcodeIndex = header.headerLength + 7
        return frame.count > opcodeIndex && frame[opcodeIndex] == 2
    }
}
