import Foundation
import Testing
import VireoMemory
@testable import VireoVMM

/// Host tier: tiny hand-assembled guests on this machine's /dev/kvm, run in-process through
/// `VirtualMachine` (serial captured) and as `vireo-vmm` processes (exit codes, signals, control socket).
@Suite(.enabled(if: HostKVM.available, "needs /dev/kvm"))
struct TinyGuestTests {
    final class Capture: SerialSink, @unchecked Sendable {
        private let lock = NSLock()
        private var data: [UInt8] = []
        func write(_ bytes: [UInt8]) { lock.withLock { data += bytes } }
        var text: String { lock.withLock { String(decoding: data, as: UTF8.self) } }
        var bytes: [UInt8] { lock.withLock { data } }
    }

    func run(_ guest: TinyGuest, cpus: Int = 1) throws -> (VMExit, Capture) {
        let capture = Capture()
        let file = try writeTemporary(guest.bytes)
        let mode: VMConfig.RawMode = guest.mode == .real16 ? .real : .long
        let config = VMConfig(payload: .raw(path: file, mode: mode), cpuCount: cpus, memorySize: 16 << 20, serial: .sink(capture))
        let machine = try VirtualMachine(config: config, logger: .init(label: "test"))
        try machine.start()
        return (machine.waitForExit(), capture)
    }

    @Test func realModeGuestPrintsOnTheSerialPortAndPowersOff() throws {
        var guest = TinyGuest(.real16)
        guest.print("hello from real mode\n")
        guest.powerOff()
        let (exit, console) = try run(guest)
        #expect(exit == .poweredOff)
        #expect(console.text == "hello from real mode\n")
    }

    @Test func longModeGuestPrintsAndPowersOff() throws {
        var guest = TinyGuest(.long64)
        guest.print("64-bit\n")
        guest.powerOff()
        let (exit, console) = try run(guest)
        #expect(exit == .poweredOff)
        #expect(console.text == "64-bit\n")
    }

    @Test func unbackedMMIOAndUnknownPortsReadAllOnes() throws {
        var guest = TinyGuest(.long64)
        guest.movEBX(0xD000_0000)  // inside the 32-bit MMIO hole, no device there
        guest.loadALFromRBX()
        guest.movDX(0x3F8)
        guest.outDXAL()
        guest.movDX(0x2F8 + 5)  // COM2's line status register: no COM2 on this machine
        guest.inALDX()
        guest.movDX(0x3F8)
        guest.outDXAL()
        guest.powerOff()
        let (exit, console) = try run(guest)
        #expect(exit == .poweredOff)
        #expect(console.bytes == [0xFF, 0xFF])
    }

    @Test func cmosReportsTheHostDate() throws {
        var guest = TinyGuest(.real16)
        // Read CMOS register 0x32 (century, BCD) and send it to the serial port.
        guest.movAL(0x32)
        guest.outAL(port: 0x70)
        guest.bytes_inAL(port: 0x71)
        guest.movDX(0x3F8)
        guest.outDXAL()
        guest.powerOff()
        let (exit, console) = try run(guest)
        #expect(exit == .poweredOff)
        #expect(console.bytes == [0x20])
    }

    @Test func keyboardControllerResetRequestsAReboot() throws {
        var guest = TinyGuest(.real16)
        guest.resetThroughKeyboardController()
        let (exit, _) = try run(guest)
        #expect(exit == .rebootRequested)
    }

    @Test func faultWithoutAnIDTIsATripleFault() throws {
        var guest = TinyGuest(.long64)
        guest.ud2()  // the boot IDT is empty: #UD → #DF → shutdown
        let (exit, _) = try run(guest)
        #expect(exit == .tripleFault)
    }

    /// The boot processor starts the second vCPU with INIT and a start-up IPI through its local APIC
    /// (Intel SDM Vol. 3 §8.4.4.1); the second CPU prints from real mode and powers the machine off.
    @Test func secondVCPUStartsOnInitAndStartupIPIs() throws {
        // The application processor's code lives at 0x11000: SIPI vector 0x11 → CS=0x1100, IP=0.
        var ap = TinyGuest(.real16)
        ap.print("AP up\n")
        ap.powerOff()

        var bsp = TinyGuest(.long64)
        bsp.print("BSP\n")
        bsp.movEBX(0xFEE0_0310)  // ICR high: destination APIC ID 1
        bsp.movEAX(1 << 24)
        bsp.storeEAXAtRBX()
        bsp.movEBX(0xFEE0_0300)  // ICR low: INIT, assert
        bsp.movEAX(0x0000_4500)
        bsp.storeEAXAtRBX()
        bsp.movEAX(0x0000_4611)  // ICR low: start-up, vector 0x11
        bsp.storeEAXAtRBX()
        let spin = bsp.count
        bsp.pause()
        bsp.bytes_jmp(to: spin)

        var image = bsp.bytes
        image += [UInt8](repeating: 0x90, count: 0x1000 - image.count)
        image += ap.bytes
        let capture = Capture()
        let file = try writeTemporary(image)
        let config = VMConfig(payload: .raw(path: file, mode: .long), cpuCount: 2, memorySize: 16 << 20, serial: .sink(capture))
        let machine = try VirtualMachine(config: config, logger: .init(label: "test"))
        try machine.start()
        #expect(machine.waitForExit() == .poweredOff)
        #expect(capture.text == "BSP\nAP up\n")
    }

    @Test func pauseParksEveryVCPUAndResumeContinues() throws {
        // The guest prints '.' forever; after pause and resume it must go on printing.
        var guest = TinyGuest(.long64)
        guest.movDX(0x3F8)
        let loop = guest.count
        guest.movAL(UInt8(ascii: "."))
        guest.outDXAL()
        guest.pause()
        guest.bytes_jmp(to: loop)
        let capture = Capture()
        let file = try writeTemporary(guest.bytes)
        let config = VMConfig(payload: .raw(path: file, mode: .long), cpuCount: 2, memorySize: 16 << 20, serial: .sink(capture))
        let machine = try VirtualMachine(config: config, logger: .init(label: "test"))
        try machine.start()
        try awaitCondition { capture.bytes.count >= 3 }
        machine.pause()
        #expect(machine.state == .paused)
        let printedWhilePausing = capture.bytes.count
        machine.resume()
        #expect(machine.state == .running)
        try awaitCondition { capture.bytes.count >= printedWhilePausing + 3 }
        machine.requestStop(.stopped("test"))
        #expect(machine.waitForExit() == .stopped("test"))
        #expect(machine.state == .stopped)
    }

    @Test func invalidConfigurationsAreRefusedWithClearMessages() throws {
        for count in [0, 255] {
            #expect(throws: ConfigError.invalid("--cpus must be between 1 and 254, got \(count)")) {
                try VMConfig(payload: .raw(path: "/x", mode: .real), cpuCount: count).validate()
            }
        }
        try VMConfig(payload: .raw(path: "/x", mode: .real), cpuCount: 254).validate()
        #expect(throws: ConfigError.self) { try VMConfig.parseMemorySize("12Q") }
        #expect(try VMConfig.parseMemorySize("2G") == 2 << 30)
        #expect(try VMConfig.parseMemorySize("256") == 256 << 20)
        #expect(try VMConfig.parseMemorySize("512MiB") == 512 << 20)
        let missing = VMConfig(payload: .linux(kernel: "/nonexistent/bzImage", initrd: nil, commandLine: ""), memorySize: 16 << 20, serial: .none)
        #expect { _ = try VirtualMachine(config: missing, logger: .init(label: "test")) } throws: { error in
            "\(error)".contains("cannot read kernel /nonexistent/bzImage")
        }
    }
}

extension TinyGuest {
    /// `in al, imm8`
    mutating func bytes_inAL(port: UInt8) { appendRaw([0xE4, port]) }
    /// `jmp rel8` back to `target`.
    mutating func bytes_jmp(to target: Int) {
        let displacement = target - (count + 2)
        appendRaw([0xEB, UInt8(bitPattern: Int8(displacement))])
    }
}

func writeTemporary(_ bytes: [UInt8]) throws -> String {
    let path = NSTemporaryDirectory() + "vireo-guest-\(UUID().uuidString).bin"
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}
