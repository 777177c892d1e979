/// An open-addressing hash map from byte strings to Int32, with every key stored in one
/// contiguous buffer: lookups take a pointer and a length and never allocate, and building a
/// table for a 262k-token vocabulary costs a handful of large allocations, not one per token.
struct ByteStringTable: Sendable {
    /// Starts with one padding byte so the buffer is never empty (its base address exists).
    private var keyBytes: [UInt8] = [0]
    private var keyStart: [Int32] = []
    private var keyLength: [Int32] = []
    private var values: [Int32] = []
    /// Entry index + 1 per slot; 0 = empty.
    private var slots: [Int32]
    private var mask: Int

    var count: Int { values.count }

    init(expectedCount: Int) {
        var capacity = 16
        while capacity < expectedCount * 2 { capacity <<= 1 }
        slots = [Int32](repeating: 0, count: capacity)
        mask = capacity - 1
        keyStart.reserveCapacity(expectedCount)
        keyLength.reserveCapacity(expectedCount)
        values.reserveCapacity(expectedCount)
        keyBytes.reserveCapacity(expectedCount * 8)
    }

    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int {
        // FNV-1a, then a final avalanche so low bits are well mixed.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for i in 0..<n {
            h = (h ^ UInt64(p[i])) &* 0x0000_0100_0000_01b3
        }
        h ^= h >> 32
        h = h &* 0xd6e8_feb8_6659_fd93
        h ^= h >> 32
        return Int(truncatingIfNeeded: h)
    }

    /// The value for the key, or nil.
    @inline(__always)
    func lookup(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32? {
        var slot = ByteStringTable.hash(p, n) & mask
        return slots.withUnsafeBufferPointer { slots in
            keyBytes.withUnsafeBufferPointer { keys in
                while true {
                    let e = Int(slots[slot])
                    if e == 0 { return nil }
                    let entry = e - 1
                    if Int(keyLength[entry]) == n {
                        let start = Int(keyStart[entry])
                        var equal = true
                        for i in 0..<n where keys[start + i] != p[i] { equal = false; break }
                        if equal { return values[entry] }
                    }
                    slot = (slot + 1) & mask
                }
            }
        }
    }

    func lookup(_ bytes: [UInt8]) -> Int32? {
        bytes.withUnsafeBufferPointer { b in
            guard let base = b.baseAddress else {
                var empty: UInt8 = 0
                return lookup(&empty, 0)
            }
            return lookup(base, b.count)
        }
    }

    func lookup(_ string: String) -> Int32? { lookup(Array(string.utf8)) }

    /// Inserts or overwrites (the last insertion of a key wins, like `map[key] = value`).
    mutating func set(_ p: UnsafePointer<UInt8>, _ n: Int, _ value: Int32) {
        if (values.count + 1) * 2 > slots.count { grow() }
        var slot = ByteStringTable.hash(p, n) & mask
        while true {
            let e = Int(slots[slot])
            if e == 0 { break }
            let entry = e - 1
            if Int(keyLength[entry]) == n {
                let start = Int(keyStart[entry])
                var equal = true
                for i in 0..<n where keyBytes[start + i] != p[i] { equal = false; break }
                if equal { values[entry] = value; return }
            }
            slot = (slot + 1) & mask
        }
        keyStart.append(Int32(keyBytes.count))
        keyLength.append(Int32(n))
        keyBytes.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        values.append(value)
        slots[slot] = Int32(values.count)
    }

    mutating func set(_ bytes: [UInt8], _ value: Int32) {
        bytes.withUnsafeBufferPointer { b in
            if let base = b.baseAddress {
                set(base, b.count, value)
            } else {
                var empty: UInt8 = 0
                set(&empty, 0, value)
            }
        }
    }

    private mutating func grow() {
        let capacity = slots.count * 2
        var newSlots = [Int32](repeating: 0, count: capacity)
        let newMask = capacity - 1
        keyBytes.withUnsafeBufferPointer { keys in
            for entry in 0..<values.count {
                let start = Int(keyStart[entry])
                var slot = ByteStringTable.hash(keys.baseAddress! + start, Int(keyLength[entry])) & newMask
                while newSlots[slot] != 0 { slot = (slot + 1) & newMask }
                newSlots[slot] = Int32(entry + 1)
            }
        }
        slots = newSlots
        mask = newMask
    }
}
