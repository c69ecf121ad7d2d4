import CVireoLinux
import VireoSystem
#if canImport(Glibc)
import Glibc
#endif

/// The `/dev/kvm` system handle: capability queries, supported CPUID, and VM creation.
/// (rust-vmm kvm-ioctls `ioctls/system.rs` plays the same role.)
public final class KVM: Sendable {
    let fd: FileDescriptor

    /// The stable KVM API version every supported kernel reports (`KVM_GET_API_VERSION`).
    public static let stableAPIVersion: Int32 = 12

    public init(path: String = "/dev/kvm") throws(KVMError) {
        let raw = unsafe Glibc.open(path, O_RDWR | O_CLOEXEC)
        guard raw >= 0 else { throw .open(path, errno: errno) }
        fd = FileDescriptor(adopting: raw)
        let version = try kvmCall("KVM_GET_API_VERSION") { vireo_ioctl_none(fd.rawValue, VIREO_KVM_GET_API_VERSION) }
        guard version == KVM.stableAPIVersion else { throw .unsupportedAPIVersion(version) }
    }

    /// `KVM_CHECK_EXTENSION`: 0 when absent, otherwise a capability-specific positive value.
    public func checkExtension(_ capability: Int32) -> Int32 {
        max(0, vireo_ioctl_value(fd.rawValue, VIREO_KVM_CHECK_EXTENSION, UInt(capability)))
    }

    /// Throws ``KVMError/missingCapability(_:)`` unless `capability` is present.
    public func require(_ capability: Int32, _ name: String) throws(KVMError) {
        if checkExtension(capability) == 0 { throw .missingCapability(name) }
    }

    /// Size of the shared `kvm_run` mapping of each vCPU.
    public func vcpuMmapSize() throws(KVMError) -> Int {
        Int(try kvmCall("KVM_GET_VCPU_MMAP_SIZE") { vireo_ioctl_none(fd.rawValue, VIREO_KVM_GET_VCPU_MMAP_SIZE) })
    }

    /// `KVM_GET_SUPPORTED_CPUID`: what this host's KVM can expose to a guest, the starting point
    /// for each vCPU's CPUID table. Retries with a larger buffer on E2BIG.
    public func supportedCPUID() throws(KVMError) -> [CPUIDEntry] {
        var capacity: UInt32 = 128
        while true {
            let size = vireo_kvm_cpuid2_size(capacity)
            let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
            defer { unsafe buffer.deallocate() }
            unsafe buffer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
            let header = unsafe buffer.assumingMemoryBound(to: kvm_cpuid2.self)
            unsafe header.pointee.nent = capacity
            let result = unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_GET_SUPPORTED_CPUID, buffer)
            if result < 0 {
                if errno == E2BIG, capacity < 4096 { capacity *= 2; continue }
                throw .ioctl("KVM_GET_SUPPORTED_CPUID", errno: errno)
            }
            let count = Int(unsafe header.pointee.nent)
            let entries = unsafe (buffer + MemoryLayout<kvm_cpuid2>.size).assumingMemoryBound(to: kvm_cpuid_entry2.self)
            return (0..<count).map { unsafe CPUIDEntry(entries[$0]) }
        }
    }

    /// `KVM_CREATE_VM` with the default machine type.
    public func createVM() throws(KVMError) -> VM {
        let vmfd = try kvmCall("KVM_CREATE_VM") { vireo_ioctl_value(fd.rawValue, VIREO_KVM_CREATE_VM, 0) }
        return VM(fd: FileDescriptor(adopting: vmfd), runSize: try vcpuMmapSize())
    }
}

/// KVM capability numbers Vireo checks (`KVM_CAP_*` in `<linux/kvm.h>`).
public enum KVMCapability {
    public static let irqchip = Int32(KVM_CAP_IRQCHIP)
    public static let pit2 = Int32(KVM_CAP_PIT2)
    public static let userMemory = Int32(KVM_CAP_USER_MEMORY)
    public static let setTSSAddress = Int32(KVM_CAP_SET_TSS_ADDR)
    public static let extendedCPUID = Int32(KVM_CAP_EXT_CPUID)
    public static let irqfd = Int32(KVM_CAP_IRQFD)
    public static let ioeventfd = Int32(KVM_CAP_IOEVENTFD)
    public static let immediateExit = Int32(KVM_CAP_IMMEDIATE_EXIT)
    public static let binaryStatsFD = Int32(KVM_CAP_BINARY_STATS_FD)
    public static let maxVCPUs = Int32(KVM_CAP_MAX_VCPUS)
    public static let tscControl = Int32(KVM_CAP_TSC_CONTROL)
}
