import CVireoLinux

/// One CPUID leaf/subleaf result, as `struct kvm_cpuid_entry2` carries it.
public struct CPUIDEntry: Equatable, Sendable, CustomStringConvertible {
    public var function: UInt32
    public var index: UInt32
    public var flags: UInt32
    public var eax: UInt32
    public var ebx: UInt32
    public var ecx: UInt32
    public var edx: UInt32

    /// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`: the subleaf (ECX input) selects this entry.
    public static let significantIndex: UInt32 = 1

    public init(function: UInt32, index: UInt32 = 0, flags: UInt32 = 0, eax: UInt32 = 0, ebx: UInt32 = 0, ecx: UInt32 = 0, edx: UInt32 = 0) {
        self.function = function
        self.index = index
        self.flags = flags
        self.eax = eax
        self.ebx = ebx
        self.ecx = ecx
        self.edx = edx
    }

    init(_ raw: kvm_cpuid_entry2) {
        self.init(function: raw.function, index: raw.index, flags: raw.flags, eax: raw.eax, ebx: raw.ebx, ecx: raw.ecx, edx: raw.edx)
    }

    var raw: kvm_cpuid_entry2 {
        var entry = kvm_cpuid_entry2()
        entry.function = function
        entry.index = index
        entry.flags = flags
        entry.eax = eax
        entry.ebx = ebx
        entry.ecx = ecx
        entry.edx = edx
        return entry
    }

    public var description: String {
        func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }
        return "cpuid(\(hex(function)),\(index)) eax=\(hex(eax)) ebx=\(hex(ebx)) ecx=\(hex(ecx)) edx=\(hex(edx))"
    }
}
