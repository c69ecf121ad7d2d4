import Logging
import Synchronization
import VireoDevices
import VireoKVM
import VireoSystem

/// The VM's GSI routing table (`KVM_SET_GSI_ROUTING`): KVM's default irqchip routes for GSIs
/// 0–23 plus one MSI route per MSI-X vector of an emulated PCI function, on GSIs from 24 up.
/// Every change rewrites the whole table, as the ioctl requires.
final class MSIRouting: Sendable {
    static let firstGSI: UInt32 = 24
    /// KVM's default KVM_MAX_IRQ_ROUTES is 4096; stay well inside it.
    static let lastGSI: UInt32 = 1023

    let vm: VM
    let logger: Logger
    private let state = Mutex<(next: UInt32, routes: [UInt32: GSIRoute])>((MSIRouting.firstGSI, [:]))

    init(vm: VM, logger: Logger) {
        self.vm = vm
        self.logger = logger
    }

    func allocate() throws -> UInt32 {
        try state.withLock { state in
            guard state.next <= Self.lastGSI else { throw ConfigError.invalid("out of GSIs for MSI-X vectors") }
            defer { state.next += 1 }
            return state.next
        }
    }

    /// Routes `gsi` to `message` and pushes the table to KVM.
    func route(_ gsi: UInt32, to message: MSIMessage) throws(KVMError) {
        try state.withLock { state throws(KVMError) in
            state.routes[gsi] = .msi(address: message.address, data: message.data)
            let table = VM.defaultIRQChipRoutes + state.routes.sorted { $0.key < $1.key }.map { (gsi: $0.key, route: $0.value) }
            try vm.setGSIRouting(table)
        }
    }
}

/// The MSI-X vectors of one function as irqfds: vector *n* has its own GSI and eventfd
/// (`KVM_IRQFD`); signalling writes the eventfd and KVM injects the routed MSI. The route is
/// (re)programmed lazily, when a vector fires with a message different from the one routed.
final class IRQFDVectors: MSIController {
    struct Vector: Sendable {
        let gsi: UInt32
        let event: EventFD
    }

    let vectors: [Vector]
    let routing: MSIRouting
    private let routed: Mutex<[MSIMessage?]>

    init(count: Int, routing: MSIRouting) throws {
        self.routing = routing
        var vectors: [Vector] = []
        for _ in 0..<count {
            let vector = Vector(gsi: try routing.allocate(), event: try EventFD(nonBlocking: true))
            try routing.vm.setIRQFD(vector.event, gsi: vector.gsi)
            vectors.append(vector)
        }
        self.vectors = vectors
        routed = Mutex(Array(repeating: nil, count: count))
    }

    func signal(vector index: Int, message: MSIMessage) {
        guard index >= 0, index < vectors.count else { return }
        let vector = vectors[index]
        do {
            try routed.withLock { routed throws(KVMError) in
                guard routed[index] != message else { return }
                try routing.route(vector.gsi, to: message)
                routed[index] = message
            }
            try vector.event.signal()
        } catch {
            routing.logger.error("MSI-X vector \(index) (GSI \(vector.gsi)): \(error)")
        }
    }
}
