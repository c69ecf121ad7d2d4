import Testing
import VireoKVM
import VireoMemory

/// Host-tier tests: the KVM wrappers against this machine's real /dev/kvm with a three-instruction guest.
@Suite(.enabled(if: HostKVM.available, "needs /dev/kvm"))
struct KVMSmokeTests {
    @Test func realModeGuestWritesToAPortAndHalts() throws {
        let kvm = try KVM()
        let vm = try kvm.createVM()
        let memory = try GuestMemory(ranges: [(GuestAddress(0), 0x10_0000)])
        let region = memory.regions[0]
        try vm.setUserMemoryRegion(slot: 0, guestAddress: 0, size: region.size, hostAddress: region.hostAddress)
        // mov al, 'V' ; out 0x80, al ; hlt
        try memory.write([0xB0, 0x56, 0xE6, 0x80, 0xF4], at: GuestAddress(0x1000))
        let vcpu = try vm.createVCPU(id: 0)
        var sregs = try vcpu.specialRegisters()
        sregs.cs.base = 0
        sregs.cs.selector = 0
        try vcpu.setSpecialRegisters(sregs)
        var regs = Registers()
        regs.rip = 0x1000
        regs.rflags = 2
        try vcpu.setRegisters(regs)

        #expect(try vcpu.run() == .ioOut(port: 0x80, size: 1, count: 1))
        #expect(vcpu.ioData(index: 0, size: 1) == 0x56)
        #expect(try vcpu.run() == .halt)
    }

    @Test func supportedCPUIDHasTheKVMSignature() throws {
        let entries = try KVM().supportedCPUID()
        #expect(entries.contains { $0.function == 0 })
        #expect(entries.contains { $0.function == 1 })
    }

    @Test func errorsNameTheIoctl() throws {
        let vm = try KVM().createVM()
        // Slot sizes must be page multiples: KVM answers EINVAL, and the error says which ioctl.
        #expect {
            try vm.setUserMemoryRegion(slot: 0, guestAddress: 0, size: 123, hostAddress: 0x1000)
        } throws: { error in
            String(describing: error).hasPrefix("KVM_SET_USER_MEMORY_REGION failed: Invalid argument")
        }
    }
}

enum HostKVM {
    /// Whether this machine has a usable /dev/kvm. CI requires it: there the suite must not be skipped.
    static var available: Bool {
        if (try? KVM()) != nil { return true }
        return Environment.isCI ? true : false
    }
}

enum Environment {
    static var isCI: Bool { getenv("CI").map { String(cString: $0) == "true" } ?? false }
}

#if canImport(Glibc)
import Glibc
#endif
