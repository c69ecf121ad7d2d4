import VireoMemory

/// A parsed and validated Linux bzImage.
///
/// Offsets are those of the setup header in Linux `Documentation/arch/x86/boot.rst`
/// ("THE REAL-MODE KERNEL HEADER"). Vireo only uses the 64-bit entry point, so it requires
/// protocol 2.12+, where `xloadflags` can declare XLF_KERNEL_64.
public struct BzImage: Sendable {
    /// Header field offsets within the image (and within `boot_params`, which embeds the header at 0x1F1).
    enum Offset {
        static let setupSects = 0x1F1
        static let vidMode = 0x1FA
        static let bootFlag = 0x1FE
        static let jump = 0x200
        static let header = 0x202
        static let version = 0x206
        static let typeOfLoader = 0x210
        static let loadflags = 0x211
        static let ramdiskImage = 0x218
        static let ramdiskSize = 0x21C
        static let heapEndPtr = 0x224
        static let cmdLinePtr = 0x228
        static let initrdAddrMax = 0x22C
        static let kernelAlignment = 0x230
        static let relocatableKernel = 0x234
        static let xloadflags = 0x236
        static let cmdlineSize = 0x238
        static let prefAddress = 0x258
        static let initSize = 0x260
    }

    /// "HdrS", little-endian.
    static let headerMagic: UInt32 = 0x5372_6448
    static let bootFlagValue: UInt16 = 0xAA55
    /// 2.12 introduced `xloadflags`, which is how a kernel advertises its 64-bit entry.
    public static let minimumVersion: UInt16 = 0x020C
    /// `loadflags` bit 0: protected-mode code is loaded at 0x100000.
    public static let loadedHigh: UInt8 = 0x01
    /// `loadflags` bit 7: `heap_end_ptr` is valid.
    public static let canUseHeap: UInt8 = 0x80
    /// `xloadflags` bit 0: the kernel has the 64-bit entry point at load address + 0x200.
    public static let xlfKernel64: UInt16 = 0x0001
    /// `xloadflags` bit 1: kernel, initrd and boot data may live above 4 GiB.
    public static let xlfCanBeLoadedAbove4G: UInt16 = 0x0002

    /// The whole image.
    public let bytes: [UInt8]
    /// Boot protocol version (0x020F = 2.15).
    public let version: UInt16
    /// Number of 512-byte setup sectors after the boot sector (0 in the header means 4).
    public let setupSects: Int
    public let loadflags: UInt8
    public let xloadflags: UInt16
    /// Highest address the initrd may occupy (its last byte).
    public let initrdAddrMax: UInt32
    /// Maximum command-line length, not counting the terminating NUL.
    public let cmdlineSize: UInt32
    public let kernelAlignment: UInt32
    public let relocatableKernel: Bool
    /// Where a non-relocatable kernel runs, and the lowest address a relocatable one runs at.
    public let prefAddress: UInt64
    /// Bytes the kernel needs from its run address while decompressing and initialising.
    public let initSize: UInt32
    /// The setup header exactly as long as the kernel declares it: 0x1F1 up to 0x202 + byte[0x201].
    public let setupHeader: [UInt8]

    /// Offset of the protected-mode kernel: after the boot sector and the setup sectors.
    public var protectedModeOffset: Int { (setupSects + 1) * 512 }
    /// The 32/64-bit kernel, loaded at 1 MiB.
    public var protectedModeCode: ArraySlice<UInt8> { bytes[protectedModeOffset...] }

    public init(_ bytes: [UInt8]) throws(BootError) {
        func field<T: FixedWidthInteger>(_: T.Type, _ offset: Int, _ name: String) throws(BootError) -> T {
            guard let value = bytes.littleEndianInteger(T.self, at: offset) else {
                throw .truncated(what: name, offset: offset, imageSize: bytes.count)
            }
            return value
        }

        let bootFlag = try field(UInt16.self, Offset.bootFlag, "boot flag")
        guard bootFlag == Self.bootFlagValue else { throw .missingBootFlag(found: bootFlag) }
        guard try field(UInt32.self, Offset.header, "setup header magic") == Self.headerMagic else {
            throw .missingHeaderMagic
        }
        let version = try field(UInt16.self, Offset.version, "protocol version")
        guard version >= Self.minimumVersion else {
            throw .protocolTooOld(version: version, required: Self.minimumVersion)
        }

        // The header's length is the target of the short jump at 0x200 (boot.rst: "the end of the
        // setup header can be calculated as 0x0202 + the byte value at offset 0x0201").
        let headerEnd = Offset.header + Int(try field(UInt8.self, Offset.jump + 1, "setup header length"))
        guard headerEnd >= Offset.initSize + 4 else {
            throw .invalidSetupHeader("it ends at \(hex(headerEnd)), before init_size (0x260) which protocol 2.10+ defines")
        }
        guard headerEnd <= BootParams.headerLimit else {
            throw .invalidSetupHeader("it ends at \(hex(headerEnd)), beyond the space boot_params reserves (0x290)")
        }
        guard headerEnd <= bytes.count else {
            throw .truncated(what: "end of setup header", offset: headerEnd - 1, imageSize: bytes.count)
        }

        let rawSetupSects = Int(try field(UInt8.self, Offset.setupSects, "setup_sects"))
        let setupSects = rawSetupSects == 0 ? 4 : rawSetupSects
        let codeOffset = (setupSects + 1) * 512
        guard codeOffset < bytes.count else {
            throw .truncated(what: "protected-mode kernel", offset: codeOffset, imageSize: bytes.count)
        }

        let loadflags = try field(UInt8.self, Offset.loadflags, "loadflags")
        guard loadflags & Self.loadedHigh != 0 else { throw .notLoadedHigh }
        let xloadflags = try field(UInt16.self, Offset.xloadflags, "xloadflags")
        guard xloadflags & Self.xlfKernel64 != 0 else { throw .no64BitEntry }

        self.bytes = bytes
        self.version = version
        self.setupSects = setupSects
        self.loadflags = loadflags
        self.xloadflags = xloadflags
        self.initrdAddrMax = try field(UInt32.self, Offset.initrdAddrMax, "initrd_addr_max")
        self.cmdlineSize = try field(UInt32.self, Offset.cmdlineSize, "cmdline_size")
        self.kernelAlignment = try field(UInt32.self, Offset.kernelAlignment, "kernel_alignment")
        self.relocatableKernel = try field(UInt8.self, Offset.relocatableKernel, "relocatable_kernel") != 0
        self.prefAddress = try field(UInt64.self, Offset.prefAddress, "pref_address")
        self.initSize = try field(UInt32.self, Offset.initSize, "init_size")
        self.setupHeader = Array(bytes[Offset.setupSects..<headerEnd])
    }

    /// Where the decompressor will run the kernel when started at `loadAddress`: a relocatable
    /// kernel aligns its load address up to `kernel_alignment` but never goes below `pref_address`
    /// (LOAD_PHYSICAL_ADDR); a fixed one runs at `pref_address` (arch/x86/boot/compressed/head_64.S).
    /// Header values are untrusted, so the arithmetic saturates instead of trapping; a saturated
    /// result simply fails the fits-in-RAM check.
    func runAddress(loadAddress: UInt64) -> UInt64 {
        guard relocatableKernel else { return prefAddress }
        let alignment = UInt64(max(kernelAlignment, 1))
        let aligned = saturatingAdd(loadAddress, alignment - 1) / alignment * alignment
        return max(aligned, prefAddress)
    }

    /// One past the highest byte the kernel may touch before it has parsed the e820 map: both the
    /// loaded image and `init_size` bytes from its run address. The initrd must sit above this.
    func footprintEnd(loadAddress: UInt64) -> UInt64 {
        let loaded = saturatingAdd(loadAddress, UInt64(max(protectedModeCode.count, Int(initSize))))
        return max(loaded, saturatingAdd(runAddress(loadAddress: loadAddress), UInt64(initSize)))
    }
}

private func saturatingAdd(_ a: UInt64, _ b: UInt64) -> UInt64 {
    let (sum, overflow) = a.addingReportingOverflow(b)
    return overflow ? .max : sum
}
