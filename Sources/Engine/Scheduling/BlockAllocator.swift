import Tokenization

/// Bookkeeping for a paged KV cache: which of a fixed number of blocks are free, who holds
/// each one (reference counts), and which full blocks are kept for prefix caching.
///
/// A full block whose tokens are known is *registered* under a hash of its tokens and of the
/// hash of the block before it (so a hash names a whole prefix, not just one block's tokens).
/// A later sequence whose prompt starts with the same tokens finds those blocks and shares
/// them instead of computing them again. Registered blocks are immutable: a holder that has to
/// write into one copies it first (`isShared`). When the last holder lets go of a registered
/// block it is not freed but parked in an LRU list; it is reused by a prefix hit or, when the
/// free list runs dry, evicted (least recently released first) and handed out fresh.
///
/// Not thread-safe: one owner (the engine thread) uses it.
public final class BlockAllocator {
    public let blockCount: Int
    /// Token positions per block.
    public let blockSize: Int

    private var refCount: [Int32]
    /// Blocks with no holder and no registered contents; a stack.
    private var freeList: [Int32]
    /// Registration of each block: its prefix hash, its parent's hash and its tokens (checked
    /// on every hit, so a hash collision costs a miss, never wrong keys).
    private var registeredHash: [UInt64?]
    private var registeredParent: [UInt64]
    private var registeredTokens: [[TokenID]]
    private var byHash: [UInt64: Int32] = [:]
    // LRU of registered blocks without holders: a doubly linked list over block ids.
    private var lruPrev: [Int32]
    private var lruNext: [Int32]
    private var lruHead: Int32 = -1
    private var lruTail: Int32 = -1
    public private(set) var evictableCount = 0

    /// Prefix-cache statistics, in tokens: looked up, and found.
    public private(set) var prefixQueryTokens = 0
    public private(set) var prefixHitTokens = 0
    public private(set) var evictions = 0

    public init(blockCount: Int, blockSize: Int) {
        precondition(blockCount >= 0 && blockSize > 0)  // 0 blocks: per-sequence storage
        self.blockCount = blockCount
        self.blockSize = blockSize
        refCount = Array(repeating: 0, count: blockCount)
        freeList = (0..<Int32(blockCount)).reversed()
        registeredHash = Array(repeating: nil, count: blockCount)
        registeredParent = Array(repeating: 0, count: blockCount)
        registeredTokens = Array(repeating: [], count: blockCount)
        lruPrev = Array(repeating: -1, count: blockCount)
        lruNext = Array(repeating: -1, count: blockCount)
    }

    /// Blocks that `allocate` can hand out: never-used or freed ones plus evictable cached ones.
    public var freeCount: Int { freeList.count + evictableCount }
    /// Blocks held by at least one sequence.
    public var usedCount: Int { blockCount - freeCount }
    /// Blocks registered in the prefix cache (held or not).
    public var cachedCount: Int { byHash.count }
    public var prefixHitRate: Double { prefixQueryTokens > 0 ? Double(prefixHitTokens) / Double(prefixQueryTokens) : 0 }

    public func referenceCount(_ block: Int) -> Int { Int(refCount[block]) }
    public func isRegistered(_ block: Int) -> Bool { registeredHash[block] != nil }

    /// A block that must not be written in place: another holder sees it, or it is registered
    /// (its contents are what its hash says).
    public func isShared(_ block: Int) -> Bool { refCount[block] > 1 || registeredHash[block] != nil }

    /// A fresh block with one holder, or nil when every block is held.
    public func allocate() -> Int? {
        if let b = freeList.popLast() {
            refCount[Int(b)] = 1
            return Int(b)
        }
        guard lruHead >= 0 else { return nil }
        let b = Int(lruHead)
        lruRemove(b)
        unregister(b)
        evictions += 1
        refCount[b] = 1
        return b
    }

    /// One more holder of `block`.
    public func retain(_ block: Int) {
        if refCount[block] == 0 {
            precondition(registeredHash[block] != nil, "retain of a free block \(block)")
            lruRemove(block)
        }
        refCount[block] += 1
    }

    /// One holder fewer; the last one frees the block (or parks it in the LRU if registered).
    public func release(_ block: Int) {
        precondition(refCount[block] > 0, "release of a free block \(block)")
        refCount[block] -= 1
        guard refCount[block] == 0 else { return }
        if registeredHash[block] != nil {
            lruAppend(block)
        } else {
            freeList.append(Int32(block))
        }
    }

    /// The registered block holding exactly `tokens` after the prefix hashed as `parent`, if any.
    /// Does not retain it.
    public func lookup(parent: UInt64, tokens: ArraySlice<TokenID>) -> (block: Int, hash: UInt64)? {
        let h = Self.hash(parent: parent, tokens: tokens)
        guard let b = byHash[h].map(Int.init), registeredParent[b] == parent,
              registeredTokens[b].elementsEqual(tokens) else { return nil }
        return (b, h)
    }

    /// Records the outcome of one prefix lookup, for `prefixHitRate`.
    public func recordPrefixQuery(tokens: Int, hits: Int) {
        prefixQueryTokens += tokens
        prefixHitTokens += hits
    }

    /// Registers the full `block` as holding `tokens` after the prefix hashed as `parent`; returns
    /// the block's hash. If another block is already registered under that hash, `block` stays
    /// unregistered (the first one keeps serving hits).
    @discardableResult
    public func register(_ block: Int, parent: UInt64, tokens: ArraySlice<TokenID>) -> UInt64 {
        precondition(tokens.count == blockSize, "only full blocks are registered")
        let h = Self.hash(parent: parent, tokens: tokens)
        guard registeredHash[block] == nil, byHash[h] == nil else { return h }
        byHash[h] = Int32(block)
        registeredHash[block] = h
        registeredParent[block] = parent
        registeredTokens[block] = Array(tokens)
        return h
    }

    private func unregister(_ block: Int) {
        guard let h = registeredHash[block] else { return }
        if byHash[h] == Int32(block) { byHash[h] = nil }
        registeredHash[block] = nil
        registeredTokens[block] = []
    }

    /// Drops every cached-but-unheld block from the prefix cache (they become plain free blocks).
    public func clearPrefixCache() {
        while lruHead >= 0 {
            let b = Int(lruHead)
            lruRemove(b)
            unregister(b)
            freeList.append(Int32(b))
        }
    }

    /// Hash of the prefix ending with `tokens`, after the prefix hashed as `parent`
    /// (0 for the first block). FNV-style mixing with a final avalanche; stable across runs.
    public static func hash(parent: UInt64, tokens: some Collection<TokenID>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ (parent &* 0x9E37_79B9_7F4A_7C15)
        for t in tokens {
            h = (h ^ UInt64(UInt32(bitPattern: t))) &* 0x0000_0100_0000_01B3
            h ^= h >> 29
        }
        h ^= UInt64(tokens.count)
        h = (h ^ (h >> 33)) &* 0xff51_afd7_ed55_8ccd
        h = (h ^ (h >> 33)) &* 0xc4ce_b9fe_1a85_ec53
        return h ^ (h >> 33)
    }

    // MARK: LRU list

    private func lruAppend(_ b: Int) {
        lruPrev[b] = lruTail
        lruNext[b] = -1
        if lruTail >= 0 { lruNext[Int(lruTail)] = Int32(b) } else { lruHead = Int32(b) }
        lruTail = Int32(b)
        evictableCount += 1
    }

    private func lruRemove(_ b: Int) {
        let p = lruPrev[b], n = lruNext[b]
        if p >= 0 { lruNext[Int(p)] = n } else { lruHead = n }
        if n >= 0 { lruPrev[Int(n)] = p } else { lruTail = p }
        lruPrev[b] = -1
        lruNext[b] = -1
        evictableCount -= 1
    }

    /// Internal consistency (tests): every block is exactly one of held, free or evictable.
    public func checkInvariants() -> Bool {
        var inFree = Set<Int32>()
        for b in freeList {
            if refCount[Int(b)] != 0 || registeredHash[Int(b)] != nil || !inFree.insert(b).inserted { return false }
        }
        var inLRU = 0
        var b = lruHead
        while b >= 0 {
            if refCount[Int(b)] != 0 || registeredHash[Int(b)] == nil || inFree.contains(b) { return false }
            inLRU += 1
            b = lruNext[Int(b)]
        }
        guard inLRU == evictableCount else { return false }
        let held = refCount.filter { $0 > 0 }.count
        return held + inFree.count + inLRU == blockCount
    }
}
