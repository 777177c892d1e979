import Foundation
import Tokenization

/// A token with its log-probability.
public struct TokenLogprob: Sendable, Equatable {
    public var token: TokenID
    public var logprob: Float

    public init(token: TokenID, logprob: Float) {
        self.token = token
        self.logprob = logprob
    }
}

/// The result of `Sampler.sampleWithLogprobs`: the chosen token, its log-probability and
/// the most likely alternatives, all from the full softmax of the logits as given (temperature
/// 1, before logit bias, penalties and truncation), the way OpenAI reports `logprobs`.
public struct SampledToken: Sendable, Equatable {
    public var token: TokenID
    public var logprob: Float
    /// Most likely tokens first (ties: lower id first); at most the requested count.
    public var topLogprobs: [TokenLogprob]
}

/// Turns a logit vector into a token id.
///
/// Stages, in llama.cpp's default order: logit bias → penalties (repeat, frequency, presence)
/// → top-k → top-p → min-p → temperature → draw from the softmax with a seeded
/// xoshiro256** generator. Temperature ≤ 0 is greedy: the argmax after bias and penalties.
///
/// Top-p and min-p use the probabilities before temperature, as llama.cpp does: top-p is the
/// softmax over the tokens top-k kept (over the whole vocabulary when top-k is off), and min-p
/// compares each logit with the largest one.
///
/// Determinism: the random stream depends only on the seed; the draw walks the surviving
/// candidates in a fixed order (descending logit, ties by lower id) and sums in Double, so the
/// same seed, settings, history and logits give the same tokens. (Bit-identical results across
/// platforms additionally assume the platforms' `exp` agree, which the usual libms do to within
/// an ulp; a flip needs the uniform draw to land within that ulp of a boundary.)
///
/// Efficiency: top-k is a bounded-heap selection (O(n log k), no full sort); without top-k the
/// candidate set is cut at a logit threshold before sorting. Scratch buffers are reused, so
/// steady-state sampling does not allocate.
public struct Sampler: Sendable {
    public var parameters: SamplingParameters
    /// The seed in use (drawn from the system generator when `parameters.seed` is nil).
    public private(set) var seed: UInt64
    private var rng: Xoshiro256StarStar

    struct Candidate: Sendable {
        var id: TokenID
        var logit: Float
    }

    private var candidates: [Candidate] = []
    private var weights: [Double] = []
    private var work: [Float] = []
    private var recent: [TokenID] = []

    public init(parameters: SamplingParameters = SamplingParameters()) {
        self.parameters = parameters
        var system = SystemRandomNumberGenerator()
        let s = parameters.seed ?? system.next()
        seed = s
        rng = Xoshiro256StarStar(seed: s)
    }

    /// Restarts the random stream from `seed`.
    public mutating func reseed(_ seed: UInt64) {
        self.seed = seed
        rng = Xoshiro256StarStar(seed: seed)
    }

    // MARK: - Sampling

    /// Samples one token. `logits` is modified in place (bias, penalties); `history` is the
    /// prompt and generated tokens so far, most recent last (used by the penalties only).
    public mutating func sample(logits: UnsafeMutableBufferPointer<Float>, history: [TokenID]) -> TokenID {
        precondition(!logits.isEmpty, "empty logits")
        Self.applyBiasAndPenalties(logits, history: history, parameters: parameters, scratch: &recent)
        if parameters.temperature <= 0 {
            return Self.argmax(UnsafeBufferPointer(logits))
        }
        buildCandidates(UnsafeBufferPointer(logits))
        return draw()
    }

    /// Samples one token; `logits` is left untouched.
    public mutating func sample(logits: [Float], history: [TokenID]) -> TokenID {
        loadWork(logits)
        var w = work
        work = []
        defer { work = w }
        return w.withUnsafeMutableBufferPointer { sample(logits: $0, history: history) }
    }

    /// Samples one token and reports its log-probability and the `topLogprobs` most likely
    /// tokens (see `SampledToken`). `logits` is left untouched.
    public mutating func sampleWithLogprobs(
        logits: UnsafeBufferPointer<Float>, history: [TokenID], topLogprobs: Int
    ) -> SampledToken {
        let stats = Self.logSumExp(logits)
        let top = Self.topLogprobs(logits, count: topLogprobs, logSumExp: stats)
        loadWork(logits)
        var w = work
        work = []
        defer { work = w }
        let token = w.withUnsafeMutableBufferPointer { sample(logits: $0, history: history) }
        return SampledToken(token: token, logprob: logits[Int(token)] - stats, topLogprobs: top)
    }

    public mutating func sampleWithLogprobs(logits: [Float], history: [TokenID], topLogprobs: Int) -> SampledToken {
        logits.withUnsafeBufferPointer { sampleWithLogprobs(logits: $0, history: history, topLogprobs: topLogprobs) }
    }

    /// The distribution the next draw would use: surviving tokens with their probabilities
    /// (after every stage, temperature included), most likely first. Does not advance the RNG.
    /// Greedy settings give the argmax with probability 1.
    public mutating func distribution(logits: [Float], history: [TokenID]) -> [(token: TokenID, probability: Float)] {
        precondition(!logits.isEmpty, "empty logits")
        var w = logits
        w.withUnsafeMutableBufferPointer {
            Self.applyBiasAndPenalties($0, history: history, parameters: parameters, scratch: &recent)
        }
        if parameters.temperature <= 0 {
            return [(w.withUnsafeBufferPointer { Self.argmax($0) }, 1)]
        }
        w.withUnsafeBufferPointer { buildCandidates($0) }
        let ordered = candidates.sorted { Self.better($0, $1) }
        guard let top = ordered.first?.logit else { return [] }
        var sum = 0.0
        for c in ordered { sum += exp(Double(c.logit - top)) }
        return ordered.map { ($0.id, Float(exp(Double($0.logit - top)) / sum)) }
    }

    private mutating func loadWork(_ logits: some Collection<Float>) {
        work.removeAll(keepingCapacity: true)
        work.append(contentsOf: logits)
    }

    // MARK: - Stages

    /// Logit bias, then llama.cpp's repeat penalty and OpenAI's frequency/presence penalties
    /// over the last `repeatLastN` tokens of `history`.
    public static func applyBiasAndPenalties(
        _ logits: UnsafeMutableBufferPointer<Float>, history: [TokenID], parameters: SamplingParameters
    ) {
        var scratch: [TokenID] = []
        applyBiasAndPenalties(logits, history: history, parameters: parameters, scratch: &scratch)
    }

    static func applyBiasAndPenalties(
        _ logits: UnsafeMutableBufferPointer<Float>, history: [TokenID], parameters p: SamplingParameters,
        scratch: inout [TokenID]
    ) {
        let n = logits.count
        for (id, bias) in p.logitBias where id >= 0 && Int(id) < n {
            logits[Int(id)] += bias
        }
        guard p.hasPenalties, !history.isEmpty else { return }
        let window = p.repeatLastN < 0 ? history.count : min(p.repeatLastN, history.count)
        scratch.removeAll(keepingCapacity: true)
        scratch.append(contentsOf: history[(history.count - window)...])
        scratch.sort()
        var i = 0
        while i < scratch.count {
            let token = scratch[i]
            var j = i + 1
            while j < scratch.count && scratch[j] == token { j += 1 }
            let count = j - i
            i = j
            guard token >= 0 && Int(token) < n else { continue }
            var l = logits[Int(token)]
            if p.repeatPenalty != 1 {
                if l <= 0 { l *= p.repeatPenalty } else { l /= p.repeatPenalty }
            }
            l -= Float(count) * p.frequencyPenalty + p.presencePenalty
            logits[Int(token)] = l
        }
    }

    /// Index of the largest logit (the lowest index among equals; NaN never wins).
    public static func argmax(_ logits: UnsafeBufferPointer<Float>) -> TokenID {
        var best = 0
        var bestValue = -Float.infinity
        for i in 0..<logits.count where logits[i] > bestValue {
            best = i
            bestValue = logits[i]
        }
        return TokenID(best)
    }

    /// Candidate order: higher logit first, ties by lower id.
    @inline(__always)
    static func better(_ a: Candidate, _ b: Candidate) -> Bool {
        a.logit > b.logit || (a.logit == b.logit && a.id < b.id)
    }

    /// Fills `candidates` with the tokens that survive top-k, top-p and min-p, with their
    /// logits divided by the temperature.
    private mutating func buildCandidates(_ logits: UnsafeBufferPointer<Float>) {
        let p = parameters
        let n = logits.count
        candidates.removeAll(keepingCapacity: true)
        var sorted = false
        // Normalizer for top-p when the candidates are a subset of the distribution top-p
        // should see (the whole vocabulary when top-k is off): Σ exp(l - maxLogit).
        var fullMass: Double? = nil
        var maxLogit = -Float.infinity

        if p.topK > 0 && p.topK < n {
            Self.selectTopK(logits, k: p.topK, into: &candidates)
            if candidates.isEmpty {
                candidates.append(Candidate(id: Self.argmax(logits), logit: 0))
                return
            }
            sorted = true
            maxLogit = candidates.first?.logit ?? -.infinity
        } else {
            for i in 0..<n where logits[i] > maxLogit { maxLogit = logits[i] }
            var threshold = -Float.infinity
            if p.minP > 0 { threshold = maxLogit + log(min(p.minP, 1)) }
            if p.topP < 1 && maxLogit.isFinite {
                var z = 0.0
                for i in 0..<n where logits[i] > -.infinity { z += exp(Double(logits[i] - maxLogit)) }
                fullMass = z
                // Widen a window below the maximum until it holds top-p's mass; only the
                // tokens inside it need sorting.
                var delta: Float = 4
                while true {
                    let t = max(maxLogit - delta, threshold)
                    if delta > 1e4 || t <= threshold { break }
                    var mass = 0.0
                    for i in 0..<n where logits[i] >= t { mass += exp(Double(logits[i] - maxLogit)) }
                    if mass >= Double(p.topP) * z {
                        threshold = t
                        break
                    }
                    delta *= 2
                }
            }
            for i in 0..<n {
                let l = logits[i]
                if l >= threshold && l > -.infinity { candidates.append(Candidate(id: TokenID(i), logit: l)) }
            }
            if candidates.isEmpty {
                // Every logit is -inf or NaN: fall back to the argmax rule.
                candidates.append(Candidate(id: Self.argmax(logits), logit: 0))
                return
            }
            if p.topP < 1 {
                candidates.sort { Self.better($0, $1) }
                sorted = true
            }
        }

        // Top-p: the smallest prefix whose probability reaches topP (at least one token).
        if p.topP < 1 && sorted {
            let z: Double
            if let fullMass {
                z = fullMass
            } else {
                var s = 0.0
                for c in candidates { s += exp(Double(c.logit - maxLogit)) }
                z = s
            }
            var cumulative = 0.0
            var keep = candidates.count
            for i in 0..<candidates.count {
                cumulative += exp(Double(candidates[i].logit - maxLogit)) / z
                if cumulative >= Double(p.topP) {
                    keep = i + 1
                    break
                }
            }
            candidates.removeSubrange(keep...)
        }

        // Min-p: keep logits ≥ max + log(minP) (probability ≥ minP × the top probability).
        if p.minP > 0 {
            let floor = maxLogit + log(min(p.minP, 1))
            if sorted {
                var keep = candidates.count
                for i in 1..<candidates.count where candidates[i].logit < floor {
                    keep = i
                    break
                }
                candidates.removeSubrange(keep...)
            } else {
                candidates.removeAll { $0.logit < floor }
            }
        }

        let t = p.temperature
        if t != 1 {
            for i in candidates.indices { candidates[i].logit /= t }
        }
    }

    /// The k best (logit desc, id asc) entries, sorted, via a bounded min-heap.
    static func selectTopK(_ logits: UnsafeBufferPointer<Float>, k: Int, into heap: inout [Candidate]) {
        heap.removeAll(keepingCapacity: true)
        heap.reserveCapacity(k)
        // heap[0] is the worst of the kept entries.
        func siftDown(_ heap: inout [Candidate], from start: Int) {
            var i = start
            let count = heap.count
            while true {
                let l = 2 * i + 1
                if l >= count { return }
                var worst = l
                let r = l + 1
                if r < count && better(heap[l], heap[r]) { worst = r }
                if better(heap[i], heap[worst]) {
                    heap.swapAt(i, worst)
                    i = worst
                } else {
                    return
                }
            }
        }
        for i in 0..<logits.count {
            let l = logits[i]
            if l.isNaN { continue }
            let c = Candidate(id: TokenID(i), logit: l)
            if heap.count < k {
                heap.append(c)
                var j = heap.count - 1
                while j > 0 {
                    let parent = (j - 1) / 2
                    if better(heap[parent], heap[j]) {
                        heap.swapAt(parent, j)
                        j = parent
                    } else {
                        break
                    }
                }
            } else if l > heap[0].logit {
                // (Ids grow with i, so an equal logit never beats the kept one.)
                heap[0] = c
                siftDown(&heap, from: 0)
            }
        }
        heap.sort { better($0, $1) }
    }

    /// Draws from the softmax over `candidates`.
    private mutating func draw() -> TokenID {
        guard candidates.count > 1 else { return candidates[0].id }
        var maxLogit = -Float.infinity
        for c in candidates where c.logit > maxLogit { maxLogit = c.logit }
        weights.removeAll(keepingCapacity: true)
        var total = 0.0
        for c in candidates {
            let w = exp(Double(c.logit - maxLogit))
            weights.append(w)
            total += w
        }
        let r = rng.nextUnitDouble() * total
        var acc = 0.0
        for i in 0..<candidates.count {
            acc += weights[i]
            if r < acc { return candidates[i].id }
        }
        return candidates[candidates.count - 1].id
    }

    // MARK: - Log-probabilities

    /// log Σ exp(logits), computed in Double around the maximum.
    public static func logSumExp(_ logits: UnsafeBufferPointer<Float>) -> Float {
        var maxLogit = -Float.infinity
        for l in logits where l > maxLogit { maxLogit = l }
        guard maxLogit.isFinite else { return maxLogit }
        var sum = 0.0
        for l in logits where l > -.infinity { sum += exp(Double(l - maxLogit)) }
        return maxLogit + Float(log(sum))
    }

    /// Log-probability of `token` under the full softmax of `logits` (temperature 1).
    public static func logprob(of token: TokenID, logits: UnsafeBufferPointer<Float>) -> Float {
        logits[Int(token)] - logSumExp(logits)
    }

    /// The `count` most likely tokens with their log-probabilities (temperature 1).
    public static func topLogprobs(_ logits: UnsafeBufferPointer<Float>, count: Int) -> [TokenLogprob] {
        topLogprobs(logits, count: count, logSumExp: logSumExp(logits))
    }

    static func topLogprobs(_ logits: UnsafeBufferPointer<Float>, count: Int, logSumExp lse: Float) -> [TokenLogprob] {
        guard count > 0 else { return [] }
        var heap: [Candidate] = []
        selectTopK(logits, k: min(count, logits.count), into: &heap)
        return heap.map { TokenLogprob(token: $0.id, logprob: $0.logit - lse) }
    }
}
