import VireoMemory

/// One BIOS e820 memory-map entry as Linux reads it from `boot_params.e820_table`
/// (`struct boot_e820_entry`: addr u64, size u64, type u32; 20 bytes, packed).
public struct E820Entry: Equatable, Sendable, CustomStringConvertible {
    /// Address-range types (ACPI 6.x §15, Table 15.4).
    public enum Kind: UInt32, Sendable {
        case ram = 1
        case reserved = 2
        case acpi = 3
    }

    public static let size = 20

    public var address: GuestAddress
    public var size: UInt64
    public var type: Kind

    public init(address: GuestAddress, size: UInt64, type: Kind) {
        self.address = address
        self.size = size
        self.type = type
    }

    public var end: UInt64 { address.raw + size }

    /// The 20-byte wire form.
    public var bytes: [UInt8] {
        var writer = ByteWriter(capacity: Self.size)
        writer.append(address.raw)
        writer.append(size)
        writer.append(type.rawValue)
        return writer.bytes
    }

    public var description: String { "[\(address), \(hex(end))) \(type)" }
}

extension LinuxBoot {
    /// The e820 map for `memory`: conventional memory up to the EBDA, the EBDA and the BIOS area
    /// (ACPI and MP tables) as reserved, then RAM from 1 MiB to the end of each region. The
    /// 0xA0000–0xDFFFF VGA/ROM hole and the 3–4 GiB MMIO hole are absent, except the PCI ECAM
    /// region in that hole, which is reserved.
    public static func e820Map(memory: GuestMemory) -> [E820Entry] {
        var entries: [E820Entry] = []
        for region in memory.regions {
            guard region.start.raw == 0 else {
                entries.append(E820Entry(address: region.start, size: region.size, type: .ram))
                continue
            }
            let ebda = X86Layout.ebdaAddress.raw
            entries.append(E820Entry(address: GuestAddress(0), size: min(ebda, region.end), type: .ram))
            if region.end > ebda {
                entries.append(E820Entry(address: X86Layout.ebdaAddress, size: X86Layout.ebdaSize, type: .reserved))
            }
            let bios = X86Layout.acpiAddress.raw
            if region.end > bios {
                entries.append(E820Entry(address: X86Layout.acpiAddress, size: X86Layout.biosAreaEnd - bios, type: .reserved))
            }
            if region.end > X86Layout.biosAreaEnd {
                entries.append(
                    E820Entry(
                        address: X86Layout.kernelAddress, size: region.end - X86Layout.biosAreaEnd, type: .ram))
            }
        }
        let ecam = E820Entry(address: GuestAddress(X86Layout.pciECAMBase), size: X86Layout.pciECAMSize, type: .reserved)
        entries.insert(ecam, at: entries.firstIndex { $0.address.raw > ecam.address.raw } ?? entries.endIndex)
        return entries
    }
}
