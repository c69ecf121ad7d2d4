import Logging
import VireoDevices
import VireoKVM
import VireoMemory
import VireoQCOW2
import VireoVirtio

/// The virtio-pci functions of one VM, built from its config: a virtio-blk per `--disk` (in
/// order, so the first is /dev/vda) and a virtio-rng with `--rng`. Each gets the next PCI slot and
/// its two BARs from the host bridge's 32-bit window; MSI-X messages go to KVM as `KVM_SIGNAL_MSI`.
final class VirtioDevices: Sendable {
    let transports: [VirtioPCIDevice]
    let blocks: [VirtioBlock]

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
            let block = VirtioBlock(image: image, readOnly: disk.readOnly, serial: disk.serial ?? "vireo-disk\(index)", logger: logger)
            blocks.append(block)
            devices.append(block)
        }
        if config.rng { devices.append(VirtioRng()) }

        let msi = KVMMSIController(vm: vm, logger: logger)
        var transports: [VirtioPCIDevice] = []
        for device in devices {
            let slot = try pci.nextSlot()
            let bar0 = try pci.allocateBar(size: VirtioPCIDevice.bar0Size)
            let bar1 = try pci.allocateBar(size: VirtioPCIDevice.bar1Size)
            let transport = VirtioPCIDevice(device: device, memory: memory, msi: msi, bar0: bar0, bar1: bar1, logger: logger)
            try pci.add(transport, slot: slot)
            transports.append(transport)
            logger.debug("virtio-\(device.deviceType) at 00:\(slot).0, BAR0 0x\(String(bar0, radix: 16))")
        }
        self.transports = transports
        self.blocks = blocks
    }

    /// Flushes and closes the disks.
    func shutdown() {
        for block in blocks { block.close() }
    }
}

/// MSI-X messages delivered with `KVM_SIGNAL_MSI`.
struct KVMMSIController: MSIController {
    let vm: VM
    let logger: Logger

    func signal(_ message: MSIMessage) {
        do {
            try vm.signalMSI(address: message.address, data: message.data)
        } catch {
            logger.error("cannot signal MSI 0x\(String(message.address, radix: 16))/0x\(String(message.data, radix: 16)): \(error)")
        }
    }
}
