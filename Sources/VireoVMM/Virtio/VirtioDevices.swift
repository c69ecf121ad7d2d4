import Logging
import Synchronization
import VireoSystem
import VireoDevices
import VireoKVM
import VireoMemory
import VireoQCOW2
import VireoVirtio

/// The virtio-pci functions of one VM, built from its config: a virtio-blk per `--disk` (in
/// order, so the first is /dev/vda), a virtio-rng with `--rng`, a virtio-console with `--console`,
/// a virtio-balloon with `--balloon`, a virtio-net per `--net` (on a host tap or a switch port whose fd the I/O
/// thread polls for received frames). Each gets the next PCI slot and
/// its two 64-bit BARs from the host bridge's 64-bit window above RAM; MSI-X vectors are irqfds on GSIs routed as MSIs
/// (`KVM_SET_GSI_ROUTING`, falling back to `KVM_SIGNAL_MSI`);
/// queue notifications arrive on the I/O thread through ioeventfds (or, as a fallback, by MMIO exits).
final class VirtioDevices: Sendable {
    let transports: [VirtioPCIDevice]
    /// The PCI slot (device number on bus 0) of each transport.
    let slots: [UInt8]
    let blocks: [VirtioBlock]
    let io: IOThread
    /// The virtio-console and its host side, with `--console`.
    let console: (device: VirtioConsole, backend: ConsoleBackend)?
    let balloon: VirtioBalloon?
    let balloonPoller: BalloonStatsPoller?
    let notifiers: [QueueNotifiers]
    let nets: [VirtioNet]
    /// The switch ports the NICs attached to, deleted at shutdown.
    let switchPorts: [SwitchAttachment]

    init(config: VMConfig, vm: VM, memory: GuestMemory, pci: PCIRoot, logger: Logger) throws {
        var devices: [any VirtioDevice] = []
        var blocks: [VirtioBlock] = []
        for (index, disk) in config.disks.enumerated() {
            let image: any BlockImage
            do {
                image = try openImage(disk.path, options: ImageOptions(writable: !disk.readOnly, format: disk.format))
            } catch {
                throw ConfigError.invalid("--disk \(disk.path): \(error)")
            }
            let block = VirtioBlock(image: image, readOnly: disk.readOnly, serial: disk.serial ?? "vireo-disk\(index)",
                                    holdOnOutOfSpace: disk.pauseOnOutOfSpace, logger: logger)
            blocks.append(block)
            devices.append(block)
        }
        if config.rng { devices.append(VirtioRng()) }
        if let kind = config.virtioConsole {
            let backend = try ConsoleBackend(kind, logger: logger)
            let device = VirtioConsole(output: backend)
            console = (device, backend)
            devices.append(device)
        } else {
            console = nil
        }
        if let bytes = config.balloonTarget {
            let device = VirtioBalloon(targetPages: UInt32(min(bytes / VirtioBalloon.pageSize, UInt64(UInt32.max))),
                                       deflateOnOOM: config.balloonDeflateOnOOM, logger: logger)
            balloon = device
            balloonPoller = BalloonStatsPoller(balloon: device, interval: config.balloonStatsInterval)
            devices.append(device)
        } else {
            balloon = nil
            balloonPoller = nil
        }

        var nets: [VirtioNet] = []
        var switchPorts: [SwitchAttachment] = []
        for net in config.nets {
            let backend: any NetBackend
            switch net.attachment {
            case .tap(let tap):
                do {
                    backend = try TapBackend(name: tap)
                } catch {
                    throw ConfigError.invalid("--net tap=\(tap): \(error)")
                }
                logger.info("virtio-net on tap \(tap), MAC \(NetConfig.format(net.mac))")
            case .switchPort(let attachment):
                do {
                    backend = try attachment.attach(logger: logger)
                } catch {
                    throw ConfigError.invalid("--net switch=\(attachment.switchName): \(error)")
                }
                switchPorts.append(attachment)
                logger.info("virtio-net on switch \(attachment.switchName) port \(attachment.port.spec), MAC \(NetConfig.format(net.mac))")
            }
            let device = VirtioNet(mac: net.mac, backend: backend, logger: logger)
            nets.append(device)
            devices.append(device)
        }
        self.nets = nets
        self.switchPorts = switchPorts

        let signalMSI = KVMMSIController(vm: vm, logger: logger)
        let routing = MSIRouting(vm: vm, logger: logger)
        io = try IOThread(logger: logger)
        var notifiers: [QueueNotifiers] = []
        var transports: [VirtioPCIDevice] = []
        var slots: [UInt8] = []
        for device in devices {
            let slot = try pci.nextSlot()
            slots.append(slot)
            let bar0 = try pci.allocateBar(size: VirtioPCIDevice.bar0Size)
            let msixBar = try pci.allocateBar(size: VirtioPCIDevice.msixBarSize)
            let vectors = device.queueMaxSizes.count + 1
            let msi: any MSIController
            do {
                msi = try IRQFDVectors(count: vectors, routing: routing)
            } catch {
                logger.warning("virtio-\(device.deviceType): no irqfd MSI-X (\(error)); using KVM_SIGNAL_MSI")
                msi = signalMSI
            }
            let transport = VirtioPCIDevice(device: device, memory: memory, msi: msi, bar0: bar0, msixBar: msixBar,
                                            intx: pci.intxLine(slot: slot), logger: logger)
            try pci.add(transport, slot: slot)
            transports.append(transport)
            notifiers.append(try QueueNotifiers(transport: transport, vm: vm, io: io, logger: logger))
            logger.debug("virtio-\(device.deviceType) at 00:\(slot).0, BAR0 0x\(String(bar0, radix: 16))")
        }
        self.transports = transports
        self.slots = slots
        self.blocks = blocks
        self.notifiers = notifiers
    }

    func start() throws {
        for net in nets {
            if let fd = net.backend.pollDescriptor {
                net.attachPolling(try io.watch(descriptor: fd) { [net] in net.backendReadable() })
            }
        }
        if !transports.isEmpty { try io.start() }
        try balloonPoller?.start()
        if let console { try console.backend.startInput { [device = console.device] bytes in device.enqueueInput(bytes) } }
    }

    /// Lets every disk that holds a request for lack of host space take requests again, and has the
    /// I/O thread retry it (by signalling the queue's ioeventfd, as a guest notification would).
    func retryHeldRequests() {
        for block in blocks where block.resumeHeld() {
            guard let index = transports.firstIndex(where: { $0.device === block }) else { continue }
            for event in notifiers[index].events { try? event.signal() }
        }
    }

    /// Every virtio function's status and queue progress, by PCI address (`00:03.0`).
    func statuses() -> [(pci: String, status: VirtioPCIStatus)] {
        zip(slots, transports).map { slot, transport in
            let device = String(slot, radix: 16)
            return ("00:\(device.count < 2 ? "0" + device : device).0", transport.status())
        }
    }

    /// Stops the I/O thread, then flushes and closes the disks.
    func shutdown() {
        balloonPoller?.stop()
        io.stop()
        for net in nets { io.logger.notice("virtio-net \(NetConfig.format(net.mac)): \(net.counters)") }
        for port in switchPorts { port.detach(logger: io.logger) }
        for block in blocks { block.close() }
        console?.backend.close()
    }
}

/// Asks the balloon for fresh guest statistics every `interval` seconds (QEMU's
/// guest-stats-polling-interval); 0 stops polling. The interval can change at run time.
final class BalloonStatsPoller: Sendable {
    let balloon: VirtioBalloon
    private let state: WaitableState<(interval: UInt32, stopped: Bool)>
    private let thread = Mutex<OSThread?>(nil)

    init(balloon: VirtioBalloon, interval: UInt32) {
        self.balloon = balloon
        state = WaitableState((interval, false))
    }

    var interval: UInt32 {
        get { state.current.interval }
        set { state.update { $0.interval = newValue } }
    }

    func start() throws {
        let started = try OSThread(name: "balloon-stats") { [self] in
            while true {
                let current = state.current
                if current.stopped { return }
                if current.interval == 0 {
                    // Idle until polling is turned on (or the VM stops).
                    _ = state.wait { $0.stopped || $0.interval != 0 }
                    continue
                }
                // A timeout is the poll tick; a change of interval or a stop ends the wait early.
                if state.wait(until: { $0.stopped || $0.interval != current.interval }, timeout: Double(current.interval)) == nil {
                    balloon.requestStatistics()
                }
            }
        }
        thread.withLock { $0 = started }
    }

    func stop() {
        state.update { $0.stopped = true }
        thread.withLock { $0 }?.join()
    }
}

/// MSI-X messages delivered with `KVM_SIGNAL_MSI` (the fallback when irqfds cannot be set up).
struct KVMMSIController: MSIController {
    let vm: VM
    let logger: Logger

    func signal(vector: Int, message: MSIMessage) {
        do {
            try vm.signalMSI(address: message.address, data: message.data)
        } catch {
            logger.error("cannot signal MSI 0x\(String(message.address, radix: 16))/0x\(String(message.data, radix: 16)): \(error)")
        }
    }
}
