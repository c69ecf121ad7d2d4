import Logging
import Synchronization
import VireoDevices
import VireoKVM
import VireoSystem

/// The thread that runs virtio device work, so vCPU threads never do (firecracker's event
/// manager): it waits in epoll on one ioeventfd per virtqueue — KVM signals them when the guest
/// writes the queue's notify address (`KVM_IOEVENTFD`), without a userspace exit — and calls the
/// transport's notification handler. A stop eventfd ends it.
final class IOThread: Sendable {
    private let epoll: Epoll
    private let stopEvent: EventFD
    /// Signalled to run the handlers in ``rerun`` on this thread (a descriptor unmuted by ``DescriptorPolling``).
    private let wakeEvent: EventFD
    private let rerun = Mutex<Set<UInt64>>([])
    /// Watched descriptors taken out of the epoll set by ``setPolling(_:token:on:)``.
    private let muted = Mutex<Set<UInt64>>([])
    private static let wakeToken = UInt64.max
    private let handlers = Mutex<[UInt64: (event: EventFD?, handler: @Sendable () -> Void)]>([:])
    private let nextToken = Atomic<UInt64>(1)
    private let thread = Mutex<OSThread?>(nil)
    let logger: Logger

    init(logger: Logger) throws {
        self.logger = logger
        epoll = try Epoll()
        stopEvent = try EventFD(nonBlocking: true)
        wakeEvent = try EventFD(nonBlocking: true)
        try epoll.add(stopEvent.rawValue, token: 0)
        try epoll.add(wakeEvent.rawValue, token: Self.wakeToken)
    }

    /// Watches `event`; `handler` runs on the I/O thread each time it is signalled.
    func watch(_ event: EventFD, _ handler: @escaping @Sendable () -> Void) throws {
        let token = nextToken.add(1, ordering: .relaxed).newValue
        handlers.withLock { $0[token] = (event, handler) }
        try epoll.add(event.rawValue, token: token)
    }

    /// Watches a descriptor that stays readable until `handler` consumes what is waiting
    /// (a tap); nothing is drained on its behalf. The returned ``ReceivePolling`` mutes and
    /// unmutes it, for a consumer that stops reading while it has no room (virtio-net).
    @discardableResult
    func watch(descriptor: Int32, _ handler: @escaping @Sendable () -> Void) throws -> any ReceivePolling {
        let token = nextToken.add(1, ordering: .relaxed).newValue
        handlers.withLock { $0[token] = (nil, handler) }
        try epoll.add(descriptor, token: token)
        return DescriptorPolling(io: self, descriptor: descriptor, token: token)
    }

    /// Mutes or unmutes a watched descriptor. Muting takes it out of the epoll set (a muted
    /// descriptor with events 0 would still report a hang-up, over and over). Unmuting also runs
    /// its handler once on this thread: a backend may hold data that no new readability will
    /// announce (a shared-memory ring whose peer only kicks a sleeping reader).
    fileprivate func setPolling(_ descriptor: Int32, token: UInt64, on: Bool) {
        let changed = muted.withLock { muted in on ? muted.remove(token) != nil : muted.insert(token).inserted }
        if changed {
            do {
                if on { try epoll.add(descriptor, token: token) } else { try epoll.remove(descriptor) }
            } catch {
                logger.error("I/O thread: \(error)")
            }
        }
        guard on else { return }
        rerun.withLock { _ = $0.insert(token) }
        try? wakeEvent.signal()
    }

    func start() throws {
        let started = try OSThread(name: "virtio-io") { [self] in run() }
        thread.withLock { $0 = started }
    }

    func stop() {
        try? stopEvent.signal()
        thread.withLock { $0 }?.join()
    }

    private func run() {
        while true {
            let tokens: [UInt64]
            do {
                tokens = try epoll.wait()
            } catch {
                logger.error("I/O thread: \(error)")
                return
            }
            for token in tokens {
                if token == 0 { return }
                if token == Self.wakeToken {
                    _ = wakeEvent.drain()
                    for token in rerun.withLock({ tokens in defer { tokens.removeAll() }; return tokens }) {
                        handlers.withLock({ $0[token] })?.handler()
                    }
                    continue
                }
                guard let entry = handlers.withLock({ $0[token] }) else { continue }
                if let event = entry.event {
                    if event.drain() > 0 { entry.handler() }
                } else {
                    entry.handler()
                }
            }
        }
    }
}

/// Mutes and unmutes one watched descriptor: a muted tap keeps its frames in
/// the kernel's queue, which pushes back on the sender instead of the VMM dropping them.
/// Resuming also runs the handler once on the I/O thread (``IOThread/setPolling(_:token:on:)``).
struct DescriptorPolling: ReceivePolling {
    let io: IOThread
    let descriptor: Int32
    let token: UInt64

    func pause() { io.setPolling(descriptor, token: token, on: false) }
    func resume() { io.setPolling(descriptor, token: token, on: true) }
}

/// The ioeventfds of one virtio-pci function: one per queue, registered with KVM at the queue's
/// notify address and moved when the guest moves BAR 0 or turns memory decoding off.
final class QueueNotifiers: Sendable {
    let vm: VM
    let events: [EventFD]
    let multiplier: UInt64
    private let registered = Mutex<UInt64?>(nil)
    let logger: Logger

    init(transport: VirtioPCIDevice, vm: VM, io: IOThread, logger: Logger) throws {
        self.vm = vm
        self.logger = logger
        multiplier = UInt64(VirtioPCIDevice.notifyOffsetMultiplier)
        var events: [EventFD] = []
        for queue in 0..<transport.queueCount {
            let event = try EventFD(nonBlocking: true)
            try io.watch(event) { [weak transport] in transport?.notifyQueue(fromDriver: queue) }
            events.append(event)
        }
        self.events = events
        transport.forwardNotifications { [events] queue in
            guard queue < events.count else { return }
            try? events[queue].signal()
        }
        transport.observeNotifyAddress { [weak self] address in self?.move(to: address) }
    }

    /// Deassigns the ioeventfds at the old address and assigns them at `address` (nil: none).
    private func move(to address: UInt64?) {
        registered.withLock { current in
            guard current != address else { return }
            if let old = current {
                for (queue, event) in events.enumerated() {
                    try? vm.setIOEventFD(event, mmioAddress: old + UInt64(queue) * multiplier, length: 0, deassign: true)
                }
            }
            current = nil
            guard let address else { return }
            do {
                for (queue, event) in events.enumerated() {
                    try vm.setIOEventFD(event, mmioAddress: address + UInt64(queue) * multiplier, length: 0)
                }
                current = address
            } catch {
                // The MMIO exit path still delivers notifications, only slower.
                logger.warning("cannot register queue ioeventfds at 0x\(String(address, radix: 16)): \(error)")
            }
        }
    }
}
