import Synchronization

/// A PCI function with memory BARs that the `PCIMemoryWindow` routes MMIO accesses to.
public protocol PCIBarDevice: PCIDevice {
    /// BAR `index`'s guest-physical base and size when the guest has memory decoding on (command
    /// register bit 1, PCI 3.0 §6.2.2) and the BAR is implemented; nil otherwise.
    func decodedBar(_ index: Int) -> (base: UInt64, size: UInt64)?
    func readBar(_ index: Int, offset: UInt64, size: Int) -> UInt64
    func writeBar(_ index: Int, offset: UInt64, size: Int, value: UInt64)
}

/// One host-bridge memory window (the `_CRS` ranges of the DSDT's PCI0), registered once on the MMIO
/// bus. Each access is routed to whichever function's BAR decodes the address *now*: a guest that
/// re-programs a BAR or turns memory decoding off changes the routing without any bus re-registration.
/// An address no BAR decodes reads as all ones (master abort).
public final class PCIMemoryWindow: BusDevice {
    public let base: UInt64
    public let length: UInt64
    private let functions = Mutex<[any PCIBarDevice]>([])

    public init(base: UInt64, length: UInt64) {
        self.base = base
        self.length = length
    }

    public func attach(_ function: any PCIBarDevice) {
        functions.withLock { $0.append(function) }
    }

    public func read(offset: UInt64, size: Int) -> UInt64 {
        guard let (function, bar, barOffset) = route(offset) else { return AccessWidth.allOnes(size) }
        return function.readBar(bar, offset: barOffset, size: size)
    }

    public func write(offset: UInt64, size: Int, value: UInt64) {
        guard let (function, bar, barOffset) = route(offset) else { return }
        function.writeBar(bar, offset: barOffset, size: size, value: value)
    }

    private func route(_ offset: UInt64) -> (any PCIBarDevice, Int, UInt64)? {
        let (address, overflow) = base.addingReportingOverflow(offset)
        guard !overflow else { return nil }
        let snapshot = functions.withLock { $0 }
        for function in snapshot {
            for bar in 0..<6 {
                guard let decoded = function.decodedBar(bar) else { continue }
                if address >= decoded.base, address - decoded.base < decoded.size {
                    return (function, bar, address - decoded.base)
                }
            }
        }
        return nil
    }
}

/// Hands out naturally aligned BAR addresses from a window, lowest first.
public struct PCIBarAllocator: Sendable {
    public let base: UInt64
    public let end: UInt64
    private var next: UInt64

    public init(base: UInt64, length: UInt64) {
        self.base = base
        end = base + length
        next = base
    }

    /// An address for a BAR of `size` bytes (a power of two), or nil when the window is full.
    public mutating func allocate(size: UInt64) -> UInt64? {
        guard size > 0, size & (size - 1) == 0 else { return nil }
        let aligned = (next + size - 1) & ~(size - 1)
        guard aligned >= next, aligned <= end, end - aligned >= size else { return nil }
        next = aligned + size
        return aligned
    }
}
