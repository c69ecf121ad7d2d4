/// A bounded FIFO of bytes in a fixed ring, so pushing and popping never allocate.
struct ByteQueue: Sendable {
    private var storage: [UInt8]
    private var head = 0
    private(set) var count = 0

    init(capacity: Int) { storage = [UInt8](repeating: 0, count: max(1, capacity)) }

    var capacity: Int { storage.count }
    var isEmpty: Bool { count == 0 }
    var isFull: Bool { count >= storage.count }

    /// Appends `byte`; returns false (and drops it) when the queue is full.
    mutating func push(_ byte: UInt8) -> Bool {
        guard count < storage.count else { return false }
        storage[(head + count) % storage.count] = byte
        count += 1
        return true
    }

    mutating func pop() -> UInt8? {
        guard count > 0 else { return nil }
        let byte = storage[head]
        head = (head + 1) % storage.count
        count -= 1
        return byte
    }

    mutating func removeAll() {
        head = 0
        count = 0
    }
}
