import Logging
import Synchronization
import VireoMemory
import VireoVirtio

/// virtio-balloon (virtio 1.2 §5.5), the traditional inflate/deflate interface: the host sets a
/// target size in 4 KiB pages (`num_pages`), the driver gives pages to the balloon on the inflate
/// queue (0) as arrays of little-endian u32 page frame numbers, and takes them back on the deflate
/// queue (1). Inflated pages are returned to the host with `GuestMemory.discard` (MADV_DONTNEED);
/// deflating needs nothing, since a discarded page comes back zeroed when the guest touches it.
/// No feature bits are offered (so Linux also lowers its MemTotal while inflated).
public final class VirtioBalloon: VirtioDevice {
    public static let pageSize: UInt64 = 4096
    static let inflateQueue = 0
    static let deflateQueue = 1

    let logger: Logger
    private let queues = Mutex<ActiveQueues?>(nil)
    private let target = Atomic<UInt32>(0)
    private let actual = Atomic<UInt32>(0)
    private let discarded = Atomic<UInt64>(0)

    public init(targetPages: UInt32 = 0, logger: Logger) {
        self.logger = logger
        target.store(targetPages, ordering: .relaxed)
    }

    public var deviceType: VirtioDeviceType { .balloon }
    public var features: UInt64 { VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx }
    public var queueMaxSizes: [UInt16] { [256, 256] }

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

    public func activate(_ activation: VirtioActivation) { queues.withLock { $0 = ActiveQueues(activation) } }

    public func reset() { queues.withLock { $0 = nil } }

    public func queueNotified(_ index: Int) {
        guard let active = queues.withLock({ $0 }) else { return }
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
}
