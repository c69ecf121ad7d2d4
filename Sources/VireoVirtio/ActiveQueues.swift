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

    /// Handles every available chain of queue `index`. `handle` returns how many bytes it wrote
    /// into the chain's writable buffers (the used-ring length). A `VirtqueueError` thrown by
    /// the handler counts as a malformed request and fails the device too. `more` is asked before
    /// each chain is taken (a receive queue stops once the device has nothing left to deliver).
    public func drain(_ index: Int, while more: () -> Bool = { true }, _ handle: (DescriptorChain) throws(VirtqueueError) -> UInt32) {
        drainUntilHeld(index, while: more, { chain throws(VirtqueueError) in try handle(chain) })
    }

    /// Like `drain(_:while:_:)`, but `handle` may return nil to hold the chain: it stays in the
    /// available ring, unanswered, with every chain after it, and the next drain starts with it again.
    /// Returns whether a chain was held.
    @discardableResult
    public func drainUntilHeld(_ index: Int, while more: () -> Bool = { true }, _ handle: (DescriptorChain) throws(VirtqueueError) -> UInt32?) -> Bool {
        guard !isBroken else { return false }
        var used = 0
        var held = false
        let failure: VirtqueueError? = queues.withLock { queues in
            guard index >= 0, index < queues.count, queues[index].ready else { return nil }
            do throws(VirtqueueError) {
                while more(), let chain = try queues[index].pop(memory) {
                    guard let written = try handle(chain) else {
                        queues[index].putBack()
                        held = true
                        break
                    }
                    try queues[index].pushUsed(head: chain.head, length: written, memory)
                    used += 1
                }
                return nil
            } catch {
                return error
            }
        }
        if let failure {
            broken.store(true, ordering: .releasing)
            activation.fail("queue \(index): \(failure)")
            return false
        }
        notifyIfWanted(index, used: used)
        return held
    }

    private func notifyIfWanted(_ index: Int, used: Int) {
        guard used > 0 else { return }
        let notify = queues.withLock { $0[index].needsNotification(memory) }
        if notify { activation.interrupt.notifyQueue(index) }
    }
}
