@testable import Engine
import Models
import Tokenization
import Testing

@Suite(.serialized) struct PagedKVStoreTests {
    let layers = 2, dim = 3, blockSize = 4

    func makePool(blocks: Int) -> (KVBlockPool, BlockAllocator) {
        let pool = KVBlockPool(layers: layers, kvDimension: dim, blockSize: blockSize, blockCount: blocks)
        return (pool, BlockAllocator(blockCount: blocks, blockSize: blockSize))
    }

    /// Writes a value identifying (layer, position, salt) into every element, as a forward pass would.
    func fill(_ store: PagedKVStore, tokens n: Int, salt: Float = 0) throws {
        try store.reserve(n)
        for p in store.count..<store.count + n {
            for l in 0..<layers {
                for i in 0..<dim {
                    store.key(layer: l, position: p)[i] = KVElement(Float(l * 1000 + p * 10 + i) + salt)
                    store.value(layer: l, position: p)[i] = KVElement(-Float(l * 1000 + p * 10 + i) - salt)
                }
            }
        }
        store.advance(by: n)
    }

    func check(_ store: PagedKVStore, positions: Range<Int>, salt: Float = 0, sourceLocation: SourceLocation = #_sourceLocation) {
        for p in positions {
            for l in 0..<layers {
                for i in 0..<dim {
                    #expect(store.key(layer: l, position: p)[i] == KVElement(Float(l * 1000 + p * 10 + i) + salt), sourceLocation: sourceLocation)
                    #expect(store.value(layer: l, position: p)[i] == KVElement(-Float(l * 1000 + p * 10 + i) - salt), sourceLocation: sourceLocation)
                }
            }
        }
    }

    @Test func positionsMapThroughTheBlockTable() throws {
        let (pool, alloc) = makePool(blocks: 8)
        let a = PagedKVStore(pool: pool, allocator: alloc, capacity: 32)
        let b = PagedKVStore(pool: pool, allocator: alloc, capacity: 32)
        // Interleave the two so their blocks alternate in the pool.
        for _ in 0..<3 {
            try fill(a, tokens: 3, salt: 0)
            try fill(b, tokens: 3, salt: 300)
        }
        #expect(a.count == 9)
        #expect(a.blocks.count == 3)
        check(a, positions: 0..<9)
        check(b, positions: 0..<9, salt: 300)
        #expect(Set(a.blocks).isDisjoint(with: b.blocks))
        a.releaseAll()
        b.releaseAll()
        #expect(alloc.usedCount == 0)
    }

    @Test func contextAndPoolLimits() throws {
        let (pool, alloc) = makePool(blocks: 2)
        let a = PagedKVStore(pool: pool, allocator: alloc, capacity: 6)
        #expect(throws: ContextFullError.self) { try a.reserve(7) }
        let b = PagedKVStore(pool: pool, allocator: alloc, capacity: 100)
        try fill(b, tokens: 5)
        #expect(throws: OutOfBlocksError.self) { try a.reserve(4) }
        b.truncate(to: 3)
        #expect(b.blocks.count == 1, "truncation gives back whole blocks")
        #expect(throws: Never.self) { try a.reserve(4) }
    }

    @Test func prefixSharingAndCopyOnWrite() throws {
        let (pool, alloc) = makePool(blocks: 6)
        let tokens: [TokenID] = Array(100..<110)
        let a = PagedKVStore(pool: pool, allocator: alloc, capacity: 64)
        try fill(a, tokens: 10)
        a.registerFullBlocks(tokens)
        #expect(a.blockHashes.count == 2)

        let b = PagedKVStore(pool: pool, allocator: alloc, capacity: 64)
        #expect(b.adoptCachedPrefix(tokens + [1, 2]) == 8, "two full blocks are shared")
        #expect(Array(b.blocks) == Array(a.blocks.prefix(2)))
        #expect(alloc.referenceCount(a.blocks[0]) == 2)
        check(b, positions: 0..<8)

        // Rewriting the last shared position copies the block first; the original is untouched.
        b.truncate(to: 7)
        #expect(b.blocksNeeded(for: 1) == 1)
        let shared = b.blocks[1]
        try b.reserve(1)
        #expect(b.blocks[1] != shared, "copy on write")
        #expect(b.blocks[0] == a.blocks[0], "the untouched block stays shared")
        check(b, positions: 0..<7)
        for l in 0..<layers { b.key(layer: l, position: 7)[0] = 42 }
        b.advance(by: 1)
        check(a, positions: 0..<10)

        a.releaseAll()
        b.releaseAll()
        #expect(alloc.usedCount == 0)
        #expect(alloc.cachedCount == 2)
        #expect(alloc.checkInvariants())

        // Parked blocks still serve hits after their holders are gone.
        let c = PagedKVStore(pool: pool, allocator: alloc, capacity: 64)
        #expect(c.adoptCachedPrefix(tokens) == 8)
        check(c, positions: 0..<8)
    }

    @Test func evictedPrefixIsRecomputed() throws {
        let (pool, alloc) = makePool(blocks: 3)
        let tokens: [TokenID] = Array(0..<8)
        let a = PagedKVStore(pool: pool, allocator: alloc, capacity: 64)
        try fill(a, tokens: 8)
        a.registerFullBlocks(tokens)
        a.releaseAll()
        let filler = PagedKVStore(pool: pool, allocator: alloc, capacity: 64)
        try fill(filler, tokens: 12)  // needs all 3 blocks: both cached ones are evicted
        #expect(alloc.cachedCount == 0)
        filler.releaseAll()
        let b = PagedKVStore(pool: pool, allocator: alloc, capacity: 64)
        #expect(b.adoptCachedPrefix(tokens) == 0)
    }
}
