import CVireoLinux
import VireoSystem
#if canImport(Glibc)
import Glibc
#endif

/// General-purpose registers (`struct kvm_regs`).
public typealias Registers = kvm_regs
/// Control, segment and descriptor-table registers (`struct kvm_sregs`).
public typealias SpecialRegisters = kvm_sregs
/// One segment register as KVM describes it (`struct kvm_segment`).
public typealias Segment = kvm_segment
/// x87/SSE state (`struct kvm_fpu`).
public typealias FPUState = kvm_fpu
/// The local APIC's register page (`struct kvm_lapic_state`).
public typealias LAPICState = kvm_lapic_state

/// A KVM virtual machine: guest memory slots, the in-kernel interrupt controllers, and vCPU creation.
public final class VM: Sendable {
    let fd: FileDescriptor
    let runSize: Int

    init(fd: consuming FileDescriptor, runSize: Int) {
        self.fd = fd
        self.runSize = runSize
    }

    public var rawDescriptor: Int32 { fd.rawValue }

    /// `KVM_SET_USER_MEMORY_REGION`: maps `size` bytes of host memory at `hostAddress` into guest-physical `guestAddress`.
    public func setUserMemoryRegion(slot: UInt32, guestAddress: UInt64, size: UInt64, hostAddress: UInt64, readOnly: Bool = false) throws(KVMError) {
        var region = kvm_userspace_memory_region()
        region.slot = slot
        region.flags = readOnly ? UInt32(KVM_MEM_READONLY) : 0
        region.guest_phys_addr = guestAddress
        region.memory_size = size
        region.userspace_addr = hostAddress
        _ = try kvmCall("KVM_SET_USER_MEMORY_REGION") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_USER_MEMORY_REGION, &region) }
    }

    /// `KVM_SET_TSS_ADDR`: three pages of guest-physical space Intel VMX needs for real-mode emulation; must not overlap RAM or MMIO.
    public func setTSSAddress(_ address: UInt64) throws(KVMError) {
        _ = try kvmCall("KVM_SET_TSS_ADDR") { vireo_ioctl_value(fd.rawValue, VIREO_KVM_SET_TSS_ADDR, UInt(address)) }
    }

    /// `KVM_SET_IDENTITY_MAP_ADDR`: one page for VMX's real-mode identity page table.
    public func setIdentityMapAddress(_ address: UInt64) throws(KVMError) {
        var value = address
        _ = try kvmCall("KVM_SET_IDENTITY_MAP_ADDR") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_IDENTITY_MAP_ADDR, &value) }
    }

    /// `KVM_CREATE_IRQCHIP`: the in-kernel PIC pair, IOAPIC and per-vCPU local APICs.
    public func createIRQChip() throws(KVMError) {
        _ = try kvmCall("KVM_CREATE_IRQCHIP") { vireo_ioctl_none(fd.rawValue, VIREO_KVM_CREATE_IRQCHIP) }
    }

    /// `KVM_CREATE_PIT2`: the in-kernel i8254, with a dummy speaker port (0x61 stays in userspace).
    public func createPIT2() throws(KVMError) {
        var config = kvm_pit_config()
        config.flags = UInt32(KVM_PIT_SPEAKER_DUMMY)
        _ = try kvmCall("KVM_CREATE_PIT2") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_CREATE_PIT2, &config) }
    }

    /// `KVM_IRQ_LINE`: drives a GSI of the in-kernel irqchip to `level`.
    public func setIRQLine(_ gsi: UInt32, level: Bool) throws(KVMError) {
        var line = kvm_irq_level()
        line.irq = gsi
        line.level = level ? 1 : 0
        _ = try kvmCall("KVM_IRQ_LINE") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_IRQ_LINE, &line) }
    }

    /// `KVM_CREATE_VCPU` and the mapping of its shared `kvm_run` page.
    public func createVCPU(id: UInt32) throws(KVMError) -> VCPU {
        let vcpufd = try kvmCall("KVM_CREATE_VCPU") { vireo_ioctl_value(fd.rawValue, VIREO_KVM_CREATE_VCPU, UInt(id)) }
        let owned = FileDescriptor(adopting: vcpufd)
        let mapping = unsafe mmap(nil, runSize, PROT_READ | PROT_WRITE, MAP_SHARED, vcpufd, 0)
        guard let mapping = unsafe mapping, unsafe mapping != MAP_FAILED else { throw .ioctl("mmap kvm_run", errno: errno) }
        return unsafe VCPU(id: id, fd: owned, run: mapping, runSize: runSize)
    }

    /// `KVM_GET_STATS_FD` on the VM: KVM's binary statistics (Linux 5.14+).
    public func statistics() throws(KVMError) -> [String: UInt64] {
        let statsfd = try kvmCall("KVM_GET_STATS_FD") { vireo_ioctl_none(fd.rawValue, VIREO_KVM_GET_STATS_FD) }
        return try KVMStatistics.read(descriptor: FileDescriptor(adopting: statsfd))
    }
}
