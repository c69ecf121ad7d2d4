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

/// Where KVM delivers a GSI (`struct kvm_irq_routing_entry`, KVM API §4.52).
public enum GSIRoute: Equatable, Sendable {
    /// A pin of an in-kernel interrupt controller: chip 0 = master PIC, 1 = slave PIC, 2 = IOAPIC.
    case irqchip(chip: UInt32, pin: UInt32)
    /// An MSI with this message.
    case msi(address: UInt64, data: UInt32)
}

extension VM {
    /// KVM's default x86 routing (what `KVM_CREATE_IRQCHIP` installs): GSIs 0–15 go to the PIC pair
    /// and the IOAPIC pin of the same number, GSIs 16–23 to the IOAPIC only. `KVM_SET_GSI_ROUTING`
    /// replaces the whole table, so every call must include these entries to keep the legacy IRQs working.
    public static var defaultIRQChipRoutes: [(gsi: UInt32, route: GSIRoute)] {
        var routes: [(gsi: UInt32, route: GSIRoute)] = []
        for gsi: UInt32 in 0..<24 {
            if gsi < 16 { routes.append((gsi, .irqchip(chip: gsi < 8 ? 0 : 1, pin: gsi % 8))) }
            routes.append((gsi, .irqchip(chip: 2, pin: gsi)))
        }
        return routes
    }

    /// `KVM_SET_GSI_ROUTING`: replaces the VM's GSI routing table with `routes`.
    public func setGSIRouting(_ routes: [(gsi: UInt32, route: GSIRoute)]) throws(KVMError) {
        let size = vireo_kvm_irq_routing_size(UInt32(routes.count))
        let headerSize = MemoryLayout<kvm_irq_routing>.size
        let entrySize = MemoryLayout<kvm_irq_routing_entry>.size
        // SAFETY: the buffer is `size` bytes, zeroed, aligned for the structures, and freed below; the
        // header and `routes.count` entries written are exactly what vireo_kvm_irq_routing_size measured.
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 8)
        defer { unsafe buffer.deallocate() }
        unsafe buffer.initializeMemory(as: UInt8.self, repeating: 0, count: size)
        var header = kvm_irq_routing()
        header.nr = UInt32(routes.count)
        unsafe buffer.storeBytes(of: header, as: kvm_irq_routing.self)
        for (index, (gsi, route)) in routes.enumerated() {
            var entry = kvm_irq_routing_entry()
            entry.gsi = gsi
            switch route {
            case let .irqchip(chip, pin):
                entry.type = UInt32(KVM_IRQ_ROUTING_IRQCHIP)
                unsafe entry.u.irqchip.irqchip = chip
                unsafe entry.u.irqchip.pin = pin
            case let .msi(address, data):
                entry.type = UInt32(KVM_IRQ_ROUTING_MSI)
                unsafe entry.u.msi.address_lo = UInt32(truncatingIfNeeded: address)
                unsafe entry.u.msi.address_hi = UInt32(truncatingIfNeeded: address >> 32)
                unsafe entry.u.msi.data = data
            }
            unsafe (buffer + headerSize + index * entrySize).storeBytes(of: entry, as: kvm_irq_routing_entry.self)
        }
        _ = try kvmCall("KVM_SET_GSI_ROUTING") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_SET_GSI_ROUTING, buffer) }
    }

    /// `KVM_IRQFD` (KVM API §4.75): signalling `eventFD` injects GSI `gsi` inside KVM.
    public func setIRQFD(_ eventFD: EventFD, gsi: UInt32, deassign: Bool = false) throws(KVMError) {
        var request = kvm_irqfd()
        request.fd = UInt32(bitPattern: eventFD.rawValue)
        request.gsi = gsi
        request.flags = deassign ? UInt32(KVM_IRQFD_FLAG_DEASSIGN) : 0
        _ = try kvmCall("KVM_IRQFD") { unsafe vireo_ioctl_pointer(fd.rawValue, VIREO_KVM_IRQFD, &request) }
    }
}
