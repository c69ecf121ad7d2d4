import Testing
import VireoMemory
@testable import VireoBoot

struct ResetVectorTests {
    /// A restart through the BIOS (F000:FFF0) must reach the ACPI reset register, since Vireo has no BIOS.
    @Test func resetVectorStubWritesTheACPIResetRegister() throws {
        let memory = try GuestMemory(ranges: [(GuestAddress(0), 2 << 20)])
        try LinuxBoot.writeResetVectorStub(into: memory)
        let code = try memory.read(count: 9, at: GuestAddress(0xF_FFF0))
        #expect(code == [0xB0, 0x01, 0xBA, 0x02, 0x06, 0xEE, 0xF4, 0xEB, 0xFD])
        #expect(X86Layout.realModeResetVector.raw + UInt64(code.count) <= X86Layout.biosAreaEnd)
    }
}
