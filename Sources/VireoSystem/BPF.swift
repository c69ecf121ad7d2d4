#if canImport(Glibc)
import Glibc
#endif
import CVireoLinux

// eBPF, as much as a data plane needs to hand its fast path to the kernel: hash maps it shares
// with the programs, programs assembled here and checked by the kernel's verifier, and the hooks
// they run at (tcx links on an interface, filters on a socket). Instruction set: Linux
// Documentation/bpf/standardization/instruction-set.rst.

/// An eBPF register. r0 holds return values, r1–r5 arguments (clobbered by calls), r6–r9 survive
/// calls, r10 is the read-only frame pointer.
public enum BPFRegister: UInt8, Sendable {
    case r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10
}

/// A memory access width.
public enum BPFSize: UInt8, Sendable {
    case word = 0x00, half = 0x08, byte = 0x10, double = 0x18
}

/// A conditional jump's comparison (unsigned).
public enum BPFCondition: UInt8, Sendable {
    case equal = 0x10, greater = 0x20, notEqual = 0x50
}

/// One 8-byte instruction: opcode, destination and source registers, offset, immediate.
public struct BPFInstruction: Equatable, Sendable {
    public var code: UInt8
    public var destination: UInt8
    public var source: UInt8
    public var offset: Int16
    public var immediate: Int32

    /// Little-endian encoding, as `struct bpf_insn` lays it out on x86-64.
    public var bytes: [UInt8] {
        var bytes: [UInt8] = [code, destination & 0x0F | source << 4]
        bytes += unsafe withUnsafeBytes(of: offset.littleEndian, Array.init)
        bytes += unsafe withUnsafeBytes(of: immediate.littleEndian, Array.init)
        return bytes
    }
}

/// Assembles a program, with named labels as jump targets.
public struct BPFAssembler: Sendable {
    private enum Item: Sendable {
        case instruction(BPFInstruction)
        case jump(code: UInt8, destination: BPFRegister, source: BPFRegister, immediate: Int32, label: String)
    }
    private var items: [Item] = []
    private var labels: [String: Int] = [:]

    public init() {}

    /// BPF class and mode bits (instruction-set.rst §"Instruction classes").
    private static let ld: UInt8 = 0x00, ldx: UInt8 = 0x01, st: UInt8 = 0x02, stx: UInt8 = 0x03
    private static let jmp: UInt8 = 0x05, alu64: UInt8 = 0x07
    private static let memory: UInt8 = 0x60, atomic: UInt8 = 0xC0, immediate64: UInt8 = 0x00
    private static let sourceRegister: UInt8 = 0x08

    private mutating func emit(_ code: UInt8, _ destination: BPFRegister = .r0, _ source: BPFRegister = .r0, offset: Int16 = 0, immediate: Int32 = 0) {
        items.append(.instruction(BPFInstruction(code: code, destination: destination.rawValue, source: source.rawValue, offset: offset, immediate: immediate)))
    }

    /// `destination = value` (64-bit, the value sign-extended).
    public mutating func move(_ destination: BPFRegister, _ value: Int32) { emit(Self.alu64 | 0xB0, destination, immediate: value) }
    /// `destination = source`.
    public mutating func move(_ destination: BPFRegister, _ source: BPFRegister) { emit(Self.alu64 | 0xB0 | Self.sourceRegister, destination, source) }
    /// `destination += value`.
    public mutating func add(_ destination: BPFRegister, _ value: Int32) { emit(Self.alu64 | 0x00, destination, immediate: value) }
    /// `destination = *(size *)(source + offset)`.
    public mutating func load(_ size: BPFSize, _ destination: BPFRegister, _ source: BPFRegister, _ offset: Int16) {
        emit(Self.ldx | Self.memory | size.rawValue, destination, source, offset: offset)
    }
    /// `*(size *)(destination + offset) = source`.
    public mutating func store(_ size: BPFSize, _ destination: BPFRegister, _ offset: Int16, _ source: BPFRegister) {
        emit(Self.stx | Self.memory | size.rawValue, destination, source, offset: offset)
    }
    /// `lock *(u64 *)(destination + offset) += source`.
    public mutating func atomicAdd(_ destination: BPFRegister, _ offset: Int16, _ source: BPFRegister) {
        emit(Self.stx | Self.atomic | BPFSize.double.rawValue, destination, source, offset: offset, immediate: 0)
    }
    /// `destination = the map behind file descriptor `fd`` (a two-slot load the kernel relocates).
    public mutating func loadMap(_ destination: BPFRegister, fd: Int32) {
        emit(Self.ld | BPFSize.double.rawValue | Self.immediate64, destination, .r1, immediate: fd)  // source 1: BPF_PSEUDO_MAP_FD
        emit(0, immediate: 0)
    }
    /// Calls kernel helper number `helper` (arguments in r1–r5, result in r0).
    public mutating func call(_ helper: Int32) { emit(Self.jmp | 0x80, immediate: helper) }
    public mutating func exit() { emit(Self.jmp | 0x90) }
    /// Jumps to `label` when `register condition value`.
    public mutating func jump(if register: BPFRegister, _ condition: BPFCondition, _ value: Int32, to label: String) {
        items.append(.jump(code: Self.jmp | condition.rawValue, destination: register, source: .r0, immediate: value, label: label))
    }
    /// Jumps to `label` when `register condition other`.
    public mutating func jump(if register: BPFRegister, _ condition: BPFCondition, _ other: BPFRegister, to label: String) {
        items.append(.jump(code: Self.jmp | condition.rawValue | Self.sourceRegister, destination: register, source: other, immediate: 0, label: label))
    }
    /// Jumps to `label`.
    public mutating func jump(to label: String) {
        items.append(.jump(code: Self.jmp | 0x00, destination: .r0, source: .r0, immediate: 0, label: label))
    }
    /// Names the next instruction.
    public mutating func label(_ name: String) { labels[name] = items.count }

    /// The program, jumps resolved; nil names a label that was jumped to but never placed.
    public func assemble() throws(BPFError) -> [BPFInstruction] {
        var program: [BPFInstruction] = []
        for (index, item) in items.enumerated() {
            switch item {
            case .instruction(let instruction): program.append(instruction)
            case .jump(let code, let destination, let source, let immediate, let label):
                guard let target = labels[label] else { throw .undefinedLabel(label) }
                program.append(BPFInstruction(code: code, destination: destination.rawValue, source: source.rawValue,
                                              offset: Int16(target - index - 1), immediate: immediate))
            }
        }
        return program
    }
}

/// Why a BPF object could not be made.
public enum BPFError: Error, CustomStringConvertible, Equatable, Sendable {
    case system(SystemError)
    /// The verifier refused the program; its log says why.
    case rejected(SystemError, log: String)
    case undefinedLabel(String)

    public var description: String {
        switch self {
        case .system(let error): error.description
        case .rejected(let error, let log): "\(error); verifier: \(log.split(separator: "\n").suffix(6).joined(separator: " | "))"
        case .undefinedLabel(let label): "BPF program jumps to label '\(label)', which is never placed"
        }
    }
}

/// A BPF hash map: fixed-size byte keys to fixed-size byte values, shared by this process and
/// the programs that were loaded with it. Closed (and freed, once no program holds it) on deinit.
public final class BPFHashMap: @unchecked Sendable {
    public let descriptor: FileDescriptor
    public let keySize: Int
    public let valueSize: Int

    public init(keySize: Int, valueSize: Int, maxEntries: Int) throws(BPFError) {
        let fd = vireo_bpf_hash_create(UInt32(keySize), UInt32(valueSize), UInt32(maxEntries))
        guard fd >= 0 else { throw .system(SystemError("BPF_MAP_CREATE (hash, \(maxEntries) entries)", errno: errno)) }
        descriptor = FileDescriptor(adopting: fd)
        self.keySize = keySize
        self.valueSize = valueSize
    }

    /// Sets `key` to `value`, creating the entry if needed.
    public func update(_ key: [UInt8], _ value: [UInt8]) throws(SystemError) {
        precondition(key.count == keySize && value.count == valueSize, "BPF map entry of the wrong size")
        let result = unsafe key.withUnsafeBytes { key in
            unsafe value.withUnsafeBytes { value in unsafe vireo_bpf_map_update(descriptor.rawValue, key.baseAddress, value.baseAddress, 0) }
        }
        guard result == 0 else { throw SystemError("BPF_MAP_UPDATE_ELEM", errno: errno) }
    }

    /// The value under `key`, or nil when there is none.
    public func lookup(_ key: [UInt8]) throws(SystemError) -> [UInt8]? {
        precondition(key.count == keySize, "BPF map key of the wrong size")
        var value = [UInt8](repeating: 0, count: valueSize)
        let result = unsafe key.withUnsafeBytes { key in
            unsafe value.withUnsafeMutableBytes { value in unsafe vireo_bpf_map_lookup(descriptor.rawValue, key.baseAddress, value.baseAddress) }
        }
        if result == 0 { return value }
        if errno == ENOENT { return nil }
        throw SystemError("BPF_MAP_LOOKUP_ELEM", errno: errno)
    }

    /// Removes `key`; false when it was not there.
    @discardableResult
    public func delete(_ key: [UInt8]) throws(SystemError) -> Bool {
        precondition(key.count == keySize, "BPF map key of the wrong size")
        let result = unsafe key.withUnsafeBytes { unsafe vireo_bpf_map_delete(descriptor.rawValue, $0.baseAddress) }
        if result == 0 { return true }
        if errno == ENOENT { return false }
        throw SystemError("BPF_MAP_DELETE_ELEM", errno: errno)
    }
}

/// A program the kernel verified and holds while this object (or a hook it is attached to) lives.
public final class BPFProgram: @unchecked Sendable {
    public enum Kind: UInt32, Sendable {
        /// Runs on packets queued to a socket; returns how many bytes to keep (0: none).
        case socketFilter = 1
        /// Traffic control (tcx) on an interface; returns a verdict (TCX_NEXT -1, TCX_PASS 0, TCX_DROP 2, TCX_REDIRECT 7).
        case trafficControl = 3
    }

    public let descriptor: FileDescriptor
    public let kind: Kind

    public init(_ kind: Kind, instructions: [BPFInstruction]) throws(BPFError) {
        let code = instructions.flatMap(\.bytes)
        var log = [CChar](repeating: 0, count: 64 * 1024)
        let fd = unsafe code.withUnsafeBytes { code in
            unsafe log.withUnsafeMutableBufferPointer { log in
                unsafe vireo_bpf_prog_load(kind.rawValue, code.baseAddress, UInt32(instructions.count), "Dual MIT/GPL", log.baseAddress, UInt32(log.count))
            }
        }
        guard fd >= 0 else {
            let error = SystemError("BPF_PROG_LOAD (\(kind), \(instructions.count) instructions)", errno: errno)
            let text = unsafe log.withUnsafeBufferPointer { unsafe String(cString: $0.baseAddress!) }
            throw text.isEmpty ? .system(error) : .rejected(error, log: text)
        }
        descriptor = FileDescriptor(adopting: fd)
        self.kind = kind
    }

    /// Runs this socket filter on every packet queued to socket `fd` from now on (SO_ATTACH_BPF);
    /// it goes with the socket.
    public func attach(toSocket fd: Int32) throws(SystemError) {
        guard vireo_bpf_attach_socket_filter(fd, descriptor.rawValue) == 0 else { throw SystemError("SO_ATTACH_BPF", errno: errno) }
    }
}

/// A traffic-control program attached to an interface through a tcx link (Linux 6.6): it runs
/// while the link lives, and the kernel detaches it when the link's descriptor closes, so a data
/// plane that exits or crashes never leaves its program behind on a host interface.
public final class TCXLink: @unchecked Sendable {
    public let descriptor: FileDescriptor
    public let interfaceIndex: Int32

    public init(_ program: BPFProgram, interfaceIndex: Int32, egress: Bool) throws(SystemError) {
        let fd = vireo_bpf_tcx_attach(program.descriptor.rawValue, interfaceIndex, egress ? 1 : 0)
        guard fd >= 0 else { throw SystemError("BPF_LINK_CREATE (tcx \(egress ? "egress" : "ingress") on interface \(interfaceIndex))", errno: errno) }
        descriptor = FileDescriptor(adopting: fd)
        self.interfaceIndex = interfaceIndex
    }
}
