import Synchronization
import VireoBoot
import VireoDevices

/// PCI segment 0 as the guest sees it: configuration mechanism #1 and ECAM (MCFG) over `bus`, the host bridge at
/// 00:00.0, and the 32-bit memory window of the DSDT's `PCI0._CRS` registered once on the MMIO bus.
/// Devices get the next free slot and naturally aligned BARs from the window.
final class PCIRoot: Sendable {
    let bus = PCIBus()
    let window: PCIMemoryWindow
    private let allocation: Mutex<(allocator: PCIBarAllocator, nextSlot: UInt8)>

    init(mmioBus: Bus) throws {
        window = PCIMemoryWindow(base: X86Layout.pciMMIO32Base, length: X86Layout.pciMMIO32Size)
        allocation = Mutex((PCIBarAllocator(base: X86Layout.pciMMIO32Base, length: X86Layout.pciMMIO32Size), 1))
        try bus.register(PCIHostBridge(), device: 0)
        try mmioBus.register(window, at: window.base, length: window.length)
        try mmioBus.register(PCIECAM(bus: bus), at: X86Layout.pciECAMBase, length: X86Layout.pciECAMSize)
    }

    /// A slot on bus 0 for the next function.
    func nextSlot() throws -> UInt8 {
        try allocation.withLock { state in
            guard state.nextSlot < 32 else { throw ConfigError.invalid("too many PCI devices (at most 31)") }
            defer { state.nextSlot += 1 }
            return state.nextSlot
        }
    }

    /// A BAR address of `size` bytes in the 32-bit window.
    func allocateBar(size: UInt64) throws -> UInt64 {
        try allocation.withLock { state in
            guard let address = state.allocator.allocate(size: size) else {
                throw ConfigError.invalid("the PCI memory window has no room for a BAR of \(size) bytes")
            }
            return address
        }
    }

    /// Places `function` at the next slot and routes its BARs.
    func add(_ function: any PCIBarDevice, slot: UInt8) throws {
        try bus.register(function, device: slot)
        window.attach(function)
    }
}
