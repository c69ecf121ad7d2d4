import VireoMemory

/// Why a kernel could not be parsed or loaded. Every case names the offending field or limit so a
/// user can tell a corrupt image from an undersized VM.
public enum BootError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The image ends before a field or region it must contain.
    case truncated(what: String, offset: Int, imageSize: Int)
    /// The 0xAA55 boot flag at 0x1FE is missing (boot.rst, "THE REAL-MODE KERNEL HEADER").
    case missingBootFlag(found: UInt16)
    /// "HdrS" at 0x202 is missing: not a bzImage, or a pre-2.00 kernel.
    case missingHeaderMagic
    /// The boot protocol is older than Vireo needs (2.12 for `xloadflags`).
    case protocolTooOld(version: UInt16, required: UInt16)
    /// `xloadflags` lacks XLF_KERNEL_64: the kernel has no 64-bit entry point at +0x200.
    case no64BitEntry
    /// `loadflags` lacks LOADED_HIGH: the kernel wants to be loaded at 0x10000 (zImage).
    case notLoadedHigh
    /// The setup header's self-declared length is inconsistent.
    case invalidSetupHeader(String)
    /// The ELF `vmlinux` is malformed or lacks a PVH entry note.
    case invalidELF(String)
    /// The kernel, or its decompression footprint (`init_size`), does not fit in low RAM.
    case kernelTooLarge(footprintEnd: UInt64, ramEnd: UInt64)
    /// The command line plus its NUL terminator exceeds `cmdline_size`.
    case commandLineTooLong(length: Int, maximum: Int)
    /// The command line contains a NUL byte, which would silently truncate it.
    case commandLineContainsNUL
    /// No page-aligned slot between the kernel footprint and the initrd ceiling holds the initrd.
    case initrdTooLarge(size: Int, available: UInt64)
    /// The CPU count is outside what the MP table, MADT or xAPIC IDs can describe.
    case invalidCPUCount(Int, maximum: Int)
    /// Guest RAM is not laid out as ``X86Layout/ramRanges(memorySize:)`` produces.
    case unsupportedMemoryLayout(String)
    /// A write into guest memory failed.
    case guestMemory(GuestMemoryError)

    public var description: String {
        switch self {
        case .truncated(let what, let offset, let size):
            "kernel image is truncated: \(what) at \(hex(offset)) lies beyond its \(size) bytes"
        case .missingBootFlag(let found):
            "kernel image is not a bzImage: boot flag at 0x1fe is \(hex(found)), expected 0xaa55"
        case .missingHeaderMagic:
            "kernel image is not a bzImage: setup header magic 'HdrS' missing at 0x202"
        case .protocolTooOld(let version, let required):
            "kernel boot protocol \(protocolString(version)) is too old: Vireo needs \(protocolString(required)) or later"
        case .no64BitEntry:
            "kernel has no 64-bit entry point: XLF_KERNEL_64 is not set in xloadflags (0x236)"
        case .notLoadedHigh:
            "kernel is not a bzImage: LOADED_HIGH is not set in loadflags (0x211)"
        case .invalidSetupHeader(let why):
            "kernel setup header is invalid: \(why)"
        case .invalidELF(let why):
            "kernel image is not a PVH-bootable ELF vmlinux: \(why)"
        case .kernelTooLarge(let end, let ramEnd):
            "kernel needs RAM up to \(hex(end)) (its image, or load address plus init_size) but RAM below the MMIO hole ends at \(hex(ramEnd))"
        case .commandLineTooLong(let length, let maximum):
            "kernel command line is \(length) bytes; this kernel accepts at most \(maximum) (cmdline_size)"
        case .commandLineContainsNUL:
            "kernel command line contains a NUL byte"
        case .initrdTooLarge(let size, let available):
            "initrd of \(size) bytes does not fit: only \(available) bytes lie between the kernel and the initrd ceiling"
        case .invalidCPUCount(let count, let maximum):
            "cannot describe \(count) CPUs to the guest: between 1 and \(maximum) are supported"
        case .unsupportedMemoryLayout(let why):
            "unsupported guest memory layout: \(why)"
        case .guestMemory(let error):
            "writing boot data into guest memory failed: \(error)"
        }
    }
}

func hex<T: BinaryInteger>(_ value: T) -> String { "0x" + String(value, radix: 16) }

private func protocolString(_ version: UInt16) -> String { "\(version >> 8).\(String(format2: version & 0xFF))" }

extension String {
    fileprivate init(format2 value: UInt16) { self = value < 10 ? "0\(value)" : "\(value)" }
}

extension GuestMemory {
    /// `write(_:at:)` with the error wrapped, so loaders can use a single typed error.
    func store(_ bytes: some Collection<UInt8>, at address: GuestAddress) throws(BootError) {
        do { try write(bytes, at: address) } catch { throw .guestMemory(error) }
    }

    func store<T: FixedWidthInteger>(integer value: T, at address: GuestAddress) throws(BootError) {
        do { try writeInteger(value, at: address) } catch { throw .guestMemory(error) }
    }

    func clear(count: Int, at address: GuestAddress) throws(BootError) {
        do { try zero(count: count, at: address) } catch { throw .guestMemory(error) }
    }
}
