/// A least-recently-used cache of metadata clusters keyed by host offset, with dirty tracking.
/// Writing dirty entries back (in the right order) is the owner's job.
struct MetadataCache<Value> {
    struct Slot {
        var value: Value
        var dirty: Bool
        var lastUse: UInt64
    }

    private(set) var slots: [UInt64: Slot] = [:]
    let capacity: Int
    private var clock: UInt64 = 0

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    var isFull: Bool { slots.count >= capacity }
    var count: Int { slots.count }

    mutating func get(_ key: UInt64) -> Value? {
        guard slots[key] != nil else { return nil }
        clock += 1
        slots[key]!.lastUse = clock
        return slots[key]!.value
    }

    func contains(_ key: UInt64) -> Bool { slots[key] != nil }
    func isDirty(_ key: UInt64) -> Bool { slots[key]?.dirty ?? false }

    mutating func insert(_ key: UInt64, _ value: Value, dirty: Bool) {
        clock += 1
        slots[key] = Slot(value: value, dirty: dirty, lastUse: clock)
    }

    /// Changes a cached value in place and marks it dirty; the key must be cached.
    mutating func modify<R>(_ key: UInt64, _ body: (inout Value) -> R) -> R {
        clock += 1
        slots[key]!.lastUse = clock
        slots[key]!.dirty = true
        return body(&slots[key]!.value)
    }

    mutating func markClean(_ key: UInt64) { slots[key]?.dirty = false }

    /// The least recently used key.
    var victim: UInt64? { slots.min { $0.value.lastUse < $1.value.lastUse }?.key }

    mutating func remove(_ key: UInt64) { slots[key] = nil }

    var dirtyKeys: [UInt64] { slots.filter(\.value.dirty).map(\.key).sorted() }
}
