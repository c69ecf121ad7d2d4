import Synchronization
import VireoVirtio

/// virtio-console (virtio 1.2 §5.3) with one port and no VIRTIO_CONSOLE_F_MULTIPORT: the guest's
/// `hvc0`. Queue 0 (receiveq) carries host→guest bytes, queue 1 (transmitq) guest→host bytes.
/// Output goes to a `ConsoleOutput`; host input is queued with ``enqueueInput(_:)`` and delivered into
/// the buffers the driver posted on the receive queue.
public final class VirtioConsole: VirtioDevice {
    static let receiveQueue = 0
    static let transmitQueue = 1
    /// Largest transmit chain copied out at once (the driver's buffers are a page each).
    static let maxTransmit = 64 * 1024
    /// Input kept while the driver has no receive buffers; older bytes are dropped beyond this.
    static let maxPendingInput = 64 * 1024

    let output: any ConsoleOutput
    private let queues = Mutex<ActiveQueues?>(nil)
    private let pendingInput = Mutex<[UInt8]>([])
    /// cols, rows (§5.3.4); reported for VIRTIO_CONSOLE_F_SIZE, which is not offered.
    private let configBytes: [UInt8] = [80, 0, 25, 0, 1, 0, 0, 0, 0, 0, 0, 0]

    public init(output: any ConsoleOutput) {
        self.output = output
    }

    public var deviceType: VirtioDeviceType { .console }
    public var features: UInt64 { VirtioFeature.ringIndirectDesc | VirtioFeature.ringEventIdx }
    public var queueMaxSizes: [UInt16] { [256, 256] }

    public func readConfig(offset: Int, size: Int) -> UInt64 { VirtioConfigBytes.read(configBytes, offset: offset, size: size) }

    public func activate(_ active: ActiveQueues) {
        queues.withLock { $0 = active }
        deliverInput()
    }

    public func reset() { queues.withLock { $0 = nil } }

    public func queueNotified(_ index: Int) {
        guard let active = queues.withLock({ $0 }) else { return }
        switch index {
        case Self.transmitQueue:
            active.drain(index) { chain throws(VirtqueueError) in
                var reader = chain.reader(active.memory)
                let bytes = try reader.read(Int(min(reader.remaining, UInt64(Self.maxTransmit))))
                output.write(bytes)
                return 0
            }
        case Self.receiveQueue:
            deliverInput()
        default:
            break
        }
    }

    /// Queues host input for the guest and delivers what fits into posted receive buffers.
    public func enqueueInput(_ bytes: [UInt8]) {
        pendingInput.withLock { pending in
            pending += bytes
            if pending.count > Self.maxPendingInput { pending.removeFirst(pending.count - Self.maxPendingInput) }
        }
        deliverInput()
    }

    private func deliverInput() {
        guard let active = queues.withLock({ $0 }) else { return }
        guard !pendingInput.withLock({ $0.isEmpty }) else { return }
        // Receive buffers are only taken while there is input for them.
        active.drain(Self.receiveQueue, while: { !pendingInput.withLock { $0.isEmpty } }) { chain throws(VirtqueueError) in
            var writer = chain.writer(active.memory)
            let chunk: [UInt8] = pendingInput.withLock { pending in
                let count = min(pending.count, Int(min(writer.remaining, UInt64(Int.max))))
                defer { pending.removeFirst(count) }
                return Array(pending.prefix(count))
            }
            try writer.write(chunk)
            return writer.written
        }
    }
}
