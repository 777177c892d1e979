import Foundation
import Kernels
@testable import Models
import Testing

/// The optimized tiled flash-attention kernel gives exactly the floats of its straightforward form.
@Suite struct TiledAttentionTests {
    @Test(arguments: [(64, 64), (256, 256), (40, 72), (36, 20)])
    func tiledKernelEqualsReference(headDimension: Int, valueDimension: Int) {
        var rng = SystemRandomNumberGenerator()
        let positions = 300
        // keys and values as the cache holds them, one half-precision row per position
        let keyRows = (0..<positions).map { _ in
            let p = UnsafeMutablePointer<Float16>.allocate(capacity: headDimension)
            for d in 0..<headDimension { p[d] = Float16(Float.random(in: -2...2, using: &rng)) }
            return UnsafePointer(p)
        }
        let valueRows = (0..<positions).map { _ in
            let p = UnsafeMutablePointer<Float16>.allocate(capacity: valueDimension)
            for d in 0..<valueDimension { p[d] = Float16(Float.random(in: -3...3, using: &rng)) }
            return UnsafePointer(p)
        }
        defer { for p in keyRows { p.deallocate() }; for p in valueRows { p.deallocate() } }
        let query = (0..<64 * headDimension).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        let scratch = TileScratch(headDimension: headDimension, valueDimension: valueDimension)
        let referenceScratch = TileScratch(headDimension: headDimension, valueDimension: valueDimension)
        defer { scratch.deallocate(); referenceScratch.deallocate() }
        var checked = 0
        // first tile, unaligned starts after a cache, partial tiles, windows cutting tiles
        for (firstPosition, rows, window) in [(0, 64, nil), (0, 37, nil), (64, 64, nil), (5, 64, nil), (150, 61, nil),
                                               (236, 64, nil), (200, 3, nil), (100, 64, 20), (180, 64, 70), (130, 50, 7),
                                               (236, 64, 1), (0, 64, 512)] as [(Int, Int, Int?)] {
            // both kernel families: the AVX-512 product loops must give the AVX2 floats
            var out = [KernelISA: [Float]]()
            var expected = [Float](repeating: 0, count: rows * valueDimension)
            keyRows.withUnsafeBufferPointer { k in valueRows.withUnsafeBufferPointer { v in query.withUnsafeBufferPointer { q in
                for isa in KernelISA.allCases {
                    var o = [Float](repeating: 0, count: rows * valueDimension)
                    o.withUnsafeMutableBufferPointer { o in
                        CPUDispatch.with(isa) {
                            attendHeadTile(query: q.baseAddress!, queryStride: headDimension, rows: rows, firstPosition: firstPosition,
                                           window: window, keys: k.baseAddress!, keyOffset: 0, values: v.baseAddress!, valueOffset: 0,
                                           headDimension: headDimension, valueDimension: valueDimension, scale: 0.125,
                                           scratch: scratch, into: o.baseAddress!, outStride: valueDimension)
                        }
                    }
                    out[isa] = o
                }
                expected.withUnsafeMutableBufferPointer { o in
                    attendHeadTileReference(query: q.baseAddress!, queryStride: headDimension, rows: rows, firstPosition: firstPosition,
                                            window: window, keys: k.baseAddress!, keyOffset: 0, values: v.baseAddress!, valueOffset: 0,
                                            headDimension: headDimension, valueDimension: valueDimension, scale: 0.125,
                                            scratch: referenceScratch, into: o.baseAddress!, outStride: valueDimension)
                }
            } } }
            for (isa, o) in out {
                #expect(o.map(\.bitPattern) == expected.map(\.bitPattern),
                        "\(isa): first \(firstPosition), rows \(rows), window \(String(describing: window))")
            }
            checked += 1
        }
        #expect(checked == 12)
    }
}

/// The tiled kernel as first written, straightforwardly row by row over whole tiles (every
/// position scored, masked ones set to −∞ and weighted e^−∞ = 0): the reference whose floats
/// `attendHeadTile` must reproduce bit for bit.
/// softmax(q·Kᵀ·scale)·V for `rows` (≤ 64) consecutive query rows of one head, with the floats
/// of ggml's tiled flash-attention kernel: cache positions in tiles of 64 from position 0;
/// scores from the float query and the keys in float, each a fused chain over the head
/// dimension; per tile, the row's max, a rescale by expf(old − new max) when it grows, weights
/// e^(s − max) by `ggmlExp8` summed 16 at a time into a double, and the output accumulated in
/// float as one fused chain over the positions; finally out = acc · (1/S).
/// Row i sits at cache position `firstPosition + i` and sees `visible(position)` positions.
func attendHeadTileReference(query: UnsafePointer<Float>, queryStride: Int, rows: Int, firstPosition: Int, window: Int?,
                    keys: UnsafePointer<UnsafePointer<Float16>>, keyOffset: Int,
                    values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int,
                    headDimension: Int, valueDimension: Int, scale: Float,
                    scratch t: TileScratch, into out: UnsafeMutablePointer<Float>, outStride: Int) {
    let T = attentionTile
    t.acc.initialize(repeating: 0, count: rows * valueDimension)
    t.maxima.initialize(repeating: -.infinity, count: rows)
    t.sums.initialize(repeating: 0, count: rows)
    let lastPosition = firstPosition + rows - 1
    let lowest = window.map { max(0, firstPosition - $0 + 1) } ?? 0
    for tileStart in stride(from: lowest / T * T, through: lastPosition, by: T) {
        let count = min(T, lastPosition + 1 - tileStart)
        // K tile transposed (dimension-major) and V tile, in float
        for k in 0..<count {
            let key = keys[tileStart + k] + keyOffset
            for d in 0..<headDimension { t.keys[d * T + k] = Float(key[d]) }
            let value = values[tileStart + k] + valueOffset
            var d = 0
            while d + 8 <= valueDimension { store8(load8(value + d), t.values + k * valueDimension + d); d += 8 }
            while d < valueDimension { t.values[k * valueDimension + d] = Float(value[d]); d += 1 }
        }
        for k in count..<T { for d in 0..<headDimension { t.keys[d * T + k] = 0 } }
        for r in 0..<rows {
            let position = firstPosition + r
            let first = window.map { max(0, position - $0 + 1) } ?? 0
            let (lo, hi) = (max(first, tileStart), min(position + 1, tileStart + count))
            if lo >= hi { continue }  // (a tile after this row's position, or before its window)
            let visible = lo..<hi
            let q = query + r * queryStride
            var s = (Float8(), Float8(), Float8(), Float8(), Float8(), Float8(), Float8(), Float8())
            for d in 0..<headDimension {
                let x = Float8(repeating: q[d]), k = t.keys + d * T
                s.0 = s.0.addingProduct(x, load8(k)); s.1 = s.1.addingProduct(x, load8(k + 8))
                s.2 = s.2.addingProduct(x, load8(k + 16)); s.3 = s.3.addingProduct(x, load8(k + 24))
                s.4 = s.4.addingProduct(x, load8(k + 32)); s.5 = s.5.addingProduct(x, load8(k + 40))
                s.6 = s.6.addingProduct(x, load8(k + 48)); s.7 = s.7.addingProduct(x, load8(k + 56))
            }
            let w = t.scores
            store8(s.0 * scale, w); store8(s.1 * scale, w + 8); store8(s.2 * scale, w + 16); store8(s.3 * scale, w + 24)
            store8(s.4 * scale, w + 32); store8(s.5 * scale, w + 40); store8(s.6 * scale, w + 48); store8(s.7 * scale, w + 56)
            // masked (outside the window, in the future, past the cache) → −∞
            for k in 0..<T where !visible.contains(tileStart + k) { w[k] = -.infinity }
            var tileMax = -Float.infinity
            for k in 0..<T where w[k] > tileMax { tileMax = w[k] }
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
            for c in stride(from: 0, to: T, by: 16) {
                let lo = ggmlExp8(load8(w + c) - m), hi = ggmlExp8(load8(w + c + 8) - m)
                store8(lo, w + c); store8(hi, w + c + 8)
                total += Double(reduceAdd16(lo, hi))
            }
            t.sums[r] = Float(Double(t.sums[r]) + total)
            // acc += Σ w_k · v_k, one fused chain per element (masked weights are 0: skipped)
            // (32 lanes at a time: four independent chains keep the FMA units busy)
            var d = 0
            while d + 32 <= valueDimension {
                var a0 = load8(acc + d), a1 = load8(acc + d + 8), a2 = load8(acc + d + 16), a3 = load8(acc + d + 24)
                for k in visible {
                    let x = Float8(repeating: w[k - tileStart]), v = t.values + (k - tileStart) * valueDimension + d
                    a0 = a0.addingProduct(x, load8(v)); a1 = a1.addingProduct(x, load8(v + 8))
                    a2 = a2.addingProduct(x, load8(v + 16)); a3 = a3.addingProduct(x, load8(v + 24))
                }
                store8(a0, acc + d); store8(a1, acc + d + 8); store8(a2, acc + d + 16); store8(a3, acc + d + 24)
                d += 32
            }
            while d + 8 <= valueDimension {
                var a = load8(acc + d)
                for k in visible { a = a.addingProduct(Float8(repeating: w[k - tileStart]), load8(t.values + (k - tileStart) * valueDimension + d)) }
                store8(a, acc + d)
                d += 8
            }
            while d < valueDimension {
                for k in visible { acc[d] = acc[d].addingProduct(w[k - tileStart], t.values[(k - tileStart) * valueDimension + d]) }
                d += 1
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

/// The row kernel (decoding, small batches) gives the floats of its element-by-element form:
/// ggml's online softmax with the output accumulated in half precision.
@Suite struct RowAttentionTests {
    /// `count` cache rows of `width` random halves in `range` (deallocated by the caller).
    static func halfRows(_ count: Int, _ width: Int, _ range: ClosedRange<Float>,
                         _ rng: inout SystemRandomNumberGenerator) -> [UnsafePointer<Float16>] {
        (0..<count).map { _ in
            let p = UnsafeMutablePointer<Float16>.allocate(capacity: width)
            for d in 0..<width { p[d] = Float16(Float.random(in: range, using: &rng)) }
            return UnsafePointer(p)
        }
    }

    @Test(arguments: [(64, 64), (256, 256), (40, 72), (36, 20), (64, 136)])
    func rowKernelEqualsScalarForm(headDimension: Int, valueDimension: Int) {
        var rng = SystemRandomNumberGenerator()
        let positions = 97
        let keyRows = Self.halfRows(positions, headDimension, -2...2, &rng)
        let valueRows = Self.halfRows(positions, valueDimension, -3...3, &rng)
        defer { for p in keyRows + valueRows { p.deallocate() } }
        let query = (0..<headDimension).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        let scratch = HeadScratch(headDimension: headDimension, positions: positions, valueDimension: valueDimension)
        defer { scratch.deallocate() }
        for range in [0..<positions, 30..<31, 5..<70] {
            var out = [Float](repeating: 0, count: valueDimension)
            keyRows.withUnsafeBufferPointer { k in valueRows.withUnsafeBufferPointer { v in
                attendHeadRow(query: query, keys: k.baseAddress!, keyOffset: 0, values: v.baseAddress!, valueOffset: 0,
                              positions: range, headDimension: headDimension, valueDimension: valueDimension,
                              scale: 0.125, scratch: scratch, into: &out)
            } }
            let qHalf = query.map { Float(Float16($0)) }
            let scores = range.map { p in dotHalfGGML(keyRows[p], qHalf, count: headDimension) * 0.125 }
            var acc = [Float](repeating: 0, count: valueDimension)
            var (m, sum) = (-Float.infinity, Float(0))
            for (i, p) in range.enumerated() {
                var (ms, vs): (Float, Float) = (1, 1)
                if scores[i] > m { ms = expf(m - scores[i]); m = scores[i] } else { vs = expf(scores[i] - m) }
                sum = vs.addingProduct(sum, ms)
                for d in 0..<valueDimension {
                    if ms != 1 { acc[d] = Float(Float16(acc[d] * ms)) }
                    acc[d] = Float(Float16(acc[d].addingProduct(Float(valueRows[p][d]), vs)))
                }
            }
            let expected = acc.map { $0 * (1 / sum) }
            #expect(out.map(\.bitPattern) == expected.map(\.bitPattern), "positions \(range)")
        }
    }

    /// The grouped row kernel (several query heads of one KV group at once, in 512-bit vectors on
    /// AVX-512 CPUs, 256-bit ones elsewhere) gives each head the floats of the one-head kernel.
    @Test(arguments: [(64, 64, 3), (256, 256, 4), (64, 64, 8), (40, 64, 2), (128, 128, 1)])
    func groupedRowKernelEqualsOneHead(headDimension: Int, valueDimension: Int, group: Int) {
        var rng = SystemRandomNumberGenerator()
        let positions = 83
        let keyRows = Self.halfRows(positions, headDimension, -2...2, &rng)
        let valueRows = Self.halfRows(positions, valueDimension, -3...3, &rng)
        defer { for p in keyRows + valueRows { p.deallocate() } }
        let together = rowKernelHeads(group: group, valueDimension: valueDimension)
        #expect(group % together == 0)
        let queries = (0..<headDimension * together).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        let grouped = HeadScratch(headDimension: headDimension, positions: positions, valueDimension: valueDimension,
                                  heads: together)
        let single = HeadScratch(headDimension: headDimension, positions: positions, valueDimension: valueDimension)
        defer { grouped.deallocate(); single.deallocate() }
        for range in [0..<positions, 30..<31, 5..<70] {
            var out = [Float](repeating: 0, count: valueDimension * together)
            var expected = out
            keyRows.withUnsafeBufferPointer { k in valueRows.withUnsafeBufferPointer { v in
                attendHeadsRow(query: queries, heads: together, keys: k.baseAddress!, keyOffset: 0,
                               values: v.baseAddress!, valueOffset: 0, positions: range, headDimension: headDimension,
                               valueDimension: valueDimension, scale: 0.125, scratch: grouped, into: &out)
                queries.withUnsafeBufferPointer { q in expected.withUnsafeMutableBufferPointer { e in
                    for j in 0..<together {
                        attendHeadRow(query: q.baseAddress! + j * headDimension, keys: k.baseAddress!, keyOffset: 0,
                                      values: v.baseAddress!, valueOffset: 0, positions: range,
                                      headDimension: headDimension, valueDimension: valueDimension, scale: 0.125,
                                      scratch: single, into: e.baseAddress! + j * valueDimension)
                    }
                } }
            } }
            #expect(out.map(\.bitPattern) == expected.map(\.bitPattern), "positions \(range), \(together) heads")

            // the split-KV form: chunks of 30 cells over 96, merged per head
            var split = [Float](repeating: 0, count: valueDimension * together)
            var splitExpected = split
            keyRows.withUnsafeBufferPointer { k in valueRows.withUnsafeBufferPointer { v in
                attendHeadsRowSplit(query: queries, heads: together, keys: k.baseAddress!, keyOffset: 0,
                                    values: v.baseAddress!, valueOffset: 0, positions: range, cells: 96, chunkSize: 30,
                                    headDimension: headDimension, valueDimension: valueDimension, scale: 0.125,
                                    scratch: grouped, into: &split)
                queries.withUnsafeBufferPointer { q in splitExpected.withUnsafeMutableBufferPointer { e in
                    for j in 0..<together {
                        attendHeadRowSplit(query: q.baseAddress! + j * headDimension, keys: k.baseAddress!, keyOffset: 0,
                                           values: v.baseAddress!, valueOffset: 0, positions: range, cells: 96,
                                           chunkSize: 30, headDimension: headDimension, valueDimension: valueDimension,
                                           scale: 0.125, scratch: single, into: e.baseAddress! + j * valueDimension)
                    }
                } }
            } }
            #expect(split.map(\.bitPattern) == splitExpected.map(\.bitPattern), "split, positions \(range)")
            #expect(!split.contains { $0.isNaN })
        }
    }
}
