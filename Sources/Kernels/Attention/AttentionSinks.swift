import Foundation

/// Attention sinks (gpt-oss): each query head h has a learned logit sₕ that joins its softmax's
/// denominator without a value, so a head can attend to "nothing". With the scores' maximum M
/// and sum S = Σ e^(s − M), llama.cpp's kernels finish with S' = S + e^(sₕ − M); an output that
/// `attend` already divided by S is therefore scaled by S / S' = 1 / (1 + e^(sₕ − L)), where
/// L = M + ln S is the scores' log-sum-exp, computed here with the kernels' score arithmetic
/// (q rounded to half and `dotHalfGGML` — or, for a quantized key type, its `KeyScorer` — times `scale`).
/// `out`: `attend`'s output for the same arguments, one row of heads · valueDimension floats.
// Unchecked: sinks.count == heads (GptOss.init checks the tensor's shape); the rest as `attend`.
public func applyAttentionSinks(_ sinks: [Float], queries: UnsafePointer<Float>, _ sequences: [AttentionSequence],
                                heads: Int, kvHeads: Int, headDimension: Int, valueDimension: Int, scale: Float,
                                window: Int?, output out: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    let group = heads / kvHeads
    let rows = sequences.reduce(0) { $0 + $1.tokens }
    nonisolated(unsafe) let (q, o) = (queries, out)
    let seqs = sequences
    pool.parallelChunks(rows) { range in
        let scratch = QuantizedCacheScratch(headDimension: headDimension, valueDimension: valueDimension)
        defer { scratch.deallocate() }
        var scores: [Float] = []
        for seq in seqs {
            let lo = max(range.lowerBound, seq.firstRow), hi = min(range.upperBound, seq.firstRow + seq.tokens)
            for r in lo..<max(lo, hi) {
                let position = seq.firstPosition + r - seq.firstRow
                let first = window.map { max(0, position - $0 + 1) } ?? 0
                for h in 0..<heads {
                    let scorer = scratch.scorer(0, query: q + r * heads * headDimension + h * headDimension,
                                                keyType: seq.cacheTypes.key)
                    let keyOffset = cacheRowOffset((h / group) * headDimension, seq.cacheTypes.key)
                    scores.removeAll(keepingCapacity: true)
                    for p in first...position {
                        scores.append(scorer.dot(UnsafeRawPointer(seq.keys[p]) + keyOffset) * scale)
                    }
                    let maximum = scores.max() ?? -.infinity
                    let sum = scores.reduce(Float(0)) { $0 + expf($1 - maximum) }
                    let logSumExp = maximum + logf(sum)
                    let factor = 1 / (1 + expf(sinks[h] - logSumExp))
                    let row = o + r * heads * valueDimension + h * valueDimension
                    for j in 0..<valueDimension { row[j] *= factor }
                }
            }
        }
    }
}
