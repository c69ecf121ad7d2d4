import Synchronization
import VireoVirtio

/// virtio-rng, the entropy device (virtio 1.2 §5.4): one request queue; the device fills each
/// chain's writable buffers with random bytes from the host (`SystemRandomNumberGenerator`,
/// i.e. getrandom(2) on Linux). No feature bits, no configuration space.
public final class VirtioRng: VirtioDevice {
    /// At most this many bytes per request, so a guest asking for gigabytes cannot stall the I/O thread.
    public static let maxBytesPerRequest = 64 * 1024

    private let queues = Mutex<ActiveQueues?>(nil)

    public init() {}

    public var deviceType: VirtioDeviceType { .entropy }
    public var features: UInt64 { VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx }
    public var queueMaxSizes: [UInt16] { [256] }

    public func readConfig(offset: Int, size: Int) -> UInt64 { 0 }

    public func activate(_ active: ActiveQueues) {
        queues.withLock { $0 = active }
    }

    public func queueNotified(_ index: Int) {
        guard let active = queues.withLock({ $0 }) else { return }
        active.drain(index) { chain throws(VirtqueueError) in
            var writer = chain.writer(active.memory)
            let count = Int(min(writer.remaining, UInt64(Self.maxBytesPerRequest)))
            var generator = SystemRandomNumberGenerator()
            // Eight bytes per draw: each draw may be a getrandom(2) call.
            var bytes = [UInt8](repeating: 0, count: count)
            var index = 0
            while index < count {
                var word: UInt64 = generator.next()
                for _ in 0..<min(8, count - index) {
                    bytes[index] = UInt8(truncatingIfNeeded: word)
                    word >>= 8
                    index += 1
                }
            }
            try writer.write(bytes)
            return writer.written
        }
    }

    public func reset() {
        queues.withLock { $0 = nil }
    }
}
