import Testing

@testable import VireoBoot

@Suite struct AMLTests {
    @Test func pkgLengthEncodings() {
        // One byte up to 63 in total (the byte counts itself).
        #expect(AML.pkgLength(payload: 0) == [0x01])
        #expect(AML.pkgLength(payload: 62) == [0x3F])
        // Two bytes: lead byte 0b01 in bits 7:6 and the low nibble, then bits 11:4.
        #expect(AML.pkgLength(payload: 63) == [0x41, 0x04])  // 65 = 0x041
        #expect(AML.pkgLength(payload: 0xFFD) == [0x4F, 0xFF])  // 0xFFF
        // Three bytes from 4096.
        #expect(AML.pkgLength(payload: 0xFFE) == [0x81, 0x00, 0x01])  // 0x1001
    }

    @Test func integersUseShortestEncoding() {
        #expect(AML.integer(0) == [0x00])
        #expect(AML.integer(1) == [0x01])
        #expect(AML.integer(5) == [0x0A, 0x05])
        #expect(AML.integer(0x1234) == [0x0C, 0x34, 0x12, 0x00, 0x00])
    }

    @Test func eisaIDMatchesACPIEncoding() {
        // PNP0A03 is the well-known 0x030AD041.
        #expect(AML.eisaID("PNP0A03") == [0x0C, 0x41, 0xD0, 0x0A, 0x03])
    }

    @Test func s5Package() {
        #expect(
            AML.name("_S5_", AML.package([5, 0, 0, 0]))
                == [0x08, 0x5F, 0x53, 0x35, 0x5F, 0x12, 0x07, 0x04, 0x0A, 0x05, 0x00, 0x00, 0x00])
    }
}
