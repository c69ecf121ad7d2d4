import Logging
import Synchronization

/// Why a device could not be registered on a `Bus`.
public enum BusError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The new range `[base, base+length)` intersects one already registered.
    case overlap(bus: String, base: UInt64, length: UInt64, existingBase: UInt64, existingLength: UInt64)
    /// Zero length, or a range that runs past the top of the address space.
    case invalidRange(bus: String, base: UInt64, length: UInt64)

    public var description: String {
        switch self {
        case let .overlap(bus, base, length, existingBase, existingLength):
            "\(bus) bus: range \(Self.hexRange(base, length)) overlaps the device already registered at \(Self.hexRange(existingBase, existingLength))"
        case let .invalidRange(bus, base, length):
            "\(bus) bus: invalid range of \(length) bytes at 0x\(String(base, radix: 16)) (empty or past the end of the address space)"
        }
    }

    static func hexRange(_ base: UInt64, _ length: UInt64) -> String {
        "[0x\(String(base, radix: 16)), 0x\(String(base &+ length, radix: 16)))"
    }
}

/// An address space (port I/O or MMIO) that routes guest accesses to the devices registered in it.
///
/// Lookups happen on every vCPU I/O exit, so the ranges live in a sorted array searched by bisection:
/// no allocation per access, and the lock is held only for the search, never while a device runs.
/// Registration is rare (VM setup) and may copy the array.
public final class Bus: Sendable {
    struct Entry: Sendable {
        let base: UInt64
        /// Inclusive last address, so a range ending at 2^64-1 is representable.
        let last: UInt64
        let device: any BusDevice
    }

    /// How many distinct unknown addresses are remembered for "log once"; a guest sweeping the whole
    /// address space must not grow host memory without bound.
    static let unknownLogLimit = 4096

    public let name: String
    private let logger: Logger
    private let entries: Mutex<[Entry]>
    private let loggedUnknown: Mutex<Set<UInt64>>

    public init(name: String, logger: Logger) {
        self.name = name
        self.logger = logger
        entries = Mutex([])
        loggedUnknown = Mutex([])
    }

    /// Adds `device` for the addresses `[base, base+length)`. The device sees offsets from `base`.
    /// - Throws: `BusError.overlap` if any address is already claimed, `BusError.invalidRange` for an empty
    ///   range or one that wraps past the top of the address space.
    public func register(_ device: any BusDevice, at base: UInt64, length: UInt64) throws {
        guard length > 0 else { throw BusError.invalidRange(bus: name, base: base, length: length) }
        let (last, overflow) = base.addingReportingOverflow(length - 1)
        guard !overflow else { throw BusError.invalidRange(bus: name, base: base, length: length) }
        try entries.withLock { entries in
            let index = Self.insertionIndex(entries, base)
            // Only the neighbours can overlap because the existing ranges are disjoint and sorted.
            if index > 0, entries[index - 1].last >= base {
                let e = entries[index - 1]
                throw BusError.overlap(bus: name, base: base, length: length, existingBase: e.base, existingLength: e.last - e.base + 1)
            }
            if index < entries.count, entries[index].base <= last {
                let e = entries[index]
                throw BusError.overlap(bus: name, base: base, length: length, existingBase: e.base, existingLength: e.last - e.base + 1)
            }
            entries.insert(Entry(base: base, last: last, device: device), at: index)
        }
        logger.debug("\(name) bus: registered \(type(of: device)) at \(BusError.hexRange(base, length))")
    }

    /// Reads `size` bytes at `address`. An address no device claims reads as all ones, like an ISA/PCI bus
    /// with nothing driving the data lines; probing drivers rely on that to detect absent hardware.
    public func read(address: UInt64, size: Int) -> UInt64 {
        if let (device, offset) = lookup(address) {
            return AccessWidth.truncate(device.read(offset: offset, size: size), size)
        }
        logUnknown(address, size: size, write: nil)
        return AccessWidth.allOnes(size)
    }

    /// Writes the low `size` bytes of `value` at `address`. Writes nobody claims are dropped.
    public func write(address: UInt64, size: Int, value: UInt64) {
        if let (device, offset) = lookup(address) {
            device.write(offset: offset, size: size, value: AccessWidth.truncate(value, size))
            return
        }
        logUnknown(address, size: size, write: value)
    }

    /// The device claiming `address` and the offset within its range.
    func lookup(_ address: UInt64) -> (any BusDevice, UInt64)? {
        entries.withLock { entries in
            let index = Self.insertionIndex(entries, address)
            // If an entry starts exactly at `address` it is at `index`; otherwise the candidate is the one before.
            if index < entries.count, entries[index].base == address {
                return (entries[index].device, 0)
            }
            guard index > 0 else { return nil }
            let e = entries[index - 1]
            return address <= e.last ? (e.device, address - e.base) : nil
        }
    }

    /// First index whose base is >= `address` (lower bound).
    private static func insertionIndex(_ entries: [Entry], _ address: UInt64) -> Int {
        var low = 0
        var high = entries.count
        while low < high {
            let mid = low + (high - low) / 2
            if entries[mid].base < address { low = mid + 1 } else { high = mid }
        }
        return low
    }

    private func logUnknown(_ address: UInt64, size: Int, write: UInt64?) {
        // Guests probe absent hardware routinely; log each address once so the log stays readable.
        let first = loggedUnknown.withLock { seen in
            guard seen.count < Self.unknownLogLimit else { return false }
            return seen.insert(address).inserted
        }
        guard first else { return }
        let where_ = "0x" + String(address, radix: 16)
        if let write {
            logger.debug("\(name) bus: ignored \(size)-byte write of 0x\(String(write, radix: 16)) to unclaimed address \(where_)")
        } else {
            logger.debug("\(name) bus: \(size)-byte read of unclaimed address \(where_) returns all ones")
        }
    }
}
