/// A minimal hand encoder for the ACPI Machine Language subset Vireo's DSDT needs
/// (ACPI 6.x §20.2 "AML Grammar Definition"). Each helper returns the encoded term.
enum AML {
    static let zeroOp: UInt8 = 0x00
    static let oneOp: UInt8 = 0x01
    static let nameOp: UInt8 = 0x08
    static let bytePrefix: UInt8 = 0x0A
    static let dwordPrefix: UInt8 = 0x0C
    static let scopeOp: UInt8 = 0x10
    static let bufferOp: UInt8 = 0x11
    static let packageOp: UInt8 = 0x12
    static let extOpPrefix: UInt8 = 0x5B
    static let deviceOp: UInt8 = 0x82  // after ExtOpPrefix
    static let rootChar: UInt8 = 0x5C  // '\'
    static let stringPrefix: UInt8 = 0x0D
    static let methodOp: UInt8 = 0x14
    static let notifyOp: UInt8 = 0x86

    /// A NameSeg: exactly four characters, padded with '_' (§20.2.2).
    static func nameSeg(_ name: String) -> [UInt8] {
        precondition(name.utf8.count <= 4, "AML NameSeg longer than four characters: \(name)")
        return Array(name.utf8) + [UInt8](repeating: UInt8(ascii: "_"), count: 4 - name.utf8.count)
    }

    /// PkgLength (§20.2.4): the length of everything after the opcode, *including* the PkgLength
    /// bytes themselves. One byte holds up to 63; longer lengths use 1–3 extra bytes, the lead byte
    /// carrying the count in bits 7:6 and the low nibble in bits 3:0, then 8 bits per extra byte.
    static func pkgLength(payload: Int) -> [UInt8] {
        if payload + 1 <= 0x3F { return [UInt8(payload + 1)] }
        for extra in 1...3 {
            let total = payload + 1 + extra
            if total < 1 << (4 + 8 * extra) {
                var bytes = [UInt8(extra << 6) | UInt8(total & 0xF)]
                for index in 0..<extra { bytes.append(UInt8(truncatingIfNeeded: total >> (4 + 8 * index))) }
                return bytes
            }
        }
        preconditionFailure("AML package of \(payload) bytes exceeds PkgLength's 28 bits")
    }

    /// An integer constant in its shortest encoding (ZeroOp, OneOp, BytePrefix, DWordPrefix).
    static func integer(_ value: UInt32) -> [UInt8] {
        switch value {
        case 0: [zeroOp]
        case 1: [oneOp]
        case 2...0xFF: [bytePrefix, UInt8(value)]
        default: [dwordPrefix] + withLittleEndian(value)
        }
    }

    /// DefName: `Name(name, object)`.
    static func name(_ name: String, _ object: [UInt8]) -> [UInt8] { [nameOp] + nameSeg(name) + object }

    /// DefPackage with constant integer elements: PackageOp PkgLength NumElements elements.
    static func package(_ elements: [UInt32]) -> [UInt8] {
        let body = [UInt8(elements.count)] + elements.flatMap(integer)
        return [packageOp] + pkgLength(payload: body.count) + body
    }

    /// DefPackage whose elements are packages of constant integers (a `_PRT`).
    static func package(of packages: [[UInt32]]) -> [UInt8] {
        let body = [UInt8(packages.count)] + packages.flatMap { package($0) }
        return [packageOp] + pkgLength(payload: body.count) + body
    }

    /// DefBuffer with an initialiser: BufferOp PkgLength BufferSize bytes.
    static func buffer(_ bytes: [UInt8]) -> [UInt8] {
        let body = integer(UInt32(bytes.count)) + bytes
        return [bufferOp] + pkgLength(payload: body.count) + body
    }

    /// DefScope on a root-relative path such as `\_SB_`.
    static func scope(root name: String, _ terms: [UInt8]) -> [UInt8] {
        let body = [rootChar] + nameSeg(name) + terms
        return [scopeOp] + pkgLength(payload: body.count) + body
    }

    /// DefDevice: ExtOpPrefix DeviceOp PkgLength NameString TermList.
    static func device(_ name: String, _ terms: [UInt8]) -> [UInt8] {
        let body = nameSeg(name) + terms
        return [extOpPrefix, deviceOp] + pkgLength(payload: body.count) + body
    }

    /// A String constant: StringPrefix, ASCII characters, NUL (§20.2.3).
    static func string(_ text: String) -> [UInt8] {
        precondition(text.utf8.allSatisfy { $0 >= 0x01 && $0 <= 0x7F }, "AML strings are ASCII without NUL: \(text)")
        return [stringPrefix] + Array(text.utf8) + [0x00]
    }

    /// DefMethod: MethodOp PkgLength NameString MethodFlags TermList; flags carry the argument
    /// count in bits 2:0 (not serialized, sync level 0).
    static func method(_ name: String, arguments: UInt8, _ terms: [UInt8]) -> [UInt8] {
        precondition(arguments <= 7, "AML methods take at most 7 arguments")
        let body = nameSeg(name) + [arguments] + terms
        return [methodOp] + pkgLength(payload: body.count) + body
    }

    /// DefNotify: `Notify(object, value)` with `object` a single NameSeg, found by the namespace's
    /// upward search from the enclosing scope (§5.3).
    static func notify(_ object: String, _ value: UInt32) -> [UInt8] {
        [notifyOp] + nameSeg(object) + integer(value)
    }

    /// EISAID("PNPxxxx") as a DWordConst: three 5-bit letters ('A' = 1) and four hex digits,
    /// stored big-endian within the dword (ACPI 6.x §19.6.35, EISAID macro).
    static func eisaID(_ id: String) -> [UInt8] {
        let chars = Array(id.utf8)
        precondition(chars.count == 7, "EISA ID must be 7 characters: \(id)")
        let vendor = chars[0..<3].reduce(UInt16(0)) { ($0 << 5) | UInt16($1 - 0x40) }
        let product = UInt16(String(decoding: chars[3...], as: UTF8.self), radix: 16) ?? 0
        return [dwordPrefix, UInt8(vendor >> 8), UInt8(vendor & 0xFF), UInt8(product >> 8), UInt8(product & 0xFF)]
    }

    /// Small resource descriptors (§6.4.2) for a `ResourceTemplate`.
    enum Resource {
        /// I/O Port Descriptor (§6.4.2.5), 16-bit decode, fixed base `port`.
        static func io(port: UInt16, length: UInt8) -> [UInt8] {
            [0x47, 0x01] + withLittleEndian(port) + withLittleEndian(port) + [0x01, length]
        }

        /// IRQ Descriptor without flags (§6.4.2.1): a 16-bit mask of the IRQ.
        static func irqNoFlags(_ irq: UInt8) -> [UInt8] { [0x22] + withLittleEndian(UInt16(1) << irq) }

        /// General flags of an address space descriptor (§6.4.3.5): the range is produced for
        /// children (bit 0 clear), with fixed minimum and maximum (bits 2 and 3).
        static let producerFixed: UInt8 = 0x0C

        /// Word Address Space Descriptor for a bus-number range (§6.4.3.5.3, resource type 2).
        static func wordBusNumber(first: UInt16, last: UInt16) -> [UInt8] {
            [0x88, 0x0D, 0x00, 0x02, producerFixed, 0x00] + withLittleEndian(UInt16(0)) + withLittleEndian(first)
                + withLittleEndian(last) + withLittleEndian(UInt16(0)) + withLittleEndian(last - first + 1)
        }

        /// DWord Address Space Descriptor for an I/O range (§6.4.3.5.2, resource type 1; type-specific
        /// flags 3: both ISA and non-ISA ranges).
        static func dwordIO(first: UInt32, last: UInt32) -> [UInt8] {
            [0x87, 0x17, 0x00, 0x01, producerFixed, 0x03] + withLittleEndian(UInt32(0)) + withLittleEndian(first)
                + withLittleEndian(last) + withLittleEndian(UInt32(0)) + withLittleEndian(last - first + 1)
        }

        /// DWord Address Space Descriptor for a memory range (§6.4.3.5.2, resource type 0; type-specific
        /// flags 1: read-write, non-cacheable).
        static func dwordMemory(first: UInt32, last: UInt32) -> [UInt8] {
            [0x87, 0x17, 0x00, 0x00, producerFixed, 0x01] + withLittleEndian(UInt32(0)) + withLittleEndian(first)
                + withLittleEndian(last) + withLittleEndian(UInt32(0)) + withLittleEndian(last - first + 1)
        }

        /// QWord Address Space Descriptor for a memory range (§6.4.3.5.1).
        static func qwordMemory(first: UInt64, last: UInt64) -> [UInt8] {
            [0x8A, 0x2B, 0x00, 0x00, producerFixed, 0x01] + withLittleEndian(UInt64(0)) + withLittleEndian(first)
                + withLittleEndian(last) + withLittleEndian(UInt64(0)) + withLittleEndian(last - first + 1)
        }

        /// Extended Interrupt Descriptor (§6.4.3.6) for one GSI, consumed by the device,
        /// edge-triggered, active-high, exclusive.
        static func edgeInterrupt(gsi: UInt32) -> [UInt8] {
            [0x89, 0x06, 0x00, 0x03, 0x01] + withLittleEndian(gsi)
        }

        /// End Tag (§6.4.2.9); a zero checksum means "treat as valid".
        static let endTag: [UInt8] = [0x79, 0x00]
    }

    private static func withLittleEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        (0..<MemoryLayout<T>.size).map { UInt8(truncatingIfNeeded: value >> ($0 * 8)) }
    }
}
