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
import VireoNetlink
import VireoQCOW2
import VireoSwitch
import VireoSystem
import VireoVirtio

final class CountingMSI: MSIController {
    let count = Atomic<Int>(0)
    func signal(vector: Int, message: MSIMessage) { count.add(1, ordering: .relaxed) }
}

/// Drives queue `queue` of `size` descriptors (each request a 3-descriptor chain (header, data,
/// status) for virtio-blk, a single writable buffer for virtio-rng, header and frame for a
/// virtio-net transmit, one buffer per receive); all `queueCount` queues are set up, each in its
/// own 16 KiB of guest memory.
struct Driver {
    let memory: GuestMemory
    let transport: VirtioPCIDevice
    let queue: UInt16
    let size: UInt16 = 256
    var table: GuestAddress { Self.table(queue) }
    var avail: GuestAddress { Self.avail(queue, size) }
    var used: GuestAddress { Self.used(queue, size) }
    var availIndex: UInt16 = 0

    static func table(_ queue: UInt16) -> GuestAddress { GuestAddress(0x1000 + 0x4000 * UInt64(queue)) }
    static func avail(_ queue: UInt16, _ size: UInt16) -> GuestAddress { GuestAddress(table(queue).raw + 16 * UInt64(size)) }
    static func used(_ queue: UInt16, _ size: UInt16) -> GuestAddress {
        GuestAddress((avail(queue, size).raw + 6 + 2 * UInt64(size) + 4095) & ~4095)
    }

    init(device: any VirtioDevice, queue: UInt16 = 0, queueCount: UInt16 = 1) throws {
        self.queue = queue
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
        for index in 0..<queueCount {
            common(0x16, 2, UInt64(index))
            common(0x18, 2, UInt64(size))
            common(0x1A, 2, 1)
            common(0x20, 8, Self.table(index).raw)
            common(0x28, 8, Self.avail(index, size).raw)
            common(0x30, 8, Self.used(index, size).raw)
            common(0x1C, 2, 1)
        }
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
        transport.writeBar(0, offset: VirtioPCIDevice.notifyOffset + UInt64(queue) * UInt64(VirtioPCIDevice.notifyOffsetMultiplier),
                           size: 2, value: UInt64(queue))
    }

    var usedIndex: UInt16 { (try? memory.readInteger(UInt16.self, at: GuestAddress(used.raw + 2))) ?? 0 }
}

/// Runs batches of `batch` requests for about `seconds`; returns requests per second.
func measure(_ name: String, seconds: Double, batch: Int, setup: (inout Driver) throws -> [UInt16], device: any VirtioDevice,
             queue: UInt16 = 0, queueCount: UInt16 = 1) throws -> Double {
    var driver = try Driver(device: device, queue: queue, queueCount: queueCount)
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

// virtio-net. A TSO frame as a Linux guest sends one: NEEDS_CSUM, GSO TCPv4, headers of 54 bytes.
func netPacket(frameLength: Int, gso: Bool) -> [UInt8] {
    var header = VirtioNetHeader()
    if gso {
        header.flags = VirtioNetHeader.flagNeedsChecksum
        header.gsoType = VirtioNetHeader.gsoTCPv4
        header.headerLength = 54
        header.gsoSize = 1448
        header.checksumStart = 34
        header.checksumOffset = 16
    }
    var frame = [UInt8](repeating: 0xA5, count: frameLength)
    frame.replaceSubrange(0..<14, with: [0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00])
    return header.bytes + frame
}

/// Transmit: header and frame in two descriptors, written to a tap that is up (the host stack drops
/// the frames: they are for another MAC), so the figure includes the kernel's copy, as in a VM.
func transmitRequests(_ packet: [UInt8]) -> (inout Driver) throws -> [UInt16] {
    { driver in
        var heads: [UInt16] = []
        for request in 0..<(driver.size / 2) {
            let head = request * 2
            let base = 0x20_0000 + UInt64(request) * 0x2_0000
            try driver.memory.write(packet, at: GuestAddress(base))
            try driver.descriptor(head, address: base, length: UInt32(VirtioNetHeader.length), writable: false, next: head + 1)
            try driver.descriptor(head + 1, address: base + UInt64(VirtioNetHeader.length),
                                  length: UInt32(packet.count - VirtioNetHeader.length), writable: false, next: nil)
            heads.append(head)
        }
        return heads
    }
}

/// A backend that hands the device `remaining` copies of `packet` (each a fresh array, as a tap
/// read makes one) and swallows what it is sent.
final class PacketSource: NetBackend, @unchecked Sendable {
    let packet: [UInt8]
    let inPlace: Bool
    var remaining = 0
    init(_ packet: [UInt8], inPlace: Bool) { self.packet = packet; self.inPlace = inPlace }
    /// With `inPlace`, the packet is written straight into the guest's buffers, as a tap's `readv` does.
    var receivesInPlace: Bool { inPlace }
    func receive(into buffers: borrowing IOVectors) -> Int? {
        guard remaining > 0 else { return nil }
        remaining -= 1
        buffers.store(packet, at: 0)
        return packet.count
    }
    func send(_ packet: [UInt8]) -> NetSendResult { .sent }
    func receive() -> [UInt8]? {
        guard remaining > 0 else { return nil }
        remaining -= 1
        return packet.withUnsafeBytes { Array($0) }
    }
    var pollDescriptor: Int32? { nil }
    var offloads: NetOffloads { .all }
}

/// Receive: the driver posts 4 KiB buffers (what Linux's mergeable receive buffers grow to under
/// bulk traffic), then the backend offers `perRound` packets. Returns packets per second.
func measureReceive(_ name: String, seconds: Double, packet: [UInt8], perRound: Int, inPlace: Bool = false) throws -> Double {
    let source = PacketSource(packet, inPlace: inPlace)
    let net = VirtioNet(mac: [2, 0, 0, 0, 0, 1], backend: source, logger: logger)
    var driver = try Driver(device: net, queue: UInt16(VirtioNet.receiveQueue), queueCount: 2)
    let bufferLength = 4096
    let buffersPerPacket = (packet.count + bufferLength - 1) / bufferLength
    let buffers = UInt16(buffersPerPacket * perRound)
    precondition(buffers <= driver.size)
    for index in 0..<buffers {
        try driver.descriptor(index, address: 0x100_0000 + UInt64(index) * UInt64(bufferLength), length: UInt32(bufferLength), writable: true, next: nil)
    }
    var done = 0
    let start = Date()
    while Date().timeIntervalSince(start) < seconds {
        let before = driver.usedIndex
        try driver.submit(Array(0..<buffers))
        source.remaining = perRound
        net.backendReadable()
        guard driver.usedIndex &- before == buffers, net.counters.rxPackets == done + perRound else {
            fatalError("\(name): packets not delivered (\(net.counters))")
        }
        done += perRound
    }
    let rate = Double(done) / Date().timeIntervalSince(start)
    print(name.padding(toLength: 40, withPad: " ", startingAt: 0)
          + String(format: "%12.0f packets/s %9.1f MiB/s", rate, rate * Double(packet.count) / 1_048_576))
    return rate
}

_ = try measureReceive("virtio-net rx 64 KiB, 8 per round", seconds: seconds, packet: netPacket(frameLength: 65_536, gso: true), perRound: 8)
_ = try measureReceive("virtio-net rx 1514 B, 64 per round", seconds: seconds, packet: netPacket(frameLength: 1514, gso: false), perRound: 64)
_ = try measureReceive("virtio-net rx 64 KiB in place, 8/round", seconds: seconds, packet: netPacket(frameLength: 65_536, gso: true),
                       perRound: 8, inPlace: true)
_ = try measureReceive("virtio-net rx 1514 B in place, 64/round", seconds: seconds, packet: netPacket(frameLength: 1514, gso: false),
                       perRound: 64, inPlace: true)

let tapName = "vbench\(getpid() % 10_000)"
if let tap = try? TapBackend(name: tapName), (try? RouteNetlink().setUp(tapName, true)) != nil {
    for (name, frameLength, gso) in [("virtio-net tx 64 KiB to a tap", 65_536, true), ("virtio-net tx 1514 B to a tap", 1514, false)] {
        let net = VirtioNet(mac: [2, 0, 0, 0, 0, 1], backend: tap, logger: logger)
        _ = try measure(name + ", batch 32", seconds: seconds, batch: 32, setup: transmitRequests(netPacket(frameLength: frameLength, gso: gso)),
                        device: net, queue: UInt16(VirtioNet.transmitQueue), queueCount: 2)
        guard net.counters.txDropped == 0, net.counters.txInvalidHeader == 0 else { fatalError("\(name): \(net.counters)") }
    }
} else {
    print("virtio-net transmit: skipped (no tap: run as root)")
}
