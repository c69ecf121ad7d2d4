import VireoBoot
import VireoMemory

/// A synthetic bzImage: boot sector + `setupSects` setup sectors holding a valid setup header,
/// then `payload` as the protected-mode kernel.
struct SyntheticKernel {
    var version: UInt16 = 0x020F
    var setupSects: UInt8 = 4
    var loadflags: UInt8 = 0x01
    var xloadflags: UInt16 = 0x0003
    var initrdAddrMax: UInt32 = 0x7FFF_FFFF
    var cmdlineSize: UInt32 = 2048
    var kernelAlignment: UInt32 = 0x20_0000
    var relocatable: UInt8 = 1
    var prefAddress: UInt64 = 0x100_0000
    var initSize: UInt32 = 0x40_0000
    var headerJump: UInt8 = 0x6A
    var payload: [UInt8] = (0..<8192).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }

    var bytes: [UInt8] {
        let sectors = setupSects == 0 ? 4 : Int(setupSects)
        var image = ByteWriter(zeros: (sectors + 1) * 512)
        image.set(setupSects, at: 0x1F1)
        image.set(UInt16(0xAA55), at: 0x1FE)
        image.set([0xEB, headerJump] as [UInt8], at: 0x200)
        image.set(Array("HdrS".utf8), at: 0x202)
        image.set(version, at: 0x206)
        image.set(loadflags, at: 0x211)
        image.set(initrdAddrMax, at: 0x22C)
        image.set(kernelAlignment, at: 0x230)
        image.set(relocatable, at: 0x234)
        image.set(xloadflags, at: 0x236)
        image.set(cmdlineSize, at: 0x238)
        image.set(prefAddress, at: 0x258)
        image.set(initSize, at: 0x260)
        image.append(payload)
        return image.bytes
    }

    func parsed() throws -> BzImage { try BzImage(bytes) }
}

func makeMemory(_ size: UInt64) throws -> GuestMemory {
    try GuestMemory(ranges: X86Layout.ramRanges(memorySize: size))
}

extension Array where Element == UInt8 {
    func u8(_ offset: Int) -> UInt8? { littleEndianInteger(UInt8.self, at: offset) }
    func u16(_ offset: Int) -> UInt16? { littleEndianInteger(UInt16.self, at: offset) }
    func u32(_ offset: Int) -> UInt32? { littleEndianInteger(UInt32.self, at: offset) }
    func u64(_ offset: Int) -> UInt64? { littleEndianInteger(UInt64.self, at: offset) }
    func ascii(_ offset: Int, _ count: Int) -> String { String(decoding: self[offset..<(offset + count)], as: UTF8.self) }
    var byteSum: UInt8 { reduce(0, &+) }
}

extension GuestMemory {
    func table(at address: UInt64) throws -> [UInt8] {
        let length = try readInteger(UInt32.self, at: GuestAddress(address + 4))
        return try read(count: Int(length), at: GuestAddress(address))
    }
}
