@testable import Engine
import Tokenization
import XCTest

final class BlockAllocatorTests: XCTestCase {
    func testAllocateAndReleaseEveryBlock() {
        let a = BlockAllocator(blockCount: 4, blockSize: 2)
        let blocks = (0..<4).compactMap { _ in a.allocate() }
        XCTAssertEqual(Set(blocks).count, 4)
        XCTAssertNil(a.allocate(), "a full pool hands out nothing")
        XCTAssertEqual(a.freeCount, 0)
        for b in blocks { a.release(b) }
        XCTAssertEqual(a.freeCount, 4)
        XCTAssertTrue(a.checkInvariants())
    }

    func testReferenceCounting() {
        let a = BlockAllocator(blockCount: 2, blockSize: 2)
        let b = a.allocate()!
        a.register(b, parent: 0, tokens: [1, 2])
        a.retain(b)
        XCTAssertEqual(a.referenceCount(b), 2)
        XCTAssertTrue(a.isShared(b))
        a.release(b)
        XCTAssertEqual(a.usedCount, 1)
        a.release(b)
        XCTAssertEqual(a.usedCount, 0)
        XCTAssertEqual(a.evictableCount, 1, "a registered block is parked, not forgotten")
        XCTAssertTrue(a.checkInvariants())
    }

    func testLookupNeedsSameTokensAndParent() {
        let a = BlockAllocator(blockCount: 4, blockSize: 2)
        let first = a.allocate()!, second = a.allocate()!
        let h1 = a.register(first, parent: 0, tokens: [1, 2])
        a.register(second, parent: h1, tokens: [3, 4])
        XCTAssertEqual(a.lookup(parent: 0, tokens: [1, 2])?.block, first)
        XCTAssertEqual(a.lookup(parent: h1, tokens: [3, 4])?.block, second)
        XCTAssertNil(a.lookup(parent: 0, tokens: [3, 4]), "same tokens after another prefix is a different block")
        XCTAssertNil(a.lookup(parent: h1, tokens: [3, 5]))
        XCTAssertNotEqual(BlockAllocator.hash(parent: 0, tokens: [1, 2]), BlockAllocator.hash(parent: 0, tokens: [2, 1]))
    }

    func testDuplicateRegistrationKeepsTheFirstBlock() {
        let a = BlockAllocator(blockCount: 2, blockSize: 1)
        let x = a.allocate()!, y = a.allocate()!
        a.register(x, parent: 0, tokens: [7])
        a.register(y, parent: 0, tokens: [7])
        XCTAssertTrue(a.isRegistered(x))
        XCTAssertFalse(a.isRegistered(y))
        a.release(y)
        XCTAssertEqual(a.evictableCount, 0, "an unregistered block goes straight back to the free list")
        XCTAssertTrue(a.checkInvariants())
    }

    func testEvictionIsLeastRecentlyReleasedFirst() {
        let a = BlockAllocator(blockCount: 3, blockSize: 1)
        let blocks = (0..<3).map { _ in a.allocate()! }
        for (i, b) in blocks.enumerated() { a.register(b, parent: 0, tokens: [TokenID(i)]) }
        a.release(blocks[1])
        a.release(blocks[0])
        a.release(blocks[2])
        XCTAssertEqual(a.freeCount, 3)
        XCTAssertEqual(a.allocate(), blocks[1], "released first, evicted first")
        XCTAssertNil(a.lookup(parent: 0, tokens: [1]), "an evicted block leaves the prefix cache")
        XCTAssertNotNil(a.lookup(parent: 0, tokens: [0]))
        // A hit takes a parked block out of the LRU.
        a.retain(blocks[0])
        XCTAssertEqual(a.allocate(), blocks[2])
        XCTAssertNil(a.allocate())
        XCTAssertEqual(a.evictions, 2)
        XCTAssertTrue(a.checkInvariants())
    }

    func testRandomOperationsKeepInvariants() {
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
        XCTAssertTrue(a.checkInvariants())
        for b in held { a.release(b) }
        XCTAssertEqual(a.usedCount, 0)
        XCTAssertEqual(a.freeCount, 32)
        XCTAssertTrue(a.checkInvariants())
    }
}
