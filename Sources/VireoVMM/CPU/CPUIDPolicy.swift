import VireoKVM

/// Turns the host's `KVM_GET_SUPPORTED_CPUID` into the table one vCPU sees.
///
/// What changes per vCPU is its identity and the machine's topology: the initial APIC ID
/// (leaf 1 EBX[31:24], leaves 0xB/0x1F EDX, AMD 0x8000001E EAX) and core counts, so the
/// guest's view agrees with the ACPI MADT / MP table Vireo builds (one core per APIC ID,
/// one thread per core, one package). The hypervisor bit (leaf 1 ECX[31]) tells the guest it
/// is virtualised so it looks for the KVM leaves at 0x4000_0000 (paravirtual clock, EOI).
/// References: Intel SDM Vol. 2A CPUID; AMD APM Vol. 3 Appendix E.
public struct CPUIDPolicy: Sendable {
    public let cpuCount: Int

    public init(cpuCount: Int) {
        self.cpuCount = max(1, cpuCount)
    }

    /// Bits needed to number `cpuCount` cores (the x2APIC ID shift of the core level).
    var coreIDBits: UInt32 {
        var bits: UInt32 = 0
        while (1 << bits) < cpuCount { bits += 1 }
        return bits
    }

    public func entries(forVCPU apicID: UInt32, from supported: [CPUIDEntry]) -> [CPUIDEntry] {
        let count = UInt32(cpuCount)
        var result: [CPUIDEntry] = []
        result.reserveCapacity(supported.count + 4)
        for var entry in supported {
            switch entry.function {
            case 0x1:
                // EBX[31:24] initial APIC ID, EBX[23:16] logical processors per package.
                entry.ebx = (entry.ebx & 0x0000_FFFF) | (apicID << 24) | ((count & 0xFF) << 16)
                entry.ecx |= 1 << 31  // hypervisor present
                if cpuCount > 1 { entry.edx |= 1 << 28 } else { entry.edx &= ~(1 << 28) }  // HTT: multi-processor package
            case 0x4:
                // Deterministic cache parameters: EAX[31:26] = cores per package - 1; one thread per cache.
                if entry.eax & 0x1F != 0 {
                    entry.eax = (entry.eax & 0x03FF_C3FF) | ((count - 1) << 26)
                }
            case 0xB, 0x1F:
                // Extended topology: subleaf 0 = SMT level (1 thread), subleaf 1 = core level (cpuCount cores).
                switch entry.index {
                case 0:
                    entry.eax = 0
                    entry.ebx = 1
                    entry.ecx = (1 << 8) | 0
                case 1:
                    entry.eax = coreIDBits
                    entry.ebx = count
                    entry.ecx = (2 << 8) | 1
                default:
                    entry.eax = 0
                    entry.ebx = 0
                    entry.ecx = entry.index
                }
                entry.edx = apicID
            case 0x8000_0008:
                // AMD: ECX[7:0] = number of cores - 1, ECX[15:12] = APIC ID size.
                entry.ecx = (entry.ecx & ~UInt32(0xF0FF)) | (count - 1) | (max(coreIDBits, 1) << 12)
            case 0x8000_001E:
                // AMD extended APIC ID / compute unit / node identifiers.
                entry.eax = apicID
                entry.ebx = apicID & 0xFF  // compute unit = core, one thread per unit
                entry.ecx = 0  // node 0, one node per processor
            default:
                break
            }
            result.append(entry)
        }
        return result
    }
}
