/// A few x86 instructions, hand-encoded (Intel SDM Vol. 2), for the tiny guests host tests run on
/// this machine's /dev/kvm. Each method appends one instruction; the names say what it does.
struct TinyGuest {
    enum Mode { case real16, long64 }

    let mode: Mode
    private(set) var bytes: [UInt8] = []

    init(_ mode: Mode) { self.mode = mode }

    /// `mov al, imm8`
    mutating func movAL(_ value: UInt8) { bytes += [0xB0, value] }
    /// `mov dx, imm16` (operand-size prefix in 64-bit mode).
    mutating func movDX(_ value: UInt16) {
        if mode == .long64 { bytes.append(0x66) }
        bytes += [0xBA, UInt8(value & 0xFF), UInt8(value >> 8)]
    }
    /// `out dx, al`
    mutating func outDXAL() { bytes.append(0xEE) }
    /// `in al, dx`
    mutating func inALDX() { bytes.append(0xEC) }
    /// `out imm8, al`
    mutating func outAL(port: UInt8) { bytes += [0xE6, port] }
    /// `mov ebx, imm32` (zero-extends to rbx in 64-bit mode).
    mutating func movEBX(_ value: UInt32) { bytes.append(0xBB); bytes += le32(value) }
    /// `mov eax, imm32`
    mutating func movEAX(_ value: UInt32) { bytes.append(0xB8); bytes += le32(value) }
    /// `mov [rbx], eax`
    mutating func storeEAXAtRBX() { bytes += [0x89, 0x03] }
    /// `mov eax, [rbx]`
    mutating func loadEAXFromRBX() { bytes += [0x8B, 0x03] }
    /// `mov al, [rbx]`
    mutating func loadALFromRBX() { bytes += [0x8A, 0x03] }
    /// `hlt`
    mutating func hlt() { bytes.append(0xF4) }
    /// `ud2`: raises #UD.
    mutating func ud2() { bytes += [0x0F, 0x0B] }
    /// `jmp $` — spin forever.
    mutating func spin() { bytes += [0xEB, 0xFE] }
    /// `pause` — a spin-loop hint, keeps busy loops cheap under emulation.
    mutating func pause() { bytes += [0xF3, 0x90] }
    /// `cmp al, imm8` then `jne` back to `target` (a byte offset in this program).
    mutating func loopWhileALNotEqual(_ value: UInt8, backTo target: Int) {
        bytes += [0x3C, value]
        let displacement = target - (bytes.count + 2)
        bytes += [0x75, UInt8(bitPattern: Int8(displacement))]
    }

    /// Writes `text` to COM1's transmit register.
    mutating func print(_ text: String) {
        movDX(0x3F8)
        for byte in text.utf8 {
            movAL(byte)
            outDXAL()
        }
    }

    /// Powers off through the ACPI sleep control register at 0x600: SLP_EN | SLP_TYP(S5) << 2.
    mutating func powerOff() {
        movDX(0x600)
        movAL(0x20 | (5 << 2))
        outDXAL()
        hlt()
    }

    /// Asks for a reset through the i8042 (command 0xFE on port 0x64).
    mutating func resetThroughKeyboardController() {
        movAL(0xFE)
        outAL(port: 0x64)
        hlt()
    }

    var count: Int { bytes.count }

    mutating func appendRaw(_ raw: [UInt8]) { bytes += raw }

    private func le32(_ value: UInt32) -> [UInt8] { (0..<4).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
}
