import Logging
import VireoDevices
import VireoSystem
#if canImport(Glibc)
import Glibc
#endif

/// Where the guest's serial console goes and where its input comes from (`--serial`).
final class ConsoleBackend: ConsoleOutput, @unchecked Sendable {
    // SAFETY: mutable state (`client`, `scrollback`) is only touched under `lock`.
    private let kind: VMConfig.SerialBackend
    private let logger: Logger
    private let lock = WaitableState(())
    private var outputFD: Int32 = -1
    private var ownsOutput = false
    private var listener: Int32 = -1
    private var client: Int32 = -1
    private var scrollback: [UInt8] = []
    private var terminal: RawTerminal?
    private var inputThread: OSThread?

    /// Bytes of recent output a newly connected socket client receives first, so it sees the boot log.
    static let scrollbackLimit = 64 * 1024

    init(_ kind: VMConfig.SerialBackend, logger: Logger) throws {
        self.kind = kind
        self.logger = logger
        switch kind {
        case .stdio:
            outputFD = STDOUT_FILENO
        case .file(let path):
            outputFD = try FileDescriptor.open(path, flags: O_WRONLY | O_CREAT | O_APPEND).release()
            ownsOutput = true
        case .unix(let path):
            listener = try UnixSocket.listen(path: path).release()
        case .none, .sink:
            break
        }
    }

    func write(_ bytes: [UInt8]) {
        switch kind {
        case .stdio, .file:
            RawDescriptorIO.writeAll(outputFD, bytes)
        case .unix:
            lock.update { _ in
                scrollback.append(contentsOf: bytes)
                if scrollback.count > Self.scrollbackLimit { scrollback.removeFirst(scrollback.count - Self.scrollbackLimit) }
                if client >= 0, !RawDescriptorIO.writeAll(client, bytes) {
                    RawDescriptorIO.close(client)
                    client = -1
                }
            }
        case .sink(let sink):
            sink.write(bytes)
        case .none:
            break
        }
    }

    /// Starts the thread that feeds host input to the guest's UART.
    func startInput(_ deliver: @escaping @Sendable ([UInt8]) -> Void) throws {
        switch kind {
        case .stdio:
            terminal = RawTerminal(fd: STDIN_FILENO)
            inputThread = try OSThread(name: "console-in") {
                while let bytes = RawDescriptorIO.readSome(STDIN_FILENO) { deliver(bytes) }
            }
        case .unix:
            let listener = self.listener
            inputThread = try OSThread(name: "console-sock") { [self] in
                while true {
                    guard let fd = RawDescriptorIO.accept(listener) else { return }
                    let history = lock.update { _ -> [UInt8] in
                        if client >= 0 { RawDescriptorIO.close(client) }
                        client = fd
                        return scrollback
                    }
                    RawDescriptorIO.writeAll(fd, history)
                    while let bytes = RawDescriptorIO.readSome(fd) { deliver(bytes) }
                }
            }
        case .file, .none, .sink:
            break
        }
    }

    func close() {
        terminal?.restore()
        terminal = nil
        if ownsOutput { RawDescriptorIO.close(outputFD) }
        if listener >= 0 { RawDescriptorIO.shutdown(listener) }
    }
}
