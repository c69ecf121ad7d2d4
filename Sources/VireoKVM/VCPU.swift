import CVireoLinux
import VireoSystem
#if canImport(Glibc)
import Glibc
#endif

/// Why `KVM_RUN` returned, decoded once from the `kvm_run` union (rust-vmm `VcpuExit` in spirit).
public enum VCPUExit: Equatable, Sendable {
    /// `IN` from `port`: the handler fills ``VCPU/setIOData(_:index:size:)`` for each of `count` items.
    case ioIn(port: UInt16, size: Int, count: Int)
    /// `OUT` to `port`: ``VCPU/ioData(index:size:)`` gives each of `count` items.
    case ioOut(port: UInt16, size: Int, count: Int)
    /// MMIO read of `size` bytes; answer with ``VCPU/setMMIOData(_:)``.
    case mmioRead(address: UInt64, size: Int)
    /// MMIO write of `value`, `size` bytes.
    case mmioWrite(address: UInt64, size: Int, value: UInt64)
    /// `HLT` with the in-kernel LAPIC absent, or a halted vCPU.
    case halt
    /// The guest reset the CPU (triple fault, or an INIT the irqchip turned into a shutdown).
    case shutdown
    /// `KVM_EXIT_SYSTEM_EVENT`: a PSCI-style shutdown/reset/crash request.
    case systemEvent(type: UInt32)
    /// `KVM_RUN` returned EINTR: another thread kicked this vCPU (pause, stop).
    case interrupted
    /// KVM could not emulate or enter the guest; `reason` is the KVM sub-reason code.
    case internalError(suberror: UInt32)
    case failedEntry(reason: UInt64)
    /// An exit Vireo does not handle, by `KVM_EXIT_*` number.
    case unhandled(reason: UInt32)
}

/// A virtual CPU: its registers and the `KVM_RUN` loop entry point. One thread owns each vCPU;
/// only ``kick(thread:)``-style requests (setting `immediate_exit`) cross threads.
@safe
public final class VCPU: @unchecked Sendable {
    // SAFETY: `@safe` because the unsafe `shared` pointer never escapes the public API: it is
    // created from the vCPU's own kvm_run mmap (VM.createVCPU), owned by this object and unmapped
    // only in deinit, and the I/O data accessors bounds-check offsets against `runSize`.
    // `run` points at the vCPU's kvm_run mapping, valid until deinit. Only the owning
    // vCPU thread reads/writes it except for `immediate_exit`, a byte the kernel defines for
    // exactly this cross-thread use.
    public let id: UInt32
    let fd: FileDescriptor
    let shared: UnsafeMutablePointer<kvm_run>
    let runSize: Int

    /// The vCPU's binary statistics file, opened once at creation (or -1, with `statisticsErrno`
    /// saying why): `KVM_GET_STATS_FD` is a vCPU ioctl, which waits for the vCPU mutex that
    /// `KVM_RUN` holds, so asking for it later would block for as long as the guest idles in the
    /// kernel. Reading the file takes no lock.
    let statisticsDescriptor: Int32
    let statisticsErrno: Int32

    init(id: UInt32, fd: consuming FileDescriptor, run: UnsafeMutableRawPointer, runSize: Int) {
        self.id = id
        let statistics = vireo_ioctl_none(fd.rawValue, VIREO_KVM_GET_STATS_FD)
        statisticsDescriptor = statistics
        statisticsErrno = statistics < 0 ? errno : 0
        self.fd = fd
        unsafe self.shared = run.assumingMemoryBound(to: kvm_run.self)
        self.runSize = runSize
    }

    deinit {
        _ = unsafe munmap(UnsafeMutableRawPointer(shared), runSize)
        if statisticsDescriptor >= 0 { Glibc.close(statisticsDescriptor) }
    }

    public var rawDescriptor: Int32 { fd.rawValue }

    /// Enters the guest until the next exit that needs userspace, and decodes it.
    public func run() throws(KVMError) -> VCPUExit {
        if vireo_ioctl_none(fd.rawValue, VIREO_KVM_RUN) < 0 {
            let error = errno
            if error == EINTR || error == EAGAIN {
                unsafe shared.pointee.immediate_exit = 0
                return .interrupted
            }
            throw .ioctl("KVM_RUN", errno: error)
        }
        let reason = unsafe shared.pointee.exit_reason
        switch Int32(reason) {
        case KVM_EXIT_IO:
            let io = unsafe shared.pointee.io
            let port = io.port, size = Int(io.size), count = Int(io.count)
            return io.direction == UInt8(KVM_EXIT_IO_OUT) ? .ioOut(port: port, size: size, count: count) : .ioIn(port: port, size: size, count: count)
        case KVM_EXIT_MMIO:
            let mmio = unsafe shared.pointee.mmio
            let size = Int(min(mmio.len, 8))
            if mmio.is_write != 0 {
                var value: UInt64 = 0
                unsafe withUnsafeBytes(of: mmio.data) { bytes in
                    for index in 0..<size { value |= UInt64(unsafe bytes[index]) << (8 * index) }
                }
                return .mmioWrite(address: mmio.phys_addr, size: size, value: value)
            }
            return .mmioRead(address: mmio.phys_addr, size: size)
        case KVM_EXIT_HLT: return .halt
        case KVM_EXIT_SHUTDOWN: return .shutdown
        case KVM_EXIT_SYSTEM_EVENT: return .systemEvent(type: unsafe shared.pointee.system_event.type)
        case KVM_EXIT_INTR: return .interrupted
        case KVM_EXIT_INTERNAL_ERROR: return .internalError(suberror: unsafe shared.pointee.internal.suberror)
        case KVM_EXIT_FAIL_ENTRY: return .failedEntry(reason: unsafe shared.pointee.fail_entry.hardware_entry_failure_reason)
        default: return .unhandled(reason: reason)
        }
    }

    /// Item `index` of an `OUT` exit's data, little-endian, `size` bytes (1, 2 or 4).
    public func ioData(index: Int, size: Int) -> UInt64 {
        let offset = Int(unsafe shared.pointee.io.data_offset) + index * size
        guard size > 0, size <= 8, offset >= 0, offset + size <= runSize else { return 0 }
        let base = unsafe UnsafeRawPointer(shared) + offset
        var value: UInt64 = 0
        for byte in 0..<size { value |= UInt64(unsafe base.load(fromByteOffset: byte, as: UInt8.self)) << (8 * byte) }
        return value
    }

    /// Stores the answer to item `index` of an `IN` exit.
    public func setIOData(_ value: UInt64, index: Int, size: Int) {
        let offset = Int(unsafe shared.pointee.io.data_offset) + index * size
        guard size > 0, size <= 8, offset >= 0, offset + size <= runSize else { return }
        let base = unsafe UnsafeMutableRawPointer(shared) + offset
        for byte in 0..<size { unsafe base.storeBytes(of: UInt8(truncatingIfNeeded: value >> (8 * byte)), toByteOffset: byte, as: UInt8.self) }
    }

    /// Stores the answer to an MMIO read exit.
    public func setMMIOData(_ value: UInt64) {
        unsafe withUnsafeBytes(of: value.littleEndian) { bytes in
            unsafe withUnsafeMutableBytes(of: &shared.pointee.mmio.data) { data in
                for index in 0..<8 { unsafe data[index] = bytes[index] }
            }
        }
    }

    /// Asks a running `KVM_RUN` to return as soon as possible; pair it with a signal to the vCPU thread.
    public func requestImmediateExit() {
        unsafe shared.pointee.immediate_exit = 1
    }

    public func registers() throws(KVMError) -> Registers {
        var regs = Registers()
        _ = try kvmCall("KVM_GET_REGS") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_GET_REGS, &regs) }
        return regs
    }

    public func setRegisters(_ regs: Registers) throws(KVMError) {
        var regs = regs
        _ = try kvmCall("KVM_SET_REGS") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_REGS, &regs) }
    }

    public func specialRegisters() throws(KVMError) -> SpecialRegisters {
        var sregs = SpecialRegisters()
        _ = try kvmCall("KVM_GET_SREGS") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_GET_SREGS, &sregs) }
        return sregs
    }

    public func setSpecialRegisters(_ sregs: SpecialRegisters) throws(KVMError) {
        var sregs = sregs
        _ = try kvmCall("KVM_SET_SREGS") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_SREGS, &sregs) }
    }

    public func setFPU(_ fpu: FPUState) throws(KVMError) {
        var fpu = fpu
        _ = try kvmCall("KVM_SET_FPU") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_FPU, &fpu) }
    }

    /// `KVM_SET_CPUID2`: the CPUID table this vCPU's guest sees.
    public func setCPUID(_ entries: [CPUIDEntry]) throws(KVMError) {
        let size = vireo_kvm_cpuid2_size(UInt32(entries.count))
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { unsafe buffer.deallocate() }
        unsafe buffer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        unsafe buffer.assumingMemoryBound(to: kvm_cpuid2.self).pointee.nent = UInt32(entries.count)
        let table = unsafe (buffer + MemoryLayout<kvm_cpuid2>.size).assumingMemoryBound(to: kvm_cpuid_entry2.self)
        for (index, entry) in entries.enumerated() { unsafe table[index] = entry.raw }
        _ = try kvmCall("KVM_SET_CPUID2") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_CPUID2, buffer) }
    }

    /// `KVM_SET_MSRS`; throws unless every MSR was accepted (KVM returns how many it set).
    public func setMSRs(_ msrs: [(index: UInt32, value: UInt64)]) throws(KVMError) {
        let size = vireo_kvm_msrs_size(UInt32(msrs.count))
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { unsafe buffer.deallocate() }
        unsafe buffer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        unsafe buffer.assumingMemoryBound(to: kvm_msrs.self).pointee.nmsrs = UInt32(msrs.count)
        let table = unsafe (buffer + MemoryLayout<kvm_msrs>.size).assumingMemoryBound(to: kvm_msr_entry.self)
        for (index, msr) in msrs.enumerated() {
            var entry = kvm_msr_entry()
            entry.index = msr.index
            entry.data = msr.value
            unsafe table[index] = entry
        }
        let set = try kvmCall("KVM_SET_MSRS") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_MSRS, buffer) }
        if Int(set) != msrs.count {
            let rejected = msrs[Int(set)].index
            throw .invalidArgument("KVM_SET_MSRS accepted \(set) of \(msrs.count) MSRs; MSR 0x\(String(rejected, radix: 16)) was refused")
        }
    }

    public func lapic() throws(KVMError) -> LAPICState {
        var state = LAPICState()
        _ = try kvmCall("KVM_GET_LAPIC") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_GET_LAPIC, &state) }
        return state
    }

    public func setLAPIC(_ state: LAPICState) throws(KVMError) {
        var state = state
        _ = try kvmCall("KVM_SET_LAPIC") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_LAPIC, &state) }
    }

    /// Per-vCPU counters such as `exits` and `insn_emulation` (`KVM_GET_STATS_FD`, Linux 5.14+).
    /// Safe from any thread while the vCPU runs: it reads the file opened at creation.
    public func statistics() throws(KVMError) -> [String: UInt64] {
        guard statisticsDescriptor >= 0 else { throw .ioctl("KVM_GET_STATS_FD", errno: statisticsErrno) }
        return try KVMStatistics.read(rawDescriptor: statisticsDescriptor)
    }
}

extension LAPICState {
    /// Reads the 32-bit APIC register at byte `offset` of the register page (Intel SDM Vol. 3 §11.4.1).
    public func register(at offset: Int) -> UInt32 {
        unsafe withUnsafeBytes(of: regs) { bytes in
            guard offset >= 0, offset + 4 <= bytes.count else { return 0 }
            return unsafe bytes.littleEndianInteger(UInt32.self, at: offset) ?? 0
        }
    }

    public mutating func setRegister(_ value: UInt32, at offset: Int) {
        unsafe withUnsafeMutableBytes(of: &regs) { bytes in
            guard offset >= 0, offset + 4 <= bytes.count else { return }
            for index in 0..<4 { unsafe bytes[offset + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
        }
    }
}

extension UnsafeRawBufferPointer {
    fileprivate func littleEndianInteger<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        guard offset >= 0, offset + MemoryLayout<T>.size <= count else { return nil }
        var value: T = 0
        for index in 0..<MemoryLayout<T>.size { value |= T(unsafe self[offset + index]) << (8 * index) }
        return value
    }
}
