import Foundation
import Kernels
import Models
import Tokenization

/// The generation core: a dedicated thread that, step after step, asks the scheduler for
/// work, runs every scheduled sequence through ONE forward pass, samples the sequences that
/// reached their last token, and delivers text to their requests (continuous batching).
///
/// The server submits many requests and reads `AsyncStream`s; the CLI runs one sequence at a
/// time through `generate`, which blocks. Both take the same path: there is one token loop.
///
/// Threading: `submit`, `cancel`, `shutdown` and the snapshot may be called from any thread;
/// they meet the generator thread under `condition`. Everything else (scheduler, sequences,
/// samplers) belongs to the generator thread alone.
public final class Generator: @unchecked Sendable {
    public struct Configuration: Sendable {
        /// Tokens per forward pass when none is given: enough prompt per step to keep the
        /// matrix kernels busy, small enough that decoders in the same batch are not held up
        /// for long by a long prompt (chunked prefill).
        public static let defaultStepTokens = 256

        public var contextLength: Int
        /// Sequences decoded together (the running set).
        public var parallel: Int
        /// Sequences waiting beyond the running set before submissions get `queueFull`.
        public var maxQueue: Int
        /// KV cache size in token positions (rounded down to whole blocks, at least one context).
        public var kvCacheTokens: Int
        public var blockSize: Int
        /// Tokens per forward pass (decodes plus prefill chunks).
        public var maxBatchTokens: Int
        public var threads: Int?
        /// `--prompt-cache DIR`: full KV blocks also kept on disk, across restarts (attention
        /// decoders only), up to `promptCacheBytes`.
        public var promptCacheDirectory: String?
        public var promptCacheBytes = 4 << 30

        public init(contextLength: Int = 2048, parallel: Int = 4, maxQueue: Int = 64, kvCacheTokens: Int? = nil,
                    blockSize: Int = 16, maxBatchTokens: Int = defaultStepTokens, threads: Int? = nil) {
            self.contextLength = contextLength
            self.parallel = max(1, parallel)
            self.maxQueue = max(0, maxQueue)
            self.kvCacheTokens = kvCacheTokens ?? contextLength * max(1, parallel)
            self.blockSize = max(1, blockSize)
            self.maxBatchTokens = max(1, maxBatchTokens)
            self.threads = threads
        }

        /// One sequence at a time (`run`, `generate`): a pool of one context, no queue limit
        /// beyond the caller waiting.
        public static func singleSequence(contextLength: Int, threads: Int? = nil) -> Configuration {
            Configuration(contextLength: contextLength, parallel: 1, maxQueue: 1, kvCacheTokens: contextLength,
                          threads: threads)
        }
    }

    /// The scheduler's state after the last step (`/metrics`, tests).
    public struct Snapshot: Sendable {
        public var running = 0
        public var waiting = 0
        public var blocksUsed = 0
        public var blocksFree = 0
        public var blocksTotal = 0
        public var blocksCached = 0
        public var prefixQueryTokens = 0
        public var prefixHitTokens = 0
        public var steps = 0
        /// The disk prompt cache's counters (nil without `--prompt-cache`).
        public var promptCache: PromptDiskCache.Statistics?

        public init() {}
    }

    public let model: LoadedModel
    /// Drafts for requests that ask for `.draftModel` speculation.
    public let draftModel: DraftModel?
    public let configuration: Configuration
    let scheduler: Scheduler
    let pool: ThreadPool
    private let observer: (any GeneratorObserver)?
    private let vocabulary: TokenVocabulary

    // Shared with callers, under `condition`.
    private let condition = NSCondition()
    private var inbox: [Submission] = []
    private var cancelled: Set<Int> = []
    private var stopping = false
    private var outstanding = 0
    private var nextRequestID = 1
    private var stoppedWaiters: [CheckedContinuation<Void, Never>] = []
    private var isStopped = false
    private var snapshot = Snapshot()
    private var globalAdapterScales: [Float]

    // Owned by the generator thread.
    private var active: [Int: ActiveSequence] = [:]
    private var requests: [Int: RequestState] = [:]
    private var nextSequenceID = 1

    /// How a request's events reach it.
    enum Delivery {
        case stream(AsyncStream<GenerationEvent>.Continuation)
        /// Called on the generator thread; `onEnd` after the last event.
        case callback(@Sendable (GenerationEvent) -> Void, onEnd: @Sendable () -> Void)

        func send(_ event: GenerationEvent) {
            switch self {
            case .stream(let c): c.yield(event)
            case .callback(let f, _): f(event)
            }
        }

        func end() {
            switch self {
            case .stream(let c): c.finish()
            case .callback(_, let onEnd): onEnd()
            }
        }
    }

    struct Submission {
        let id: Int
        let specs: [SequenceSpec]
        let options: GenerationOptions
        let delivery: Delivery
        let submitted: ContinuousClock.Instant
    }

    final class RequestState {
        let delivery: Delivery
        var remaining: Int
        init(delivery: Delivery, remaining: Int) {
            self.delivery = delivery
            self.remaining = remaining
        }
    }

    final class ActiveSequence {
        let requestID: Int
        let index: Int
        let sequence: ScheduledSequence
        let options: GenerationOptions
        var sampler: Sampler
        var output: SequenceOutput
        let submitted: ContinuousClock.Instant
        var admitted: ContinuousClock.Instant?
        var firstToken: ContinuousClock.Instant?
        var lastToken: ContinuousClock.Instant?
        var pendingTokens: [TokenID] = []
        var pendingLogprobs: [TokenLogprobInfo] = []
        /// Embedding sequences: the pooled hidden states so far.
        var embedding: EmbeddingAccumulator?
        /// Sequences with a reasoning budget: where the output is and what thinking has cost.
        var thinking: ThinkingTracker?
        /// Speculative decoding: tokens drafted so far and how many were accepted.
        var draftTokens = 0
        var acceptedDraftTokens = 0
        /// Drafting with a draft model: the sequence in it.
        var draftState: DraftState?

        var constraint: GrammarConstraint? { output.activeConstraint }

        init(requestID: Int, index: Int, sequence: ScheduledSequence, options: GenerationOptions, seed: UInt64?,
             tokenizer: any Tokenizer, vocabulary: TokenVocabulary, submitted: ContinuousClock.Instant) {
            self.requestID = requestID
            self.index = index
            self.sequence = sequence
            self.options = options
            var parameters = options.sampling
            if let seed { parameters.seed = seed }
            sampler = Sampler(parameters: parameters)
            output = SequenceOutput(tokenizer: tokenizer, stop: options.stop,
                                    constraint: options.grammar.map { GrammarConstraint(grammar: $0, vocabulary: vocabulary) },
                                    triggers: options.grammarTriggers, triggeredDocumentEnds: options.triggeredDocumentEnds,
                                    decodesSpecialTokens: options.decodesSpecialTokens)
            self.submitted = submitted
            embedding = options.embedding.map { EmbeddingAccumulator(pooling: $0) }
            thinking = options.reasoningBudget.map { ThinkingTracker(budget: $0) }
        }
    }

    /// Validates the context against the model, sizes the KV pool (attention models) and
    /// starts the generator thread.
    public init(model: LoadedModel, configuration: Configuration, observer: (any GeneratorObserver)? = nil,
                draftModel: DraftModel? = nil) throws {
        var configuration = configuration
        if model.model.isEncoder {
            // encoders have absolute positions up to their training context and nothing beyond
            configuration.contextLength = min(configuration.contextLength, model.config.contextLength)
            configuration.kvCacheTokens = min(configuration.kvCacheTokens, configuration.contextLength * configuration.parallel)
        }
        try model.validateContext(configuration.contextLength)
        self.model = model
        self.draftModel = draftModel
        self.configuration = configuration
        self.observer = observer
        globalAdapterScales = model.adapterScales
        let storage: SequenceStorage
        var diskCache: PromptDiskCache?
        if model.model is any AttentionModel {
            // The pool holds at least one full context, so a lone sequence always fits.
            let blocksPerContext = (configuration.contextLength + configuration.blockSize - 1) / configuration.blockSize
            let blocks = max(blocksPerContext, configuration.kvCacheTokens / configuration.blockSize)
            let pool = KVBlockPool(config: model.config, blockSize: configuration.blockSize, blockCount: blocks,
                                   types: model.cacheTypes)
            storage = .paged(pool)
            // an encoder's keys depend on the tokens after them too: no prefix of them is reusable
            if let directory = configuration.promptCacheDirectory, !model.model.isEncoder {
                diskCache = try PromptDiskCache(root: directory, model: model, pool: pool, maxBytes: configuration.promptCacheBytes)
            }
        } else {
            // recurrent and hybrid models: a state of each sequence's own (see `SequenceStorage`)
            let inner = model.model, capacity = configuration.contextLength, types = model.cacheTypes
            storage = .perSequence { inner.makeCache(capacity: capacity, types: types) }
        }
        scheduler = Scheduler(configuration: .init(maxRunning: configuration.parallel,
                                                   maxBatchTokens: configuration.maxBatchTokens,
                                                   contextLength: configuration.contextLength), storage: storage,
                              diskCache: diskCache)
        pool = ThreadPool(threads: configuration.threads)
        vocabulary = TokenVocabulary(tokenizer: model.tokenizer)
        snapshot.blocksTotal = scheduler.allocator.blockCount
        snapshot.blocksFree = scheduler.allocator.blockCount
        observer?.stepFinished(snapshot)
        let thread = Thread { self.run() }
        thread.name = "swiftlet-generator"
        thread.stackSize = 16 << 20
        thread.start()
    }

    /// Bytes of the KV block pool (0 for recurrent models).
    public var kvCacheBytes: Int { scheduler.kvCacheBytes }
    public var blockCount: Int { scheduler.allocator.blockCount }

    public var currentSnapshot: Snapshot {
        condition.lock()
        defer { condition.unlock() }
        return snapshot
    }

    /// Each LoRA adapter's scale for requests that do not choose theirs (`GenerationOptions.loraScales`);
    /// starts at the model's `adapterScales`. Setting it affects requests submitted afterwards.
    public var adapterScales: [Float] {
        condition.lock()
        defer { condition.unlock() }
        return globalAdapterScales
    }

    /// Sets `adapterScales`: scales for ids 0..<scales.count, the rest 0.
    public func setAdapterScales(_ scales: [Float]) throws(SubmitError) {
        let resolved = try resolvedLoRAScales(scales)
        condition.lock()
        globalAdapterScales = resolved
        condition.unlock()
    }

    /// One finite scale per adapter of the model.
    private func resolvedLoRAScales(_ scales: [Float]) throws(SubmitError) -> [Float] {
        let n = model.adapters.count
        guard scales.count <= n, scales.allSatisfy(\.isFinite) else { throw .badLoRAScales(adapters: n) }
        return scales + [Float](repeating: 0, count: n - scales.count)
    }

    /// Sequences whose events are still coming (waiting or running).
    public var outstandingSequences: Int {
        condition.lock()
        defer { condition.unlock() }
        return outstanding
    }

    /// Checks a prompt before it is submitted: not empty, every token in the vocabulary, and
    /// room for at least one generated token in the context (for an embedding, room for the
    /// prompt itself).
    public func validate(prompt: [TokenID], embedding: Bool = false) throws(EngineError) {
        guard !prompt.isEmpty else { throw .emptyPrompt }
        guard embedding || !model.model.isEncoder else { throw .encoderCannotGenerate(architecture: model.config.architecture) }
        let vocabularySize = model.config.vocabularySize
        if let bad = prompt.first(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            throw .tokenOutOfRange(token: Int(bad), vocabularySize: vocabularySize)
        }
        guard prompt.count < configuration.contextLength || (embedding && prompt.count == configuration.contextLength) else {
            throw .promptTooLong(tokens: prompt.count, context: configuration.contextLength)
        }
    }

    /// Queues a request; its events arrive on the returned handle's stream. Each prompt is
    /// validated first (`validate(prompt:)`).
    public func submit(_ specs: [SequenceSpec], options: GenerationOptions) throws -> RequestHandle {
        let (stream, continuation) = AsyncStream<GenerationEvent>.makeStream(bufferingPolicy: .unbounded)
        let id = try enqueue(specs, options: options, delivery: .stream(continuation))
        continuation.onTermination = { [weak self] reason in
            if case .cancelled = reason { self?.cancel(id) }
        }
        return RequestHandle(id: id, events: stream, generator: self)
    }

    private func enqueue(_ specs: [SequenceSpec], options: GenerationOptions, delivery: Delivery) throws -> Int {
        precondition(!specs.isEmpty)
        if case .draftModel = options.speculation, draftModel == nil { throw EngineError.noDraftModel }
        for spec in specs { try validate(prompt: spec.prompt, embedding: options.embedding != nil) }
        var options = options
        if let scales = options.loraScales { options.loraScales = try resolvedLoRAScales(scales) }
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw SubmitError.stopped }
        if options.loraScales == nil { options.loraScales = globalAdapterScales }
        guard outstanding + specs.count <= configuration.parallel + configuration.maxQueue || outstanding == 0 else {
            throw SubmitError.queueFull(retryAfter: 1)
        }
        let id = nextRequestID
        nextRequestID += 1
        outstanding += specs.count
        inbox.append(Submission(id: id, specs: specs, options: options, delivery: delivery, submitted: .now))
        condition.signal()
        return id
    }

    /// Generates one completion of `prompt` and waits for it. `onText` runs on the calling
    /// thread with each piece of text as soon as it is complete UTF-8 and clear of stop
    /// strings; returning false cancels the sequence (the result keeps what was generated).
    public func generate(prompt: [TokenID], options: GenerationOptions,
                         onText: (String) -> Bool = { _ in true }) throws -> GenerationResult {
        let mailbox = EventMailbox()
        let id = try enqueue([SequenceSpec(prompt: prompt)], options: options,
                             delivery: .callback({ mailbox.put($0) }, onEnd: { mailbox.close() }))
        var text = "", tokens: [TokenID] = []
        var finish: (reason: FinishReason, usage: SequenceUsage)?
        var failure: String?
        var cancelling = false
        while let event = mailbox.take() {
            switch event {
            case .text(_, let piece, let newTokens, _):
                text += piece
                tokens += newTokens
                if !cancelling, !piece.isEmpty, !onText(piece) {
                    cancelling = true
                    cancel(id)
                }
            case .finished(_, let reason, let usage): finish = (reason, usage)
            case .embedding: break
            case .failed(_, let message): failure = message
            }
        }
        if let failure { throw EngineError.generationFailed(failure) }
        guard let finish else { throw SubmitError.stopped }
        return GenerationResult(text: text, tokens: tokens, finishReason: finish.reason, usage: finish.usage)
    }

    /// Embeds each prompt (one sequence each, batched like any other work) and waits: one
    /// L2-normalized vector per prompt, in order.
    public func embed(_ prompts: [[TokenID]], pooling: EmbeddingPooling) throws -> [[Float]] {
        guard !prompts.isEmpty else { return [] }
        let mailbox = EventMailbox()
        var options = GenerationOptions(maxTokens: 0)
        options.embedding = pooling
        _ = try enqueue(prompts.map { SequenceSpec(prompt: $0) }, options: options,
                        delivery: .callback({ mailbox.put($0) }, onEnd: { mailbox.close() }))
        var vectors = [[Float]?](repeating: nil, count: prompts.count)
        var failure: String?
        while let event = mailbox.take() {
            switch event {
            case .embedding(let i, let vector): vectors[i] = vector
            case .failed(_, let message): failure = failure ?? message
            case .text, .finished: break
            }
        }
        if let failure { throw EngineError.generationFailed(failure) }
        guard vectors.allSatisfy({ $0 != nil }) else { throw SubmitError.stopped }
        return vectors.map { $0! }
    }

    public func cancel(_ requestID: Int) {
        condition.lock()
        cancelled.insert(requestID)
        condition.signal()
        condition.unlock()
    }

    /// Stops the loop: in-flight requests are cancelled (their streams end) and new ones refused.
    public func shutdown() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            condition.lock()
            stopping = true
            condition.signal()
            if isStopped {
                condition.unlock()
                c.resume()
                return
            }
            stoppedWaiters.append(c)
            condition.unlock()
        }
    }

    /// `shutdown` for synchronous callers (the CLI): returns once the thread has stopped.
    public func shutdownAndWait() {
        condition.lock()
        stopping = true
        condition.signal()
        while !isStopped { condition.wait() }
        condition.unlock()
    }

    // MARK: - Generator thread

    private func run() {
        while true {
            condition.lock()
            while inbox.isEmpty && cancelled.isEmpty && !stopping && !scheduler.hasWork {
                condition.wait()
            }
            let newRequests = inbox
            inbox.removeAll()
            let cancels = cancelled
            cancelled.removeAll()
            let stop = stopping
            condition.unlock()

            for submission in newRequests { admit(submission) }
            if !cancels.isEmpty {
                for a in active.values where cancels.contains(a.requestID) { finish(a, reason: .cancelled) }
            }
            if stop {
                for a in Array(active.values) { finish(a, reason: .cancelled) }
                break
            }
            step()
        }
        scheduler.diskCache?.flush()
        condition.lock()
        isStopped = true
        publishSnapshot()
        let waiters = stoppedWaiters
        stoppedWaiters.removeAll()
        condition.broadcast()
        condition.unlock()
        for w in waiters { w.resume() }
    }

    private func admit(_ s: Submission) {
        requests[s.id] = RequestState(delivery: s.delivery, remaining: s.specs.count)
        for (index, spec) in s.specs.enumerated() {
            let seq = scheduler.add(id: nextSequenceID, prompt: spec.prompt)
            seq.reusesCachedPrefix = s.options.embedding == nil
            seq.prefixCacheRoot = prefixCacheRoot(loraScales: s.options.loraScales ?? [])
            seq.runsWholePrompt = model.model.isEncoder
            nextSequenceID += 1
            active[seq.id] = ActiveSequence(requestID: s.id, index: index, sequence: seq, options: s.options,
                                            seed: spec.seed, tokenizer: model.tokenizer, vocabulary: vocabulary,
                                            submitted: s.submitted)
        }
    }

    /// Where a sequence's prefix-cache chain starts: cached keys and values hold the adapters'
    /// terms, so sequences share cached blocks only under the same adapter scales (0 for the
    /// base model, all scales 0).
    private func prefixCacheRoot(loraScales: [Float]) -> UInt64 {
        guard loraScales.contains(where: { $0 != 0 }) else { return 0 }
        return BlockAllocator.hash(parent: 0, tokens: loraScales.map { TokenID(bitPattern: $0.bitPattern) }) | 1
    }

    private func step() {
        guard scheduler.hasWork else {
            condition.lock(); publishSnapshot(); condition.unlock()
            return
        }
        proposeDrafts()
        let chunks = scheduler.schedule()
        guard !chunks.isEmpty else {
            // Nothing could be scheduled with nothing running: the pool cannot hold the
            // oldest waiting sequence. Fail it rather than spin.
            if scheduler.running.isEmpty, let seq = scheduler.waiting.first, let a = active[seq.id] {
                fail(a, message: "the KV cache cannot hold this request")
            }
            return
        }
        let now = ContinuousClock.now
        for chunk in chunks { if let a = active[chunk.sequence.id], a.admitted == nil { a.admitted = now } }
        let embeds = chunks.map { active[$0.sequence.id]?.embedding != nil }
        let batch = zip(chunks, embeds).map { chunk, embeds in
            let drafted = !chunk.draft.isEmpty
            var seq = BatchSequence(tokens: chunk.tokens, cache: chunk.sequence.store!.modelState, allLogits: drafted,
                                    hiddenStates: embeds, asDecodes: drafted)
            seq.loraScales = active[chunk.sequence.id]?.options.loraScales ?? []
            return seq
        }
        let rows: [[Float]]
        do {
            rows = try model.model.forward(batch, pool: pool, adapters: model.adapters)
        } catch {
            observer?.forwardPassFailed(error, sequences: chunks.count)
            for chunk in chunks { if let a = active[chunk.sequence.id] { fail(a, message: "\(error)") } }
            return
        }
        scheduler.didRun(chunks)
        // One logits row per generating chunk (and one per drafted token); one hidden-state row
        // per position of an embedding chunk.
        var sampling: [(sequence: ActiveSequence, logits: [Float])] = []
        var verifying: [(sequence: ActiveSequence, chunk: ScheduledChunk, rows: ArraySlice<[Float]>)] = []
        var next = 0
        for (chunk, embeds) in zip(chunks, embeds) {
            let count = embeds ? chunk.range.count : 1 + chunk.draft.count
            let chunkRows = rows[next..<next + count]
            next += count
            guard let a = active[chunk.sequence.id] else { continue }
            if embeds {
                a.embedding?.add(chunkRows, positions: chunk.range)
                if chunk.producesToken { finishEmbedding(a) }
                continue
            }
            if !chunk.draft.isEmpty {
                verifying.append((a, chunk, chunkRows))
                continue
            }
            guard chunk.producesToken, let row = chunkRows.first else { continue }
            // NaN or infinity would sample an arbitrary token: stop with the position instead
            guard row.allSatisfy(\.isFinite) else {
                observer?.forwardPassFailed(EngineError.nonFiniteLogits(position: chunk.range.upperBound - 1), sequences: 1)
                fail(a, message: EngineError.nonFiniteLogits(position: chunk.range.upperBound - 1).description)
                continue
            }
            sampling.append((a, row))
        }
        // Each sequence has its own sampler and random stream, so the plain draws (no grammar,
        // no logprobs) run across the pool; the tokens are the same as one after another.
        let draws = ParallelDraws(sampling.filter { $0.sequence.constraint == nil && $0.sequence.options.logprobs == nil })
        if draws.count > 1 {
            pool.parallelFor(draws.count) { draws.run($0) }
            draws.finish()
        }
        for (a, row) in sampling { sample(a, logits: row, drawn: draws.token(for: a)) }
        for (a, chunk, rows) in verifying { verify(a, chunk: chunk, rows: rows) }
        condition.lock()
        publishSnapshot()
        condition.unlock()
    }

    /// Drafts for the decoding sequences that asked for speculation. Only over a paged KV
    /// cache: rejected draft positions are cut off again, which a recurrent state cannot do.
    private func proposeDrafts() {
        guard case .paged = scheduler.storage else { return }
        var drafting: [(sequence: ActiveSequence, limit: Int, settings: DraftModelSettings)] = []
        for seq in scheduler.running {
            seq.draft = []
            guard seq.isDecoding, let a = active[seq.id], let speculation = a.options.speculation, a.embedding == nil else {
                continue
            }
            // the pass yields one token more than it drafts; both limits hold for all of them
            let room = min(a.options.maxTokens - seq.generatedCount, configuration.contextLength - seq.tokens.count + 1) - 1
            guard room > 0 else { continue }
            switch speculation {
            case .lookup(let lookup): seq.draft = lookup.draft(after: seq.tokens, limit: room)
            case .draftModel(let settings): drafting.append((a, min(room, settings.maxDraft), settings))
            }
        }
        if !drafting.isEmpty { draftWithModel(drafting) }
    }

    /// Drafts greedily with the draft model, all drafting sequences in each of its passes: the
    /// first pass brings each sequence's draft cache up to its tokens, each later one adds the
    /// token drafted last. A sequence stops at its limit or at a token the draft model is not
    /// sure enough of; a draft shorter than the request's minimum is dropped. A failed pass
    /// drops the drafts (the step then decodes plainly).
    private func draftWithModel(_ items: [(sequence: ActiveSequence, limit: Int, settings: DraftModelSettings)]) {
        guard let draftModel else { return }
        let states = items.map { item in
            item.sequence.draftState ?? {
                let state = DraftState(cache: draftModel.model.makeCache(capacity: configuration.contextLength))
                item.sequence.draftState = state
                return state
            }()
        }
        var feed = zip(items, states).map { item, state in state.catchUp(to: item.sequence.sequence.tokens) }
        var drafts = [[TokenID]](repeating: [], count: items.count)
        var open = Array(items.indices).filter { !feed[$0].isEmpty }
        while !open.isEmpty {
            let batch = open.map { BatchSequence(tokens: feed[$0], cache: states[$0].cache) }
            guard let rows = try? draftModel.model.model.forward(batch, pool: pool) else {
                for i in items.indices { states[i].tokens = []; states[i].cache.truncate(to: 0) }
                return
            }
            var stillOpen: [Int] = []
            for (i, row) in zip(open, rows) {
                states[i].tokens += feed[i]
                let (token, probability) = Self.mostLikely(row)
                guard probability >= items[i].settings.minProbability else { continue }
                drafts[i].append(token)
                // the last drafted token needs no pass: nothing is drafted after it
                if drafts[i].count < items[i].limit {
                    feed[i] = [token]
                    stillOpen.append(i)
                }
            }
            open = stillOpen
        }
        for (i, item) in items.enumerated() where drafts[i].count >= max(1, item.settings.minDraft) {
            item.sequence.sequence.draft = drafts[i]
        }
    }

    /// The most likely token of a logits row and its probability.
    static func mostLikely(_ logits: [Float]) -> (token: TokenID, probability: Float) {
        var best = 0
        for i in logits.indices where logits[i] > logits[best] { best = i }
        let top = logits[best]
        var sum: Float = 0
        for l in logits { sum += exp(l - top) }
        return (TokenID(best), 1 / sum)
    }

    /// Samples a drafted chunk's rows in order, as plain decoding would have sampled them one
    /// step at a time: row i holds the logits after the i-th drafted token, so it counts only
    /// while every drafted token before it was the one sampled. The first token that differs
    /// (or ends the sequence) ends the chunk; the output is the same token for token, with the
    /// same random draws, as without drafting.
    private func verify(_ a: ActiveSequence, chunk: ScheduledChunk, rows: ArraySlice<[Float]>) {
        let seq = a.sequence
        var accepted = 0
        for (i, row) in rows.enumerated() {
            let position = chunk.range.upperBound - 1 + i
            guard row.allSatisfy(\.isFinite) else {
                observer?.forwardPassFailed(EngineError.nonFiniteLogits(position: position), sequences: 1)
                fail(a, message: EngineError.nonFiniteLogits(position: position).description)
                return
            }
            let before = seq.tokens.count
            sample(a, logits: row)
            guard active[seq.id] != nil, i < chunk.draft.count, seq.tokens.count == before + 1,
                  seq.tokens[before] == chunk.draft[i] else { break }
            accepted += 1
        }
        a.draftTokens += chunk.draft.count
        a.acceptedDraftTokens += accepted
        scheduler.didVerify(chunk, accepted: accepted)
    }

    private func sample(_ a: ActiveSequence, logits: [Float], drawn: TokenID? = nil) {
        let seq = a.sequence
        if a.thinking?.exhausted == true, a.constraint == nil {
            closeThinking(a)
            return
        }
        var row = logits
        if let c = a.constraint { c.apply(to: &row) }
        let token: TokenID
        var info: TokenLogprobInfo?
        if let drawn {
            token = drawn
        } else if let k = a.options.logprobs {
            let s = a.sampler.sampleWithLogprobs(logits: row, history: seq.tokens, topLogprobs: k)
            token = s.token
            info = TokenLogprobInfo(token: s.token, logprob: s.logprob, top: s.topLogprobs)
        } else {
            token = a.sampler.sample(logits: row, history: seq.tokens)
        }
        let now = ContinuousClock.now
        if let last = a.lastToken {
            observer?.nextToken(after: now - last)
        } else {
            a.firstToken = now
            observer?.firstToken(after: now - a.submitted)
        }
        a.lastToken = now

        if a.output.isEndOfGeneration(token) {
            finish(a, reason: .stop)
            return
        }
        seq.append(token)
        a.pendingTokens.append(token)
        if let info { a.pendingLogprobs.append(info) }
        let (text, verdict) = a.output.accept(token)
        a.thinking?.countToken()
        a.thinking?.observe(text)
        emit(a, text: text)
        if verdict == .stop {
            finish(a, reason: .stop)
        } else if seq.generatedCount >= a.options.maxTokens || seq.tokens.count >= configuration.contextLength {
            finish(a, reason: .length)
        }
    }

    /// The reasoning budget is spent: instead of sampling, the closing marker's tokens are
    /// appended (computed with the next step, like a prompt chunk) and sent as output text.
    private func closeThinking(_ a: ActiveSequence) {
        guard let budget = a.thinking?.budget else { return }
        let now = ContinuousClock.now
        if a.firstToken == nil { a.firstToken = now }
        a.lastToken = now
        let forced = model.tokenizer.encode(budget.forcedClosing, addSpecial: false, parseSpecial: true)
        guard a.sequence.tokens.count + forced.count < configuration.contextLength else {
            finish(a, reason: .length)
            return
        }
        var text = ""
        for token in forced {
            a.sequence.append(token)
            a.pendingTokens.append(token)
            text += a.output.accept(token).text
        }
        a.thinking?.observe(text)
        // a closing marker the tracker cannot see (a tokenizer that drops it) still ends thinking
        if a.thinking?.inside == true { a.thinking = nil }
        emit(a, text: text)
        if a.sequence.generatedCount >= a.options.maxTokens || a.sequence.tokens.count >= configuration.contextLength {
            finish(a, reason: .length)
        }
    }

    /// An embedding sequence whose whole prompt has been through the model: its vector, then
    /// the end. A non-finite vector fails the sequence, naming the problem.
    private func finishEmbedding(_ a: ActiveSequence) {
        guard var vector = a.embedding?.normalized else { return }
        if a.embedding?.pooling == .rank {
            guard let classifier = model.model.classifier else {
                fail(a, message: EngineError.noClassifier.description)
                return
            }
            vector = classifier.scores(vector, pool: pool)
        }
        guard vector.allSatisfy(\.isFinite) else {
            fail(a, message: EngineError.nonFiniteEmbedding.description)
            return
        }
        a.firstToken = .now
        requests[a.requestID]?.delivery.send(.embedding(index: a.index, vector: vector))
        finish(a, reason: .stop)
    }

    /// Sends the text and the tokens sampled since the last event. Text held back (an
    /// unfinished character, a possible stop string) still sends the tokens and logprobs.
    private func emit(_ a: ActiveSequence, text: String) {
        guard let r = requests[a.requestID], !text.isEmpty || !a.pendingTokens.isEmpty else { return }
        r.delivery.send(.text(index: a.index, text: text, tokens: a.pendingTokens, logprobs: a.pendingLogprobs))
        a.pendingTokens.removeAll()
        a.pendingLogprobs.removeAll()
    }

    private func finish(_ a: ActiveSequence, reason: FinishReason) {
        var reason = reason
        if reason != .cancelled {
            let tail = a.output.finish()
            if tail.hitStopString { reason = .stop }
            emit(a, text: tail.text)
        }
        let seq = a.sequence
        let end = ContinuousClock.now
        var timings = GenerationTimings()
        timings.promptTokens = seq.promptCount - seq.cachedPromptTokens
        timings.generatedTokens = seq.generatedCount
        timings.draftTokens = a.draftTokens
        timings.acceptedDraftTokens = a.acceptedDraftTokens
        if let first = a.firstToken {
            timings.promptSeconds = (first - (a.admitted ?? a.submitted)).seconds
            timings.timeToFirstToken = (first - a.submitted).seconds
            timings.generationSeconds = ((a.lastToken ?? first) - first).seconds
        }
        let usage = SequenceUsage(promptTokens: seq.promptCount, completionTokens: seq.generatedCount,
                                  cachedTokens: seq.cachedPromptTokens, timings: timings)
        scheduler.remove(seq)
        active[seq.id] = nil
        observer?.sequenceFinished(SequenceReport(requestID: a.requestID, index: a.index, reason: reason, usage: usage,
                                                  preemptions: seq.preemptions, duration: end - a.submitted))
        // Blocks and counts are updated before the requester hears the end.
        condition.lock()
        outstanding -= 1
        publishSnapshot()
        condition.unlock()
        if let r = requests[a.requestID] {
            r.delivery.send(.finished(index: a.index, reason: reason, usage: usage))
            r.remaining -= 1
            if r.remaining == 0 {
                r.delivery.end()
                requests[a.requestID] = nil
            }
        }
    }

    private func fail(_ a: ActiveSequence, message: String) {
        if let r = requests[a.requestID] { r.delivery.send(.failed(index: a.index, message: message)) }
        finish(a, reason: .cancelled)
    }

    /// Under `condition`.
    private func publishSnapshot() {
        let alloc = scheduler.allocator
        snapshot.running = scheduler.running.count
        snapshot.waiting = scheduler.waiting.count + inbox.reduce(0) { $0 + $1.specs.count }
        snapshot.blocksUsed = alloc.usedCount
        snapshot.blocksFree = alloc.freeCount
        snapshot.blocksCached = alloc.cachedCount
        snapshot.prefixQueryTokens = alloc.prefixQueryTokens
        snapshot.prefixHitTokens = alloc.prefixHitTokens
        snapshot.promptCache = scheduler.diskCache?.statistics
        snapshot.steps += 1
        observer?.stepFinished(snapshot)
    }
}

/// Events of one `generate` call, handed from the generator thread to the caller's thread.
private final class EventMailbox: @unchecked Sendable {
    private let condition = NSCondition()
    private var events: [GenerationEvent] = []
    private var closed = false

    func put(_ event: GenerationEvent) {
        condition.lock()
        events.append(event)
        condition.signal()
        condition.unlock()
    }

    func close() {
        condition.lock()
        closed = true
        condition.signal()
        condition.unlock()
    }

    /// The next event; nil once the request has ended and every event was taken.
    func take() -> GenerationEvent? {
        condition.lock()
        defer { condition.unlock() }
        while events.isEmpty && !closed { condition.wait() }
        return events.isEmpty ? nil : events.removeFirst()
    }
}

/// Draws of several sequences' next tokens, one pool item each. Every item touches only its
/// own sequence's sampler and its own result slot.
final class ParallelDraws: @unchecked Sendable {
    private let items: [(sequence: Generator.ActiveSequence, logits: [Float])]
    private let tokens: UnsafeMutablePointer<TokenID>
    private var index: [ObjectIdentifier: Int] = [:]

    init(_ items: [(sequence: Generator.ActiveSequence, logits: [Float])]) {
        self.items = items
        tokens = .allocate(capacity: max(1, items.count))
    }

    deinit { tokens.deallocate() }

    var count: Int { items.count }

    func run(_ i: Int) {
        let a = items[i].sequence
        tokens[i] = a.sampler.sample(logits: items[i].logits, history: a.sequence.tokens)
    }

    /// After every `run`: the results become visible to `token(for:)`.
    func finish() {
        for (i, item) in items.enumerated() { index[ObjectIdentifier(item.sequence)] = i }
    }

    /// The token drawn for `a`, or nil when `a` was not drawn here.
    func token(for a: Generator.ActiveSequence) -> TokenID? {
        index[ObjectIdentifier(a)].map { tokens[$0] }
    }
}
