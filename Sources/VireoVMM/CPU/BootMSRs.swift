/// Model-specific registers a vCPU starts with for a direct 64-bit kernel boot
/// (Intel SDM Vol. 4; AMD APM Vol. 2 §A.2). Without firmware nobody else sets them:
/// SYSCALL/SYSENTER targets start cleared, MTRRs on with write-back as the default type so
/// RAM is cacheable, and fast string operations enabled as firmware would.
public enum BootMSRs {
    public static let sysenterCS: UInt32 = 0x174
    public static let sysenterESP: UInt32 = 0x175
    public static let sysenterEIP: UInt32 = 0x176
    public static let star: UInt32 = 0xC000_0081
    public static let lstar: UInt32 = 0xC000_0082
    public static let cstar: UInt32 = 0xC000_0083
    public static let syscallMask: UInt32 = 0xC000_0084
    public static let kernelGSBase: UInt32 = 0xC000_0102
    public static let tsc: UInt32 = 0x10
    public static let miscEnable: UInt32 = 0x1A0
    public static let mtrrDefType: UInt32 = 0x2FF

    /// IA32_MISC_ENABLE bit 0: fast-string operations.
    static let miscEnableFastStrings: UInt64 = 1
    /// IA32_MTRR_DEF_TYPE: E (bit 11) enables MTRRs; type 6 is write-back.
    static let mtrrEnabledWriteBack: UInt64 = (1 << 11) | 6

    public static var values: [(index: UInt32, value: UInt64)] {
        [
            (sysenterCS, 0), (sysenterESP, 0), (sysenterEIP, 0),
            (star, 0), (lstar, 0), (cstar, 0), (syscallMask, 0), (kernelGSBase, 0),
            (tsc, 0),
            (miscEnable, miscEnableFastStrings),
            (mtrrDefType, mtrrEnabledWriteBack),
        ]
    }
}
