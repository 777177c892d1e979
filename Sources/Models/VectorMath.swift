import Foundation
import Kernels
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif
import CIntrinsics
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import KernelsAVX512
#endif

// SIMD loops for the element-wise parts of the forward pass (norms, activations, attention).
// Each handles any length: 8 lanes at a time, then a scalar tail doing the same arithmetic.

typealias Float8 = SIMD8<Float>

@inline(__always)
func load8(_ p: UnsafePointer<Float>) -> Float8 { UnsafeRawPointer(p).loadUnaligned(as: Float8.self) }

@inline(__always)
func store8(_ v: Float8, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Float8.self) }

@inline(__always)
func load8(_ p: UnsafePointer<Float16>) -> Float8 {
#if arch(x86_64)
    _mm256_cvtph_ps(UnsafeRawPointer(p).loadUnaligned(as: __m128i.self))  // the generic conversion is not always inlined
#else
    Float8(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float16>.self))
#endif
}

/// v rounded to half precision (nearest even) and back: vcvtps2ph + vcvtph2ps (F16C), inlined
/// at every use (an earlier float-arithmetic emulation cost ~12 instructions per vector, 10 %
/// of a 16-sequence decode step in the row attention kernel).
@inline(__always)
func roundedToHalf(_ v: Float8) -> Float8 {
#if arch(x86_64)
    swiftlet_round_to_half8(v)
#else
    Float8(SIMD8<Float16>(v))
#endif
}

@inline(__always)
func sum(_ v: Float8) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    return b[0] + b[1]
}

/// dst[i] = src[i] / rms(src) · w[i], as ggml's rms_norm (+ mul by the weight): the float
/// squares are summed one after another in double, mean = sum / n in double rounded to float,
/// scale = 1 / sqrtf(mean + eps), then (x · scale) · w. Same floats as llama.cpp's CPU backend;
/// the sequential sum costs ~1 % of a decode step.
@inline(__always)
func rmsNormalize(_ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>, count: Int, epsilon: Float,
                  into dst: UnsafeMutablePointer<Float>) {
    var sumSquares: Double = 0
    for i in 0..<count { sumSquares += Double(src[i] * src[i]) }
    let mean = Float(sumSquares / Double(count))
    let scale = 1 / (mean + epsilon).squareRoot()
    var i = 0
    while i + 8 <= count {
        store8(load8(src + i) * scale * load8(w + i), dst + i)
        i += 8
    }
    while i < count { dst[i] = src[i] * scale * w[i]; i += 1 }
}

/// `rmsNormalize` over consecutive slices `slices` of `length` floats (rows, or per-head
/// pieces of rows), all with weight `w`. Eight slices run at once, one per SIMD lane, so their
/// sequential double sums are eight independent chains instead of one: the same additions in
/// the same order in each lane, so the same floats, at several times the throughput.
func rmsNormalizeSlices(_ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>, length: Int, slices: Range<Int>,
                        epsilon: Float, into dst: UnsafeMutablePointer<Float>) {
    var s = slices.lowerBound
    while s + 8 <= slices.upperBound {
        let base = src + s * length
        var sums = SIMD8<Double>(repeating: 0)
        for i in 0..<length {
            let p = base + i
            let v = Float8(p[0], p[length], p[2 * length], p[3 * length],
                           p[4 * length], p[5 * length], p[6 * length], p[7 * length])
            sums += SIMD8<Double>(v * v)
        }
        let means = SIMD8<Float>(sums / Double(length))
        for lane in 0..<8 {
            let scale = 1 / (means[lane] + epsilon).squareRoot()
            let from = base + lane * length, to = dst + (s + lane) * length
            var i = 0
            while i + 8 <= length {
                store8(load8(from + i) * scale * load8(w + i), to + i)
                i += 8
            }
            while i < length { to[i] = from[i] * scale * w[i]; i += 1 }
        }
        s += 8
    }
    while s < slices.upperBound {
        rmsNormalize(src + s * length, w, count: length, epsilon: epsilon, into: dst + s * length)
        s += 1
    }
}

/// g[i] = gelu(g[i]) · u[i] as ggml's geglu: 0 for x ≤ −10, x·u for x ≥ 10, otherwise the
/// tanh-GELU of x rounded to half, itself rounded to half (ggml's 65536-entry table), times u.
@inline(__always)
func geglu(_ g: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, count: Int) {
    geluHalfTable.withUnsafeBufferPointer { table in
        // 8 at a time: the half rounding and both ends as vector selects, the table read per lane
        var i = 0
        while i + 8 <= count {
            let x = load8(g + i), v = load8(u + i)
            let bits = SIMD8<Int32>(truncatingIfNeeded: unsafeBitCast(SIMD8<Float16>(x), to: SIMD8<UInt16>.self))
            let t = Float8(table[Int(bits[0])], table[Int(bits[1])], table[Int(bits[2])], table[Int(bits[3])],
                           table[Int(bits[4])], table[Int(bits[5])], table[Int(bits[6])], table[Int(bits[7])])
            var r = t * v
            r.replace(with: x * v, where: x .>= 10)
            r.replace(with: 0, where: x .<= -10)
            store8(r, g + i)
            i += 8
        }
        for i in i..<count {
            let x = g[i]
            if x <= -10 { g[i] = 0 } else if x >= 10 { g[i] = x * u[i] } else {
                g[i] = table[Int(Float16(x).bitPattern)] * u[i]
            }
        }
    }
}

/// gelu(h) rounded to half for every half h (by bit pattern), as float. The formula is ggml's
/// 0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²))) with its compiler's fusion of 0.044715·x·x + 1.
let geluHalfTable: [Float] = (0..<65536).map { bits in
    let x = Float(Float16(bitPattern: UInt16(bits)))
    let inner = Float(1).addingProduct(0.044715 * x, x)
    return Float(Float16(0.5 * x * (1 + tanhf(Float(0.797_884_560_802_865_4) * x * inner))))
}

/// g[i] = silu(g[i]) · u[i] with the same floats as ggml's swiglu on an AVX-512 build:
/// silu(x) = x / (1 + e^(0 − x)) with `ggmlExp8`, then times u. ggml runs 16 lanes at a time
/// and a scalar libm expf on a row's last `columns % 16` elements; so do we. `elements` are flat
/// indices into rows of `columns` (any range: each element depends only on its value and column).
@inline(__always)
func swiglu(_ g: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, elements: Range<Int>, columns: Int) {
    let body = columns / 16 * 16
    var i = elements.lowerBound
    while i < elements.upperBound {
        let rowStart = i / columns * columns
        let bodyEnd = min(rowStart + body, elements.upperBound), rowEnd = min(rowStart + columns, elements.upperBound)
        while i + 8 <= bodyEnd {
            let x = load8(g + i)
            store8(x / (1 + ggmlExp8(Float8() - x)) * load8(u + i), g + i)
            i += 8
        }
        while i < bodyEnd {  // a piece boundary inside a 16-lane block: the same lane arithmetic
            let x = Float8(repeating: g[i])
            g[i] = (x / (1 + ggmlExp8(Float8() - x)))[0] * u[i]
            i += 1
        }
        while i < rowEnd { g[i] = g[i] / (1 + expf(-g[i])) * u[i]; i += 1 }
    }
}

/// e^x for 8 lanes with ggml's SIMD expf (`ggml_v_expf`, the AVX-512 variant, which
/// llama.cpp's CPU backend uses for SiLU and for softmax on this hardware): n = round(x/ln2)
/// by the 1.5·2²³ shift, b = x − n·ln2 in two fused steps, a degree-5 polynomial (ARM
/// optimized-routines' expf coefficients) evaluated with the same fused multiply-adds, then
/// scaled by 2ⁿ as vscalefps does (one rounding). |n| > 192 gives 0 or +∞.
@inline(__always)
func ggmlExp8(_ x: Float8) -> Float8 {
    let shift = Float8(repeating: 0x1.8p23)
    let z = shift.addingProduct(x, Float8(repeating: 0x1.715476p+0))
    let n = z - shift
    let b = x.addingProduct(-n, Float8(repeating: 0x1.62e4p-1)).addingProduct(-n, Float8(repeating: 0x1.7f7d1cp-20))
    let u = b * b
    let p = Float8(repeating: 0x1.573e2ep-5).addingProduct(Float8(repeating: 0x1.0e4020p-7), b)
    let q = Float8(repeating: 0x1.fffdb6p-2).addingProduct(Float8(repeating: 0x1.555e66p-3), b)
    let l = Float8(repeating: 1).addingProduct(Float8(repeating: 0x1.ffffecp-1), b)
    let j = l.addingProduct(q.addingProduct(p, u), u)
    // j·2ⁿ as two exact power-of-two factors (|n| ≤ 192 → each ≤ 96), so only the last
    // multiply rounds, as scalef does for a subnormal result.
    let ni = unsafeBitCast(z, to: SIMD8<Int32>.self) &- 0x4B40_0000
    let n1 = ni &>> 1, n2 = ni &- (ni &>> 1)
    let p1 = unsafeBitCast((n1 &+ 127) &<< 23, to: Float8.self)
    let p2 = unsafeBitCast((n2 &+ 127) &<< 23, to: Float8.self)
    let result = j * p1 * p2
    let big = (n .> 192) .| (n .< -192)  // false for NaN, as an ordered compare
#if arch(x86_64)
    if _mm256_movemask_ps(unsafeBitCast(big, to: Float8.self)) == 0 { return result }
#else
    if !any(big) { return result }
#endif
    return result.replacing(with: Float8(repeating: 0).replacing(with: .infinity, where: n .> 0), where: big)
}

/// The 16 lanes `lo ++ hi` summed as GCC's _mm512_reduce_add_ps does: halves, quarters,
/// then (0+2) + (1+3).
@inline(__always)
func reduceAdd16(_ lo: Float8, _ hi: Float8) -> Float {
    let t3 = hi + lo
    let t6 = t3.highHalf + t3.lowHalf
    return (t6[0] + t6[2]) + (t6[1] + t6[3])
}

/// a[i] += b[i]
@inline(__always)
func addInPlace(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(load8(a + i) + load8(b + i), a + i); i += 8 }
    while i < count { a[i] += b[i]; i += 1 }
}

/// dst[i] = Float16(src[i]) (round to nearest even, as a scalar conversion).
@inline(__always)
func storeHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float16>, count: Int) {
    var i = 0
    while i + 8 <= count {
        UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD8<Float16>(load8(src + i)), as: SIMD8<Float16>.self)
        i += 8
    }
    while i < count { dst[i] = Float16(src[i]); i += 1 }
}

/// Σ k[i]·q[i] over two half-precision vectors (q given widened to float, see
/// `storeRoundedToHalf`, so a query is converted once, not once per cache position) as
/// ggml_vec_dot_f16 sums on an AVX-512 build without FP16 arithmetic: 64 elements per step into four 16-lane accumulators (the products
/// of two halves are exact in float), accumulators combined (0+2) + (1+3), the 16 lanes reduced
/// as _mm512_reduce_add_ps, and a tail of fewer than 64 elements added in double.
@inline(__always)
func dotHalfGGML(_ k: UnsafePointer<Float16>, _ q: UnsafePointer<Float>, count: Int) -> Float {
    dotGGML(q, count: count) { load8(k + $0) } element: { Float(k[$0]) }
}

/// `dotHalfGGML` with the key already widened to float (exactly, so the same result).
@inline(__always)
func dotHalfGGML(widened k: UnsafePointer<Float>, _ q: UnsafePointer<Float>, count: Int) -> Float {
    dotGGML(q, count: count) { load8(k + $0) } element: { k[$0] }
}

@inline(__always)
private func dotGGML(_ q: UnsafePointer<Float>, count: Int, key: (Int) -> Float8, element: (Int) -> Float) -> Float {
    var a0 = Float8(), b0 = Float8(), a1 = Float8(), b1 = Float8()
    var a2 = Float8(), b2 = Float8(), a3 = Float8(), b3 = Float8()
    var i = 0
    while i + 64 <= count {
        a0 = a0.addingProduct(key(i), load8(q + i)); b0 = b0.addingProduct(key(i + 8), load8(q + i + 8))
        a1 = a1.addingProduct(key(i + 16), load8(q + i + 16)); b1 = b1.addingProduct(key(i + 24), load8(q + i + 24))
        a2 = a2.addingProduct(key(i + 32), load8(q + i + 32)); b2 = b2.addingProduct(key(i + 40), load8(q + i + 40))
        a3 = a3.addingProduct(key(i + 48), load8(q + i + 48)); b3 = b3.addingProduct(key(i + 56), load8(q + i + 56))
        i += 64
    }
    var total = Double(reduceAdd16((a0 + a2) + (a1 + a3), (b0 + b2) + (b1 + b3)))
    while i < count { total += Double(element(i) * q[i]); i += 1 }
    return Float(total)
}

/// dst[i] = src[i] rounded to half precision, kept as float.
@inline(__always)
func storeRoundedToHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(roundedToHalf(load8(src + i)), dst + i); i += 8 }
    while i < count { dst[i] = Float(Float16(src[i])); i += 1 }
}

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
/// S = S·ms + w fused; finally out = float(acc) · (1/S).
/// (Two passes: the factors first, then the accumulation 32 lanes at a time in registers; the
/// per-element arithmetic and order are ggml's.)
@inline(__always)
func attendHeadRow(query: UnsafePointer<Float>, keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                   values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int, positions: Range<Int>,
                   headDimension: Int, valueDimension: Int, scale: Float,
                   scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) {
    storeRoundedToHalf(query, scratch.query, count: headDimension)
    _ = attendHeadRowChunk(keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                           positions: positions, headDimension: headDimension, valueDimension: valueDimension,
                           scale: scale, normalize: true, scratch: scratch, into: out)
}

/// Whether the row kernels run grouped (several query heads of a KV group side by side): the
/// 512-bit kernel on AVX-512 CPUs for outputs in whole 64-lane vectors, else the 256-bit one
/// (`rowGroupAccumulate`) for outputs in whole 32-lane vectors.
func groupedRowKernel(valueDimension: Int) -> Bool {
    avx512RowKernel ? valueDimension % 64 == 0 : valueDimension % 32 == 0
}

private var avx512RowKernel: Bool {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    CPUDispatch.current == .avx512
#else
    false
#endif
}

/// How many query heads of a KV group `attendHeadsRow` attends at once: for the grouped
/// kernel, the largest divisor of the group up to 4 (their chains interleave); else one.
func rowKernelHeads(group: Int, valueDimension: Int) -> Int {
    groupedRowKernel(valueDimension: valueDimension) ? (1...min(4, group)).last { group % $0 == 0 }! : 1
}

/// `attendHeadRow` for `heads` consecutive query heads of one KV group (head j's query at
/// `query + j · headDimension`, its output at `out + j · valueDimension`), the same floats per
/// head; with the heads side by side where `rowKernelHeads` allows.
@inline(__always)
func attendHeadsRow(query: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                    values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int, positions: Range<Int>,
                    headDimension: Int, valueDimension: Int, scale: Float,
                    scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) {
    guard groupedRowKernel(valueDimension: valueDimension) else {
        precondition(heads == 1)
        attendHeadRow(query: query, keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                      positions: positions, headDimension: headDimension, valueDimension: valueDimension, scale: scale,
                      scratch: scratch, into: out)
        return
    }
    storeRoundedToHalf(query, scratch.query, count: headDimension * heads)
    withUnsafeTemporaryAllocation(of: (max: Float, sum: Float).self, capacity: heads) { stats in
        attendHeadsRowChunk(heads: heads, keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                            positions: positions, headDimension: headDimension, valueDimension: valueDimension,
                            scale: scale, normalize: true, scratch: scratch, into: out, stats: stats.baseAddress!)
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
                        scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) {
    storeRoundedToHalf(query, scratch.query, count: headDimension)
    splitKV(heads: 1, positions: positions, cells: cells, chunkSize: chunkSize, valueDimension: valueDimension,
            partial: scratch.partial, into: out) { range, stats in
        stats[0] = attendHeadRowChunk(keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                                      positions: range, headDimension: headDimension, valueDimension: valueDimension,
                                      scale: scale, normalize: false, scratch: scratch, into: scratch.partial)
    }
}

/// `attendHeadRowSplit` for `heads` consecutive query heads of one KV group (laid out as in
/// `attendHeadsRow`), the same floats per head: each chunk runs the grouped row kernel.
@inline(__always)
func attendHeadsRowSplit(query: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>,
                         keyOffset: Int, values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int,
                         positions: Range<Int>, cells: Int, chunkSize: Int, headDimension: Int, valueDimension: Int,
                         scale: Float, scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) {
    guard groupedRowKernel(valueDimension: valueDimension) else {
        precondition(heads == 1)
        attendHeadRowSplit(query: query, keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                           positions: positions, cells: cells, chunkSize: chunkSize, headDimension: headDimension,
                           valueDimension: valueDimension, scale: scale, scratch: scratch, into: out)
        return
    }
    storeRoundedToHalf(query, scratch.query, count: headDimension * heads)
    splitKV(heads: heads, positions: positions, cells: cells, chunkSize: chunkSize, valueDimension: valueDimension,
            partial: scratch.partial, into: out) { range, stats in
        attendHeadsRowChunk(heads: heads, keys: keys, keyOffset: keyOffset, values: values, valueOffset: valueOffset,
                            positions: range, headDimension: headDimension, valueDimension: valueDimension,
                            scale: scale, normalize: false, scratch: scratch, into: scratch.partial, stats: stats)
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
                         headDimension: Int, valueDimension: Int, scale: Float, normalize: Bool,
                         scratch: HeadScratch, into out: UnsafeMutablePointer<Float>,
                         stats: UnsafeMutablePointer<(max: Float, sum: Float)>) {
    let stride = 2 * positions.count
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    if avx512RowKernel {
        avx512RowGroupScores(queries: scratch.query, heads: heads, keys: keys, keyOffset: keyOffset,
                             positions: positions, headDimension: headDimension, scale: scale,
                             scores: scratch.factors, headStride: stride)
    }
#endif
    if !avx512RowKernel {
        rowGroupScores(queries: scratch.query, heads: heads, keys: keys, keyOffset: keyOffset, positions: positions,
                       headDimension: headDimension, scale: scale, scores: scratch.factors, headStride: stride)
    }
    withUnsafeTemporaryAllocation(of: Float.self, capacity: heads) { inverses in
        for h in 0..<heads {
            stats[h] = onlineSoftmaxFactors(scratch.factors + h * stride, count: positions.count)
            inverses[h] = softmaxInverse(stats[h].sum, normalize: normalize)
        }
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        if avx512RowKernel {
            avx512RowGroupAccumulate(heads: heads, values: values, valueOffset: valueOffset, positions: positions,
                                     valueDimension: valueDimension, factors: scratch.factors, headStride: stride,
                                     inverses: inverses.baseAddress!, into: out, outStride: valueDimension)
            return
        }
#endif
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
    typealias Quad = (Float8, Float8, Float8, Float8)
    let n = positions.count, first = positions.lowerBound
    @inline(__always) func step(_ x: inout Quad, _ f: UnsafePointer<Float>, _ v: Quad) {
        let ms = f[0]
        if ms != 1 { x = (roundedToHalf(x.0 * ms), roundedToHalf(x.1 * ms), roundedToHalf(x.2 * ms), roundedToHalf(x.3 * ms)) }
        let w = Float8(repeating: f[1])
        x = (roundedToHalf(x.0.addingProduct(v.0, w)), roundedToHalf(x.1.addingProduct(v.1, w)),
             roundedToHalf(x.2.addingProduct(v.2, w)), roundedToHalf(x.3.addingProduct(v.3, w)))
    }
    @inline(__always) func store(_ x: Quad, _ h: Int, _ d: Int) {
        let s = inverses[h], o = out + h * outStride + d
        store8(x.0 * s, o); store8(x.1 * s, o + 8); store8(x.2 * s, o + 16); store8(x.3 * s, o + 24)
    }
    let zero: Quad = (Float8(), Float8(), Float8(), Float8())
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

/// The factor the row kernels' accumulated output is multiplied by: 1/S, 0 for S = 0, or 1
/// when the split-KV merge normalizes later.
@inline(__always)
func softmaxInverse(_ sum: Float, normalize: Bool) -> Float { !normalize ? 1 : sum == 0 ? 0 : 1 / sum }

/// The row kernel over `positions` with the query already in `scratch.query`: writes
/// float(acc) · (1/S) (`normalize`) or float(acc), and returns the running max and sum.
@inline(__always)
func attendHeadRowChunk(keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                        values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int, positions: Range<Int>,
                        headDimension: Int, valueDimension: Int, scale: Float, normalize: Bool,
                        scratch: HeadScratch, into out: UnsafeMutablePointer<Float>) -> (max: Float, sum: Float) {
    let qHalf = scratch.query, factors = scratch.factors
    // scores first (independent of each other), then the sequential softmax over them
    for (i, p) in positions.enumerated() {
        factors[2 * i] = dotHalfGGML(keys[p] + keyOffset, qHalf, count: headDimension) * scale
    }
    let (M, S) = onlineSoftmaxFactors(factors, count: positions.count)
    let inverse = softmaxInverse(S, normalize: normalize)
    let first = positions.lowerBound
    var d = 0
    while d + 32 <= valueDimension {
        var a0 = Float8(), a1 = Float8(), a2 = Float8(), a3 = Float8()
        for i in 0..<positions.count {
            let ms = factors[2 * i], w = Float8(repeating: factors[2 * i + 1])
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
                    headDimension: Int, valueDimension: Int, scale: Float,
                    scratch t: TileScratch, into out: UnsafeMutablePointer<Float>, outStride: Int) {
    let T = attentionTile
    // the product loops in 512-bit vectors where the CPU has them (the same chains, 16 lanes wide)
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let wide = CPUDispatch.current == .avx512
    let accumulate = wide ? avx512AccumulatePair : accumulatePair
#else
    let accumulate = accumulatePair
#endif
    t.acc.initialize(repeating: 0, count: rows * valueDimension)
    t.maxima.initialize(repeating: -.infinity, count: rows)
    t.sums.initialize(repeating: 0, count: rows)
    let lastPosition = firstPosition + rows - 1
    let lowest = window.map { max(0, firstPosition - $0 + 1) } ?? 0
    let lanes = Float8(0, 1, 2, 3, 4, 5, 6, 7)
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
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
            if wide {
                if gLo < gHi {
                    avx512TileScores(q0, q1, q2, q3, keys: t.keys, tile: T, headDimension: headDimension,
                                     positions: gLo * 8..<gHi * 8, scale: scale, scores: s)
                }
                continue
            }
#endif
            var g = gLo
            while g + 2 <= gHi {
                var a0 = Float8(), a1 = Float8(), b0 = Float8(), b1 = Float8()
                var c0 = Float8(), c1 = Float8(), e0 = Float8(), e1 = Float8()
                var k = t.keys + g * 8
                for d in 0..<headDimension {
                    let k0 = load8(k), k1 = load8(k + 8)
                    let x0 = Float8(repeating: q0[d]), x1 = Float8(repeating: q1[d])
                    a0 = a0.addingProduct(x0, k0); a1 = a1.addingProduct(x0, k1)
                    b0 = b0.addingProduct(x1, k0); b1 = b1.addingProduct(x1, k1)
                    let x2 = Float8(repeating: q2[d]), x3 = Float8(repeating: q3[d])
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
                var a0 = Float8(), b0 = Float8(), c0 = Float8(), e0 = Float8()
                var k = t.keys + g * 8
                for d in 0..<headDimension {
                    let k0 = load8(k)
                    a0 = a0.addingProduct(Float8(repeating: q0[d]), k0); b0 = b0.addingProduct(Float8(repeating: q1[d]), k0)
                    c0 = c0.addingProduct(Float8(repeating: q2[d]), k0); e0 = e0.addingProduct(Float8(repeating: q3[d]), k0)
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
            // masked lanes of the edge groups → −∞; the max lane by lane, then across lanes
            // (the same value as ggml's scan: only the sign of a zero max could differ, and no
            // result depends on it)
            var laneMax = Float8(repeating: -.infinity)
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
            let m = Float8(repeating: new)
            for c in stride(from: gLo / 2 * 16, to: gHi * 8, by: 16) {
                // (a half outside the visible groups: all −∞ in ggml, weights +0)
                let low = c >= gLo * 8 ? ggmlExp8(load8(w + c) - m) : Float8()
                let high = c + 8 < gHi * 8 ? ggmlExp8(load8(w + c + 8) - m) : Float8()
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
                           t.acc + (r + 1) * valueDimension, t.values, valueDimension, loA..<hiA, loB..<hiB)
                r += 2
            } else {
                accumulate(t.scores + r * T, t.scores + r * T, t.acc + r * valueDimension,
                           nil, t.values, valueDimension, loA..<hiA, 0..<0)
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
        @inline(__always) func unpackLow(_ a: Float8, _ b: Float8) -> Float8 {
            unsafeBitCast(_mm256_unpacklo_pd(unsafeBitCast(a, to: SIMD4<Double>.self), unsafeBitCast(b, to: SIMD4<Double>.self)), to: Float8.self)
        }
        @inline(__always) func unpackHigh(_ a: Float8, _ b: Float8) -> Float8 {
            unsafeBitCast(_mm256_unpackhi_pd(unsafeBitCast(a, to: SIMD4<Double>.self), unsafeBitCast(b, to: SIMD4<Double>.self)), to: Float8.self)
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
            store8(Float8(lowHalf: u0.lowHalf, highHalf: u4.lowHalf), o)
            store8(Float8(lowHalf: u1.lowHalf, highHalf: u5.lowHalf), o + T)
            store8(Float8(lowHalf: u2.lowHalf, highHalf: u6.lowHalf), o + 2 * T)
            store8(Float8(lowHalf: u3.lowHalf, highHalf: u7.lowHalf), o + 3 * T)
            store8(Float8(lowHalf: u0.highHalf, highHalf: u4.highHalf), o + 4 * T)
            store8(Float8(lowHalf: u1.highHalf, highHalf: u5.highHalf), o + 5 * T)
            store8(Float8(lowHalf: u2.highHalf, highHalf: u6.highHalf), o + 6 * T)
            store8(Float8(lowHalf: u3.highHalf, highHalf: u7.highHalf), o + 7 * T)
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
    func single(_ x: inout (Float8, Float8, Float8, Float8), _ w: UnsafePointer<Float>, _ v: UnsafePointer<Float>,
                _ range: Range<Int>) {
        for k in range {
            let y = Float8(repeating: w[k]), p = v + k * valueDimension
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
                    let s = Float8(repeating: wA[k]), u = Float8(repeating: wB[k])
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
            for k in range { x = x.addingProduct(Float8(repeating: w[k]), load8(values + k * valueDimension + e)) }
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
