import ArgumentParser
import VireoSystem

/// `vireo vmm control SOCKET COMMAND…`: talks to one `vireo-vmm`'s control socket directly, the way
/// `qm monitor` reaches QEMU's monitor — for debugging, teaching and the lab, without a control plane.
struct VMMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmm",
        abstract: "Talk to a running vireo-vmm directly.",
        subcommands: [VMMControl.self, VMMSerial.self])
}

struct VMMControl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control",
        abstract: "Send commands to a vireo-vmm control socket (status, pause, resume, ctrl-alt-del, powerdown, stop, stats, virtio, link, balloon).",
        discussion: "Prints each JSON reply on its own line; exits 1 if any reply is an error.")

    @Argument(help: "The socket given to vireo-vmm as --control unix:PATH.") var socket: String
    @Argument(help: "Commands, sent in order.") var commands: [String]

    func run() throws {
        let connection: FileDescriptor
        do {
            connection = try UnixSocket.connect(path: socket)
        } catch {
            throw ValidationError("cannot connect to \(socket): \(SystemError.message(for: error.errno)); is vireo-vmm running with --control unix:\(socket)?")
        }
        var failed = false
        var pending: [UInt8] = []
        for command in commands {
            guard RawDescriptorIO.writeAll(connection.rawValue, Array((command + "\n").utf8)) else {
                throw ValidationError("the VMM closed the control socket")
            }
            while !pending.contains(0x0A) {
                guard let bytes = RawDescriptorIO.readSome(connection.rawValue) else { throw ValidationError("the VMM closed the control socket") }
                pending += bytes
            }
            let newline = pending.firstIndex(of: 0x0A)!
            let reply = String(decoding: pending[..<newline], as: UTF8.self)
            pending.removeSubrange(...newline)
            print(reply)
            if reply.hasPrefix(#"{"error""#) { failed = true }
        }
        if failed { throw ExitCode(1) }
    }
}

/// `vireo vmm serial SOCKET [--until TEXT]`: copies a `--serial unix:PATH` console to stdout. A new client
/// first gets the VMM's recent output (its scrollback), so the boot log is there too.
struct VMMSerial: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serial",
        abstract: "Print the output of a vireo-vmm serial console socket.",
        discussion: "Without --until it prints until the VMM closes the socket; with it, exits 0 once TEXT has appeared and 1 if the socket closes first.")

    @Argument(help: "The socket given to vireo-vmm as --serial unix:PATH.") var socket: String
    @Option(help: "Stop once this text has been printed.") var until: String?

    func run() throws {
        let connection: FileDescriptor
        do {
            connection = try UnixSocket.connect(path: socket)
        } catch {
            throw ValidationError("cannot connect to \(socket): \(SystemError.message(for: error.errno)); is vireo-vmm running with --serial unix:\(socket)?")
        }
        let wanted = until.map { Array($0.utf8) }
        var seen: [UInt8] = []
        while let bytes = RawDescriptorIO.readSome(connection.rawValue) {
            _ = RawDescriptorIO.writeAll(1, bytes)
            guard let wanted, !wanted.isEmpty else { continue }
            // Keep only the tail that could still begin a match across reads.
            seen += bytes
            if seen.firstRange(of: wanted) != nil { return }
            seen = Array(seen.suffix(wanted.count - 1))
        }
        if until != nil { throw ExitCode(1) }
    }
}
