#if canImport(Glibc)
import Glibc
#endif
import Logging
import Synchronization
import VireoBoot
import VireoDevices
import VireoKVM
import VireoMemory
import VireoQCOW2
import VireoSystem

/// One running guest: KVM VM, guest RAM, vCPU threads, and the legacy platform devices.
///
/// Built from a validated ``VMConfig`` by ``init(config:logger:)`` (the builder step: memory,
/// irqchip, payload, devices, vCPU registers), started by ``start()``, and ended by the guest
/// (power-off, reboot, triple fault) or by ``requestStop(_:)``; ``waitForExit()`` returns why.
/// Pause/resume park every vCPU outside `KVM_RUN` so the control plane can snapshot or migrate later.
public final class VirtualMachine: Sendable {
    public let config: VMConfig
    let logger: Logger
    let kvm: KVM
    let vm: VM
    public let memory: GuestMemory
    let vcpus: [VCPU]
    let ioBus: Bus
    let mmioBus: Bus
    let platform: PlatformDevices
    let pci: PCIRoot
    let virtio: VirtioDevices
    let lifecycle: Lifecycle
    let threads: WaitableState<[OSThread]>
    private let eventSubscribers = Mutex<[UInt64: @Sendable (String) -> Void]>([:])
    private let nextSubscriber = Atomic<UInt64>(1)

    /// Guest-physical addresses KVM's VMX backend needs for real-mode support; inside the MMIO hole, below the IOAPIC.
    static let tssAddress: UInt64 = 0xFFFB_D000
    static let identityMapAddress: UInt64 = 0xFFFB_C000

    public init(config: VMConfig, logger: Logger) throws {
        try config.validate()
        self.config = config
        self.logger = logger
        kvm = try KVM(path: config.kvmPath)
        try kvm.require(KVMCapability.irqchip, "KVM_CAP_IRQCHIP")
        try kvm.require(KVMCapability.userMemory, "KVM_CAP_USER_MEMORY")
        try kvm.require(KVMCapability.immediateExit, "KVM_CAP_IMMEDIATE_EXIT")
        vm = try kvm.createVM()
        try vm.setTSSAddress(Self.tssAddress)
        try vm.setIdentityMapAddress(Self.identityMapAddress)
        try vm.createIRQChip()
        try vm.createPIT2()

        memory = try GuestMemory(ranges: X86Layout.ramRanges(memorySize: config.memorySize))
        for (slot, region) in memory.regions.enumerated() {
            try vm.setUserMemoryRegion(slot: UInt32(slot), guestAddress: region.start.raw, size: region.size, hostAddress: region.hostAddress)
        }

        lifecycle = Lifecycle()
        ioBus = Bus(name: "pio", logger: logger)
        mmioBus = Bus(name: "mmio", logger: logger)
        pci = try PCIRoot(mmioBus: mmioBus, ramEnd: memory.regions.last?.end ?? 0, vm: vm, logger: logger)
        platform = try PlatformDevices(config: config, vm: vm, memory: memory, ioBus: ioBus, pciBus: pci.bus, lifecycle: lifecycle, logger: logger)
        threads = WaitableState([])
        virtio = try VirtioDevices(config: config, vm: vm, memory: memory, pci: pci, logger: logger)

        let supported = try kvm.supportedCPUID()
        let policy = CPUIDPolicy(cpuCount: config.cpuCount)
        var vcpus: [VCPU] = []
        for index in 0..<config.cpuCount {
            let vcpu = try vm.createVCPU(id: UInt32(index))
            try vcpu.setCPUID(policy.entries(forVCPU: UInt32(index), from: supported))
            try Self.configureMSRs(vcpu, logger: logger)
            try Self.configureFPU(vcpu)
            try Self.configureLocalInterrupts(vcpu)
            vcpus.append(vcpu)
        }
        self.vcpus = vcpus
        try loadPayload()
        for (index, block) in virtio.blocks.enumerated() {
            block.onOutOfSpace { [weak self] error in self?.pauseForOutOfSpace(disk: index, error: error) }
        }
    }

    // MARK: Payload

    private func loadPayload() throws {
        let boot = vcpus[0]
        switch config.payload {
        case .linux(let kernelPath, let initrdPath, let commandLine):
            let kernel = try BzImage(try readFile(kernelPath, what: "kernel"))
            let initrd = try initrdPath.map { try readFile($0, what: "initrd") }
            let entry = try LinuxBoot.load(kernel: kernel, initrd: initrd, commandLine: commandLine, cpuCount: config.cpuCount, into: memory)
            try Self.enterLongMode(boot, entry: entry)
        case .raw(let path, let mode):
            let image = try readFile(path, what: "raw image")
            let limit = Int(min(memory.regions[0].size, 0xA0000) - VMConfig.rawLoadAddress)
            guard image.count <= limit else {
                throw ConfigError.invalid("raw image \(path) is \(image.count) bytes; at most \(limit) fit below 640 KiB")
            }
            try memory.write(image, at: GuestAddress(VMConfig.rawLoadAddress))
            switch mode {
            case .real:
                var sregs = try boot.specialRegisters()
                sregs.cs.selector = UInt16(VMConfig.rawLoadAddress >> 4)
                sregs.cs.base = VMConfig.rawLoadAddress
                for keyPath in [\SpecialRegisters.ds, \.es, \.ss, \.fs, \.gs] {
                    sregs[keyPath: keyPath].selector = 0
                    sregs[keyPath: keyPath].base = 0
                }
                try boot.setSpecialRegisters(sregs)
                var regs = Registers()
                regs.rip = 0
                regs.rsp = 0xFFF0
                regs.rflags = 2
                try boot.setRegisters(regs)
            case .long:
                try LinuxBoot.prepareLongMode(in: memory)
                try Self.enterLongMode(boot, entry: LinuxBoot.longModeEntry(rip: VMConfig.rawLoadAddress, rsi: 0), stack: 0x80000)
            }
        }
    }

    private func readFile(_ path: String, what: String) throws -> [UInt8] {
        do {
            let fd = try FileDescriptor.open(path, flags: O_RDONLY)
            var bytes: [UInt8] = []
            while true {
                let chunk = try fd.read(upTo: 1 << 20)
                if chunk.isEmpty { break }
                bytes += chunk
                if bytes.count > 1 << 31 { throw ConfigError.invalid("\(what) \(path) is larger than 2 GiB") }
            }
            return bytes
        } catch let error as SystemError {
            throw ConfigError.invalid("cannot read \(what) \(path): \(SystemError.message(for: error.errno))")
        }
    }

    // MARK: vCPU register setup

    /// Long-mode entry state from the boot protocol: flat segments from the boot GDT, paging on (Intel SDM Vol. 3 §9.8.5).
    static func enterLongMode(_ vcpu: VCPU, entry: LongModeEntry, stack: UInt64? = nil) throws {
        var sregs = try vcpu.specialRegisters()
        let code = Segment(entry.code), data = Segment(entry.data)
        sregs.cs = code
        sregs.ds = data
        sregs.es = data
        sregs.fs = data
        sregs.gs = data
        sregs.ss = data
        sregs.tr = Segment(entry.tss)
        sregs.gdt.base = entry.gdtBase
        sregs.gdt.limit = entry.gdtLimit
        sregs.idt.base = entry.idtBase
        sregs.idt.limit = entry.idtLimit
        sregs.cr0 = entry.cr0
        sregs.cr3 = entry.cr3
        sregs.cr4 = entry.cr4
        sregs.efer = entry.efer
        try vcpu.setSpecialRegisters(sregs)

        var regs = Registers()
        regs.rip = entry.rip
        regs.rsi = entry.rsi
        regs.rsp = stack ?? entry.rsp
        regs.rbp = regs.rsp
        regs.rflags = 2  // bit 1 is reserved and always set
        try vcpu.setRegisters(regs)
    }

    static func configureMSRs(_ vcpu: VCPU, logger: Logger) throws {
        try vcpu.setMSRs(BootMSRs.values)
    }

    /// x87 control word 0x37F and MXCSR 0x1F80 are the architectural reset values (SDM Vol. 1 §8.1.5, §10.2.3.1).
    static func configureFPU(_ vcpu: VCPU) throws {
        var fpu = FPUState()
        fpu.fcw = 0x37F
        fpu.mxcsr = 0x1F80
        try vcpu.setFPU(fpu)
    }

    /// LINT0 = ExtINT (the 8259 PIC's output) and LINT1 = NMI, as firmware wires them on a PC (SDM Vol. 3 §11.5.1; MP spec §5.1).
    static func configureLocalInterrupts(_ vcpu: VCPU) throws {
        let lvtLINT0 = 0x350, lvtLINT1 = 0x360
        let deliveryModeMask: UInt32 = 0x700
        var lapic = try vcpu.lapic()
        lapic.setRegister((lapic.register(at: lvtLINT0) & ~deliveryModeMask) | 0x700, at: lvtLINT0)  // ExtINT
        lapic.setRegister((lapic.register(at: lvtLINT1) & ~deliveryModeMask) | 0x400, at: lvtLINT1)  // NMI
        try vcpu.setLAPIC(lapic)
    }

    // MARK: Lifecycle

    public var state: VMRunState { lifecycle.state.current.runState }

    /// Why the VM is paused; nil while it is not.
    public var pauseReason: PauseReason? {
        let current = lifecycle.state.current
        return current.runState == .paused ? current.pauseReason : nil
    }

    /// Starts one thread per vCPU and the console's input side.
    public func start() throws {
        try OSThread.installKickHandler()
        lifecycle.state.update { $0.runState = .running }
        var started: [OSThread] = []
        for vcpu in vcpus {
            let runner = VCPURunner(vcpu: vcpu, ioBus: ioBus, mmioBus: mmioBus, lifecycle: lifecycle, logger: logger)
            lifecycle.state.update { $0.activeVCPUs += 1 }
            do {
                started.append(try OSThread(name: "vcpu\(vcpu.id)") {
                    runner.run()
                    self.lifecycle.state.update { $0.activeVCPUs -= 1 }
                })
            } catch {
                lifecycle.state.update { $0.activeVCPUs -= 1 }
                throw error
            }
        }
        threads.update { $0 = started }
        try virtio.start()
        try platform.startConsoleInput()
    }

    /// Blocks until the VM has stopped and every vCPU thread has returned.
    public func waitForExit() -> VMExit {
        let exit = lifecycle.waitForExitRequest()
        lifecycle.kickUntil({ $0.activeVCPUs == 0 }, kick: kickAll)
        for thread in threads.current { thread.join() }
        virtio.shutdown()
        platform.shutdown()
        lifecycle.state.update { $0.runState = .stopped }
        return exit
    }

    /// Ends the VM with `reason` (the first reason wins) and kicks every vCPU out of the guest.
    public func requestStop(_ reason: VMExit) {
        lifecycle.requestExit(reason)
        kickAll()
    }

    /// Parks every vCPU outside `KVM_RUN`; returns once all are parked.
    public func pause() {
        guard lifecycle.state.update({ state -> Bool in
            guard state.runState == .running else { return false }
            state.runState = .paused
            state.pauseReason = .requested
            return true
        }) else { return }
        lifecycle.kickUntil({ $0.parked == $0.activeVCPUs || $0.exit != nil }, kick: kickAll)
    }

    /// Lets parked vCPUs run again, and retries the disk requests held for lack of host space
    /// (they fail again, and pause the VM again, while the host is still full).
    public func resume() {
        let resumed = lifecycle.state.update { state -> Bool in
            guard state.runState == .paused else { return false }
            state.runState = .running
            state.pauseReason = nil
            return true
        }
        guard resumed else { return }
        emit(#"{"event":"resume"}"#)
        virtio.retryHeldRequests()
    }

    /// The I/O thread's reaction to a disk request that failed with ENOSPC/EDQUOT: pause the VM (without
    /// waiting for the vCPUs, which may be waiting on this very disk) and say why.
    func pauseForOutOfSpace(disk: Int, error: ImageError) {
        let errno = error.errno ?? ENOSPC
        let paused = lifecycle.state.update { state -> Bool in
            guard state.runState == .running || state.runState == .paused, state.exit == nil else { return false }
            state.runState = .paused
            state.pauseReason = .outOfSpace(disk: disk, errno: errno, message: error.description)
            return true
        }
        guard paused else { return }
        kickAll()
        logger.error("disk \(disk): host out of space (\(error)); VM paused until `resume` on the control socket")
        emit(#"{"event":"io-error","disk":\#(disk),"error":"\#(Self.errnoName(errno))","action":"pause"}"#)
    }

    static func errnoName(_ errno: Int32) -> String { errno == EDQUOT ? "edquot" : errno == ENOSPC ? "enospc" : "errno-\(errno)" }

    /// Calls `handler` with each event line (one JSON object, QMP-style) until `unsubscribe`; returns the subscription.
    public func subscribeEvents(_ handler: @escaping @Sendable (String) -> Void) -> UInt64 {
        let id = nextSubscriber.add(1, ordering: .relaxed).newValue
        eventSubscribers.withLock { $0[id] = handler }
        return id
    }

    public func unsubscribeEvents(_ id: UInt64) {
        _ = eventSubscribers.withLock { $0.removeValue(forKey: id) }
    }

    private func emit(_ event: String) {
        logger.warning("event \(event)")  // visible at the default log level
        for handler in eventSubscribers.withLock({ Array($0.values) }) { handler(event) }
    }

    /// The balloon's (target, actual) size in bytes, after setting the target to `bytes` when given;
    /// nil without `--balloon`.
    public func balloon(target bytes: UInt64? = nil) -> (target: UInt64, actual: UInt64)? {
        guard let balloon = virtio.balloon else { return nil }
        if let bytes { balloon.setTarget(pages: UInt32(min(bytes / VirtioBalloon.pageSize, UInt64(UInt32.max)))) }
        return (UInt64(balloon.targetPages) * VirtioBalloon.pageSize, UInt64(balloon.actualPages) * VirtioBalloon.pageSize)
    }

    /// The guest's balloon statistics (§5.5.6.3), nil without `--balloon`. With `refresh`, asks the driver
    /// for new figures first and waits up to `timeout` seconds for them; `fresh` says whether they came.
    public func balloonStatistics(refresh: Bool, timeout: Double = 2) -> (statistics: VirtioBalloon.Statistics, fresh: Bool)? {
        guard let balloon = virtio.balloon else { return nil }
        let before = balloon.statistics
        guard refresh, balloon.requestStatistics() else { return (before, false) }
        if let after = balloon.statistics(newerThan: before.generation, timeout: timeout) { return (after, true) }
        return (balloon.statistics, false)
    }

    /// Sets the balloon statistics polling interval in seconds (0: off); false without `--balloon`.
    public func setBalloonStatsInterval(_ seconds: UInt32) -> Bool {
        guard let poller = virtio.balloonPoller else { return false }
        poller.interval = seconds
        return true
    }

    /// Presses Ctrl-Alt-Del on the emulated keyboard: the guest's graceful-reboot/shutdown path.
    public func sendCtrlAltDel() {
        platform.keyboard.sendCtrlAltDel()
    }

    /// Presses the ACPI power button: a guest that handles it (Linux with its `button` driver and
    /// systemd-logind or acpid) shuts down and powers off, and the VMM exits.
    public func pressPowerButton() {
        platform.pressPowerButton()
    }

    private func kickAll() {
        for vcpu in vcpus { vcpu.requestImmediateExit() }
        for thread in threads.current { thread.kick() }
    }

    /// Each virtio function's status, negotiated features, queue progress and counters, as JSON
    /// objects (the control socket's `virtio`): where a stalled device stopped, seen from both sides.
    public func virtioStatusJSON() -> [String] {
        virtio.statuses().map { $0.status.json(pci: $0.pci) }
    }

    /// Per-vCPU and VM-wide KVM statistics (`KVM_GET_STATS_FD`), e.g. `vcpu0.insn_emulation`.
    public func statistics() -> [(String, UInt64)] {
        var result: [(String, UInt64)] = []
        if let stats = try? vm.statistics() {
            result += stats.sorted { $0.key < $1.key }.map { ("vm.\($0.key)", $0.value) }
        }
        for vcpu in vcpus {
            guard let stats = try? vcpu.statistics() else { continue }
            result += stats.sorted { $0.key < $1.key }.map { ("vcpu\(vcpu.id).\($0.key)", $0.value) }
        }
        return result
    }
}

extension Segment {
    init(_ descriptor: SegmentDescriptor) {
        self.init()
        base = descriptor.base
        limit = descriptor.limit
        selector = descriptor.selector
        type = descriptor.type
        present = descriptor.present
        dpl = descriptor.dpl
        db = descriptor.db
        s = descriptor.s
        l = descriptor.l
        g = descriptor.g
        avl = descriptor.avl
    }
}

#if canImport(Glibc)
import Glibc
#endif
