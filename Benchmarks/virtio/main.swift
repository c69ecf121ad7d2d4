// Host-side virtqueue benchmark: requests per second through the whole virtio-pci path (notify write →
// split-queue pop and chain validation → device → used ring → MSI-X), with an in-process driver that
// lays out one queue in guest memory the way Linux does (virtio 1.2 §2.7). No KVM: it measures the
// VMM's per-request cost, to catch regressions. Run a release build:
//   swift run -c release virtio-bench [SECONDS]
import Foundation
import Logging
import Synchronization
import VireoDevices
import VireoMemory
import VireoQCOW2
import VireoVirtio

final class CountingMSI: MSIController {
    let count = Atomic<Int>(0)
    func signal(vector: Int, message: MSIMessage) { count.add(1, ordering: .relaxed) }
}

/// One queue of `size` descriptors, each request a 3-descriptor chain (header, data, status) or, for
/// virtio-rng, a single writable buffer.
struct Driver {
    let memory: GuestMemory
    let transport: VirtioPCIDevice
    let size: UInt16 = 256
    let table = GuestAddress(0x1000)
    var avail: GuestAddress { GuestAddress(table.raw + 16 * UInt64(size)) }
    var used: GuestAddress { GuestAddress((avail.raw + 6 + 2 * UInt64(size) + 4095) & ~4095) }
    var availIndex: UInt16 = 0

    init(device: any VirtioDevice) throws {
        memory = try GuestMemory(ranges: [(GuestAddress(0), 64 << 20)])
        transport = VirtioPCIDevice(device: device, memory: memory, msi: CountingMSI(), bar0: 0xC000_0000, msixBar: 0xC000_4000,
                                    logger: Logger(label: "bench"))
        func common(_ offset: UInt64, _ width: Int, _ value: UInt64) { transport.writeBar(0, offset: offset, size: width, value: value) }
        common(0x14, 1, 3)
        for select in 0..<2 as Range<UInt64> {
            common(0x00, 4, select)
            let offered = transport.readBar(0, offset: 0x04, size: 4)
            common(0x08, 4, select)
            common(0x0C, 4, offered)
        }
        common(0x14, 1, 0x0B)
        transport.writeConfig(offset: 4, size: 2, value: 6)
        var cap = Int(transport.readConfig(offset: 0x34, size: 1))
        while transport.readConfig(offset: cap, size: 1) != 0x11 { cap = Int(transport.readConfig(offset: cap + 1, size: 1)) }
        transport.writeConfig(offset: cap + 2, size: 2, value: 0x8000)
        transport.writeBar(VirtioPCIDevice.msixBar, offset: 16, size: 4, value: 0xFEE0_0000)
        transport.writeBar(VirtioPCIDevice.msixBar, offset: 28, size: 4, value: 0)
        common(0x16, 2, 0)
        common(0x18, 2, UInt64(size))
        common(0x1A, 2, 1)
        common(0x20, 8, table.raw)
        common(0x28, 8, avail.raw)
        common(0x30, 8, used.raw)
        common(0x1C, 2, 1)
        common(0x14, 1, 0x0F)
    }

    func descriptor(_ index: UInt16, address: UInt64, length: UInt32, writable: Bool, next: UInt16?) throws {
        let entry = GuestAddress(table.raw + 16 * UInt64(index))
        try memory.writeInteger(address, at: entry)
        try memory.writeInteger(length, at: GuestAddress(entry.raw + 8))
        try memory.writeInteger(UInt16((writable ? 2 : 0) | (next != nil ? 1 : 0)), at: GuestAddress(entry.raw + 12))
        try memory.writeInteger(next ?? 0, at: GuestAddress(entry.raw + 14))
    }

    /// Makes `heads` available and notifies once.
    mutating func submit(_ heads: [UInt16]) throws {
        for head in heads {
            try memory.writeInteger(head, at: GuestAddress(avail.raw + 4 + 2 * UInt64(availIndex % size)))
            availIndex &+= 1
        }
        try memory.writeInteger(availIndex, at: GuestAddress(avail.raw + 2))
        transport.writeBar(0, offset: 0x3000, size: 2, value: 0)
    }

    var usedIndex: UInt16 { (try? memory.readInteger(UInt16.self, at: GuestAddress(used.raw + 2))) ?? 0 }
}

/// Runs batches of `batch` requests for about `seconds`; returns requests per second.
func measure(_ name: String, seconds: Double, batch: Int, setup: (inout Driver) throws -> [UInt16], device: any VirtioDevice) throws -> Double {
    var driver = try Driver(device: device)
    let heads = try setup(&driver)
    var done = 0
    let start = Date()
    while Date().timeIntervalSince(start) < seconds {
        for offset in stride(from: 0, to: heads.count, by: batch) {
            let before = driver.usedIndex
            let chunk = Array(heads[offset..<min(offset + batch, heads.count)])
            try driver.submit(chunk)
            guard driver.usedIndex &- before == UInt16(chunk.count) else { fatalError("\(name): requests not completed") }
            done += chunk.count
        }
    }
    let rate = Double(done) / Date().timeIntervalSince(start)
    print(name.padding(toLength: 40, withPad: " ", startingAt: 0) + String(format: "%12.0f requests/s", rate))
    return rate
}

let seconds = CommandLine.arguments.dropFirst().first.flatMap(Double.init) ?? 3
let path = NSTemporaryDirectory() + "virtio-bench-\(getpid()).img"
try RawImage.create(path, size: 64 << 20)
defer { unlink(path) }

/// virtio-blk chains: 16-byte header, `dataLength` bytes, status byte; requests spread over the disk.
func blockRequests(type: UInt32, dataLength: UInt32) -> (inout Driver) throws -> [UInt16] {
    { driver in
        var heads: [UInt16] = []
        let perChain: UInt16 = 3
        for request in 0..<(driver.size / perChain) {
            let head = request * perChain
            let base = 0x20_0000 + UInt64(request) * 0x2_0000
            try driver.memory.writeInteger(type, at: GuestAddress(base))
            try driver.memory.writeInteger(UInt64(request) * 8 * 64, at: GuestAddress(base + 8))  // sector
            try driver.descriptor(head, address: base, length: 16, writable: false, next: head + 1)
            try driver.descriptor(head + 1, address: base + 0x1000, length: dataLength, writable: type == 0, next: head + 2)
            try driver.descriptor(head + 2, address: base + 0x1_F000, length: 1, writable: true, next: nil)
            heads.append(head)
        }
        return heads
    }
}

let logger = Logger(label: "bench")
print("virtio-bench: \(seconds) s per case, queue size 256, one notify per batch")
_ = try measure("virtio-rng 64 B, batch 64", seconds: seconds, batch: 64, setup: { driver in
    for index in 0..<UInt16(64) { try driver.descriptor(index, address: 0x20_0000 + UInt64(index) * 64, length: 64, writable: true, next: nil) }
    return Array(0..<64)
}, device: VirtioRng())
for (name, type, length, batch) in [("virtio-blk read 4 KiB, batch 1", UInt32(0), UInt32(4096), 1),
                                    ("virtio-blk read 4 KiB, batch 32", 0, 4096, 32),
                                    ("virtio-blk write 4 KiB, batch 32", 1, 4096, 32),
                                    ("virtio-blk read 64 KiB, batch 32", 0, 65536, 32)] {
    let image = try openImage(path, options: ImageOptions(writable: true, format: .raw))
    _ = try measure(name, seconds: seconds, batch: batch, setup: blockRequests(type: type, dataLength: length),
                    device: VirtioBlock(image: image, readOnly: false, serial: "bench", logger: logger))
}
