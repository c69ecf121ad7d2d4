import Foundation
import Logging
import Synchronization
import VireoMemory
import VireoSystem
import VireoVirtio

/// virtio-balloon (virtio 1.2 §5.5), the traditional inflate/deflate interface: the host sets a
/// target size in 4 KiB pages (`num_pages`), the driver gives pages to the balloon on the inflate
/// queue (0) as arrays of little-endian u32 page frame numbers, and takes them back on the deflate
/// queue (1). Inflated pages are returned to the host with `GuestMemory.discard` (MADV_DONTNEED);
/// deflating needs nothing, since a discarded page comes back zeroed when the guest touches it.
///
/// VIRTIO_BALLOON_F_STATS_VQ (§5.5.6.3): the driver puts one buffer of statistics on queue 2; the device
/// keeps it and returns it (used) when the host wants fresh figures, and the driver sends it back refilled.
/// VIRTIO_BALLOON_F_DEFLATE_ON_OOM (§5.5.6.1), when enabled, lets the guest take pages back from the
/// balloon before its OOM killer runs (Linux then keeps MemTotal unchanged while inflated).
public final class VirtioBalloon: VirtioDevice {
    public static let pageSize: UInt64 = 4096
    static let inflateQueue = 0
    static let deflateQueue = 1
    static let statsQueue = 2

    /// Feature bits (§5.5.3).
    public enum Feature {
        public static let statsVQ: UInt64 = 1 << 1
        public static let deflateOnOOM: UInt64 = 1 << 2
    }

    /// The statistics the driver reports (§5.5.6.3.1), by tag; values as the driver sent them (bytes, or counts).
    public struct Statistics: Sendable, Equatable {
        /// Tag names in tag order (0 = VIRTIO_BALLOON_S_SWAP_IN …).
        public static let names = [
            "swap-in", "swap-out", "major-faults", "minor-faults", "free-memory", "total-memory",
            "available-memory", "disk-caches", "hugetlb-allocations", "hugetlb-failures",
        ]
        public var values: [String: UInt64] = [:]
        /// How many times the driver has reported (0: never).
        public var generation: UInt64 = 0
        /// When it last reported, in seconds since the epoch (0: never): Proxmox's `last_update`.
        public var lastUpdate = 0
    }

    let logger: Logger
    private let queues = Mutex<ActiveQueues?>(nil)
    private let target = Atomic<UInt32>(0)
    private let actual = Atomic<UInt32>(0)
    private let discarded = Atomic<UInt64>(0)
    public let deflateOnOOM: Bool
    /// The driver's latest statistics.
    private let reported = WaitableState(Statistics())
    /// The statistics buffer the device holds until the host wants new figures.
    private let heldStatsHead = Mutex<UInt16?>(nil)

    public init(targetPages: UInt32 = 0, deflateOnOOM: Bool = false, logger: Logger) {
        self.logger = logger
        self.deflateOnOOM = deflateOnOOM
        target.store(targetPages, ordering: .relaxed)
    }

    public var deviceType: VirtioDeviceType { .balloon }
    public var features: UInt64 {
        VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx | Feature.statsVQ | (deflateOnOOM ? Feature.deflateOnOOM : 0)
    }
    public var queueMaxSizes: [UInt16] { [256, 256, 16] }

    /// The statistics the driver reported last (generation 0: none yet).
    public var statistics: Statistics { reported.current }

    /// Waits up to `seconds` for a report newer than `generation`; nil on timeout.
    public func statistics(newerThan generation: UInt64, timeout seconds: Double) -> Statistics? {
        reported.wait(until: { $0.generation > generation }, timeout: seconds)
    }

    /// Asks the driver for fresh statistics by returning the buffer it left on the statistics queue;
    /// `statistics` changes when the refilled buffer comes back. Returns false when the driver has not
    /// (or not yet) offered a buffer.
    @discardableResult
    public func requestStatistics() -> Bool {
        guard let active = queues.withLock({ $0 }), let head = heldStatsHead.withLock({ held in
            defer { held = nil }
            return held
        }) else { return false }
        active.returnUsed(Self.statsQueue, head: head, length: 0)
        return true
    }

    /// The balloon size the host asks for, in pages.
    public var targetPages: UInt32 { target.load(ordering: .relaxed) }
    /// The balloon size the driver reports (`actual`, §5.5.6).
    public var actualPages: UInt32 { actual.load(ordering: .relaxed) }
    /// Pages returned to the host since start.
    public var discardedPages: UInt64 { discarded.load(ordering: .relaxed) }

    /// Asks the driver to grow or shrink the balloon to `pages` (a configuration-change interrupt).
    public func setTarget(pages: UInt32) {
        target.store(pages, ordering: .relaxed)
        queues.withLock { $0 }?.activation.interrupt.notifyConfigChange()
    }

    /// §5.5.4: num_pages (u32, device-written) at 0, actual (u32, driver-written) at 4.
    public func readConfig(offset: Int, size: Int) -> UInt64 {
        var bytes = [UInt8](repeating: 0, count: 8)
        for index in 0..<4 {
            bytes[index] = UInt8(truncatingIfNeeded: targetPages >> (8 * index))
            bytes[4 + index] = UInt8(truncatingIfNeeded: actualPages >> (8 * index))
        }
        return VirtioConfigBytes.read(bytes, offset: offset, size: size)
    }

    public func writeConfig(offset: Int, size: Int, value: UInt64) {
        guard offset == 4, size == 4 else { return }
        actual.store(UInt32(truncatingIfNeeded: value), ordering: .relaxed)
    }

    public func activate(_ active: ActiveQueues) {
        heldStatsHead.withLock { $0 = nil }
        queues.withLock { $0 = active }
        // Linux queues its first statistics buffer and notifies before DRIVER_OK (virtio_balloon's
        // init_vqs), when there was no device to hear it; pick that buffer up now, as QEMU does.
        if active.activation.features & Feature.statsVQ != 0 { queueNotified(Self.statsQueue) }
    }

    public func reset() {
        queues.withLock { $0 = nil }
        heldStatsHead.withLock { $0 = nil }
    }

    public func queueNotified(_ index: Int) {
        guard let active = queues.withLock({ $0 }) else { return }
        if index == Self.statsQueue {
            active.process(index) { chain throws(VirtqueueError) in
                try receiveStatistics(chain, active.memory)
                // Keep the newest buffer; an older one (a driver that sent two) goes back at once.
                let previous = heldStatsHead.withLock { held in
                    defer { held = chain.head }
                    return held
                }
                if let previous { active.returnUsed(index, head: previous, length: 0) }
                return .kept
            }
            return
        }
        active.drain(index) { chain throws(VirtqueueError) in
            var reader = chain.reader(active.memory)
            guard index == Self.inflateQueue else { return 0 }
            while reader.remaining >= 4 {
                let pfn = UInt64(try reader.readInteger(UInt32.self))
                // A PFN outside RAM is the guest's mistake; discarding nothing is the safe answer.
                do {
                    try active.memory.discard(GuestAddress(pfn * Self.pageSize), length: Self.pageSize)
                    discarded.add(1, ordering: .relaxed)
                } catch {
                    logger.debug("virtio-balloon: cannot discard page frame \(pfn): \(error)")
                }
            }
            return 0
        }
    }

    /// Reads {tag u16, value u64} entries (10 bytes each, §5.5.6.3); unknown tags are skipped.
    private func receiveStatistics(_ chain: DescriptorChain, _ memory: GuestMemory) throws(VirtqueueError) {
        var reader = chain.reader(memory)
        var values: [String: UInt64] = [:]
        while reader.remaining >= 10 {
            let tag = Int(try reader.readInteger(UInt16.self))
            let value = try reader.readInteger(UInt64.self)
            if tag < Statistics.names.count { values[Statistics.names[tag]] = value }
        }
        reported.update { current in
            current.values = values
            current.generation += 1
            current.lastUpdate = Int(Date.now.timeIntervalSince1970)
        }
    }
}
