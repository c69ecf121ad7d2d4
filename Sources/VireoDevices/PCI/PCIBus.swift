import Synchronization

/// A bus/device/function triple: where a function sits in PCI configuration space.
public struct PCIAddress: Hashable, Sendable, CustomStringConvertible {
    public let bus: UInt8
    /// 0...31
    public let device: UInt8
    /// 0...7
    public let function: UInt8

    /// Nil when `device` or `function` is out of range.
    public init?(bus: UInt8, device: UInt8, function: UInt8) {
        guard device < 32, function < 8 else { return nil }
        (self.bus, self.device, self.function) = (bus, device, function)
    }

    public var description: String {
        func hex(_ v: UInt8, _ width: Int) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(hex(bus, 2)):\(hex(device, 2)).\(function)"
    }
}

/// A PCI function's configuration space (PCI Local Bus spec 3.0 §6.1).
///
/// `offset` is a byte offset below 4096 and the access (`size` 1, 2 or 4) never crosses a dword boundary;
/// the configuration mechanism guarantees both, so devices can index their config space directly after
/// a bounds check against their own size.
public protocol PCIDevice: AnyObject, Sendable {
    func readConfig(offset: Int, size: Int) -> UInt32
    func writeConfig(offset: Int, size: Int, value: UInt32)
}

/// Why a function could not be added to a `PCIBus`.
public enum PCIBusError: Error, Equatable, Sendable, CustomStringConvertible {
    case invalidAddress(bus: UInt8, device: UInt8, function: UInt8)
    case occupied(PCIAddress)

    public var description: String {
        switch self {
        case let .invalidAddress(bus, device, function):
            "invalid PCI address bus \(bus) device \(device) function \(function) (device must be < 32, function < 8)"
        case let .occupied(address): "PCI address \(address) already has a function"
        }
    }
}

/// The functions present in PCI configuration space. Empty until virtio-pci devices are added; an empty
/// slot reads as all ones (vendor ID 0xFFFF), which is how software detects absent functions.
public final class PCIBus: Sendable {
    private let functions = Mutex<[PCIAddress: any PCIDevice]>([:])

    public init() {}

    /// Places `pciDevice` at bus/device/function.
    public func register(_ pciDevice: any PCIDevice, bus: UInt8 = 0, device: UInt8, function: UInt8 = 0) throws(PCIBusError) {
        guard let address = PCIAddress(bus: bus, device: device, function: function) else {
            throw .invalidAddress(bus: bus, device: device, function: function)
        }
        try functions.withLock { functions throws(PCIBusError) in
            guard functions[address] == nil else { throw .occupied(address) }
            functions[address] = pciDevice
        }
    }

    /// The function at bus/device/function, or nil if the slot is empty or the address invalid.
    public func device(bus: UInt8, device: UInt8, function: UInt8) -> (any PCIDevice)? {
        guard let address = PCIAddress(bus: bus, device: device, function: function) else { return nil }
        return functions.withLock { $0[address] }
    }
}
