@testable import Engine
import Tokenization
import Testing

@Suite(.serialized) struct BlockAllocatorTests {
    @Test func allocateAndReleaseEveryBlock() {
        let a = BlockAllocator(blockCount: 4, blockSize: 2)
        let blocks = (0..<4).compactMap { _ in a.allocate() }
        #expect(Set(blocks).count == 4)
        #expect(a.allocate() == nil, "a full pool hands out nothing")
        #expect(a.freeCount == 0)
        for b in blocks { a.release(b) }
        #expect(a.freeCount == 4)
        #expect(a.checkInvariants())
    }

    @Test func referenceCounting() {
        let a = BlockAllocator(blockCount: 2, blockSize: 2)
        let b = a.allocate()!
        a.register(b, parent: 0, tokens: [1, 2])
        a.retain(b)
        #expect(a.referenceCount(b) == 2)
        #expect(a.isShared(b))
        a.release(b)
        #expect(a.usedCount == 1)
        a.release(b)
        #expect(a.usedCount == 0)
        #expect(a.evictableCount == 1, "a registered block is parked, not forgotten")
        #expect(a.checkInvariants())
    }

    @Test func lookupNeedsSameTokensAndParent() {
        let a = BlockAllocator(blockCount: 4, blockSize: 2)
        let first = a.allocate()!, second = a.allocate()!
        let h1 = a.register(first, parent: 0, tokens: [1, 2])
        a.register(second, parent: h1, tokens: [3, 4])
        #expect(a.lookup(parent: 0, tokens: [1, 2])?.block == first)
        #expect(a.lookup(parent: h1, tokens: [3, 4])?.block == second)
        #expect(a.lookup(parent: 0, tokens: [3, 4]) == nil, "same tokens after another prefix is a different block")
        #expect(a.lookup(parent: h1, tokens: [3, 5]) == nil)
        #expect(BlockAllocator.hash(parent: 0, tokens: [1, 2]) != BlockAllocator.hash(parent: 0, tokens: [2, 1]))
    }

    @Test func duplicateRegistrationKeepsTheFirstBlock() {
        let a = BlockAllocator(blockCount: 2, blockSize: 1)
        let x = a.allocate()!, y = a.allocate()!
        a.register(x, parent: 0, tokens: [7])
        a.register(y, parent: 0, tokens: [7])
        #expect(a.isRegistered(x))
        #expect(!(a.isRegistered(y)))
        a.release(y)
        #expect(a.evictableCount == 0, "an unregistered block goes straight back to the free list")
        #expect(a.checkInvariants())
    }

    @Test func evictionIsLeastRecentlyReleasedFirst() {
        let a = BlockAllocator(blockCount: 3, blockSize: 1)
        let blocks = (0..<3).map { _ in a.allocate()! }
        for (i, b) in blocks.enumerated() { a.register(b, parent: 0, tokens: [TokenID(i)]) }
        a.release(blocks[1])
        a.release(blocks[0])
        a.release(blocks[2])
        #expect(a.freeCount == 3)
        #expect(a.allocate() == blocks[1], "released first, evicted first")
        #expect(a.lookup(parent: 0, tokens: [1]) == nil, "an evicted block leaves the prefix cache")
        #expect(a.lookup(parent: 0, tokens: [0]) != nil)
        // A hit takes a parked block out of the LRU.
        a.retain(blocks[0])
        #expect(a.allocate() == blocks[2])
        #expect(a.allocate() == nil)
        #expect(a.evictions == 2)
        #expect(a.checkInvariants())
    }

    @Test func randomOperationsKeepInvariants() {
        var rng = SystemRandomNumberGenerator()
        let a = BlockAllocator(blockCount: 32, blockSize: 1)
        var held: [Int] = []
        for step in 0..<5000 {
            switch Int.random(in: 0..<4, using: &rng) {
            case 0, 1:
                if let b = a.allocate() {
                    held.append(b)
                    if Bool.random(using: &rng) { a.register(b, parent: 0, tokens: [TokenID(step % 50)]) }
                }
            case 2:
                if !held.isEmpty { a.release(held.remove(at: Int.random(in: 0..<held.count, using: &rng))) }
            default:
                if let hit = a.lookup(parent: 0, tokens: [TokenID(Int.random(in: 0..<50, using: &rng))]) {
                    a.retain(hit.block)
                    held.append(hit.block)
                }
            }
        }
        #expect(a.checkInvariants())
        for b in held { a.release(b) }
        #expect(a.usedCount == 0)
        #expect(a.freeCount == 32)
        #expect(a.checkInvariants())
    }
}
