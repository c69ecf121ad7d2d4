import ArgumentParser
import Foundation
import VireoSystem

extension VMCommand {
    /// `vireo vm console VMID`: the VM's serial console (COM1), like Proxmox's `qm terminal`. vireod
    /// reports the engine's serial unix socket in `status/current` (`vireo-serial`, a Vireo
    /// extension), so this runs on the node itself. On a terminal, stdin goes raw and Ctrl-O quits;
    /// otherwise stdin and stdout are a plain pipe and the console closes at stdin's end.
    struct ConsoleCommand: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "console",
            abstract: "Attach to a running VM's serial console (Ctrl-O quits; run it on the node).")
        @Argument(help: "VMID.") var vmid: Int
        @OptionGroup var target: Target

        static let escape: UInt8 = 0x0F  // Ctrl-O

        func run() throws {
            let (client, node) = try target.open()
            let status = try client.call("GET", "/nodes/\(node)/qemu/\(vmid)/status/current") as? [String: Any] ?? [:]
            guard status["status"] as? String == "running" else {
                throw CLIError("VM \(vmid) is not running: start it first (vireo vm start \(vmid))")
            }
            guard let path = status["vireo-serial"] as? String else {
                throw CLIError("vireod did not report VM \(vmid)'s serial socket (a vireod older than this vireo?)")
            }
            let socket: FileDescriptor
            do {
                socket = try UnixSocket.connect(path: path)
            } catch {
                throw CLIError("cannot open the serial console \(path): \(SystemError.message(for: error.errno)); "
                    + "vireo vm console runs on the node that runs the VM (like qm terminal), as a user that may open that socket")
            }
            let terminal = RawTerminal(fd: STDIN_FILENO)
            defer { terminal?.restore() }
            if terminal != nil { FileHandle.standardError.write(Data("connected to VM \(vmid)'s serial console; Ctrl-O quits\r\n".utf8)) }
            try relay(socket: socket.rawValue, interactive: terminal != nil)
            if terminal != nil { FileHandle.standardError.write(Data("\r\n".utf8)) }
        }

        /// Copies socket → stdout and stdin → socket until the escape key, stdin's end or the console closes.
        private func relay(socket: Int32, interactive: Bool) throws {
            let epoll = try Epoll()
            try epoll.add(socket, token: 1, events: Epoll.readable | Epoll.hangup)
            // A regular file or /dev/null as stdin cannot be polled: it is at its end already.
            guard (try? epoll.add(STDIN_FILENO, token: 0, events: Epoll.readable | Epoll.hangup)) != nil else { return }
            while true {
                for token in try epoll.wait() {
                    if token == 1 {
                        guard let bytes = RawDescriptorIO.readSome(socket), !bytes.isEmpty else { return }
                        guard RawDescriptorIO.writeAll(STDOUT_FILENO, bytes) else { return }
                    } else {
                        guard let bytes = RawDescriptorIO.readSome(STDIN_FILENO), !bytes.isEmpty else { return }
                        if interactive, let escape = bytes.firstIndex(of: Self.escape) {
                            RawDescriptorIO.writeAll(socket, Array(bytes[..<escape]))
                            return
                        }
                        guard RawDescriptorIO.writeAll(socket, bytes) else { return }
                    }
                }
            }
        }
    }
}
