@testable import Engine
import Models
import Tokenization
import Testing

/// The scheduler driven by a stand-in for the model: a forward pass just fills the positions
/// it was given, and every sequence that reaches its last token "samples" a token.
@Suite(.serialized) struct SchedulerTests {
    func makeScheduler(blocks: Int, blockSize: Int = 4, maxRunning: Int = 4, budget: Int = 16, context: Int = 64) -> Scheduler {
        let pool = KVBlockPool(layers: 1, kvDimension: 1, blockSize: blockSize, blockCount: blocks)
        return Scheduler(configuration: .init(maxRunning: maxRunning, maxBatchTokens: budget, contextLength: context), pool: pool)
    }

    /// One step; returns the chunks. Sequences that produced `limit` tokens are removed.
    @discardableResult
    func step(_ s: Scheduler, limit: [Int: Int], nextToken: (ScheduledSequence) -> TokenID = { TokenID($0.tokens.count % 97) }) -> [ScheduledChunk] {
        let chunks = s.schedule()
        for c in chunks {
            #expect(c.range.lowerBound == c.sequence.computedCount, "a chunk starts where the cache ends")
            // The store has room: the forward pass writes every position of the chunk.
            let store = c.sequence.store as! PagedKVStore
            for p in c.range { store.key(layer: 0, position: p).assumingMemoryBound(to: Float16.self)[0] = Float16(Float(c.sequence.tokens[p])) }
            store.advance(by: c.range.count)
        }
        s.didRun(chunks)
        for c in chunks where c.producesToken && c.sequence.status == .running {
            let seq = c.sequence
            seq.append(nextToken(seq))
            if seq.generatedCount >= limit[seq.id, default: 4] { s.remove(seq) }
        }
        #expect(s.allocator.checkInvariants())
        return chunks
    }

    @Test func decodersAreNotStalledByALongPrompt() {
        let s = makeScheduler(blocks: 64, budget: 16, context: 256)
        let short = s.add(id: 1, prompt: [1, 2, 3])
        step(s, limit: [1: 100])
        #expect(short.generatedCount == 1)
        let long = s.add(id: 2, prompt: Array(repeating: 5, count: 100))
        var steps = 0
        while long.generatedCount == 0 {
            let chunks = step(s, limit: [1: 100, 2: 100])
            steps += 1
            #expect(chunks.reduce(0) { $0 + $1.range.count } <= 16, "the token budget holds")
            #expect(chunks.contains { $0.sequence === short && $0.range.count == 1 }, "the decoder runs every step")
        }
        #expect(steps == 7, "100 prompt tokens in chunks of 15 next to one decode")
        #expect(short.generatedCount == 8)
    }

    @Test func admitsAsCapacityFrees() {
        let s = makeScheduler(blocks: 64, maxRunning: 2)
        let seqs = (1...5).map { s.add(id: $0, prompt: [TokenID($0), 9, 9]) }
        step(s, limit: [:])
        #expect(s.running.count == 2)
        #expect(s.waiting.count == 3)
        var steps = 1
        while s.hasWork {
            #expect(s.running.count <= 2)
            step(s, limit: [:])
            steps += 1
        }
        #expect(seqs.allSatisfy { $0.generatedCount == 4 && $0.status == .finished })
        #expect(steps == 12, "three waves of four decode steps")
        #expect(s.allocator.usedCount == 0)
    }

    @Test func preemptionUnderMemoryPressureRecomputesAndFinishes() {
        // 6 blocks of 4 positions: not enough for four sequences growing to 3 + 12 tokens.
        let s = makeScheduler(blocks: 6, blockSize: 4, maxRunning: 4, budget: 64)
        let seqs = (1...4).map { s.add(id: $0, prompt: [TokenID($0), 7, 7]) }
        let limits = Dictionary(uniqueKeysWithValues: seqs.map { ($0.id, 12) })
        var steps = 0
        while s.hasWork && steps < 500 {
            step(s, limit: limits, nextToken: { TokenID($0.generatedCount + 1) })
            steps += 1
        }
        #expect(!(s.hasWork))
        #expect(seqs.contains { $0.preemptions > 0 }, "the pool was too small for everyone")
        for seq in seqs {
            #expect(Array(seq.generated) == (1...12).map(TokenID.init), "a preempted sequence resumes where it was")
        }
        #expect(s.allocator.usedCount == 0)
        #expect(s.allocator.freeCount == 6)
    }

    @Test func prefixCacheHitOnSharedPrompt() {
        let s = makeScheduler(blocks: 32, blockSize: 4, budget: 64)
        let system: [TokenID] = Array(100..<118)  // 18 tokens: 4 full blocks
        let first = s.add(id: 1, prompt: system + [1])
        while s.hasWork { step(s, limit: [1: 2]) }
        let second = s.add(id: 2, prompt: system + [2, 3])
        let chunks = step(s, limit: [2: 2])
        #expect(first.cachedPromptTokens == 0)
        #expect(second.cachedPromptTokens == 16)
        #expect(chunks.first?.range == 16..<20, "only the uncached suffix runs")
        #expect(s.allocator.prefixHitTokens == 16)
        while s.hasWork { step(s, limit: [2: 2]) }

        // The whole prompt cached: the last token runs again (into a copy of its block).
        let third = s.add(id: 3, prompt: system + [2, 3, 9, 9])  // 20 + 2 = 22, blocks cover 20
        _ = third
        while s.hasWork { step(s, limit: [3: 1]) }
        let fourth = s.add(id: 4, prompt: Array(system.prefix(16)))
        let c4 = step(s, limit: [4: 1])
        #expect(fourth.cachedPromptTokens == 15)
        #expect(c4.first?.range == 15..<16)
        #expect(s.allocator.usedCount == 0)
    }

    @Test func removingFreesBlocksAtOnce() {
        let s = makeScheduler(blocks: 16)
        let a = s.add(id: 1, prompt: Array(repeating: 3, count: 20))
        step(s, limit: [:])
        #expect(s.allocator.usedCount > 0)
        s.remove(a)
        #expect(s.allocator.usedCount == 0)
        #expect(!(s.hasWork))
    }

    @Test func randomTrafficWithCancellationsLeavesThePoolFree() {
        var rng = SystemRandomNumberGenerator()
        let s = makeScheduler(blocks: 24, blockSize: 4, maxRunning: 6, budget: 32, context: 48)
        var live: [ScheduledSequence] = []
        var limits: [Int: Int] = [:]
        var nextID = 1
        for _ in 0..<600 {
            if live.count < 12 && Int.random(in: 0..<3, using: &rng) == 0 {
                let shared = Bool.random(using: &rng)
                let prompt: [TokenID] = (shared ? Array(200..<212) : []) + (0..<Int.random(in: 1...20, using: &rng)).map { _ in TokenID.random(in: 0..<50, using: &rng) }
                live.append(s.add(id: nextID, prompt: prompt))
                limits[nextID] = Int.random(in: 1...12, using: &rng)
                nextID += 1
            }
            if !live.isEmpty && Int.random(in: 0..<8, using: &rng) == 0 {
                s.remove(live.remove(at: Int.random(in: 0..<live.count, using: &rng)))
            }
            step(s, limit: limits)
            live.removeAll { $0.status == .finished }
        }
        for seq in live { s.remove(seq) }
        #expect(s.allocator.usedCount == 0)
        #expect(s.allocator.freeCount == 24)
        #expect(s.allocator.checkInvariants())
    }

    /// Per-sequence storage (recurrent models): no blocks, so admission is bounded by the
    /// running set and the token budget only; each sequence gets a state of its own.
    @Test func perSequenceStorageAdmitsWithoutBlocks() {
        nonisolated(unsafe) var made = 0
        let s = Scheduler(configuration: .init(maxRunning: 3, maxBatchTokens: 8, contextLength: 32),
                          storage: .perSequence { made += 1; return KVCache(layers: 1, kvDimension: 1, capacity: 32) })
        #expect(s.allocator.blockCount == 0 && s.kvCacheBytes == 0)
        let seqs = (1...4).map { s.add(id: $0, prompt: [TokenID($0), 9]) }
        var steps = 0
        while s.hasWork {
            let chunks = s.schedule()
            #expect(!chunks.isEmpty, "with no blocks to run out of, every step has work")
            #expect(chunks.reduce(0) { $0 + $1.range.count } <= 8)
            #expect(s.running.count <= 3)
            for c in chunks {
                #expect(c.range.lowerBound == c.sequence.computedCount)
                c.sequence.store!.modelState.advance(by: c.range.count)
            }
            s.didRun(chunks)
            for c in chunks where c.producesToken {
                c.sequence.append(7)
                if c.sequence.generatedCount == 3 { s.remove(c.sequence) }
            }
            steps += 1
        }
        for seq in seqs {
            #expect(seq.generatedCount == 3)
            #expect(seq.status == .finished)
            #expect(seq.store == nil)
        }
        #expect(made == 4, "one state per admitted sequence")
        #expect(steps == 6, "three sequences, then the fourth, three tokens each")
    }
}
