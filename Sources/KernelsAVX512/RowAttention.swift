// The row kernel of flash attention (`attendHeadRow` in Kernels: decoding and small batches) for
// up to 4 query heads that share one KV head, in 512-bit vectors. Its output is accumulated in
// half precision, so each position's update is FMA → round to half → widen, a latency chain of
// ~14 cycles; one head alone keeps the cores mostly waiting. Here the heads of a GQA group run
// side by side over the same K and V loads (4 heads × 64 lanes: 16 independent chains). Every
// head's floats are exactly those of the one-head kernel: the same chains in the same order.
// The online softmax between the two passes is the one-head kernel's (`attendHeadsRowChunk`).
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
import CIntrinsics

private typealias Quad = (__m512, __m512, __m512, __m512)

@inline(__always) private func loadHalf16(_ p: UnsafePointer<Float16>) -> __m512 {
    _mm512_cvtph_ps(UnsafeRawPointer(p).loadUnaligned(as: __m256i.self))
}
@inline(__always) private func load16(_ p: UnsafePointer<Float>) -> __m512 { UnsafeRawPointer(p).loadUnaligned(as: __m512.self) }
@inline(__always) private func store16(_ v: __m512, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: __m512.self)
}
@inline(__always) private func roundedToHalf(_ v: __m512) -> __m512 { swiftlet_round_to_half16(v) }

/// ggml's F16 dot product on AVX-512 (the query already rounded to half, held as float): four
/// 16-lane accumulators over steps of 64, combined (0+2) + (1+3), reduced as GCC's
/// _mm512_reduce_add_ps (halves, quarters, (0+2) + (1+3)), a tail of < 64 elements in double.
@inline(__always)
private func dotHalf(_ k: UnsafePointer<Float16>, _ q: UnsafePointer<Float>, count: Int) -> Float {
    let zero = _mm512_setzero_ps()
    var (a0, a1, a2, a3) = (zero, zero, zero, zero)
    var i = 0
    while i + 64 <= count {
        a0 = _mm512_fmadd_ps(loadHalf16(k + i), load16(q + i), a0)
        a1 = _mm512_fmadd_ps(loadHalf16(k + i + 16), load16(q + i + 16), a1)
        a2 = _mm512_fmadd_ps(loadHalf16(k + i + 32), load16(q + i + 32), a2)
        a3 = _mm512_fmadd_ps(loadHalf16(k + i + 48), load16(q + i + 48), a3)
        i += 64
    }
    let t = _mm512_add_ps(_mm512_add_ps(a0, a2), _mm512_add_ps(a1, a3))
    let (lo, hi) = (t.lowHalf, t.highHalf)
    let t3 = hi + lo
    let t6 = t3.highHalf + t3.lowHalf
    var total = Double((t6[0] + t6[2]) + (t6[1] + t6[3]))
    while i < count { total += Double(Float(k[i]) * q[i]); i += 1 }
    return Float(total)
}

/// Scores of query heads h < `heads` (1...4; head h's query at `queries + h · headDimension`,
/// already rounded to half) of one KV group: scale · ggml's F16 dot with the key at each of
/// `positions`, score i of head h at `scores[h · headStride + 2i]` (the odd slots are left for
/// the softmax weights).
public func avx512RowGroupScores(queries: UnsafePointer<Float>, heads: Int,
                                 keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int, positions: Range<Int>,
                                 headDimension: Int, scale: Float,
                                 scores: UnsafeMutablePointer<Float>, headStride: Int) {
    precondition((1...4).contains(heads))
    for (i, p) in positions.enumerated() {
        let k = keys[p] + keyOffset
        for h in 0..<heads {
            scores[h * headStride + 2 * i] = dotHalf(k, queries + h * headDimension, count: headDimension) * scale
        }
    }
}

/// The output of query heads h < `heads` (1...4) of one KV group over `positions`, from their
/// online-softmax factors (head h's at `factors + h · headStride`: per position the rescale ms
/// and the weight w), in half precision as ggml: acc = half(acc·ms) when ms ≠ 1, then
/// acc = half(v·w + acc) fused; head h's output float(acc) · inverses[h] at `out + h · outStride`.
/// `valueDimension` is a multiple of 64.
public func avx512RowGroupAccumulate(heads: Int, values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int,
                                     positions: Range<Int>, valueDimension: Int,
                                     factors: UnsafePointer<Float>, headStride: Int, inverses: UnsafePointer<Float>,
                                     into out: UnsafeMutablePointer<Float>, outStride: Int) {
    precondition((1...4).contains(heads) && valueDimension % 64 == 0)
    let n = positions.count, first = positions.lowerBound
    @inline(__always) func step(_ x: inout Quad, _ f: UnsafePointer<Float>, _ v: Quad) {
        let ms = f[0]
        if ms != 1 {
            let m = _mm512_set1_ps(ms)
            x = (roundedToHalf(_mm512_mul_ps(x.0, m)), roundedToHalf(_mm512_mul_ps(x.1, m)),
                 roundedToHalf(_mm512_mul_ps(x.2, m)), roundedToHalf(_mm512_mul_ps(x.3, m)))
        }
        let w = _mm512_set1_ps(f[1])
        x = (roundedToHalf(_mm512_fmadd_ps(v.0, w, x.0)), roundedToHalf(_mm512_fmadd_ps(v.1, w, x.1)),
             roundedToHalf(_mm512_fmadd_ps(v.2, w, x.2)), roundedToHalf(_mm512_fmadd_ps(v.3, w, x.3)))
    }
    @inline(__always) func store(_ x: Quad, _ h: Int, _ d: Int) {
        let s = _mm512_set1_ps(inverses[h]), o = out + h * outStride + d
        store16(_mm512_mul_ps(x.0, s), o); store16(_mm512_mul_ps(x.1, s), o + 16)
        store16(_mm512_mul_ps(x.2, s), o + 32); store16(_mm512_mul_ps(x.3, s), o + 48)
    }
    let (f0, f1, f2, f3) = (factors, factors + headStride, factors + 2 * headStride, factors + 3 * headStride)
    var d = 0
    while d < valueDimension {
        let zero = _mm512_setzero_ps()
        var (a, b, c, e): (Quad, Quad, Quad, Quad) = ((zero, zero, zero, zero), (zero, zero, zero, zero),
                                                      (zero, zero, zero, zero), (zero, zero, zero, zero))
        for i in 0..<n {
            let p = values[first + i] + valueOffset + d
            let v = (loadHalf16(p), loadHalf16(p + 16), loadHalf16(p + 32), loadHalf16(p + 48))
            step(&a, f0 + 2 * i, v)
            if heads > 1 { step(&b, f1 + 2 * i, v) }
            if heads > 2 { step(&c, f2 + 2 * i, v) }
            if heads > 3 { step(&e, f3 + 2 * i, v) }
        }
        store(a, 0, d)
        if heads > 1 { store(b, 1, d) }
        if heads > 2 { store(c, 2, d) }
        if heads > 3 { store(e, 3, d) }
        d += 64
    }
}
#endif
