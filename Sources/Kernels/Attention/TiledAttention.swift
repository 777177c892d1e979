// Flash attention in 64 × 64 tiles, as llama.cpp's CPU backend computes it for micro-batches
// of at least `attentionTile` tokens: scores, softmax and output in float, one tile of query
// rows against one tile of cache positions at a time.
import Foundation
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// Query rows and cache positions per tile of ggml's tiled flash-attention kernel, which
/// llama.cpp's CPU backend runs when a micro-batch holds at least this many tokens.
let attentionTile = 64

/// Scratch of `attendHeadTile`: per query row an F32 accumulator, max, sum, scores and visible
/// range; one K tile transposed and one V tile, in float.
struct TileScratch {
    let acc, maxima, sums, keys, values, scores: UnsafeMutablePointer<Float>
    /// Per row of the tile: its first and one-past-last visible position, relative to the tile.
    let bounds: UnsafeMutablePointer<Int>
    /// A zero key, read for the positions past the cache in the tile's last group of 8.
    let zeroKey: UnsafeMutablePointer<Float16>
    init(headDimension: Int, valueDimension: Int) {
        acc = .allocate(capacity: attentionTile * valueDimension)
        maxima = .allocate(capacity: attentionTile)
        sums = .allocate(capacity: attentionTile)
        keys = .allocate(capacity: headDimension * attentionTile)
        values = .allocate(capacity: attentionTile * valueDimension)
        scores = .allocate(capacity: attentionTile * attentionTile)
        bounds = .allocate(capacity: 2 * attentionTile)
        zeroKey = .allocate(capacity: headDimension)
        zeroKey.initialize(repeating: 0, count: headDimension)
    }
    func deallocate() {
        for p in [acc, maxima, sums, keys, values, scores] { p.deallocate() }
        bounds.deallocate(); zeroKey.deallocate()
    }
}

/// softmax(q·Kᵀ·scale)·V for `rows` (≤ 64) consecutive query rows of one head, with the floats
/// of ggml's tiled flash-attention kernel: cache positions in tiles of 64 from position 0;
/// scores from the float query and the keys in float, each a fused chain over the head
/// dimension; per tile, the row's max, a rescale by expf(old − new max) when it grows, weights
/// e^(s − max) by `ggmlExp8` summed 16 at a time into a double, and the output accumulated in
/// float as one fused chain over the positions; finally out = acc · (1/S).
/// With a `softCap` (≠ 0), scores become softCap · tanh(score) before the mask (`capScores`).
/// Row i sits at cache position `firstPosition + i` and sees `visible(position)` positions.
///
/// Work ggml does on masked positions is skipped where its result provably is not used: a
/// masked score is −∞, which changes no max, has weight exactly +0 (adding +0 changes no sum
/// of these non-negative weights) and is not accumulated. So scores are computed only for the
/// 8-lane groups holding a visible position, and 16-weight groups with none add nothing.
/// Scores are computed 4 query rows × 16 positions at a time and V is accumulated 2 rows ×
/// 32 lanes at a time (each K/V load feeds several rows); every row's chains keep their order.
@inline(__always)
func attendHeadTile(query: UnsafePointer<Float>, queryStride: Int, rows: Int, firstPosition: Int, window: Int?,
                    keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                    values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int,
                    headDimension: Int, valueDimension: Int, scale: Float, softCap: Float = 0,
                    scratch t: TileScratch, into out: UnsafeMutablePointer<Float>, outStride: Int) {
    let T = attentionTile
    // the V products in 512-bit vectors where the CPU has them (the same chains, 16 lanes wide)
    @inline(__always)
    func accumulate(_ wA: UnsafePointer<Float>, _ wB: UnsafePointer<Float>, _ accA: UnsafeMutablePointer<Float>,
                    _ accB: UnsafeMutablePointer<Float>?, _ a: Range<Int>, _ b: Range<Int>) {
        if avx512AccumulatePairIfEnabled(weights: wA, wB, accA, accB, values: t.values, valueDimension: valueDimension,
                                         a, b) { return }
        accumulatePair(weights: wA, wB, accA, accB, values: t.values, valueDimension: valueDimension, a, b)
    }
    t.acc.initialize(repeating: 0, count: rows * valueDimension)
    t.maxima.initialize(repeating: -.infinity, count: rows)
    t.sums.initialize(repeating: 0, count: rows)
    let lastPosition = firstPosition + rows - 1
    let lowest = window.map { max(0, firstPosition - $0 + 1) } ?? 0
    let lanes = SIMD8<Float>(0, 1, 2, 3, 4, 5, 6, 7)
    for tileStart in stride(from: lowest / T * T, through: lastPosition, by: T) {
        let count = min(T, lastPosition + 1 - tileStart)
        // K tile transposed (dimension-major, positions in lanes) and V tile, in float
        transposeKeys(keys + tileStart, keyOffset: keyOffset, count: count, headDimension: headDimension,
                      zero: t.zeroKey, into: t.keys)
        for k in 0..<count {
            let value = values[tileStart + k] + valueOffset
            var d = 0
            while d + 8 <= valueDimension { store8(load8(value + d), t.values + k * valueDimension + d); d += 8 }
            while d < valueDimension { t.values[k * valueDimension + d] = Float(value[d]); d += 1 }
        }
        // each row's visible positions in this tile: lo..<hi relative to tileStart, empty for
        // a tile after the row's position or before its window
        for r in 0..<rows {
            let position = firstPosition + r
            let first = window.map { max(0, position - $0 + 1) } ?? 0
            t.bounds[2 * r] = max(first, tileStart) - tileStart
            t.bounds[2 * r + 1] = max(t.bounds[2 * r], min(position + 1, tileStart + count) - tileStart)
        }
        // Scores of 4 rows at a time (rows past `rows` repeat the last query and are unused),
        // over the 8-lane groups any of them sees.
        for r0 in stride(from: 0, to: rows, by: 4) {
            var gLo = T / 8, gHi = 0
            for r in r0..<min(r0 + 4, rows) where t.bounds[2 * r] < t.bounds[2 * r + 1] {
                gLo = min(gLo, t.bounds[2 * r] / 8); gHi = max(gHi, (t.bounds[2 * r + 1] + 7) / 8)
            }
            let q0 = query + r0 * queryStride, q1 = query + min(r0 + 1, rows - 1) * queryStride
            let q2 = query + min(r0 + 2, rows - 1) * queryStride, q3 = query + min(r0 + 3, rows - 1) * queryStride
            let s = t.scores + r0 * T
            if gLo >= gHi { continue }
            // the product loops in 512-bit vectors where the CPU has them (the same chains, 16 lanes wide)
            if avx512TileScoresIfEnabled(q0, q1, q2, q3, keys: t.keys, tile: T, headDimension: headDimension,
                                         positions: gLo * 8..<gHi * 8, scale: scale, scores: s) {
                continue
            }
            var g = gLo
            while g + 2 <= gHi {
                var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), b0 = SIMD8<Float>(), b1 = SIMD8<Float>()
                var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), e0 = SIMD8<Float>(), e1 = SIMD8<Float>()
                var k = t.keys + g * 8
                for d in 0..<headDimension {
                    let k0 = load8(k), k1 = load8(k + 8)
                    let x0 = SIMD8<Float>(repeating: q0[d]), x1 = SIMD8<Float>(repeating: q1[d])
                    a0 = a0.addingProduct(x0, k0); a1 = a1.addingProduct(x0, k1)
                    b0 = b0.addingProduct(x1, k0); b1 = b1.addingProduct(x1, k1)
                    let x2 = SIMD8<Float>(repeating: q2[d]), x3 = SIMD8<Float>(repeating: q3[d])
                    c0 = c0.addingProduct(x2, k0); c1 = c1.addingProduct(x2, k1)
                    e0 = e0.addingProduct(x3, k0); e1 = e1.addingProduct(x3, k1)
                    k += T
                }
                let o = s + g * 8
                store8(a0 * scale, o); store8(a1 * scale, o + 8); store8(b0 * scale, o + T); store8(b1 * scale, o + T + 8)
                store8(c0 * scale, o + 2 * T); store8(c1 * scale, o + 2 * T + 8)
                store8(e0 * scale, o + 3 * T); store8(e1 * scale, o + 3 * T + 8)
                g += 2
            }
            if g < gHi {
                var a0 = SIMD8<Float>(), b0 = SIMD8<Float>(), c0 = SIMD8<Float>(), e0 = SIMD8<Float>()
                var k = t.keys + g * 8
                for d in 0..<headDimension {
                    let k0 = load8(k)
                    a0 = a0.addingProduct(SIMD8<Float>(repeating: q0[d]), k0); b0 = b0.addingProduct(SIMD8<Float>(repeating: q1[d]), k0)
                    c0 = c0.addingProduct(SIMD8<Float>(repeating: q2[d]), k0); e0 = e0.addingProduct(SIMD8<Float>(repeating: q3[d]), k0)
                    k += T
                }
                let o = s + g * 8
                store8(a0 * scale, o); store8(b0 * scale, o + T); store8(c0 * scale, o + 2 * T); store8(e0 * scale, o + 3 * T)
            }
        }
        // Per row: mask, max, rescale, weights and their sum.
        for r in 0..<rows {
            let (lo, hi) = (t.bounds[2 * r], t.bounds[2 * r + 1])
            if lo >= hi { continue }
            let w = t.scores + r * T
            let (gLo, gHi) = (lo / 8, (hi + 7) / 8)
            capScores(w + gLo * 8, count: (gHi - gLo) * 8, stride: 1, cap: softCap)
            // masked lanes of the edge groups → −∞; the max lane by lane, then across lanes
            // (the same value as ggml's scan: only the sign of a zero max could differ, and no
            // result depends on it)
            var laneMax = SIMD8<Float>(repeating: -.infinity)
            for g in gLo..<gHi {
                var x = load8(w + g * 8)
                if g * 8 < lo || g * 8 + 8 > hi {
                    let k = lanes + Float(g * 8)
                    x = x.replacing(with: -.infinity, where: (k .< Float(lo)) .| (k .>= Float(hi)))
                    store8(x, w + g * 8)
                }
                laneMax = laneMax.replacing(with: x, where: x .> laneMax)
            }
            var tileMax = -Float.infinity
            for i in 0..<8 where laneMax[i] > tileMax { tileMax = laneMax[i] }
            let old = t.maxima[r], new = max(old, tileMax)
            let acc = t.acc + r * valueDimension
            if new > old {
                let ms = expf(old - new)
                var d = 0
                while d + 8 <= valueDimension { store8(load8(acc + d) * ms, acc + d); d += 8 }
                while d < valueDimension { acc[d] *= ms; d += 1 }
                t.sums[r] *= ms
            }
            t.maxima[r] = new
            var total: Double = 0
            let m = SIMD8<Float>(repeating: new)
            for c in stride(from: gLo / 2 * 16, to: gHi * 8, by: 16) {
                // (a half outside the visible groups: all −∞ in ggml, weights +0)
                let low = c >= gLo * 8 ? ggmlExp8(load8(w + c) - m) : SIMD8<Float>()
                let high = c + 8 < gHi * 8 ? ggmlExp8(load8(w + c + 8) - m) : SIMD8<Float>()
                store8(low, w + c); store8(high, w + c + 8)
                total += Double(reduceAdd16(low, high))
            }
            t.sums[r] = Float(Double(t.sums[r]) + total)
        }
        // acc += Σ w_k · v_k over the visible positions, one fused chain per element.
        var r = 0
        while r < rows {
            let (loA, hiA) = (t.bounds[2 * r], t.bounds[2 * r + 1])
            if r + 1 < rows, loA < hiA, t.bounds[2 * r + 2] < t.bounds[2 * r + 3] {
                let (loB, hiB) = (t.bounds[2 * r + 2], t.bounds[2 * r + 3])
                accumulate(t.scores + r * T, t.scores + (r + 1) * T, t.acc + r * valueDimension,
                           t.acc + (r + 1) * valueDimension, loA..<hiA, loB..<hiB)
                r += 2
            } else {
                accumulate(t.scores + r * T, t.scores + r * T, t.acc + r * valueDimension, nil, loA..<hiA, 0..<0)
                r += 1
            }
        }
    }
    for r in 0..<rows {
        let inverse: Float = t.sums[r] == 0 ? 0 : 1 / t.sums[r]
        let acc = t.acc + r * valueDimension, o = out + r * outStride
        var d = 0
        while d + 8 <= valueDimension { store8(load8(acc + d) * inverse, o + d); d += 8 }
        while d < valueDimension { o[d] = acc[d] * inverse; d += 1 }
    }
}

/// dst[d · 64 + k] = float(keys[k][offset + d]) for the tile's `count` positions and those up
/// to the next multiple of 16 as zero keys (masked, but scored with their 8- or 16-lane group).
/// 8 positions × 8 dimensions at a time through registers: element by element, the strided
/// stores took a third of the kernel for a 256-wide head.
@inline(__always)
func transposeKeys(_ keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int, count: Int, headDimension: Int,
                   zero: UnsafePointer<Float16>, into dst: UnsafeMutablePointer<Float>) {
    let T = attentionTile
    // zero keys up to a multiple of 16 positions, so the 16-lane score loop reads no stale floats
    for k0 in stride(from: 0, to: (count + 15) / 16 * 16, by: 8) {
        @inline(__always) func row(_ i: Int) -> UnsafePointer<Float16> { k0 + i < count ? keys[k0 + i] + keyOffset : zero }
        let (p0, p1, p2, p3, p4, p5, p6, p7) = (row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7))
        var d = 0
#if arch(x86_64)
        @inline(__always) func unpackLow(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
            unsafeBitCast(_mm256_unpacklo_pd(unsafeBitCast(a, to: SIMD4<Double>.self), unsafeBitCast(b, to: SIMD4<Double>.self)), to: SIMD8<Float>.self)
        }
        @inline(__always) func unpackHigh(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
            unsafeBitCast(_mm256_unpackhi_pd(unsafeBitCast(a, to: SIMD4<Double>.self), unsafeBitCast(b, to: SIMD4<Double>.self)), to: SIMD8<Float>.self)
        }
        while d + 8 <= headDimension {
            // rᵢ = position i's dimensions d..<d+8; t: pairs of positions interleaved per 128-bit
            // half; u: 4 positions × (dimension j | j + 4); the halves then give the columns
            let r0 = load8(p0 + d), r1 = load8(p1 + d), r2 = load8(p2 + d), r3 = load8(p3 + d)
            let r4 = load8(p4 + d), r5 = load8(p5 + d), r6 = load8(p6 + d), r7 = load8(p7 + d)
            let t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1)
            let t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3)
            let t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5)
            let t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7)
            let u0 = unpackLow(t0, t2), u1 = unpackHigh(t0, t2), u2 = unpackLow(t1, t3), u3 = unpackHigh(t1, t3)
            let u4 = unpackLow(t4, t6), u5 = unpackHigh(t4, t6), u6 = unpackLow(t5, t7), u7 = unpackHigh(t5, t7)
            let o = dst + d * T + k0
            store8(SIMD8<Float>(lowHalf: u0.lowHalf, highHalf: u4.lowHalf), o)
            store8(SIMD8<Float>(lowHalf: u1.lowHalf, highHalf: u5.lowHalf), o + T)
            store8(SIMD8<Float>(lowHalf: u2.lowHalf, highHalf: u6.lowHalf), o + 2 * T)
            store8(SIMD8<Float>(lowHalf: u3.lowHalf, highHalf: u7.lowHalf), o + 3 * T)
            store8(SIMD8<Float>(lowHalf: u0.highHalf, highHalf: u4.highHalf), o + 4 * T)
            store8(SIMD8<Float>(lowHalf: u1.highHalf, highHalf: u5.highHalf), o + 5 * T)
            store8(SIMD8<Float>(lowHalf: u2.highHalf, highHalf: u6.highHalf), o + 6 * T)
            store8(SIMD8<Float>(lowHalf: u3.highHalf, highHalf: u7.highHalf), o + 7 * T)
            d += 8
        }
#endif
        while d < headDimension {
            let o = dst + d * T + k0
            o[0] = Float(p0[d]); o[1] = Float(p1[d]); o[2] = Float(p2[d]); o[3] = Float(p3[d])
            o[4] = Float(p4[d]); o[5] = Float(p5[d]); o[6] = Float(p6[d]); o[7] = Float(p7[d])
            d += 1
        }
    }
}

/// accA += Σ_{k ∈ a} wA[k] · v_k and accB likewise over b (nil: row A alone), each element one
/// fused chain over k in order. Where the ranges overlap a V load feeds both rows (32 lanes ×
/// 2 rows: eight independent chains); the rest are the prefix and suffix of one row.
@inline(__always)
func accumulatePair(weights wA: UnsafePointer<Float>, _ wB: UnsafePointer<Float>,
                    _ accA: UnsafeMutablePointer<Float>, _ accB: UnsafeMutablePointer<Float>?,
                    values: UnsafePointer<Float>, valueDimension: Int, _ a: Range<Int>, _ b: Range<Int>) {
    let common = max(a.lowerBound, b.lowerBound)..<max(max(a.lowerBound, b.lowerBound), min(a.upperBound, b.upperBound))
    // prefix/suffix of one row: a 32-lane chain over `range` (same order as the shared loop)
    @inline(__always)
    func single(_ x: inout (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>), _ w: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                _ range: Range<Int>) {
        for k in range {
            let y = SIMD8<Float>(repeating: w[k]), p = v + k * valueDimension
            x.0 = x.0.addingProduct(y, load8(p)); x.1 = x.1.addingProduct(y, load8(p + 8))
            x.2 = x.2.addingProduct(y, load8(p + 16)); x.3 = x.3.addingProduct(y, load8(p + 24))
        }
    }
    var d = 0
    while d + 32 <= valueDimension {
        let v = values + d
        var x = (load8(accA + d), load8(accA + d + 8), load8(accA + d + 16), load8(accA + d + 24))
        if let accB {
            var y = (load8(accB + d), load8(accB + d + 8), load8(accB + d + 16), load8(accB + d + 24))
            if common.isEmpty {
                single(&x, wA, v, a); single(&y, wB, v, b)
            } else {
                single(&x, wA, v, a.lowerBound..<common.lowerBound)
                single(&y, wB, v, b.lowerBound..<common.lowerBound)
                for k in common {
                    let p = v + k * valueDimension
                    let v0 = load8(p), v1 = load8(p + 8), v2 = load8(p + 16), v3 = load8(p + 24)
                    let s = SIMD8<Float>(repeating: wA[k]), u = SIMD8<Float>(repeating: wB[k])
                    x.0 = x.0.addingProduct(s, v0); x.1 = x.1.addingProduct(s, v1)
                    y.0 = y.0.addingProduct(u, v0); y.1 = y.1.addingProduct(u, v1)
                    x.2 = x.2.addingProduct(s, v2); x.3 = x.3.addingProduct(s, v3)
                    y.2 = y.2.addingProduct(u, v2); y.3 = y.3.addingProduct(u, v3)
                }
                single(&x, wA, v, common.upperBound..<a.upperBound)
                single(&y, wB, v, common.upperBound..<b.upperBound)
            }
            store8(y.0, accB + d); store8(y.1, accB + d + 8); store8(y.2, accB + d + 16); store8(y.3, accB + d + 24)
        } else {
            single(&x, wA, v, a)
        }
        store8(x.0, accA + d); store8(x.1, accA + d + 8); store8(x.2, accA + d + 16); store8(x.3, accA + d + 24)
        d += 32
    }
    // the last < 32 lanes row by row
    @inline(__always)
    func tail(_ w: UnsafePointer<Float>, _ acc: UnsafeMutablePointer<Float>, _ range: Range<Int>) {
        var e = d
        while e + 8 <= valueDimension {
            var x = load8(acc + e)
            for k in range { x = x.addingProduct(SIMD8<Float>(repeating: w[k]), load8(values + k * valueDimension + e)) }
            store8(x, acc + e)
            e += 8
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
