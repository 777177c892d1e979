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
        let cache = model.model.makeCache(capacity: depth + capacity)
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
    let rates = times.map { Double(tokens) / $0 }
    let mean = rates.reduce(0, +) / Double(rates.count)
    let variance = rates.count > 1 ? rates.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(rates.count - 1) : 0
    return BenchmarkResult(test: test, avg_ts: mean, stddev_ts: variance.squareRoot(), n_threads: pool.threadCount,
                           repetitions: times.count, samples_ts: rates, peak_rss_bytes: peakResidentBytes(),
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
