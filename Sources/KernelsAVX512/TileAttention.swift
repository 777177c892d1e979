// The two product loops of the tiled flash-attention kernel (`attendHeadTile` in Kernels), in
// 512-bit vectors: a Sapphire Rapids core has two 512-bit FMA units, so 16 lanes per FMA do
// twice the work of the 8-lane loops (Zen 4 splits them, at no loss). Every score and every
// output element is the same fused chain, in the same order, as in the 8-lane loops: the lanes
// only hold more positions (scores) or more output elements (values) side by side.
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel

@inline(__always) private func load16(_ p: UnsafePointer<Float>) -> __m512 { UnsafeRawPointer(p).loadUnaligned(as: __m512.self) }
@inline(__always) private func store16(_ v: __m512, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: __m512.self)
}

/// scores[r · tile + p] = scale · Σ_d q_r[d] · keys[d · tile + p] (one fused chain over d) for
/// the 4 query rows and the positions p of the 16-position groups covering `positions`; the
/// positions beyond it in those groups get scores nobody reads. `keys` holds the tile's keys
/// dimension-major, `tile` positions per dimension.
public func avx512TileScores(_ q0: UnsafePointer<Float>, _ q1: UnsafePointer<Float>, _ q2: UnsafePointer<Float>,
                             _ q3: UnsafePointer<Float>, keys: UnsafePointer<Float>, tile: Int, headDimension: Int,
                             positions: Range<Int>, scale: Float, scores: UnsafeMutablePointer<Float>) {
    let s = _mm512_set1_ps(scale)
    var p = positions.lowerBound / 16 * 16
    while p + 16 < positions.upperBound {
        let zero = _mm512_setzero_ps()
        var (a0, a1, b0, b1, c0, c1, e0, e1) = (zero, zero, zero, zero, zero, zero, zero, zero)
        var k = keys + p
        for d in 0..<headDimension {
            let k0 = load16(k), k1 = load16(k + 16)
            let x0 = _mm512_set1_ps(q0[d]), x1 = _mm512_set1_ps(q1[d])
            a0 = _mm512_fmadd_ps(x0, k0, a0); a1 = _mm512_fmadd_ps(x0, k1, a1)
            b0 = _mm512_fmadd_ps(x1, k0, b0); b1 = _mm512_fmadd_ps(x1, k1, b1)
            let x2 = _mm512_set1_ps(q2[d]), x3 = _mm512_set1_ps(q3[d])
            c0 = _mm512_fmadd_ps(x2, k0, c0); c1 = _mm512_fmadd_ps(x2, k1, c1)
            e0 = _mm512_fmadd_ps(x3, k0, e0); e1 = _mm512_fmadd_ps(x3, k1, e1)
            k += tile
        }
        let o = scores + p
        store16(_mm512_mul_ps(a0, s), o); store16(_mm512_mul_ps(a1, s), o + 16)
        store16(_mm512_mul_ps(b0, s), o + tile); store16(_mm512_mul_ps(b1, s), o + tile + 16)
        store16(_mm512_mul_ps(c0, s), o + 2 * tile); store16(_mm512_mul_ps(c1, s), o + 2 * tile + 16)
        store16(_mm512_mul_ps(e0, s), o + 3 * tile); store16(_mm512_mul_ps(e1, s), o + 3 * tile + 16)
        p += 32
    }
    if p < positions.upperBound {
        let zero = _mm512_setzero_ps()
        var (a0, b0, c0, e0) = (zero, zero, zero, zero)
        var k = keys + p
        for d in 0..<headDimension {
            let k0 = load16(k)
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(q0[d]), k0, a0); b0 = _mm512_fmadd_ps(_mm512_set1_ps(q1[d]), k0, b0)
            c0 = _mm512_fmadd_ps(_mm512_set1_ps(q2[d]), k0, c0); e0 = _mm512_fmadd_ps(_mm512_set1_ps(q3[d]), k0, e0)
            k += tile
        }
        let o = scores + p
        store16(_mm512_mul_ps(a0, s), o); store16(_mm512_mul_ps(b0, s), o + tile)
        store16(_mm512_mul_ps(c0, s), o + 2 * tile); store16(_mm512_mul_ps(e0, s), o + 3 * tile)
    }
}

/// accA[e] += Σ_{k ∈ a} wA[k] · values[k · valueDimension + e], and accB likewise over b (nil:
/// row A alone), each element one fused chain over k in increasing order. Where the ranges
/// overlap, each V load feeds both rows (64 lanes × 2 rows: eight independent chains).
public func avx512AccumulatePair(weights wA: UnsafePointer<Float>, _ wB: UnsafePointer<Float>,
                                 _ accA: UnsafeMutablePointer<Float>, _ accB: UnsafeMutablePointer<Float>?,
                                 values: UnsafePointer<Float>, valueDimension: Int, _ a: Range<Int>, _ b: Range<Int>) {
    let start = max(a.lowerBound, b.lowerBound)
    let common = start..<max(start, min(a.upperBound, b.upperBound))
    typealias Acc = (__m512, __m512, __m512, __m512)
    @inline(__always)
    func single(_ x: inout Acc, _ w: UnsafePointer<Float>, _ v: UnsafePointer<Float>, _ range: Range<Int>) {
        for k in range {
            let y = _mm512_set1_ps(w[k]), p = v + k * valueDimension
            x.0 = _mm512_fmadd_ps(y, load16(p), x.0); x.1 = _mm512_fmadd_ps(y, load16(p + 16), x.1)
            x.2 = _mm512_fmadd_ps(y, load16(p + 32), x.2); x.3 = _mm512_fmadd_ps(y, load16(p + 48), x.3)
        }
    }
    @inline(__always) func load(_ p: UnsafeMutablePointer<Float>) -> Acc {
        (load16(p), load16(p + 16), load16(p + 32), load16(p + 48))
    }
    @inline(__always) func store(_ x: Acc, _ p: UnsafeMutablePointer<Float>) {
        store16(x.0, p); store16(x.1, p + 16); store16(x.2, p + 32); store16(x.3, p + 48)
    }
    var d = 0
    while d + 64 <= valueDimension {
        let v = values + d
        var x = load(accA + d)
        if let accB {
            var y = load(accB + d)
            if common.isEmpty {
                single(&x, wA, v, a); single(&y, wB, v, b)
            } else {
                single(&x, wA, v, a.lowerBound..<common.lowerBound)
                single(&y, wB, v, b.lowerBound..<common.lowerBound)
                for k in common {
                    let p = v + k * valueDimension
                    let v0 = load16(p), v1 = load16(p + 16), v2 = load16(p + 32), v3 = load16(p + 48)
                    let s = _mm512_set1_ps(wA[k]), u = _mm512_set1_ps(wB[k])
                    x.0 = _mm512_fmadd_ps(s, v0, x.0); x.1 = _mm512_fmadd_ps(s, v1, x.1)
                    y.0 = _mm512_fmadd_ps(u, v0, y.0); y.1 = _mm512_fmadd_ps(u, v1, y.1)
                    x.2 = _mm512_fmadd_ps(s, v2, x.2); x.3 = _mm512_fmadd_ps(s, v3, x.3)
                    y.2 = _mm512_fmadd_ps(u, v2, y.2); y.3 = _mm512_fmadd_ps(u, v3, y.3)
                }
                single(&x, wA, v, common.upperBound..<a.upperBound)
                single(&y, wB, v, common.upperBound..<b.upperBound)
            }
            store(y, accB + d)
        } else {
            single(&x, wA, v, a)
        }
        store(x, accA + d)
        d += 64
    }
    // the last < 64 lanes row by row, 16 and then 1 at a time
    @inline(__always)
    func tail(_ w: UnsafePointer<Float>, _ acc: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
        var e = d
        while e + 16 <= valueDimension {
            var x = load16(acc + e)
            for k in range { x = _mm512_fmadd_ps(_mm512_set1_ps(w[k]), load16(values + k * valueDimension + e), x) }
            store16(x, acc + e)
            e += 16
        }
        while e < valueDimension {
            for k in range { acc[e] = acc[e].addingProduct(w[k], values[k * valueDimension + e]) }
            e += 1
        }
    }
    if d < valueDimension {
        tail(wA, accA, a)
        if let accB { tail(wB, accB, b) }
    }
}
#endif
