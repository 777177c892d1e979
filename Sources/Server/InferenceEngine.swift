import Engine
import Foundation
import Kernels
import Logging
import Models
import Tokenization

/// One completion to generate: a prompt and, for `n` > 1, its own seed.
public struct SequenceSpec: Sendable {
    public var prompt: [TokenID]
    public var seed: UInt64?

    public init(prompt: [TokenID], seed: UInt64? = nil) {
        self.prompt = prompt
        self.seed = seed
    }
}

/// Settings shared by the sequences of one request.
public struct GenerationOptions: Sendable {
    public var maxTokens: Int
    public var sampling: SamplingParameters
    public var stop: [String]
    /// Output constrained to this JSON grammar (`response_format`).
    public var grammar: JSONGrammar?
    /// nil: no logprobs; k: the sampled token's logprob and the k most likely alternatives.
    public var logprobs: Int?

    public init(maxTokens: Int, sampling: SamplingParameters = .greedy, stop: [String] = [],
                grammar: JSONGrammar? = nil, logprobs: Int? = nil) {
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stop = stop
        self.grammar = grammar
        self.logprobs = logprobs
    }
}

public struct TokenLogprobInfo: Sendable {
    public var token: TokenID
    public var logprob: Float
    public var top: [TokenLogprob]
}

public enum GenerationEvent: Sendable {
    /// New text of sequence `index` (possibly empty when a stop string or an unfinished
    /// character holds it back) and the logprobs of the tokens sampled since the last event.
    case text(index: Int, text: String, logprobs: [TokenLogprobInfo])
    case finished(index: Int, reason: FinishReason, usage: SequenceUsage)
    case failed(index: Int, message: String)
}

public struct SequenceUsage: Sendable {
    public var promptTokens: Int
    public var completionTokens: Int
    public var cachedTokens: Int
}

public enum SubmitError: Error, CustomStringConvertible {
    case queueFull(retryAfter: Int)
    case stopped

    public var description: String {
        switch self {
        case .queueFull: "the server is busy: too many requests are queued"
        case .stopped: "the server is shutting down"
        }
    }
}

/// A submitted request: its events, and a way to cancel it.
public struct RequestHandle: Sendable {
    public let id: Int
    public let events: AsyncStream<GenerationEvent>
    let engine: InferenceEngine

    /// Stops every sequence of the request; their blocks are freed at the next step.
    public func cancel() { engine.cancel(id) }
}

/// The engine loop: a dedicated thread that, step after step, asks the scheduler for work,
/// runs every scheduled sequence through ONE forward pass, samples the sequences that reached
/// their last token and streams the results to the requests' `AsyncStream`s.
public final class InferenceEngine: @unchecked Sendable {
    public struct Configuration: Sendable {
        public var contextLength: Int
        /// Sequences decoded together (the running set).
        public var parallel: Int
        /// Sequences waiting beyond the running set before submissions get `queueFull`.
        public var maxQueue: Int
        /// KV cache size in token positions (rounded down to whole blocks).
        public var kvCacheTokens: Int
        public var blockSize: Int
        /// Tokens per forward pass (chunked prefill).
        public var maxBatchTokens: Int
        public var threads: Int?

        public init(contextLength: Int = 2048, parallel: Int = 4, maxQueue: Int = 64, kvCacheTokens: Int? = nil,
                    blockSize: Int = 16, maxBatchTokens: Int = 256, threads: Int? = nil) {
            self.contextLength = contextLength
            self.parallel = max(1, parallel)
            self.maxQueue = max(0, maxQueue)
            self.kvCacheTokens = kvCacheTokens ?? contextLength * max(1, parallel)
            self.blockSize = max(1, blockSize)
            self.maxBatchTokens = max(1, maxBatchTokens)
            self.threads = threads
        }
    }

    public let model: LoadedModel
    public let configuration: Configuration
    let scheduler: Scheduler
    let pool: ThreadPool
    let metrics: ServerMetrics?
    let logger: Logger
    private let vocabulary: TokenVocabulary

    // Shared with submitters, under `condition`.
    private let condition = NSCondition()
    private var inbox: [Submission] = []
    private var cancelled: Set<Int> = []
    private var stopping = false
    private var outstanding = 0
    private var nextRequestID = 1
    private var thread: Thread?
    private var stoppedSignal: [CheckedContinuation<Void, Never>] = []
    private var isStopped = false
    private var snapshot = Snapshot()

    // Owned by the engine thread.
    private var active: [Int: ActiveSequence] = [:]
    private var requests: [Int: RequestState] = [:]
    private var nextSequenceID = 1

    /// What `/metrics` and the tests read: the scheduler's state after the last step.
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
    }

    struct Submission {
        let id: Int
        let specs: [SequenceSpec]
        let options: GenerationOptions
        let continuation: AsyncStream<GenerationEvent>.Continuation
        let submitted: ContinuousClock.Instant
    }

    final class RequestState {
        let continuation: AsyncStream<GenerationEvent>.Continuation
        var remaining: Int
        init(continuation: AsyncStream<GenerationEvent>.Continuation, remaining: Int) {
            self.continuation = continuation
            self.remaining = remaining
        }
    }

    final class ActiveSequence {
        let requestID: Int
        let index: Int
        let sequence: ScheduledSequence
        let options: GenerationOptions
        var sampler: Sampler
        var decoder: StreamingDecoder
        var stopMatcher: StopStringMatcher
        let constraint: GrammarConstraint?
        let submitted: ContinuousClock.Instant
        var lastToken: ContinuousClock.Instant?
        var pendingLogprobs: [TokenLogprobInfo] = []

        init(requestID: Int, index: Int, sequence: ScheduledSequence, options: GenerationOptions, seed: UInt64?,
             tokenizer: any Tokenizer, vocabulary: TokenVocabulary, submitted: ContinuousClock.Instant) {
            self.requestID = requestID
            self.index = index
            self.sequence = sequence
            self.options = options
            var parameters = options.sampling
            if let seed { parameters.seed = seed }
            sampler = Sampler(parameters: parameters)
            decoder = StreamingDecoder(tokenizer: tokenizer)
            stopMatcher = StopStringMatcher(stopStrings: options.stop)
            constraint = options.grammar.map { GrammarConstraint(grammar: $0, vocabulary: vocabulary) }
            self.submitted = submitted
        }
    }

    public init(model: LoadedModel, configuration: Configuration, metrics: ServerMetrics? = nil,
                logger: Logger = Logger(label: "swiftlet.engine")) throws {
        try model.validateContext(configuration.contextLength)
        guard model.model is any AttentionModel else {
            throw ServerError.unsupportedModel("the server's paged KV cache needs an attention model; '\(model.config.architecture)' is not one")
        }
        self.model = model
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        // The pool holds at least one full context, so a lone sequence always fits.
        let blocksPerContext = (configuration.contextLength + configuration.blockSize - 1) / configuration.blockSize
        let blocks = max(blocksPerContext, configuration.kvCacheTokens / configuration.blockSize)
        let kvPool = KVBlockPool(config: model.config, blockSize: configuration.blockSize, blockCount: blocks)
        scheduler = Scheduler(configuration: .init(maxRunning: configuration.parallel,
                                                   maxBatchTokens: configuration.maxBatchTokens,
                                                   contextLength: configuration.contextLength), pool: kvPool)
        pool = ThreadPool(threads: configuration.threads)
        vocabulary = TokenVocabulary(tokenizer: model.tokenizer)
        snapshot.blocksTotal = blocks
        snapshot.blocksFree = blocks
        metrics?.updateScheduler(snapshot)
        let thread = Thread { self.run() }
        thread.name = "swiftlet-engine"
        thread.stackSize = 16 << 20
        self.thread = thread
        thread.start()
    }

    public var kvCacheBytes: Int { scheduler.pool.bytes }
    public var blockCount: Int { scheduler.pool.blockCount }

    public var currentSnapshot: Snapshot {
        condition.lock()
        defer { condition.unlock() }
        return snapshot
    }

    /// Queues a request; its events arrive on the returned handle's stream.
    public func submit(_ specs: [SequenceSpec], options: GenerationOptions) throws(SubmitError) -> RequestHandle {
        precondition(!specs.isEmpty)
        condition.lock()
        defer { condition.unlock() }
        guard !stopping else { throw .stopped }
        guard outstanding + specs.count <= configuration.parallel + configuration.maxQueue || outstanding == 0 else {
            throw .queueFull(retryAfter: 1)
        }
        let id = nextRequestID
        nextRequestID += 1
        outstanding += specs.count
        let (stream, continuation) = AsyncStream<GenerationEvent>.makeStream(bufferingPolicy: .unbounded)
        continuation.onTermination = { [weak self] reason in
            if case .cancelled = reason { self?.cancel(id) }
        }
        inbox.append(Submission(id: id, specs: specs, options: options, continuation: continuation,
                                submitted: .now))
        condition.signal()
        return RequestHandle(id: id, events: stream, engine: self)
    }

    public func cancel(_ requestID: Int) {
        condition.lock()
        cancelled.insert(requestID)
        condition.signal()
        condition.unlock()
    }

    /// Stops the loop: in-flight requests are cancelled (their streams end) and new ones refused.
    public func shutdown() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in beginShutdown(c) }
    }

    private func beginShutdown(_ c: CheckedContinuation<Void, Never>) {
        condition.lock()
        stopping = true
        condition.signal()
        if isStopped {
            condition.unlock()
            c.resume()
            return
        }
        stoppedSignal.append(c)
        condition.unlock()
    }

    /// Requests whose events are still coming (waiting or running).
    public var outstandingSequences: Int {
        condition.lock()
        defer { condition.unlock() }
        return outstanding
    }

    // MARK: - Engine thread

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
        condition.lock()
        isStopped = true
        publishSnapshot()
        let waiters = stoppedSignal
        stoppedSignal.removeAll()
        condition.unlock()
        for w in waiters { w.resume() }
    }

    private func admit(_ s: Submission) {
        requests[s.id] = RequestState(continuation: s.continuation, remaining: s.specs.count)
        for (index, spec) in s.specs.enumerated() {
            let seq = scheduler.add(id: nextSequenceID, prompt: spec.prompt)
            nextSequenceID += 1
            active[seq.id] = ActiveSequence(requestID: s.id, index: index, sequence: seq, options: s.options,
                                            seed: spec.seed, tokenizer: model.tokenizer, vocabulary: vocabulary,
                                            submitted: s.submitted)
        }
    }

    private func step() {
        guard scheduler.hasWork else {
            condition.lock(); publishSnapshot(); condition.unlock()
            return
        }
        let chunks = scheduler.schedule()
        guard !chunks.isEmpty else {
            // Nothing could be scheduled with nothing running: the pool cannot hold the
            // oldest waiting sequence. Fail it rather than spin.
            if scheduler.running.isEmpty, let seq = scheduler.waiting.first, let a = active[seq.id] {
                fail(a, message: "the KV cache cannot hold this request")
            }
            return
        }
        let batch = chunks.map { BatchSequence(tokens: $0.tokens, cache: $0.sequence.store!) }
        let logits: [[Float]]
        do {
            logits = try model.model.forward(batch, pool: pool)
        } catch {
            logger.error("forward pass failed", metadata: ["error": "\(error)"])
            for chunk in chunks { if let a = active[chunk.sequence.id] { fail(a, message: "\(error)") } }
            return
        }
        scheduler.didRun(chunks)
        var sampling: [(sequence: ActiveSequence, logits: [Float])] = []
        for (chunk, row) in zip(chunks, logits) where chunk.producesToken {
            guard let a = active[chunk.sequence.id] else { continue }
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
        condition.lock()
        publishSnapshot()
        condition.unlock()
    }

    private func sample(_ a: ActiveSequence, logits: [Float], drawn: TokenID? = nil) {
        let seq = a.sequence
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
            metrics?.interTokenLatency(now - last)
        } else {
            metrics?.timeToFirstToken(now - a.submitted)
        }
        a.lastToken = now

        if model.tokenizer.endOfGenerationTokens.contains(token) {
            finish(a, reason: .stop)
            return
        }
        seq.append(token)
        metrics?.generatedTokens(1)
        if let info { a.pendingLogprobs.append(info) }
        a.constraint?.accept(token: token)
        let out = a.stopMatcher.feed(a.decoder.push(token))
        if !out.text.isEmpty || a.options.logprobs != nil {
            emit(a, text: out.text)
        }
        if out.stop != nil || a.constraint?.isTerminal == true {
            finish(a, reason: .stop)
        } else if seq.generatedCount >= a.options.maxTokens || seq.tokens.count >= configuration.contextLength {
            finish(a, reason: .length)
        }
    }

    private func emit(_ a: ActiveSequence, text: String) {
        guard let r = requests[a.requestID] else { return }
        r.continuation.yield(.text(index: a.index, text: text, logprobs: a.pendingLogprobs))
        a.pendingLogprobs.removeAll()
    }

    private func finish(_ a: ActiveSequence, reason: FinishReason) {
        var reason = reason
        if reason != .cancelled && !a.stopMatcher.isStopped {
            // Release text held back for a stop string or an unfinished character.
            let tail = a.stopMatcher.feed(a.decoder.finish())
            var text = tail.text
            if tail.stop != nil { reason = .stop } else { text += a.stopMatcher.flush() }
            if !text.isEmpty || !a.pendingLogprobs.isEmpty { emit(a, text: text) }
        }
        let seq = a.sequence
        let usage = SequenceUsage(promptTokens: seq.promptCount, completionTokens: seq.generatedCount,
                                  cachedTokens: seq.cachedPromptTokens)
        scheduler.remove(seq)
        active[seq.id] = nil
        metrics?.sequenceFinished(reason: reason, promptTokens: seq.promptCount, cachedTokens: seq.cachedPromptTokens)
        logger.info("sequence finished", metadata: [
            "request": "\(a.requestID)", "index": "\(a.index)", "reason": "\(reason.rawValue)",
            "prompt_tokens": "\(seq.promptCount)", "cached_tokens": "\(seq.cachedPromptTokens)",
            "completion_tokens": "\(seq.generatedCount)", "preemptions": "\(seq.preemptions)",
            "seconds": "\(String(format: "%.3f", Double((ContinuousClock.now - a.submitted).components.attoseconds) / 1e18 + Double((ContinuousClock.now - a.submitted).components.seconds)))",
        ])
        // Blocks and counts are updated before the requester hears the end.
        condition.lock()
        outstanding -= 1
        publishSnapshot()
        condition.unlock()
        if let r = requests[a.requestID] {
            r.continuation.yield(.finished(index: a.index, reason: reason, usage: usage))
            r.remaining -= 1
            if r.remaining == 0 {
                r.continuation.finish()
                requests[a.requestID] = nil
            }
        }
    }

    private func fail(_ a: ActiveSequence, message: String) {
        if let r = requests[a.requestID] { r.continuation.yield(.failed(index: a.index, message: message)) }
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
        snapshot.steps += 1
        metrics?.updateScheduler(snapshot)
    }
}

/// Draws of several sequences' next tokens, one pool item each. Every item touches only its
/// own sequence's sampler and its own result slot.
final class ParallelDraws: @unchecked Sendable {
    private let items: [(sequence: InferenceEngine.ActiveSequence, logits: [Float])]
    private let tokens: UnsafeMutablePointer<TokenID>
    private var index: [ObjectIdentifier: Int] = [:]

    init(_ items: [(sequence: InferenceEngine.ActiveSequence, logits: [Float])]) {
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
    func token(for a: InferenceEngine.ActiveSequence) -> TokenID? {
        index[ObjectIdentifier(a)].map { tokens[$0] }
    }
}

public enum ServerError: Error, CustomStringConvertible {
    case unsupportedModel(String)

    public var description: String {
        switch self {
        case .unsupportedModel(let m): m
        }
    }
}
