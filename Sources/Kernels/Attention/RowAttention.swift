// Flash attention row by row, as llama.cpp's CPU backend computes it for decoding and for
// micro-batches under `attentionTile` tokens: one query row against the cached positions, the
// output accumulated in half precision. Variants: several query heads of one KV group side by
// side (grouped), and one token's positions cut into a chunk per thread (split-KV).
import Foundation
import CIntrinsics

/// Scratch for one attention head: the query rounded to half precision (as float), then per
/// cache position two floats (the rescale factor and the weight of the online softmax).
struct HeadScratch {
    let query: UnsafeMutablePointer<Float>
    let factors: UnsafeMutablePointer<Float>
    /// One chunk's output in the split-KV kernel.
    let partial: UnsafeMutablePointer<Float>
    /// `heads`: how many heads `attendHeadsRow` attends at once.
    init(headDimension: Int, positions: Int, valueDimension: Int = 0, heads: Int = 1) {
        query = .allocate(capacity: headDimension * heads)
        factors = .allocate(capacity: 2 * positions * heads)
        partial = .allocate(capacity: max(1, valueDimension * heads))
    }
    func deallocate() { query.deallocate(); factors.deallocate(); partial.deallocate() }
}

/// softmax(q·Kᵀ·scale)·V for one query row and head over cached half-precision keys and values,
/// with the floats of ggml's flash-attention kernel for a row (llama.cpp's path for decoding and
/// for batches of fewer than 64 tokens): q rounded to half, scores by `dotHalfGGML`, online
/// softmax over the positions in order with libm expf — on a new maximum ms = e^(old − new),
/// w = 1, else ms = 1, w = e^(s − max) — and the output accumulated *in half precision*:
/// acc = half(acc·ms) on a new maximum, then acc = half(v·w + acc) fused; the running sum
/// S = S·ms + w fused; finally out = float(acc) · (1/S). A `softCap` (≠ 0) caps the scores
/// first (`capScores`).
/// (Two passes: the factors first, then the accumulation 32 lanes at a time in registers; the
/// per-element arithmetic and order are ggml's.)
@inline(__always)
func attendHeadRow(query: UnsafePointer<Float>, keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                   values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int, positions: Range<Int>,
                   headDimension: Int, valueDimension: Int, scale: Float, softCap: Float = 0,
                   scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) {
    storeRoundedToHalf(query, scratch.query, count: headDimension)
    _ = attendHeadRowChunk(keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                           positions: positions, headDimension: headDimension, valueDimension: valueDimension,
                           scale: scale, softCap: softCap, normalize: true, scratch: scratch, into: out)
}

/// How many query heads of a KV group `attendHeadsRow` attends at once: for the grouped
/// kernel, the largest divisor of the group up to 4 (their chains interleave); else one.
func rowKernelHeads(group: Int, valueDimension: Int) -> Int {
    CPUDispatch.groupedRowAttention(valueDimension: valueDimension) ? (1...min(4, group)).last { group % $0 == 0 }! : 1
}

/// `attendHeadRow` for `heads` consecutive query heads of one KV group (head j's query at
/// `query + j · headDimension`, its output at `out + j · valueDimension`), the same floats per
/// head; with the heads side by side where `rowKernelHeads` allows.
@inline(__always)
func attendHeadsRow(query: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                    values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int, positions: Range<Int>,
                    headDimension: Int, valueDimension: Int, scale: Float, softCap: Float = 0,
                    scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) {
    guard CPUDispatch.groupedRowAttention(valueDimension: valueDimension) else {
        precondition(heads == 1)
        attendHeadRow(query: query, keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                      positions: positions, headDimension: headDimension, valueDimension: valueDimension, scale: scale,
                      softCap: softCap, scratch: scratch, into: out)
        return
    }
    storeRoundedToHalf(query, scratch.query, count: headDimension * heads)
    withUnsafeTemporaryAllocation(of: (max: Float, sum: Float).self, capacity: heads) { stats in
        attendHeadsRowChunk(heads: heads, keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                            positions: positions, headDimension: headDimension, valueDimension: valueDimension,
                            scale: scale, softCap: softCap, normalize: true, scratch: scratch, into: out,
                            stats: stats.baseAddress!)
    }
}

/// llama.cpp's split-KV variant of the row kernel, which it runs for a single-token micro-batch
/// over at least 512 cache cells: the cells are cut into one chunk per thread, each chunk runs
/// the row kernel without the final division, and the chunks are merged in order —
/// M = max(M, m), acc = acc·e^(M_old − M) + chunk·e^(m − M) and S likewise (first product
/// fused) — then divided by S.
@inline(__always)
func attendHeadRowSplit(query: UnsafePointer<Float>, keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                        values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int, positions: Range<Int>,
                        cells: Int, chunkSize: Int, headDimension: Int, valueDimension: Int, scale: Float,
                        softCap: Float = 0, scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) {
    storeRoundedToHalf(query, scratch.query, count: headDimension)
    splitKV(heads: 1, positions: positions, cells: cells, chunkSize: chunkSize, valueDimension: valueDimension,
            partial: scratch.partial, into: out) { range, stats in
        stats[0] = attendHeadRowChunk(keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                                      positions: range, headDimension: headDimension, valueDimension: valueDimension,
                                      scale: scale, softCap: softCap, normalize: false, scratch: scratch,
                                      into: scratch.partial)
    }
}

/// `attendHeadRowSplit` for `heads` consecutive query heads of one KV group (laid out as in
/// `attendHeadsRow`), the same floats per head: each chunk runs the grouped row kernel.
@inline(__always)
func attendHeadsRowSplit(query: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>,
                         keyOffset: Int, values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int,
                         positions: Range<Int>, cells: Int, chunkSize: Int, headDimension: Int, valueDimension: Int,
                         scale: Float, softCap: Float = 0, scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) {
    guard CPUDispatch.groupedRowAttention(valueDimension: valueDimension) else {
        precondition(heads == 1)
        attendHeadRowSplit(query: query, keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                           positions: positions, cells: cells, chunkSize: chunkSize, headDimension: headDimension,
                           valueDimension: valueDimension, scale: scale, softCap: softCap, scratch: scratch, into: out)
        return
    }
    storeRoundedToHalf(query, scratch.query, count: headDimension * heads)
    splitKV(heads: heads, positions: positions, cells: cells, chunkSize: chunkSize, valueDimension: valueDimension,
            partial: scratch.partial, into: out) { range, stats in
        attendHeadsRowChunk(heads: heads, keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                            positions: range, headDimension: headDimension, valueDimension: valueDimension,
                            scale: scale, softCap: softCap, normalize: false, scratch: scratch, into: scratch.partial,
                            stats: stats)
    }
}

/// The split-KV merge for `heads` heads (outputs `valueDimension` apart): `chunk(range, stats)`
/// writes each head's unnormalized output over `range` to `partial` and its (max, sum) to
/// stats[h]; the chunks are merged as `attendHeadRowSplit` describes, then divided by S.
@inline(__always)
func splitKV(heads: Int, positions: Range<Int>, cells: Int, chunkSize: Int, valueDimension: Int,
             partial: UnsafeMutablePointer<Float>, into out: UnsafeMutablePointer<Float>,
             chunk: (Range<Int>, UnsafeMutablePointer<(max: Float, sum: Float)>) -> Void) {
    out.initialize(repeating: 0, count: valueDimension * heads)
    withUnsafeTemporaryAllocation(of: (max: Float, sum: Float).self, capacity: 2 * heads) { buffer in
        let stats = buffer.baseAddress!, final = stats + heads
        final.initialize(repeating: (-.infinity, 0), count: heads)
        for start in stride(from: 0, to: cells, by: chunkSize) {
            let (lo, hi) = (max(start, positions.lowerBound), min(start + chunkSize, positions.upperBound))
            if lo >= hi { continue }  // a chunk with every cell masked has S = 0 and is skipped
            chunk(lo..<hi, stats)
            for h in 0..<heads {
                let (m, s) = stats[h], (mFinal, sFinal) = final[h]
                let mNew = max(mFinal, m)
                let scaleOld = expf(mFinal - mNew), scaleNew = expf(m - mNew)
                let o = out + h * valueDimension, c = partial + h * valueDimension
                for d in 0..<valueDimension { o[d] = (c[d] * scaleNew).addingProduct(o[d], scaleOld) }
                final[h] = (mNew, (s * scaleNew).addingProduct(sFinal, scaleOld))
            }
        }
        for h in 0..<heads where final[h].sum != 0 {
            let inverse = 1 / final[h].sum, o = out + h * valueDimension
            for d in 0..<valueDimension { o[d] *= inverse }
        }
    }
}

/// The grouped row kernel over `positions` for `heads` heads (queries already in
/// `scratch.query`): the scores, then each head's online softmax exactly as the one-head
/// kernel, then the outputs; writes each head's (max, sum) to stats[h].
@inline(__always)
func attendHeadsRowChunk(heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                         values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int, positions: Range<Int>,
                         headDimension: Int, valueDimension: Int, scale: Float, softCap: Float, normalize: Bool,
                         scratch: HeadScratch, into out: UnsafeMutablePointer<Float>,
                         stats: UnsafeMutablePointer<(max: Float, sum: Float)>) {
    let stride = 2 * positions.count
    if !avx512RowGroupScoresIfEnabled(queries: scratch.query, heads: heads, keys: keys, keyOffset: keyOffset,
                                      positions: positions, headDimension: headDimension, scale: scale,
                                      scores: scratch.factors, headStride: stride) {
        rowGroupScores(queries: scratch.query, heads: heads, keys: keys, keyOffset: keyOffset, positions: positions,
                       headDimension: headDimension, scale: scale, scores: scratch.factors, headStride: stride)
    }
    for h in 0..<heads { capScores(scratch.factors + h * stride, count: positions.count, stride: 2, cap: softCap) }
    withUnsafeTemporaryAllocation(of: Float.self, capacity: heads) { inverses in
        for h in 0..<heads {
            stats[h] = onlineSoftmaxFactors(scratch.factors + h * stride, count: positions.count)
            inverses[h] = softmaxInverse(stats[h].sum, normalize: normalize)
        }
        if avx512RowGroupAccumulateIfEnabled(heads: heads, values: values, valueOffset: valueOffset, positions: positions,
                                             valueDimension: valueDimension, factors: scratch.factors, headStride: stride,
                                             inverses: inverses.baseAddress!, into: out, outStride: valueDimension) {
            return
        }
        rowGroupAccumulate(heads: heads, values: values, valueOffset: valueOffset, positions: positions,
                           valueDimension: valueDimension, factors: scratch.factors, headStride: stride,
                           inverses: inverses.baseAddress!, into: out, outStride: valueDimension)
    }
}

/// Cache positions the row kernels prefetch ahead. Each position's K or V row is a short piece
/// of a longer cache row (one KV head of one layer), so the hardware prefetchers see a strided
/// pattern, and without help a decoding step at a few thousand positions waited on memory with
/// only a handful of rows in flight.
let rowPrefetchDistance = 24

/// Prefetches `count` halves at `rows[position] + offset` into L1, if `position` is below `end`.
@inline(__always)
func prefetchRow(_ rows: UnsafePointer<UnsafePointer<Float16>>, _ position: Int, below end: Int, offset: Int, count: Int) {
    guard position < end else { return }
    let start = UnsafeRawPointer(rows[position] + offset)
    var byte = 0
    while byte < 2 * count { swiftlet_prefetch_l1(start + byte); byte += 64 }
    swiftlet_prefetch_l1(start + 2 * count - 1)  // the last line, when the row is not line-aligned
}

/// Scores of the 256-bit grouped row kernel: each key widened to float once for all `heads`
/// queries, then `dotHalfGGML`'s sums per head (same floats: the widening is exact).
@inline(__always)
func rowGroupScores(queries: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>,
                    keyOffset: Int, positions: Range<Int>, headDimension: Int, scale: Float,
                    scores: UnsafeMutablePointer<Float>, headStride: Int) {
    if heads == 1 {
        for (i, p) in positions.enumerated() {
            prefetchRow(keys, p + rowPrefetchDistance, below: positions.upperBound, offset: keyOffset, count: headDimension)
            scores[2 * i] = dotHalfGGML(keys[p] + keyOffset, queries, count: headDimension) * scale
        }
        return
    }
    withUnsafeTemporaryAllocation(of: Float.self, capacity: headDimension) { buffer in
        let key = buffer.baseAddress!
        for (i, p) in positions.enumerated() {
            prefetchRow(keys, p + rowPrefetchDistance, below: positions.upperBound, offset: keyOffset, count: headDimension)
            let k = keys[p] + keyOffset
            var d = 0
            while d + 8 <= headDimension { store8(load8(k + d), key + d); d += 8 }
            while d < headDimension { key[d] = Float(k[d]); d += 1 }
            for h in 0..<heads {
                scores[h * headStride + 2 * i] = dotHalfGGML(widened: key, queries + h * headDimension,
                                                             count: headDimension) * scale
            }
        }
    }
}

/// Outputs of the 256-bit grouped row kernel (as `avx512RowGroupAccumulate`: per position
/// acc = half(acc·ms) when ms ≠ 1, then acc = half(v·w + acc) fused, for each head over the
/// same V loads). Each pass takes 32 lanes of up to three heads: 12 half-precision chains
/// (FMA → round to half → widen, a long latency) in flight where one head has 4, and one V
/// load and widening for all of them; four heads run as two pairs, within the 16 vector
/// registers. The V rows are prefetched, as the K rows in `rowGroupScores`.
@inline(__always)
func rowGroupAccumulate(heads: Int, values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int,
                        positions: Range<Int>, valueDimension: Int, factors: UnsafePointer<Float>, headStride: Int,
                        inverses: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, outStride: Int) {
    typealias Quad = (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)
    let n = positions.count, first = positions.lowerBound
    @inline(__always) func step(_ x: inout Quad, _ f: UnsafePointer<Float>, _ v: Quad) {
        let ms = f[0]
        if ms != 1 { x = (roundedToHalf(x.0 * ms), roundedToHalf(x.1 * ms), roundedToHalf(x.2 * ms), roundedToHalf(x.3 * ms)) }
        let w = SIMD8<Float>(repeating: f[1])
        x = (roundedToHalf(x.0.addingProduct(v.0, w)), roundedToHalf(x.1.addingProduct(v.1, w)),
             roundedToHalf(x.2.addingProduct(v.2, w)), roundedToHalf(x.3.addingProduct(v.3, w)))
    }
    @inline(__always) func store(_ x: Quad, _ h: Int, _ d: Int) {
        let s = inverses[h], o = out + h * outStride + d
        store8(x.0 * s, o); store8(x.1 * s, o + 8); store8(x.2 * s, o + 16); store8(x.3 * s, o + 24)
    }
    let zero: Quad = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
    var h0 = 0
    while h0 < heads {
        let together = heads == 4 ? 2 : heads
        let (f0, f1, f2) = (factors + h0 * headStride, factors + (h0 + 1) * headStride, factors + (h0 + 2) * headStride)
        var d = 0
        while d < valueDimension {
            var (a, b, c) = (zero, zero, zero)
            for i in 0..<n {
                prefetchRow(values, first + i + rowPrefetchDistance, below: positions.upperBound,
                            offset: valueOffset + d, count: 32)
                let p = values[first + i] + valueOffset + d
                let v = (load8(p), load8(p + 8), load8(p + 16), load8(p + 24))
                step(&a, f0 + 2 * i, v)
                if together > 1 { step(&b, f1 + 2 * i, v) }
                if together > 2 { step(&c, f2 + 2 * i, v) }
            }
            store(a, h0, d)
            if together > 1 { store(b, h0 + 1, d) }
            if together > 2 { store(c, h0 + 2, d) }
            d += 32
        }
        h0 += together
    }
}

/// ggml's online softmax over the scores at factors[2i], i < count, in order, with libm expf:
/// on a new maximum ms = e^(old − new), w = 1, else ms = 1, w = e^(s − max); S = S·ms + w fused.
/// Writes (ms, w) over each score and returns the final max and S.
@inline(__always)
func onlineSoftmaxFactors(_ factors: UnsafeMutablePointer<Float>, count: Int) -> (max: Float, sum: Float) {
    var S: Float = 0, M = -Float.infinity
    for i in 0..<count {
        let s = factors[2 * i]
        var ms: Float = 1, vs: Float = 1
        if s > M {
            ms = expf(M - s)
            M = s
        } else {
            vs = expf(s - M)
        }
        factors[2 * i] = ms
        factors[2 * i + 1] = vs
        S = vs.addingProduct(S, ms)
    }
    return (M, S)
}

/// Attention logit soft-capping (gemma2) as ggml applies it: each score, already multiplied by
/// scale / cap, becomes cap · tanhf(score), before the mask. `count` scores `stride` floats
/// apart; a cap of 0 leaves them.
@inline(__always)
func capScores(_ scores: UnsafeMutablePointer<Float>, count: Int, stride: Int, cap: Float) {
    guard cap != 0 else { return }
    for i in 0..<count { scores[i * stride] = cap * tanhf(scores[i * stride]) }
}

/// The factor the row kernels' accumulated output is multiplied by: 1/S, 0 for S = 0, or 1
/// when the split-KV merge normalizes later.
@inline(__always)
func softmaxInverse(_ sum: Float, normalize: Bool) -> Float { !normalize ? 1 : sum == 0 ? 0 : 1 / sum }

/// The row kernel over `positions` with the query already in `scratch.query`: writes
/// float(acc) · (1/S) (`normalize`) or float(acc), and returns the running max and sum.
@inline(__always)
func attendHeadRowChunk(keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                        values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int, positions: Range<Int>,
                        headDimension: Int, valueDimension: Int, scale: Float, softCap: Float, normalize: Bool,
                        scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) -> (max: Float, sum: Float) {
    let qHalf = scratch.query, factors = scratch.factors
    // scores first (independent of each other), then the sequential softmax over them
    for (i, p) in positions.enumerated() {
        factors[2 * i] = dotHalfGGML(keys[p] + keyOffset, qHalf, count: headDimension) * scale
    }
    capScores(factors, count: positions.count, stride: 2, cap: softCap)
    let (M, S) = onlineSoftmaxFactors(factors, count: positions.count)
    let inverse = softmaxInverse(S, normalize: normalize)
    let first = positions.lowerBound
    var d = 0
    while d + 32 <= valueDimension {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
        for i in 0..<positions.count {
            let ms = factors[2 * i], w = SIMD8<Float>(repeating: factors[2 * i + 1])
            if ms != 1 {
                a0 = roundedToHalf(a0 * ms); a1 = roundedToHalf(a1 * ms)
                a2 = roundedToHalf(a2 * ms); a3 = roundedToHalf(a3 * ms)
            }
            let v = values[first + i] + valueOffset + d
            a0 = roundedToHalf(a0.addingProduct(load8(v), w)); a1 = roundedToHalf(a1.addingProduct(load8(v + 8), w))
            a2 = roundedToHalf(a2.addingProduct(load8(v + 16), w)); a3 = roundedToHalf(a3.addingProduct(load8(v + 24), w))
        }
        store8(a0 * inverse, out + d); store8(a1 * inverse, out + d + 8)
        store8(a2 * inverse, out + d + 16); store8(a3 * inverse, out + d + 24)
        d += 32
    }
    while d < valueDimension {
        var a: Float = 0
        for i in 0..<positions.count {
            let ms = factors[2 * i], w = factors[2 * i + 1]
            if ms != 1 { a = Float(Float16(a * ms)) }
            a = Float(Float16(a.addingProduct(Float(values[first + i][valueOffset + d]), w)))
        }
        out[d] = a * inverse
        d += 1
    }
    return (M, S)
}

