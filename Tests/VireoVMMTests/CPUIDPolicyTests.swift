import Testing
import VireoKVM
@testable import VireoVMM

/// Unit tier: per-vCPU CPUID adjustments (Intel SDM Vol. 2A "CPUID"; AMD APM Vol. 3 Appendix E).
struct CPUIDPolicyTests {
    let host: [CPUIDEntry] = [
        CPUIDEntry(function: 0x0, eax: 0x1F, ebx: 0x756E_6547),
        CPUIDEntry(function: 0x1, eax: 0x000A_0671, ebx: 0x0A10_0800, ecx: 0x7FFA_3203, edx: 0x1FAB_FBFF),
        CPUIDEntry(function: 0x4, index: 0, flags: 1, eax: 0x1C00_4121),
        CPUIDEntry(function: 0xB, index: 0, flags: 1, eax: 1, ebx: 2, ecx: 0x100, edx: 7),
        CPUIDEntry(function: 0xB, index: 1, flags: 1, eax: 4, ebx: 16, ecx: 0x201, edx: 7),
        CPUIDEntry(function: 0xB, index: 2, flags: 1, ecx: 2, edx: 7),
        CPUIDEntry(function: 0x4000_0000, eax: 0x4000_0001, ebx: 0x4B4D_564B),
        CPUIDEntry(function: 0x8000_0008, eax: 0x3030, ecx: 0x7007),
        CPUIDEntry(function: 0x8000_001E, eax: 9, ebx: 0x103, ecx: 0x301),
    ]

    func entry(_ entries: [CPUIDEntry], _ function: UInt32, _ index: UInt32 = 0) -> CPUIDEntry? {
        entries.first { $0.function == function && $0.index == index }
    }

    @Test func leafOneCarriesTheAPICIDAndTheHypervisorBit() throws {
        let policy = CPUIDPolicy(cpuCount: 4)
        for apicID: UInt32 in 0..<4 {
            let leaf = try #require(entry(policy.entries(forVCPU: apicID, from: host), 0x1))
            #expect(leaf.ebx >> 24 == apicID)
            #expect((leaf.ebx >> 16) & 0xFF == 4)
            #expect(leaf.ebx & 0xFFFF == 0x0800)  // brand index and CLFLUSH size untouched
            #expect(leaf.ecx & (1 << 31) != 0)
            #expect(leaf.edx & (1 << 28) != 0)  // HTT: more than one logical processor
        }
    }

    @Test func singleCPUClearsHTT() throws {
        let leaf = try #require(entry(CPUIDPolicy(cpuCount: 1).entries(forVCPU: 0, from: host), 0x1))
        #expect(leaf.edx & (1 << 28) == 0)
        #expect((leaf.ebx >> 16) & 0xFF == 1)
    }

    @Test func extendedTopologyDescribesOneThreadPerCoreAndNCores() throws {
        let entries = CPUIDPolicy(cpuCount: 3).entries(forVCPU: 2, from: host)
        let smt = try #require(entry(entries, 0xB, 0))
        let core = try #require(entry(entries, 0xB, 1))
        let end = try #require(entry(entries, 0xB, 2))
        #expect(smt.ebx == 1 && smt.ecx == 0x100 && smt.eax == 0)
        #expect(core.ebx == 3 && core.ecx == 0x201 && core.eax == 2)  // 3 cores need 2 ID bits
        #expect(end.ecx & 0xFF00 == 0)  // level type 0 ends the enumeration
        #expect([smt, core, end].allSatisfy { $0.edx == 2 })  // x2APIC ID
    }

    @Test func cacheLeafCountsCoresPerPackage() throws {
        let leaf = try #require(entry(CPUIDPolicy(cpuCount: 8).entries(forVCPU: 0, from: host), 0x4))
        #expect(leaf.eax >> 26 == 7)
        #expect(leaf.eax & 0x3FF == 0x121)  // cache type/level untouched
    }

    @Test func amdLeavesCarryCoreCountAndAPICID() throws {
        let entries = CPUIDPolicy(cpuCount: 2).entries(forVCPU: 1, from: host)
        let size = try #require(entry(entries, 0x8000_0008))
        #expect(size.ecx & 0xFF == 1)
        #expect(size.eax == 0x3030)
        let ext = try #require(entry(entries, 0x8000_001E))
        #expect(ext.eax == 1)
    }

    @Test func kvmLeavesPassThrough() throws {
        let entries = CPUIDPolicy(cpuCount: 2).entries(forVCPU: 1, from: host)
        #expect(entry(entries, 0x4000_0000) == entry(host, 0x4000_0000))
        #expect(entries.count == host.count)
    }
}
