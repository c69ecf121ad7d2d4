import Logging
import Synchronization
import VireoSystem

/// The VMM's control socket (`--control unix:PATH`): the role QMP plays for QEMU.
///
/// Protocol: one command per line, one JSON object per reply line.
///
/// | command        | effect                                              |
/// |----------------|-----------------------------------------------------|
/// | `status`       | `{"return":{"state":"running","cpus":N,"memory":B}}`; paused adds `"reason"` |
/// | `balloon-stats [N]` | guest memory statistics from the balloon (asks for fresh ones); N sets polling every N s (0: off) |
/// | `events`       | this connection also receives event lines, `{"event":"io-error",…}` |
/// | `pause`        | parks every vCPU; returns once all are parked        |
/// | `resume`       | lets parked vCPUs run again                          |
/// | `ctrl-alt-del` | presses Ctrl-Alt-Del on the guest's keyboard         |
/// | `powerdown`    | presses the ACPI power button (the guest shuts down; `system_powerdown` in QEMU) |
/// | `stop`         | ends the VM now (exit code 4)                        |
/// | `stats`        | KVM counters, `{"return":{"vcpu0.exits":N,…}}`       |
/// | `virtio`       | each virtio function: PCI address, status byte, features, why it needs a reset, every queue's indexes on both sides (`next_avail`, `avail_idx`, `used_idx`, `used_event`, `avail_event`, `waiting`), device counters |
/// | `link N [up\|down]` | reports or sets the link of NIC N (0 = first `--net`) |
///
/// Unknown commands get `{"error":"…"}`; the connection stays usable.
///
/// A paused VM's status says why: `"reason":"pause"` (the `pause` command) or
/// `"reason":"io-error","disk":N,"error":"enospc"` (a disk's host file system is full, `werror=enospc`;
/// free space, then `resume` retries the held requests). Events (after `events`): `io-error`, `resume`.
public final class ControlServer: Sendable {
    let machine: VirtualMachine
    let listener: Int32
    let logger: Logger

    public init(path: String, machine: VirtualMachine, logger: Logger) throws {
        self.machine = machine
        self.logger = logger
        listener = try UnixSocket.listen(path: path).release()
    }

    public func start() throws {
        _ = try OSThread(name: "control") { [self] in
            while let client = RawDescriptorIO.accept(listener) {
                _ = try? OSThread(name: "control-conn") { [self] in serve(client) }
            }
        }
    }

    public func close() { RawDescriptorIO.shutdown(listener) }

    private func serve(_ fd: Int32) {
        // Replies and event lines share the socket; the lock keeps each line whole.
        let writeLock = Mutex(())
        var subscription: UInt64?
        defer {
            if let subscription { machine.unsubscribeEvents(subscription) }
            writeLock.withLock { _ in RawDescriptorIO.close(fd) }
        }
        var pending: [UInt8] = []
        while let bytes = RawDescriptorIO.readSome(fd) {
            pending += bytes
            while let newline = pending.firstIndex(of: 0x0A) {
                let line = String(decoding: pending[..<newline], as: UTF8.self)
                pending.removeSubrange(...newline)
                let reply = handle(line)
                guard writeLock.withLock({ _ in RawDescriptorIO.writeAll(fd, Array((reply + "\n").utf8)) }) else { return }
                if line == "events", subscription == nil {
                    subscription = machine.subscribeEvents { event in
                        _ = writeLock.withLock { _ in RawDescriptorIO.writeAll(fd, Array((event + "\n").utf8)) }
                    }
                }
            }
            if pending.count > 4096 { return }  // a line this long is not a command
        }
    }

    /// Executes one command line and returns the JSON reply.
    public func handle(_ line: String) -> String {
        let command = line.split(separator: " ").first.map(String.init) ?? ""
        switch command {
        case "status":
            var reason = ""
            switch machine.pauseReason {
            case nil: break
            case .requested: reason = #","reason":"pause""#
            case .outOfSpace(let disk, let errno, _):
                reason = #","reason":"io-error","disk":\#(disk),"error":"\#(VirtualMachine.errnoName(errno))""#
            }
            return #"{"return":{"state":"\#(machine.state.rawValue)","cpus":\#(machine.config.cpuCount),"memory":\#(machine.config.memorySize)\#(reason)}}"#
        case "events":
            return #"{"return":{}}"#
        case "balloon-stats":
            if let argument = line.split(separator: " ").dropFirst().first {
                guard let seconds = UInt32(argument), seconds <= 86_400 else { return #"{"error":"balloon-stats takes a polling interval in seconds"}"# }
                guard machine.setBalloonStatsInterval(seconds) else { return #"{"error":"this VM has no balloon (--balloon)"}"# }
            }
            guard let (statistics, fresh) = machine.balloonStatistics(refresh: true) else { return #"{"error":"this VM has no balloon (--balloon)"}"# }
            let fields = statistics.values.sorted { $0.key < $1.key }.map { #""\#($0.key)":\#($0.value)"# }
            return #"{"return":{"fresh":\#(fresh),"generation":\#(statistics.generation),"stats":{\#(fields.joined(separator: ","))}}}"#
        case "pause":
            machine.pause()
            return #"{"return":{"state":"\#(machine.state.rawValue)"}}"#
        case "resume":
            machine.resume()
            return #"{"return":{"state":"\#(machine.state.rawValue)"}}"#
        case "ctrl-alt-del":
            machine.sendCtrlAltDel()
            return #"{"return":{}}"#
        case "powerdown":
            machine.pressPowerButton()
            return #"{"return":{}}"#
        case "stop":
            machine.requestStop(.stopped("stop command on the control socket"))
            return #"{"return":{}}"#
        case "balloon":
            // `balloon` reports, `balloon MiB` sets the target; sizes in MiB.
            let argument = line.split(separator: " ").dropFirst().first
            var target: UInt64?
            if let argument {
                guard let mib = UInt64(argument), mib <= 1 << 20 else { return #"{"error":"balloon takes a size in MiB"}"# }
                target = mib << 20
            }
            guard let sizes = machine.balloon(target: target) else { return #"{"error":"this VM has no balloon (--balloon)"}"# }
            // The guest's latest statistics as they stand (no request to the driver: this answers
            // at once), once it has reported; `stats=` on --balloon keeps them current.
            var statistics = ""
            if let (latest, _) = machine.balloonStatistics(refresh: false), latest.generation > 0 {
                let fields = latest.values.sorted { $0.key < $1.key }.map { #""\#($0.key)":\#($0.value)"# }
                statistics = #","stats_generation":\#(latest.generation),"stats_updated":\#(latest.lastUpdate),"stats":{\#(fields.joined(separator: ","))}"#
            }
            return #"{"return":{"target_mib":\#(sizes.target >> 20),"actual_mib":\#(sizes.actual >> 20)\#(statistics)}}"#
        case "link":
            // `link N` reports, `link N up|down` sets the link of the Nth --net (virtio-net STATUS).
            let arguments = line.split(separator: " ").dropFirst().map(String.init)
            guard (1...2).contains(arguments.count), let index = Int(arguments[0]) else {
                return #"{"error":"usage: link <index> [up|down]"}"#
            }
            var up: Bool?
            if arguments.count == 2 {
                guard ["up", "down"].contains(arguments[1]) else { return #"{"error":"usage: link <index> [up|down]"}"# }
                up = arguments[1] == "up"
            }
            guard let state = machine.setNetLink(index, up: up) else {
                return #"{"error":"no NIC \#(index); this VM has \#(machine.netCount) (--net)"}"#
            }
            return #"{"return":{"index":\#(index),"link":"\#(state ? "up" : "down")"}}"#
        case "virtio":
            return #"{"return":[\#(machine.virtioStatusJSON().joined(separator: ","))]}"#
        case "stats":
            let fields = machine.statistics().map { #""\#($0.0)":\#($0.1)"# }
            return #"{"return":{\#(fields.joined(separator: ","))}}"#
        default:
            let escaped = command.filter { $0.isLetter || $0.isNumber || $0 == "-" }
            return #"{"error":"unknown command '\#(escaped)'; try status, pause, resume, ctrl-alt-del, powerdown, stop, stats, virtio, balloon, balloon-stats, link, events"}"#
        }
    }
}
