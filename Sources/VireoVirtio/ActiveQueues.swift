import Synchronization
import VireoMemory

/// The queues of an activated device and the loop every device runs on a notification: pop each
/// available chain, let the device handle it, return it as used, and interrupt the driver when it
/// asked to be (§2.7.10). A malformed queue stops the device for good (DEVICE_NEEDS_RESET, §2.1.2).
public final class ActiveQueues: Sendable {
    public let activation: VirtioActivation
    private let queues: Mutex<[SplitQueue]>
    private let broken = Atomic<Bool>(false)

    public init(_ activation: VirtioActivation) {
        self.activation = activation
        queues = Mutex(activation.queues)
    }

    public var memory: GuestMemory { activation.memory }
    public var isBroken: Bool { broken.load(ordering: .acquiring) }

    /// Every queue's progress (``SplitQueue/status(_:)``), for diagnostics.
    public func statuses() -> [QueueStatus] {
        queues.withLock { queues in queues.map { $0.status(memory) } }
    }

    /// Handles every available chain of queue `index`. `handle` returns how many bytes it wrote
    /// into the chain's writable buffers (the used-ring length). A `VirtqueueError` thrown by
    /// the handler counts as a malformed request and fails the device too. `more` is asked before
    /// each chain is taken (a receive queue stops once the device has nothing left to deliver).
    public func drain(_ index: Int, while more: () -> Bool = { true }, _ handle: (DescriptorChain) throws(VirtqueueError) -> UInt32) {
        process(index, while: more, { chain throws(VirtqueueError) in .used(try handle(chain)) })
    }

    /// What a device does with a chain it has taken.
    public enum Disposition: Sendable {
        /// Returned to the driver as used, with the number of bytes written into it.
        case used(UInt32)
        /// Left in the available ring, with every chain after it, for the next drain (a virtio-blk
        /// request that cannot complete while the host disk is full).
        case putBack
        /// Kept by the device, which returns it later with `returnUsed` (the balloon's statistics buffer).
        case kept
    }

    /// Like `drain(_:while:_:)`, but `handle` decides each chain's fate (`Disposition`). Returns
    /// whether a chain was put back.
    @discardableResult
    public func process(_ index: Int, while more: () -> Bool = { true }, _ handle: (DescriptorChain) throws(VirtqueueError) -> Disposition) -> Bool {
        var held = false
        onQueue(index) { queue, memory throws(VirtqueueError) in
            var used = 0
            while more(), let chain = try queue.pop(memory) {
                switch try handle(chain) {
                case .used(let written):
                    try queue.pushUsed(head: chain.head, length: written, memory)
                    used += 1
                case .kept:
                    continue
                case .putBack:
                    queue.putBack()
                    held = true
                }
                if held { break }
            }
            return used
        }
        return held && !isBroken
    }

    /// Returns a chain the device kept (`Disposition.kept`) to the driver, and interrupts it if it asked to be.
    public func returnUsed(_ index: Int, head: UInt16, length: UInt32) {
        onQueue(index) { queue, memory throws(VirtqueueError) in
            try queue.pushUsed(head: head, length: length, memory)
            return 1
        }
    }

    /// Gives `body` the queue `index` itself, for devices that return several chains at once or
    /// put chains back (``SplitQueue/pushUsed(_:_:)``, ``SplitQueue/unpop(_:)``). `body` returns how
    /// many chains it returned as used; the driver is interrupted as in ``drain(_:while:_:)``, and
    /// a thrown `VirtqueueError` fails the device the same way.
    public func withQueue(_ index: Int, _ body: (inout SplitQueue, GuestMemory) throws(VirtqueueError) -> Int) {
        onQueue(index, body)
    }

    /// Runs `body` on ready queue `index` under the queues' lock. A thrown `VirtqueueError` marks the
    /// queue malformed and fails the device (DEVICE_NEEDS_RESET); otherwise, when `body` returned
    /// chains as used, the driver is interrupted if it asked to be (§2.7.10).
    private func onQueue(_ index: Int, _ body: (inout SplitQueue, GuestMemory) throws(VirtqueueError) -> Int) {
        guard !isBroken else { return }
        var used = 0
        let failure: VirtqueueError? = queues.withLock { queues in
            guard index >= 0, index < queues.count, queues[index].ready else { return nil }
            do throws(VirtqueueError) {
                used = try body(&queues[index], memory)
                return nil
            } catch {
                return error
            }
        }
        if let failure {
            broken.store(true, ordering: .releasing)
            activation.fail("queue \(index): \(failure)")
            return
        }
        notifyIfWanted(index, used: used)
    }

    private func notifyIfWanted(_ index: Int, used: Int) {
        guard used > 0 else { return }
        let notify = queues.withLock { $0[index].needsNotification(memory) }
        if notify { activation.interrupt.notifyQueue(index) }
    }
}
