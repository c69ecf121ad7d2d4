import Foundation
import Testing
import VireoBoot

@Suite struct BzImageTests {
    @Test func parsesSetupHeaderFields() throws {
        let source = SyntheticKernel()
        let kernel = try source.parsed()
        #expect(kernel.version == 0x020F)
        #expect(kernel.setupSects == 4)
        #expect(kernel.protectedModeOffset == 5 * 512)
        #expect(Array(kernel.protectedModeCode) == source.payload)
        #expect(kernel.cmdlineSize == 2048)
        #expect(kernel.initrdAddrMax == 0x7FFF_FFFF)
        #expect(kernel.kernelAlignment == 0x20_0000)
        #expect(kernel.relocatableKernel)
        #expect(kernel.prefAddress == 0x100_0000)
        #expect(kernel.initSize == 0x40_0000)
        #expect(kernel.xloadflags & BzImage.xlfKernel64 != 0)
        // 0x1F1 up to 0x202 + 0x6A.
        #expect(kernel.setupHeader.count == 0x26C - 0x1F1)
        #expect(kernel.setupHeader[0x202 - 0x1F1..<0x206 - 0x1F1] == Array("HdrS".utf8)[...])
    }

    @Test func zeroSetupSectsMeansFour() throws {
        var source = SyntheticKernel()
        source.setupSects = 0
        let kernel = try source.parsed()
        #expect(kernel.setupSects == 4)
        #expect(Array(kernel.protectedModeCode) == source.payload)
    }

    @Test func rejectsWrongMagic() {
        var bytes = SyntheticKernel().bytes
        bytes[0x202] = UInt8(ascii: "X")
        #expect(throws: BootError.missingHeaderMagic) { try BzImage(bytes) }
        #expect(BootError.missingHeaderMagic.description.contains("'HdrS' missing at 0x202"))
    }

    @Test func rejectsMissingBootFlag() {
        var bytes = SyntheticKernel().bytes
        bytes[0x1FE] = 0
        #expect(throws: BootError.missingBootFlag(found: 0xAA00)) { try BzImage(bytes) }
    }

    @Test func rejectsOldProtocol() {
        var source = SyntheticKernel()
        source.version = 0x020A
        #expect(throws: BootError.protocolTooOld(version: 0x020A, required: 0x020C)) { try source.parsed() }
        #expect(
            BootError.protocolTooOld(version: 0x020A, required: 0x020C).description
                == "kernel boot protocol 2.10 is too old: Vireo needs 2.12 or later")
    }

    @Test func rejectsKernelWithout64BitEntry() {
        var source = SyntheticKernel()
        source.xloadflags = BzImage.xlfCanBeLoadedAbove4G
        #expect(throws: BootError.no64BitEntry) { try source.parsed() }
    }

    @Test func rejectsZImage() {
        var source = SyntheticKernel()
        source.loadflags = 0
        #expect(throws: BootError.notLoadedHigh) { try source.parsed() }
    }

    @Test func rejectsTruncatedImages() {
        let full = SyntheticKernel().bytes
        // Every prefix that cuts into the header or the setup sectors must be refused, never crash.
        for length in [0, 0x100, 0x1FF, 0x203, 0x207, 0x237, 0x261, 0x26B, 5 * 512 - 1, 5 * 512] {
            #expect(throws: BootError.self) { try BzImage(Array(full.prefix(length))) }
        }
        #expect(throws: BootError.truncated(what: "boot flag", offset: 0x1FE, imageSize: 0x100)) {
            try BzImage(Array(full.prefix(0x100)))
        }
        #expect(throws: BootError.truncated(what: "protected-mode kernel", offset: 5 * 512, imageSize: 5 * 512)) {
            try BzImage(Array(full.prefix(5 * 512)))
        }
    }

    @Test func rejectsHeaderTooShortForInitSize() {
        var source = SyntheticKernel()
        source.headerJump = 0x40
        #expect(throws: BootError.self) { try source.parsed() }
    }

    @Test func parsesInstalledDebianKernel() throws {
        let boot = "/boot"
        let names = (try? FileManager.default.contentsOfDirectory(atPath: boot)) ?? []
        guard let name = names.sorted().last(where: { $0.hasPrefix("vmlinuz-") && $0.hasSuffix("-cloud-amd64") }),
            let data = FileManager.default.contents(atPath: "\(boot)/\(name)")
        else { return }  // No Debian cloud kernel on this machine: nothing to check.
        let kernel = try BzImage(Array(data))
        #expect(kernel.version >= 0x020C)
        #expect(kernel.xloadflags & BzImage.xlfKernel64 != 0)
        #expect(kernel.relocatableKernel)
        #expect(kernel.cmdlineSize >= 255)
        #expect(kernel.initSize > 0)
        #expect(kernel.protectedModeCode.count > 1 << 20)
        // A cloud kernel boots in a 512 MiB VM with its Debian initrd.
        let memory = try makeMemory(512 << 20)
        let initrdName = name.replacingOccurrences(of: "vmlinuz-", with: "initrd.img-")
        let initrd = FileManager.default.contents(atPath: "\(boot)/\(initrdName)").map { Array($0) }
        let entry = try LinuxBoot.load(
            kernel: kernel, initrd: initrd, commandLine: "console=ttyS0 reboot=k panic=1", cpuCount: 2, into: memory)
        #expect(entry.rip == 0x10_0200)
        let loaded = try memory.read(count: 4096, at: X86Layout.kernelAddress)
        #expect(loaded[...] == kernel.protectedModeCode.prefix(4096))
    }
}
