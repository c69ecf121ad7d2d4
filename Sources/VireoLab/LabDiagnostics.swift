import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What a lab host was doing when its scenario timed out, seen from outside: QEMU's human monitor
/// (`info registers -a`) gives each L1 CPU's instruction pointer. L1 boots with `nokaslr`, so its kernel
/// text sits at the link-time addresses: a real `System.map` (Debian ships it in the `-dbg` package;
/// `/boot` has a one-line placeholder) names the function, and without one the address range still says
/// whose code it is. TCG shows a CPU in SVM guest mode with the guest's registers, so an address outside
/// L1's kernel and modules is the L2 guest (whose kernel keeps KASLR) or L1 user space. With the in-L1
/// thread report of `vmm-run`, a hang says whether the L1 kernel, the L2 guest or the VMM stopped.
public enum LabDiagnostics {
    /// One line per L1 CPU, e.g. `CPU 1: RIP ffffffff81c3a1e0 (default_idle+0x10) halted`; empty when
    /// the monitor does not answer within `timeout` seconds.
    public static func cpuReport(monitorSocket: String, systemMap: String?, timeout: Double = 5) -> [String] {
        guard let registers = HumanMonitor.run("info registers -a", socket: monitorSocket, timeout: timeout) else { return [] }
        let symbols = systemMap.flatMap { KernelSymbols(systemMapPath: $0) }
        return cpuLines(registers: registers, symbols: symbols)
    }

    /// Parses `info registers -a` (blocks starting with `CPU#N`, with `RIP=…` and `HLT=…` fields).
    static func cpuLines(registers: String, symbols: KernelSymbols?) -> [String] {
        var lines: [String] = []
        var cpu: String?
        for line in registers.replacingOccurrences(of: "\r\n", with: "\n").split(separator: "\n") {
            if line.hasPrefix("CPU#") { cpu = String(line.dropFirst(4)) }
            guard let cpu, let rip = field("RIP", in: line) else { continue }
            var text = "CPU \(cpu): RIP \(rip)"
            if let address = UInt64(rip, radix: 16) {
                text += " (" + (symbols?.name(of: address) ?? whoseCode(address)) + ")"
            }
            if field("HLT", in: line) == "1" { text += " halted" }
            lines.append(text)
        }
        return lines
    }

    /// x86-64 Linux's fixed kernel layout (Documentation/arch/x86/x86_64/mm.rst): without KASLR the text
    /// starts at 0xffffffff81000000 and stays well within 64 MiB; modules (kvm, kvm-amd) lie above
    /// 0xffffffffc0000000.
    static func whoseCode(_ address: UInt64) -> String {
        switch address {
        case 0xFFFF_FFFF_8100_0000..<0xFFFF_FFFF_8500_0000: "L1 kernel text"
        case 0xFFFF_FFFF_C000_0000...: "an L1 module, such as kvm or kvm-amd"
        default: "the L2 guest or L1 user space"
        }
    }

    /// The value of `NAME=value` in a monitor line.
    static func field(_ name: String, in line: Substring) -> String? {
        guard let range = line.range(of: name + "=") else { return nil }
        return String(line[range.upperBound...].prefix { !$0.isWhitespace })
    }
}

/// Kernel text symbols from a `System.map` (`ADDRESS TYPE NAME` lines), for naming an instruction pointer.
struct KernelSymbols {
    private let symbols: [(address: UInt64, name: String)]

    init?(systemMapPath: String) {
        guard let text = try? String(contentsOfFile: systemMapPath, encoding: .utf8) else { return nil }
        self.init(systemMap: text)
    }

    init?(systemMap: String) {
        var symbols: [(UInt64, String)] = []
        for line in systemMap.split(separator: "\n") {
            let parts = line.split(separator: " ")
            guard parts.count == 3, "tTwW".contains(parts[1]), let address = UInt64(parts[0], radix: 16) else { continue }
            symbols.append((address, String(parts[2])))
        }
        guard symbols.count > 1 else { return nil }  // Debian's placeholder map has one line
        self.symbols = symbols.sorted { $0.0 < $1.0 }
    }

    /// `function+0xOFFSET` for an address inside the kernel's text (`_stext` up to `_etext`), else nil.
    func name(of address: UInt64) -> String? {
        guard let first = symbols.first, address >= first.address,
              let end = symbols.first(where: { $0.name == "_etext" })?.address, address < end else { return nil }
        var low = 0, high = symbols.count  // last symbol at or below `address`
        while high - low > 1 {
            let middle = (low + high) / 2
            if symbols[middle].address <= address { low = middle } else { high = middle }
        }
        return symbols[low].name + "+0x" + String(address - symbols[low].address, radix: 16)
    }
}

/// QEMU's human monitor on a unix socket (`-monitor unix:PATH,server=on,wait=off`): one command, its text.
enum HumanMonitor {
    static let prompt = Array("(qemu) ".utf8)

    static func run(_ command: String, socket path: String, timeout: Double) -> String? {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let pathBytes = Array(path.utf8)
        guard pathBytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { buffer in
            for (index, byte) in pathBytes.enumerated() { buffer[index] = byte }
        }
        var limit = timeval(tv_sec: Int(timeout), tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0, readUntilPrompt(fd) != nil else { return nil }
        let line = Array((command + "\n").utf8)
        guard write(fd, line, line.count) == line.count, let reply = readUntilPrompt(fd) else { return nil }
        return String(decoding: reply, as: UTF8.self)
    }

    /// Bytes up to the next prompt (at most 1 MiB), or nil on time-out or end of stream.
    private static func readUntilPrompt(_ fd: Int32) -> [UInt8]? {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while received.count < 1 << 20 {
            let count = read(fd, &buffer, buffer.count)
            guard count > 0 else { return nil }
            received += buffer[0..<count]
            if received.count >= prompt.count, Array(received.suffix(prompt.count)) == prompt {
                return Array(received.dropLast(prompt.count))
            }
        }
        return nil
    }
}
