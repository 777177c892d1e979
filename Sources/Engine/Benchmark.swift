import Foundation
import Kernels
import Models
import Tokenization

/// One row of `swiftlet bench`, named as llama-bench names its tests.
public struct BenchmarkResult: Sendable, Codable {
    public var test: String
    public var avg_ts: Double
    public var stddev_ts: Double
    public var n_threads: Int
    public var repetitions: Int
    public var samples_ts: [Double]
    public var peak_rss_bytes: Int
    /// Prompt tests: time until logits for the first generated token are ready.
    public var time_to_first_token_ms: Double?
    /// Tokens already in the cache when the timed part starts (llama-bench's `-d`).
    public var n_depth: Int = 0
    /// KV cache element types (llama-bench's `type_k`, `type_v`) and the cache's bytes per token.
    public var type_k: String = "f16"
    public var type_v: String = "f16"
    public var kv_bytes_per_token: Int?
    /// Generation tests: weight bytes one decode step reads, the read bandwidth measured in
    /// the same run, and the share of it the test reached (bytes per token × tokens/s ÷ bandwidth).
    public var weight_bytes_per_token: Int?
    public var read_bandwidth_gbs: Double?
    public var bandwidth_share: Double?
    /// Speculative tests: how tokens were drafted, how many were drafted and accepted in the
    /// timed runs, and plain greedy decoding of the same prompt, timed alternately with them.
    public var speculation: String?
    public var draft_tokens: Int?
    public var accepted_draft_tokens: Int?
    public var draft_acceptance_rate: Double?
    public var plain_avg_ts: Double?
    public var speedup_vs_plain: Double?
}

extension LoadedModel {
    /// Weight bytes one decode step reads: every tensor, except the token embeddings when the
    /// output projection is its own tensor (then only one row of them is gathered), and of an
    /// expert tensor only the share of experts a token is routed to.
    public var decodeWeightBytes: Int {
        let separateOutput = file.tensors.contains { $0.name == "output.weight" }
        let routed = config.expertCount > 0 ? Double(config.expertUsedCount) / Double(config.expertCount) : 1
        return file.tensors.reduce(0) { total, tensor in
            if separateOutput && tensor.name == "token_embd.weight" { return total }
            return total + (tensor.name.contains("_exps") ? Int(Double(tensor.byteCount) * routed) : tensor.byteCount)
        }
    }
}

/// The request `bench --lookup/--draft` answers when no `--prompt-file` is given (through the
/// model's chat template): a text and a request for it back with one change, the edit
/// workload speculation is built for.
public let speculativeBenchmarkPrompt = """
    Here is a paragraph from a field guide.

    The heron stands at the edge of the river before sunrise, still as a post, watching the \
    shallow water for the flash of a small fish. When one comes close it strikes in a single \
    motion, swallows, and returns to waiting. Herons nest together in tall trees near the water, \
    and a colony can hold dozens of nests that are used again year after year. In winter the \
    birds that stay spread out along ditches and ponds, and on cold mornings they stand with \
    their necks drawn in, looking half their summer size.

    Write the paragraph again, word for word, but with every "heron" changed to "egret":

    """

/// `bench --lookup N` / `--draft`: greedy decoding of `generatedTokens` after `prompt`, with the
/// speculation and without it, alternately on one generator (so the runs share threads and
/// warm caches). Both must produce the same tokens, as speculative decoding promises; the row
/// rates the speculative runs and carries the plain rate and the acceptance.
public func benchmarkSpeculation(model: LoadedModel, speculation: Speculation, draftModel: DraftModel?,
                                 prompt: [TokenID], generatedTokens: Int, repetitions: Int,
                                 threads: Int?) throws -> BenchmarkResult {
    let context = prompt.count + generatedTokens + 1
    try model.validateContext(context)
    let generator = try Generator(model: model, configuration: .singleSequence(contextLength: context, threads: threads),
                                  draftModel: draftModel)
    defer { generator.shutdownAndWait() }
    func run(_ speculation: Speculation?) throws -> GenerationResult {
        var options = GenerationOptions(maxTokens: generatedTokens, sampling: .greedy)
        options.speculation = speculation
        return try generator.generate(prompt: prompt, options: options) { _ in true }
    }
    _ = try run(nil)
    _ = try run(speculation)
    var plainRates: [Double] = [], rates: [Double] = []
    var drafted = 0, accepted = 0
    for _ in 0..<repetitions {
        let plain = try run(nil)
        let speculative = try run(speculation)
        guard plain.tokens == speculative.tokens else {
            throw EngineError.generationFailed("speculative decoding gave other tokens than plain greedy decoding on the benchmark prompt")
        }
        plainRates.append(plain.timings.generationTokensPerSecond)
        rates.append(speculative.timings.generationTokensPerSecond)
        drafted += speculative.timings.draftTokens
        accepted += speculative.timings.acceptedDraftTokens
    }
    let generated = try run(nil).tokens.count
    let label = switch speculation {
    case .lookup(let lookup): "lookup \(lookup.maxDraft)"
    case .draftModel(let settings): "draft \(settings.minDraft)-\(settings.maxDraft)"
    }
    var result = summarize(test: "tg\(generated) \(label)", rates: rates, threads: generator.pool.threadCount,
                           timeToFirstToken: nil, depth: 0)
    result.speculation = label
    result.draft_tokens = drafted
    result.accepted_draft_tokens = accepted
    result.draft_acceptance_rate = drafted > 0 ? Double(accepted) / Double(drafted) : 0
    let plainMedian = plainRates.sorted()[plainRates.count / 2]
    result.plain_avg_ts = plainRates.reduce(0, +) / Double(plainRates.count)
    result.speedup_vs_plain = plainMedian > 0 ? rates.sorted()[rates.count / 2] / plainMedian : nil
    return result
}

/// llama-bench's two measurements: `pp N` processes an N-token prompt as one batch from an
/// empty cache; `tg N` generates N tokens one at a time. Tokens are random vocabulary ids,
/// so the numbers do not depend on the text. One untimed warm-up run precedes each test.
/// With a `depth`, each run first fills the cache with that many tokens, untimed, as
/// llama-bench's `-d` does, and the tests are named as its (`tg128 @ d4096`).
public func benchmark(model: LoadedModel, promptTokens: Int, generatedTokens: Int, depth: Int = 0,
                      repetitions: Int, pool: ThreadPool) throws -> [BenchmarkResult] {
    var rng = SplitMix64(seed: 42)
    let vocabulary = model.tokenizer.vocabularySize
    func randomTokens(_ n: Int) -> [TokenID] { (0..<n).map { _ in TokenID(rng.next() % UInt64(vocabulary)) } }
    var results: [BenchmarkResult] = []
    let suffix = depth > 0 ? " @ d\(depth)" : ""
    func filledCache(capacity: Int) throws -> any SequenceState {
        let cache = model.makeCache(capacity: depth + capacity)
        if depth > 0 { _ = try model.forward([BatchSequence(tokens: randomTokens(depth), cache: cache)], pool: pool) }
        return cache
    }

    if promptTokens > 0 {
        let run = { () throws -> Double in
            let cache = try filledCache(capacity: promptTokens)
            let tokens = randomTokens(promptTokens)
            let start = Date()
            _ = try model.forward([BatchSequence(tokens: tokens, cache: cache)], pool: pool)
            return Date().timeIntervalSince(start)
        }
        _ = try run()
        let times = try (0..<repetitions).map { _ in try run() }
        results.append(summarize(test: "pp\(promptTokens)" + suffix, tokens: promptTokens, times: times, pool: pool,
                                 timeToFirstToken: times.sorted()[times.count / 2], depth: depth))
    }
    if generatedTokens > 0 {
        let run = { () throws -> Double in
            let cache = try filledCache(capacity: generatedTokens)
            var token = randomTokens(1)[0]
            let start = Date()
            for _ in 0..<generatedTokens {
                let logits = try model.forward([BatchSequence(tokens: [token], cache: cache)], pool: pool)[0]
                token = TokenID(argmax(logits))
            }
            return Date().timeIntervalSince(start)
        }
        _ = try run()
        let times = try (0..<repetitions).map { _ in try run() }
        results.append(summarize(test: "tg\(generatedTokens)" + suffix, tokens: generatedTokens, times: times, pool: pool,
                                 timeToFirstToken: nil, depth: depth))
    }
    return results
}

/// Index of the largest value (the first one on ties).
func argmax(_ values: [Float]) -> Int {
    values.withUnsafeBufferPointer { v in
        var best = 0
        for i in 1..<v.count where v[i] > v[best] { best = i }
        return best
    }
}

private func summarize(test: String, tokens: Int, times: [Double], pool: ThreadPool, timeToFirstToken: Double?,
                       depth: Int) -> BenchmarkResult {
    summarize(test: test, rates: times.map { Double(tokens) / $0 }, threads: pool.threadCount,
              timeToFirstToken: timeToFirstToken, depth: depth)
}

private func summarize(test: String, rates: [Double], threads: Int, timeToFirstToken: Double?, depth: Int) -> BenchmarkResult {
    let mean = rates.reduce(0, +) / Double(rates.count)
    let variance = rates.count > 1 ? rates.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rates.count - 1) : 0
    return BenchmarkResult(test: test, avg_ts: mean, stddev_ts: variance.squareRoot(), n_threads: threads,
                           repetitions: rates.count, samples_ts: rates, peak_rss_bytes: peakResidentBytes(),
                           time_to_first_token_ms: timeToFirstToken.map { $0 * 1000 }, n_depth: depth)
}

/// Peak resident set size of this process (VmHWM on Linux, ru_maxrss elsewhere).
public func peakResidentBytes() -> Int {
    if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) {
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            return (line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0) * 1024
        }
    }
    #if canImport(Darwin)
    var usage = rusage()
    getrusage(RUSAGE_SELF, &usage)
    return usage.ru_maxrss
    #else
    return 0
    #endif
}
