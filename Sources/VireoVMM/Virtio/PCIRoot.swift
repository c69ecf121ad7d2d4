import Logging
import Synchronization
import VireoBoot
import VireoDevices
import VireoKVM

/// PCI segment 0 as the guest sees it: configuration mechanism #1 and ECAM (MCFG) over `bus`, the host bridge at
/// 00:00.0, and the 32-bit and 64-bit memory windows of the DSDT's `PCI0._CRS`, each registered once on
/// the MMIO bus. Devices get the next free slot and naturally aligned 64-bit BARs from the 64-bit window.
final class PCIRoot: Sendable {
    let bus = PCIBus()
    let window: PCIMemoryWindow
    /// The 64-bit window above RAM (the DSDT's `PCI0._CRS` QWordMemory), where BARs go.
    let window64: PCIMemoryWindow
    private let allocation: Mutex<(allocator: PCIBarAllocator, nextSlot: UInt8)>
    /// One OR-ing combiner per INTx GSI (several slots share each of the eight lines).
    private let intxLines: [UInt32: SharedInterruptLine]

    init(mmioBus: Bus, ramEnd: UInt64, vm: VM, logger: Logger) throws {
        var lines: [UInt32: SharedInterruptLine] = [:]
        for offset in 0..<X86Layout.pciINTxGSICount {
            let gsi = X86Layout.pciINTxFirstGSI + offset
            lines[gsi] = SharedInterruptLine(KVMInterruptLine(vm: vm, gsi: gsi, logger: logger))
        }
        intxLines = lines
        window = PCIMemoryWindow(base: X86Layout.pciMMIO32Base, length: X86Layout.pciMMIO32Size)
        let high = X86Layout.pciMMIO64Window(ramEnd: ramEnd)
        window64 = PCIMemoryWindow(base: high.base, length: high.size)
        allocation = Mutex((PCIBarAllocator(base: high.base, length: high.size), 1))
        try bus.register(PCIHostBridge(), device: 0)
        try mmioBus.register(window, at: window.base, length: window.length)
        try mmioBus.register(window64, at: window64.base, length: window64.length)
        try mmioBus.register(PCIECAM(bus: bus), at: X86Layout.pciECAMBase, length: X86Layout.pciECAMSize)
    }

    /// INTA of the function in `slot`, as the DSDT's `_PRT` routes it.
    func intxLine(slot: UInt8) -> any InterruptLine {
        let gsi = X86Layout.pciINTxGSI(slot: slot, pin: 0)
        return intxLines[gsi].map { $0.source(Int(slot)) } ?? NoInterruptLine()
    }

    /// A slot on bus 0 for the next function.
    func nextSlot() throws -> UInt8 {
        try allocation.withLock { state in
            guard state.nextSlot < 32 else { throw ConfigError.invalid("too many PCI devices (at most 31)") }
            defer { state.nextSlot += 1 }
            return state.nextSlot
        }
    }

    /// A BAR address of `size` bytes in the 64-bit window (the guest may move a BAR into the 32-bit one).
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
        window64.attach(function)
    }
}

/// A level-triggered line several devices share (PCI INTx): asserted while any source asserts it.
/// KVM_IRQ_LINE keeps one level per GSI for all of userspace, so the OR happens here.
final class SharedInterruptLine: Sendable {
    let line: any InterruptLine
    private let asserted = Mutex<Set<Int>>([])

    init(_ line: any InterruptLine) { self.line = line }

    /// The line as seen by source `id`.
    func source(_ id: Int) -> any InterruptLine { Source(shared: self, id: id) }

    struct Source: InterruptLine {
        let shared: SharedInterruptLine
        let id: Int
        func setLevel(_ level: Bool) { shared.set(id, level) }
    }

    private func set(_ id: Int, _ level: Bool) {
        asserted.withLock { sources in
            let before = !sources.isEmpty
            if level { sources.insert(id) } else { sources.remove(id) }
            if before != !sources.isEmpty { line.setLevel(!sources.isEmpty) }
        }
    }
}

struct NoInterruptLine: InterruptLine {
    func setLevel(_ level: Bool) {}
}
