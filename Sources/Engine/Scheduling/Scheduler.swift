import Tokenization

/// One sequence the scheduler runs: its tokens (prompt, then what was generated) and, while it
/// is admitted, its store (paged KV blocks or a recurrent state).
public final class ScheduledSequence {
    public enum Status: Sendable { case waiting, running, finished }

    public let id: Int
    public let promptCount: Int
    /// Prompt followed by the generated tokens.
    public private(set) var tokens: [TokenID]
    public internal(set) var status = Status.waiting
    public internal(set) var store: (any SequenceStore)?
    /// Prompt positions found in the prefix cache at the first admission.
    public internal(set) var cachedPromptTokens = 0
    /// Times this sequence lost its blocks to make room and went back to waiting.
    public internal(set) var preemptions = 0
    /// Whether it has been admitted at least once.
    public internal(set) var wasAdmitted = false
    /// Whether admission may take its prompt's prefix from the prefix cache. Embeddings need
    /// every position's hidden state, so they compute the whole prompt (and still leave their
    /// blocks in the cache for others).
    public var reusesCachedPrefix = true
    /// Encoders: the prompt goes through in one chunk (its tokens attend to each other both
    /// ways), even beyond a step's token budget when it is alone in that step.
    public var runsWholePrompt = false
    /// Tokens proposed to follow `tokens` (speculative decoding), set by the generator before
    /// `schedule`: a decoding sequence's chunk carries as many as fit, to be verified in the
    /// same pass.
    public var draft: [TokenID] = []
    /// Where its chain of prefix-cache hashes starts: sequences whose cached keys and values
    /// differ for the same tokens (other LoRA adapters) get different roots.
    public var prefixCacheRoot: UInt64 = 0
    let arrival: Int

    public init(id: Int, prompt: [TokenID], arrival: Int = 0) {
        precondition(!prompt.isEmpty, "empty prompt")
        self.id = id
        promptCount = prompt.count
        tokens = prompt
        self.arrival = arrival
    }

    public var generatedCount: Int { tokens.count - promptCount }
    public var generated: ArraySlice<TokenID> { tokens[promptCount...] }
    /// Positions whose keys and values are in the cache.
    public var computedCount: Int { store?.count ?? 0 }
    /// Whether the prompt has been fully computed (the sequence is decoding).
    public var isDecoding: Bool { computedCount >= tokens.count - 1 && computedCount >= promptCount }

    public func append(_ token: TokenID) { tokens.append(token) }
}

/// The work for one sequence in one step: tokens `range` of its tokens go through the model,
/// followed by `draft` (drafted tokens after the last one, each to be verified by the logits
/// of the position before it).
public struct ScheduledChunk {
    public let sequence: ScheduledSequence
    public let range: Range<Int>
    public var draft: [TokenID] = []
    /// The chunk reaches the sequence's last token: its logits give the next token.
    public var producesToken: Bool { range.upperBound == sequence.tokens.count }
    public var tokens: [TokenID] { Array(sequence.tokens[range]) + draft }
}

/// Iteration-level scheduling over a paged KV cache (continuous batching).
///
/// Every step: each running sequence that is decoding gets one token; sequences still in
/// their prompt get a chunk of what is left of the step's token budget (chunked prefill, so a
/// long prompt never holds the decoders up for more than a budget's worth); then waiting
/// sequences are admitted, oldest first, while there is room in the running set, the budget
/// and the block pool. A new sequence first takes whatever prefix of its prompt the prefix
/// cache holds. When a running sequence needs a block and none is free, the most recently
/// admitted other sequence is preempted: its blocks are released and it waits again at the
/// head of the queue, to be recomputed (with its generated tokens) when readmitted.
///
/// Invariants, after every public call:
/// - a sequence is in exactly one of `waiting`, `running`, or neither (finished);
/// - `running.count <= maxRunning`; every running sequence has a store, no waiting one does;
/// - a planned chunk's positions (its draft's included) are reserved in its store before
///   `schedule` returns it, and a step's chunks hold at most `maxBatchTokens` tokens together,
///   unless the step is one encoder prompt (`runsWholePrompt`) longer than that;
/// - a draft only takes free blocks, never preempts, and after its pass `didVerify` cuts the
///   store back to the positions whose tokens were accepted;
/// - blocks are held only by running sequences' stores and the prefix cache (`releaseAll` on
///   removal and preemption gives them back).
///
/// Not thread-safe: one owner (the generator thread).
public final class Scheduler {
    public struct Configuration: Sendable {
        /// Most sequences in the running set.
        public var maxRunning: Int
        /// Most tokens in one forward pass (decodes plus prefill chunks).
        public var maxBatchTokens: Int
        /// Most positions per sequence.
        public var contextLength: Int

        public init(maxRunning: Int, maxBatchTokens: Int, contextLength: Int) {
            self.maxRunning = max(1, maxRunning)
            self.maxBatchTokens = max(1, maxBatchTokens)
            self.contextLength = contextLength
        }
    }

    public let configuration: Configuration
    public let storage: SequenceStorage
    /// The block bookkeeping of the paged pool (no blocks with per-sequence storage).
    public let allocator: BlockAllocator
    /// Full blocks kept on disk across restarts (paged storage only).
    public let diskCache: PromptDiskCache?
    public private(set) var waiting: [ScheduledSequence] = []
    public private(set) var running: [ScheduledSequence] = []
    private var arrivals = 0

    public init(configuration: Configuration, storage: SequenceStorage, diskCache: PromptDiskCache? = nil) {
        self.configuration = configuration
        self.storage = storage
        self.diskCache = diskCache
        switch storage {
        case .paged(let pool): allocator = BlockAllocator(blockCount: pool.blockCount, blockSize: pool.blockSize)
        case .perSequence: allocator = BlockAllocator(blockCount: 0, blockSize: 1)
        }
    }

    public convenience init(configuration: Configuration, pool: KVBlockPool) {
        self.init(configuration: configuration, storage: .paged(pool))
    }

    /// Bytes of the paged KV pool; 0 with per-sequence storage.
    public var kvCacheBytes: Int {
        if case .paged(let pool) = storage { return pool.bytes }
        return 0
    }

    private func makeStore(prefixRoot: UInt64) -> any SequenceStore {
        switch storage {
        case .paged(let pool):
            PagedKVStore(pool: pool, allocator: allocator, capacity: configuration.contextLength, prefixRoot: prefixRoot,
                         diskCache: diskCache)
        case .perSequence(let makeState): RecurrentStore(makeState())
        }
    }

    public var hasWork: Bool { !waiting.isEmpty || !running.isEmpty }

    /// Queues a new sequence.
    public func add(id: Int, prompt: [TokenID]) -> ScheduledSequence {
        arrivals += 1
        let seq = ScheduledSequence(id: id, prompt: prompt, arrival: arrivals)
        waiting.append(seq)
        return seq
    }

    /// Removes a sequence wherever it is and frees its blocks at once.
    public func remove(_ seq: ScheduledSequence) {
        seq.store?.releaseAll()
        seq.store = nil
        seq.status = .finished
        running.removeAll { $0 === seq }
        waiting.removeAll { $0 === seq }
    }

    /// Plans the next forward pass. Every chunk's blocks are reserved.
    public func schedule() -> [ScheduledChunk] {
        var budget = configuration.maxBatchTokens
        var chunks: [ScheduledChunk] = []
        // Decoding sequences first (one token each), then prompts in progress, oldest first.
        let order = running.filter(\.isDecoding) + running.filter { !$0.isDecoding }
        for seq in order where seq.status == .running {
            guard budget > 0 else { break }
            let start = seq.computedCount
            var n = min(seq.tokens.count - start, budget)
            guard n > 0 else { continue }
            if seq.runsWholePrompt && n < seq.tokens.count - start {
                guard budget == configuration.maxBatchTokens else { continue }
                n = seq.tokens.count - start
            }
            let draft = fittingDraft(seq, after: n, budget: budget)
            guard reserve(seq, tokens: n + draft.count) else { continue }
            chunks.append(ScheduledChunk(sequence: seq, range: start..<start + n, draft: draft))
            budget -= n + draft.count
        }
        chunks.removeAll { $0.sequence.status != .running }  // preempted after being planned

        // Admit waiting sequences.
        while budget > 0, running.count < configuration.maxRunning, let seq = waiting.first {
            let store = makeStore(prefixRoot: seq.prefixCacheRoot)
            var cached = seq.reusesCachedPrefix ? store.adoptCachedPrefix(seq.tokens) : 0
            if cached >= seq.tokens.count {
                // Everything is cached: the last token still has to run to give logits; its
                // block is shared, so writing it copies the block first.
                cached = seq.tokens.count - 1
                store.truncate(to: cached)
            }
            var n = min(seq.tokens.count - cached, budget)
            if seq.runsWholePrompt && n < seq.tokens.count - cached {
                // alone in a step it may exceed the budget; otherwise it waits for an empty one
                guard budget == configuration.maxBatchTokens else { break }
                n = seq.tokens.count - cached
            }
            // Keep one spare block per running sequence so that admitting does not force
            // an immediate preemption at the next block boundary (stores without blocks
            // need none).
            let needed = store.blocksNeeded(for: n)
            guard needed == 0 || needed + running.count <= allocator.freeCount || running.isEmpty,
                  store.prepareSlots(n) else {
                store.releaseAll()
                break
            }
            if !seq.wasAdmitted {
                seq.wasAdmitted = true
                seq.cachedPromptTokens = cached
                allocator.recordPrefixQuery(tokens: seq.promptCount, hits: min(cached, seq.promptCount))
            }
            waiting.removeFirst()
            seq.store = store
            seq.status = .running
            running.append(seq)
            chunks.append(ScheduledChunk(sequence: seq, range: cached..<cached + n))
            budget -= n
        }
        return chunks
    }

    /// After the forward pass of `chunks`: registers newly filled blocks in the prefix cache.
    /// Drafted chunks wait for `didVerify`: their drafts' positions are not tokens yet.
    public func didRun(_ chunks: [ScheduledChunk]) {
        for chunk in chunks where chunk.sequence.status == .running && chunk.draft.isEmpty {
            chunk.sequence.store?.registerFullBlocks(chunk.sequence.tokens)
        }
    }

    /// After the tokens of a drafted chunk were sampled: `accepted` drafted tokens were the
    /// ones sampled, so the positions up to them hold the right keys and values and those of
    /// the rest are forgotten.
    public func didVerify(_ chunk: ScheduledChunk, accepted: Int) {
        precondition(accepted <= chunk.draft.count)
        guard chunk.sequence.status == .running, let store = chunk.sequence.store else { return }
        store.truncate(to: chunk.range.upperBound + accepted)
        store.registerFullBlocks(chunk.sequence.tokens)
    }

    /// The part of `seq`'s draft that goes with its `tokens`-token chunk: only for a sequence
    /// that is decoding, within the step's budget, and only as far as free blocks reach (a
    /// guess never preempts a sequence).
    private func fittingDraft(_ seq: ScheduledSequence, after tokens: Int, budget: Int) -> [TokenID] {
        guard !seq.draft.isEmpty, seq.isDecoding, tokens == 1, let store = seq.store else { return [] }
        var count = min(seq.draft.count, budget - tokens)
        while count > 0 && store.blocksNeeded(for: tokens + count) > allocator.freeCount { count -= 1 }
        return Array(seq.draft.prefix(count))
    }

    /// Reserves room for `tokens` more positions of `seq`, preempting the most recently
    /// admitted sequences while the pool is short. False when `seq` itself had to go.
    private func reserve(_ seq: ScheduledSequence, tokens: Int) -> Bool {
        guard let store = seq.store else { return false }
        while !store.prepareSlots(tokens) {
            guard let victim = running.last else { return false }
            preempt(victim)
            if victim === seq { return false }
        }
        return true
    }

    private func preempt(_ seq: ScheduledSequence) {
        seq.store?.releaseAll()
        seq.store = nil
        seq.status = .waiting
        seq.preemptions += 1
        running.removeAll { $0 === seq }
        // Back to the head of the queue, ahead of sequences that arrived later.
        let index = waiting.firstIndex { $0.arrival > seq.arrival } ?? waiting.endIndex
        waiting.insert(seq, at: index)
    }
}
