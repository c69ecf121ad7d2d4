import Logging
import VireoDevices
import VireoKVM
import VireoSystem

/// The loop one vCPU thread runs: enter the guest, dispatch the exit to a bus, repeat.
///
/// This is the hot path of every port and MMIO access the guest makes, so it does no
/// allocation and no locking beyond what the device itself needs.
struct VCPURunner: Sendable {
    let vcpu: VCPU
    let ioBus: Bus
    let mmioBus: Bus
    let lifecycle: Lifecycle
    let logger: Logger

    /// KVM_SYSTEM_EVENT types (`<linux/kvm.h>`).
    static let systemEventShutdown: UInt32 = 1
    static let systemEventReset: UInt32 = 2

    /// Kicks: another thread sets `immediate_exit` and then sends the kick signal. The signal stays
    /// deliverable in this thread (its handler does nothing), so it interrupts a `KVM_RUN` in
    /// progress with EINTR and is consumed on the way out; `immediate_exit` covers a kick that lands
    /// between two `KVM_RUN`s. (Blocking the signal outside `KVM_RUN` with KVM_SET_SIGNAL_MASK would
    /// leave a kick pending forever, and every later `KVM_RUN` would return EINTR at once.)
    func run() {
        OSThread.unblockKickSignal()
        while lifecycle.vcpuMayRun() {
            let exit: VCPUExit
            do {
                exit = try vcpu.run()
            } catch {
                lifecycle.requestExit(.failed("vCPU \(vcpu.id): \(error)"))
                return
            }
            switch exit {
            case .ioOut(let port, let size, let count):
                for index in 0..<count {
                    ioBus.write(address: UInt64(port), size: size, value: vcpu.ioData(index: index, size: size))
                }
            case .ioIn(let port, let size, let count):
                for index in 0..<count {
                    vcpu.setIOData(ioBus.read(address: UInt64(port), size: size), index: index, size: size)
                }
            case .mmioRead(let address, let size):
                vcpu.setMMIOData(mmioBus.read(address: address, size: size))
            case .mmioWrite(let address, let size, let value):
                mmioBus.write(address: address, size: size, value: value)
            case .interrupted:
                continue
            case .halt:
                // Only reached without an in-kernel LAPIC timer to wake the CPU: nothing can ever resume it.
                logger.info("vCPU \(vcpu.id) halted with interrupts unable to wake it; treating as power-off")
                lifecycle.requestExit(.poweredOff)
            case .shutdown:
                lifecycle.requestExit(.tripleFault)
            case .systemEvent(let type):
                switch type {
                case Self.systemEventShutdown: lifecycle.requestExit(.poweredOff)
                case Self.systemEventReset: lifecycle.requestExit(.rebootRequested)
                default: lifecycle.requestExit(.failed("vCPU \(vcpu.id): system event \(type)"))
                }
            case .internalError(let suberror):
                lifecycle.requestExit(.failed("vCPU \(vcpu.id): KVM internal error (suberror \(suberror)): the guest did something KVM could not emulate"))
            case .failedEntry(let reason):
                lifecycle.requestExit(.failed("vCPU \(vcpu.id): KVM could not enter the guest (hardware reason 0x\(String(reason, radix: 16)))"))
            case .unhandled(let reason):
                lifecycle.requestExit(.failed("vCPU \(vcpu.id): unhandled KVM exit \(reason)"))
            }
        }
    }
}
