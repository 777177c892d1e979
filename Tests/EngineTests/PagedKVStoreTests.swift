@testable import Engine
import Kernels
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
                    store.key(layer: l, position: p).assumingMemoryBound(to: Float16.self)[i] = Float16(Float(l * 1000 + p * 10 + i) + salt)
                    store.value(layer: l, position: p).assumingMemoryBound(to: Float16.self)[i] = Float16(-Float(l * 1000 + p * 10 + i) - salt)
                }
            }
        }
        store.advance(by: n)
    }

    func check(_ store: PagedKVStore, positions: Range<Int>, salt: Float = 0, sourceLocation: SourceLocation = #_sourceLocation) {
        for p in positions {
            for l in 0..<layers {
                for i in 0..<dim {
                    #expect(store.key(layer: l, position: p).assumingMemoryBound(to: Float16.self)[i] == Float16(Float(l * 1000 + p * 10 + i) + salt), sourceLocation: sourceLocation)
                    #expect(store.value(layer: l, position: p).assumingMemoryBound(to: Float16.self)[i] == Float16(-Float(l * 1000 + p * 10 + i) - salt), sourceLocation: sourceLocation)
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

    /// A Q8_0-key / Q4_0-value pool: rows are their types' bytes (34 and 18 per 32 elements),
    /// positions map through the block table, and copy-on-write copies whole rows.
    @Test func quantizedPoolRowsAndCopyOnWrite() throws {
        let types = KVCacheTypes(key: .q8_0, value: .q4_0), width = 64
        let pool = KVBlockPool(layers: layers, kvDimension: width, blockSize: blockSize, blockCount: 6, types: types)
        let alloc = BlockAllocator(blockCount: 6, blockSize: blockSize)
        #expect(pool.bytes == 6 * layers * blockSize * (68 + 36))
        func row(_ l: Int, _ p: Int, sign: Float) -> [Float] { (0..<width).map { sign * Float(l * 100 + p * 3 + $0 % 7) } }
        func bytes(_ pointer: UnsafeMutableRawPointer, _ type: KVCacheType) -> [UInt8] {
            Array(UnsafeRawBufferPointer(start: pointer, count: type.rowBytes(width)))
        }
        func expected(_ l: Int, _ p: Int, _ type: KVCacheType, sign: Float) -> [UInt8] {
            var out = [UInt8](repeating: 0, count: type.rowBytes(width))
            out.withUnsafeMutableBytes { storeCacheRow(row(l, p, sign: sign), count: width, type: type, into: $0.baseAddress!) }
            return out
        }
        let tokens: [TokenID] = Array(100..<110)
        let a = PagedKVStore(pool: pool, allocator: alloc, capacity: 64)
        #expect(a.cacheTypes == types)
        try a.reserve(10)
        for p in 0..<10 {
            for l in 0..<layers {
                storeCacheRow(row(l, p, sign: 1), count: width, type: .q8_0, into: a.key(layer: l, position: p))
                storeCacheRow(row(l, p, sign: -1), count: width, type: .q4_0, into: a.value(layer: l, position: p))
            }
        }
        a.advance(by: 10)
        a.registerFullBlocks(tokens)
        let b = PagedKVStore(pool: pool, allocator: alloc, capacity: 64)
        #expect(b.adoptCachedPrefix(tokens) == 8)
        b.truncate(to: 6)
        try b.reserve(1)  // position 6 is in the shared second block: copied first
        #expect(b.blocks[1] != a.blocks[1])
        for p in 0..<6 {
            for l in 0..<layers {
                #expect(bytes(b.key(layer: l, position: p), .q8_0) == expected(l, p, .q8_0, sign: 1), "key \(l) \(p)")
                #expect(bytes(b.value(layer: l, position: p), .q4_0) == expected(l, p, .q4_0, sign: -1), "value \(l) \(p)")
            }
        }
        a.releaseAll()
        b.releaseAll()
        #expect(alloc.checkInvariants())
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
        for l in 0..<layers { b.key(layer: l, position: 7).assumingMemoryBound(to: Float16.self)[0] = 42 }
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
