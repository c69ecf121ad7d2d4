import CVireoLinux
import VireoSystem

extension VM {
    /// `KVM_SIGNAL_MSI`: injects one MSI with the given message (address, data) into the guest
    /// (KVM API §4.71). Works from any thread; used for MSI-X vectors of emulated PCI functions.
    public func signalMSI(address: UInt64, data: UInt32) throws(KVMError) {
        var msi = kvm_msi()
        msi.address_lo = UInt32(truncatingIfNeeded: address)
        msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
        msi.data = data
        _ = try kvmCall("KVM_SIGNAL_MSI") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SIGNAL_MSI, &msi) }
    }

    /// `KVM_IOEVENTFD` (KVM API §4.59): a guest write of `length` bytes (0 = any length) to MMIO
    /// address `address` signals `eventFD` inside KVM instead of exiting to userspace.
    /// `deassign` removes a registration made with the same arguments.
    public func setIOEventFD(_ eventFD: EventFD, mmioAddress address: UInt64, length: UInt32, deassign: Bool = false) throws(KVMError) {
        var request = kvm_ioeventfd()
        request.addr = address
        request.len = length
        request.fd = eventFD.rawValue
        // KVM_IOEVENTFD_FLAG_DEASSIGN is (1 << kvm_ioeventfd_flag_nr_deassign), a macro Swift cannot import.
        request.flags = deassign ? UInt32(1) << 2 : 0
        _ = try kvmCall("KVM_IOEVENTFD") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_IOEVENTFD, &request) }
    }
}
