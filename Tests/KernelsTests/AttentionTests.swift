import Foundation
@testable import Kernels
import Testing

/// Half-precision cache rows, one per position, as a KV store holds them (freed by `deallocate`).
struct HalfRows {
    let rows: [UnsafePointer<Float16>]

    init(_ count: Int, width: Int, in range: ClosedRange<Float>, _ rng: inout SplitMix) {
        rows = (0..<count).map { _ in
            let p = UnsafeMutablePointer<Float16>.allocate(capacity: width)
            for d in 0..<width { p[d] = Float16(Float.random(in: range, using: &rng)) }
            return UnsafePointer(p)
        }
    }

    func deallocate() { for p in rows { p.deallocate() } }
}

/// softmax(q·Kᵀ·scale)·V for one query row over `positions`, from the definition in double:
/// every score first, then their maximum, the weights e^(s − max), and Σ w·v / Σ w. It shares
/// nothing with the kernels (no online softmax, no tiles, no half-precision accumulator, no
/// summation order of theirs). No positions give zeros, as the kernels do. With a `softCap` c,
/// each score s becomes c·tanh(s / c).
func twoPassAttention(query: [Float], keys: [UnsafePointer<Float16>], keyOffset: Int = 0,
                      values: [UnsafePointer<Float16>], valueOffset: Int = 0, positions: Range<Int>,
                      valueDimension: Int, scale: Float, softCap: Float? = nil) -> [Double] {
    guard !positions.isEmpty else { return [Double](repeating: 0, count: valueDimension) }
    let scores = positions.map { p in
        let s = Double(scale) * query.indices.reduce(0.0) { $0 + Double(query[$1]) * Double(Float(keys[p][keyOffset + $1])) }
        return softCap.map { Double($0) * tanh(s / Double($0)) } ?? s
    }
    let top = scores.max()!
    let weights = scores.map { exp($0 - top) }
    let total = weights.reduce(0, +)
    return (0..<valueDimension).map { d in
        zip(positions, weights).reduce(0.0) { $0 + $1.1 * Double(Float(values[$1.0][valueOffset + d])) } / total
    }
}

func maxDifference(_ a: [Float], _ b: [Double]) -> Double {
    zip(a, b).map { abs(Double($0) - $1) }.max() ?? 0
}

/// Positions row `position` sees: causal, and within the window if any.
func visible(_ position: Int, window: Int?) -> Range<Int> {
    (window.map { max(0, position - $0 + 1) } ?? 0)..<position + 1
}

/// 300 cache positions of random half-precision keys (in ±2) and values (in ±3), 64 query
/// rows (in ±1.5), and the tiled kernel's scratch.
final class TileFixture {
    let headDimension: Int, valueDimension: Int
    let keys: HalfRows, values: HalfRows
    let query: [Float]
    let scratch: TileScratch
    static let scale: Float = 0.125

    init(headDimension: Int, valueDimension: Int, seed: UInt64) {
        var rng = SplitMix(state: seed)
        self.headDimension = headDimension
        self.valueDimension = valueDimension
        keys = HalfRows(300, width: headDimension, in: -2...2, &rng)
        values = HalfRows(300, width: valueDimension, in: -3...3, &rng)
        query = (0..<64 * headDimension).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        scratch = TileScratch(headDimension: headDimension, valueDimension: valueDimension)
    }

    deinit { keys.deallocate(); values.deallocate(); scratch.deallocate() }

    /// Query row r (of the 64).
    func query(_ r: Int) -> [Float] { Array(query[r * headDimension..<(r + 1) * headDimension]) }

    /// `attendHeadTile` for query rows `first..<first + rows` at cache positions from `firstPosition`.
    func run(rows: Int, firstPosition: Int, window: Int?, queryRow first: Int = 0) -> [Float] {
        var out = [Float](repeating: .nan, count: rows * valueDimension)
        keys.rows.withUnsafeBufferPointer { k in values.rows.withUnsafeBufferPointer { v in query.withUnsafeBufferPointer { q in
            attendHeadTile(query: q.baseAddress! + first * headDimension, queryStride: headDimension, rows: rows,
                           firstPosition: firstPosition, window: window, keys: k.baseAddress!, keyOffset: 0,
                           values: v.baseAddress!, valueOffset: 0, headDimension: headDimension,
                           valueDimension: valueDimension, scale: Self.scale, scratch: scratch, into: &out,
                           outStride: valueDimension)
        } } }
        return out
    }

    /// Output row r of `out`.
    func row(_ out: [Float], _ r: Int) -> [Float] { Array(out[r * valueDimension..<(r + 1) * valueDimension]) }
}

/// The tiled kernel (micro-batches of 64+ tokens), against the definition.
@Suite struct TiledAttentionTests {
    /// (first position, rows, window): the first tile, unaligned starts after a cache, partial
    /// tiles, windows cutting tiles, a window of one position, a window past the start.
    static let runs: [(Int, Int, Int?)] = [(0, 64, nil), (0, 37, nil), (64, 64, nil), (5, 64, nil), (150, 61, nil),
                                           (236, 64, nil), (200, 3, nil), (100, 64, 20), (180, 64, 70), (130, 50, 7),
                                           (236, 64, 1), (0, 64, 512)]

    /// Every row within 5·10⁻⁵ of the two-pass softmax in double. The kernel works in float
    /// (scores as fused chains over the head, ggml's polynomial e^x, float accumulation over
    /// ≤ 300 positions): its largest error on these inputs is 4.5·10⁻⁶, while on data like
    /// these one position too many or too few at an end of a range moved some output by
    /// 1.4·10⁻⁴ or more (and a window one position too wide fails every window case).
    @Test(arguments: [(64, 64), (256, 256), (40, 72), (36, 20)])
    func tiledKernelMatchesTwoPassSoftmax(headDimension: Int, valueDimension: Int) {
        let f = TileFixture(headDimension: headDimension, valueDimension: valueDimension,
                            seed: UInt64(headDimension * 1000 + valueDimension))
        for (firstPosition, rows, window) in Self.runs {
            let out = f.run(rows: rows, firstPosition: firstPosition, window: window)
            var worst = 0.0
            for r in 0..<rows {
                let expected = twoPassAttention(query: f.query(r), keys: f.keys.rows, values: f.values.rows,
                                                positions: visible(firstPosition + r, window: window),
                                                valueDimension: valueDimension, scale: TileFixture.scale)
                worst = max(worst, maxDifference(f.row(out, r), expected))
            }
            #expect(worst <= 5e-5, "first \(firstPosition), rows \(rows), window \(String(describing: window))")
        }
    }

    /// Each row's floats do not depend on the rows beside it: scores are computed 4 rows and V
    /// accumulated 2 rows at a time, but every row keeps its own chains, so a row attended
    /// alone is bitwise the same row.
    @Test(arguments: [(64, 64), (40, 72)])
    func rowsDoNotDependOnTheirNeighbours(headDimension: Int, valueDimension: Int) {
        let f = TileFixture(headDimension: headDimension, valueDimension: valueDimension, seed: 7)
        for (firstPosition, rows, window) in [(150, 61, nil), (100, 64, 20), (0, 37, nil)] as [(Int, Int, Int?)] {
            let together = f.run(rows: rows, firstPosition: firstPosition, window: window)
            for r in 0..<rows {
                let alone = f.run(rows: 1, firstPosition: firstPosition + r, window: window, queryRow: r)
                #expect(alone.map(\.bitPattern) == f.row(together, r).map(\.bitPattern), "row \(r) of \(rows) from \(firstPosition)")
            }
        }
    }
}

/// The row kernels (decoding, micro-batches under 64 tokens): ggml's online softmax with the
/// query and the output accumulator in half precision.
@Suite struct RowAttentionTests {
    /// The row kernel gives the floats of its element-by-element form (the arithmetic of
    /// ggml's row kernel, written out per element in order), and stays near the definition.
    @Test(arguments: [(64, 64), (256, 256), (40, 72), (36, 20), (64, 136)])
    func rowKernelEqualsScalarForm(headDimension: Int, valueDimension: Int) {
        var rng = SplitMix(state: UInt64(headDimension * 1000 + valueDimension))
        let positions = 97
        let keyRows = HalfRows(positions, width: headDimension, in: -2...2, &rng)
        let valueRows = HalfRows(positions, width: valueDimension, in: -3...3, &rng)
        defer { keyRows.deallocate(); valueRows.deallocate() }
        let (keys, values) = (keyRows.rows, valueRows.rows)
        let query = (0..<headDimension).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        let scratch = HeadScratch(headDimension: headDimension, positions: positions, valueDimension: valueDimension)
        defer { scratch.deallocate() }
        for range in [0..<positions, 30..<31, 5..<70] {
            var out = [Float](repeating: 0, count: valueDimension)
            keys.withUnsafeBufferPointer { k in values.withUnsafeBufferPointer { v in
                attendHeadRow(query: query, keys: k.baseAddress!, keyOffset: 0, values: v.baseAddress!, valueOffset: 0,
                              positions: range, headDimension: headDimension, valueDimension: valueDimension,
                              scale: 0.125, scratch: scratch, into: &out)
            } }
            let qHalf = query.map { Float(Float16($0)) }
            let scores = range.map { p in dotHalfGGML(keys[p], qHalf, count: headDimension) * 0.125 }
            var acc = [Float](repeating: 0, count: valueDimension)
            var (m, sum) = (-Float.infinity, Float(0))
            for (i, p) in range.enumerated() {
                var (ms, vs): (Float, Float) = (1, 1)
                if scores[i] > m { ms = expf(m - scores[i]); m = scores[i] } else { vs = expf(scores[i] - m) }
                sum = vs.addingProduct(sum, ms)
                for d in 0..<valueDimension {
                    if ms != 1 { acc[d] = Float(Float16(acc[d] * ms)) }
                    acc[d] = Float(Float16(acc[d].addingProduct(Float(values[p][d]), vs)))
                }
            }
            let expected = acc.map { $0 * (1 / sum) }
            #expect(out.map(\.bitPattern) == expected.map(\.bitPattern), "positions \(range)")
            // and near the definition: the half-precision query and accumulator (a relative
            // rounding of up to 2⁻¹¹ at each of ≤ 97 positions, values in ±3) leave at most
            // 7.5·10⁻³ on these inputs. 2·10⁻² catches a wrong head, scale or normalization,
            // not a single position too many (which the bitwise comparison above pins down).
            let definition = twoPassAttention(query: qHalf, keys: keys, values: values, positions: range,
                                              valueDimension: valueDimension, scale: 0.125)
            #expect(maxDifference(out, definition) <= 2e-2, "positions \(range)")
        }
    }

    /// The grouped row kernel (several query heads of one KV group at once, in 512-bit vectors on
    /// AVX-512 CPUs, 256-bit ones elsewhere) gives each head the floats of the one-head kernel.
    @Test(arguments: [(64, 64, 3), (256, 256, 4), (64, 64, 8), (40, 64, 2), (128, 128, 1)])
    func groupedRowKernelEqualsOneHead(headDimension: Int, valueDimension: Int, group: Int) {
        var rng = SplitMix(state: UInt64(group * 1000 + headDimension))
        let positions = 83
        let keyRows = HalfRows(positions, width: headDimension, in: -2...2, &rng)
        let valueRows = HalfRows(positions, width: valueDimension, in: -3...3, &rng)
        defer { keyRows.deallocate(); valueRows.deallocate() }
        let together = rowKernelHeads(group: group, valueDimension: valueDimension)
        #expect(group % together == 0)
        let queries = (0..<headDimension * together).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        let grouped = HeadScratch(headDimension: headDimension, positions: positions, valueDimension: valueDimension,
                                  heads: together)
        let single = HeadScratch(headDimension: headDimension, positions: positions, valueDimension: valueDimension)
        defer { grouped.deallocate(); single.deallocate() }
        keyRows.rows.withUnsafeBufferPointer { k in valueRows.rows.withUnsafeBufferPointer { v in
            let (k, v) = (k.baseAddress!, v.baseAddress!)
            for range in [0..<positions, 30..<31, 5..<70] {
                var out = [Float](repeating: 0, count: valueDimension * together)
                var expected = out
                attendHeadsRow(query: queries, heads: together, keys: k, keyOffset: 0, values: v, valueOffset: 0,
                               positions: range, headDimension: headDimension, valueDimension: valueDimension,
                               scale: 0.125, scratch: grouped, into: &out)
                queries.withUnsafeBufferPointer { q in expected.withUnsafeMutableBufferPointer { e in
                    for j in 0..<together {
                        attendHeadRow(query: q.baseAddress! + j * headDimension, keys: k, keyOffset: 0, values: v,
                                      valueOffset: 0, positions: range, headDimension: headDimension,
                                      valueDimension: valueDimension, scale: 0.125, scratch: single,
                                      into: e.baseAddress! + j * valueDimension)
                    }
                } }
                #expect(out.map(\.bitPattern) == expected.map(\.bitPattern), "positions \(range), \(together) heads")

                // the split-KV form: chunks of 30 cells over 96, merged per head
                var split = [Float](repeating: 0, count: valueDimension * together)
                var splitExpected = split
                attendHeadsRowSplit(query: queries, heads: together, keys: k, keyOffset: 0, values: v, valueOffset: 0,
                                    positions: range, cells: 96, chunkSize: 30, headDimension: headDimension,
                                    valueDimension: valueDimension, scale: 0.125, scratch: grouped, into: &split)
                queries.withUnsafeBufferPointer { q in splitExpected.withUnsafeMutableBufferPointer { e in
                    for j in 0..<together {
                        attendHeadRowSplit(query: q.baseAddress! + j * headDimension, keys: k, keyOffset: 0,
                                           values: v, valueOffset: 0, positions: range, cells: 96, chunkSize: 30,
                                           headDimension: headDimension, valueDimension: valueDimension, scale: 0.125,
                                           scratch: single, into: e.baseAddress! + j * valueDimension)
                    }
                } }
                #expect(split.map(\.bitPattern) == splitExpected.map(\.bitPattern), "split, positions \(range)")
                // and each head near the definition (same bound as the one-head kernel's)
                for j in 0..<together {
                    let q = queries[j * headDimension..<(j + 1) * headDimension].map { Float(Float16($0)) }
                    let definition = twoPassAttention(query: q, keys: keyRows.rows, values: valueRows.rows,
                                                      positions: range, valueDimension: valueDimension, scale: 0.125)
                    #expect(maxDifference(Array(split[j * valueDimension..<(j + 1) * valueDimension]), definition) <= 2e-2,
                            "split, head \(j), positions \(range)")
                }
            }
        } }
    }
}

/// `attend`, the batch driver: each sequence takes llama.cpp's kernel for its micro-batch
/// (tiled, row, split-KV), query heads share KV heads in groups, rows and heads are spread
/// over the pool; every (row, head) output must match the definition over its own positions
/// (tiled rows within the tiled kernel's tolerance; row-kernel rows bitwise equal to the
/// one-head row kernel over those positions, and loosely near the definition). With a soft
/// cap (gemma2), every kernel caps the scores.
@Suite struct AttentionBatchTests {
    @Test(arguments: [(nil, nil), (40, nil), (nil, 4), (40, 4)] as [(Int?, Float?)])
    func batchMatchesTwoPassSoftmax(window: Int?, softCap: Float?) {
        var rng = SplitMix(state: 11)
        let (heads, kvHeads, headDimension, valueDimension, scale) = (6, 2, 64, 64, Float(0.125))
        let capacity = 1024
        // (cached positions, new tokens, tokens of its llama.cpp micro-batch): tiled, row by
        // row, split-KV (one token over 768 cache cells), and a 3-token micro-batch
        let layout = [(10, 70, 70), (30, 1, 1), (600, 1, 1), (5, 3, 3)]
        let width = kvHeads * max(headDimension, valueDimension)
        let caches = layout.map { _ in (HalfRows(capacity, width: width, in: -2...2, &rng),
                                        HalfRows(capacity, width: width, in: -3...3, &rng)) }
        defer { for (k, v) in caches { k.deallocate(); v.deallocate() } }
        var sequences: [AttentionSequence] = []
        var rows = 0
        for ((cached, tokens, batchTokens), (keys, values)) in zip(layout, caches) {
            sequences.append(AttentionSequence(firstRow: rows, firstPosition: cached, tokens: tokens,
                                               cacheCapacity: capacity,
                                               batching: ReferenceBatching(tokens: batchTokens, offset: 0),
                                               key: { keys.rows[$0] }, value: { values.rows[$0] }))
            rows += tokens
        }
        defer { for s in sequences { s.deallocate() } }
        #expect(sequences.map(\.tiled) == [true, false, false, false])
        #expect(sequences.map(\.splitCells) == [nil, nil, 768, nil])
        let queries = (0..<rows * heads * headDimension).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        let threads = 2
        var out = [Float](repeating: .nan, count: rows * heads * valueDimension)
        out.withUnsafeMutableBufferPointer { o in
            attend(queries: queries, sequences, heads: heads, kvHeads: kvHeads, headDimension: headDimension,
                   valueDimension: valueDimension, scale: scale, softCap: softCap, window: window,
                   into: o.baseAddress!, pool: ThreadPool(threads: threads))
        }
        let scratch = HeadScratch(headDimension: headDimension, positions: capacity, valueDimension: valueDimension)
        defer { scratch.deallocate() }
        for (s, seq) in sequences.enumerated() {
            // the row kernels round the query and the accumulator to half (see RowAttentionTests)
            let tolerance = seq.tiled ? 5e-5 : 2e-2
            for t in 0..<seq.tokens {
                let r = seq.firstRow + t, positions = visible(seq.firstPosition + t, window: window)
                for h in 0..<heads {
                    let query = Array(queries[(r * heads + h) * headDimension..<(r * heads + h + 1) * headDimension])
                    let got = Array(out[(r * heads + h) * valueDimension..<(r * heads + h + 1) * valueDimension])
                    let kv = h / (heads / kvHeads)
                    let expected = twoPassAttention(
                        query: seq.tiled ? query : query.map { Float(Float16($0)) }, keys: caches[s].0.rows,
                        keyOffset: kv * headDimension, values: caches[s].1.rows, valueOffset: kv * valueDimension,
                        positions: positions, valueDimension: valueDimension, scale: scale, softCap: softCap)
                    #expect(maxDifference(got, expected) <= tolerance, "sequence \(s), token \(t), head \(h)")
                    if seq.tiled { continue }
                    // the kernels take the scale with 1/cap folded in, as `attend` passes it
                    let (cap, kernelScale) = (softCap ?? 0, softCap.map { scale / $0 } ?? scale)
                    var one = [Float](repeating: .nan, count: valueDimension)
                    if let cells = seq.splitCells {
                        attendHeadRowSplit(query: query, keys: seq.keys, keyOffset: kv * headDimension, values: seq.values,
                                           valueOffset: kv * valueDimension, positions: positions, cells: cells,
                                           chunkSize: (cells + threads - 1) / threads, headDimension: headDimension,
                                           valueDimension: valueDimension, scale: kernelScale, softCap: cap,
                                           scratch: scratch, into: &one)
                    } else {
                        attendHeadRow(query: query, keys: seq.keys, keyOffset: kv * headDimension, values: seq.values,
                                      valueOffset: kv * valueDimension, positions: positions,
                                      headDimension: headDimension, valueDimension: valueDimension, scale: kernelScale,
                                      softCap: cap, scratch: scratch, into: &one)
                    }
                    #expect(got.map(\.bitPattern) == one.map(\.bitPattern), "sequence \(s), token \(t), head \(h)")
                }
            }
        }
    }
}

/// The attention kernels' 512-bit loops give bitwise the 256-bit loops' floats. `.serialized`:
/// the forced kernel family is process-wide.
@Suite(.serialized) struct AttentionAVX512Tests {
    @Test(.enabled(if: CPUDispatch.hardware == .avx512, "needs AVX-512"), arguments: [(64, 64), (256, 256), (40, 72)])
    func tiledKernelSameOnBothFamilies(headDimension: Int, valueDimension: Int) {
        let f = TileFixture(headDimension: headDimension, valueDimension: valueDimension, seed: 5)
        #expect(CPUDispatch.with(.avx512) { CPUDispatch.avx512Attention })
        for (firstPosition, rows, window) in TiledAttentionTests.runs {
            let outputs = [KernelISA.avx2, .avx512].map { isa in
                CPUDispatch.with(isa) { f.run(rows: rows, firstPosition: firstPosition, window: window) }
            }
            #expect(outputs[0].map(\.bitPattern) == outputs[1].map(\.bitPattern),
                    "first \(firstPosition), rows \(rows), window \(String(describing: window))")
        }
    }

    /// The grouped row kernel (4 heads of a KV group over 64-lane outputs) and its split-KV form.
    @Test(.enabled(if: CPUDispatch.hardware == .avx512, "needs AVX-512"), arguments: [64, 128, 256])
    func groupedRowKernelSameOnBothFamilies(dimension: Int) {
        var rng = SplitMix(state: UInt64(dimension))
        let keys = HalfRows(200, width: dimension, in: -2...2, &rng)
        let values = HalfRows(200, width: dimension, in: -3...3, &rng)
        defer { keys.deallocate(); values.deallocate() }
        let queries = (0..<4 * dimension).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        let scratch = HeadScratch(headDimension: dimension, positions: 200, valueDimension: dimension, heads: 4)
        defer { scratch.deallocate() }
        #expect(CPUDispatch.with(.avx512) { rowKernelHeads(group: 4, valueDimension: dimension) } == 4)
        #expect(CPUDispatch.with(.avx2) { rowKernelHeads(group: 4, valueDimension: dimension) } == 4)
        keys.rows.withUnsafeBufferPointer { k in values.rows.withUnsafeBufferPointer { v in
            for positions in [0..<200, 17..<18, 40..<150] {
                let outputs = [KernelISA.avx2, .avx512].map { isa in
                    CPUDispatch.with(isa) {
                        var row = [Float](repeating: 0, count: 4 * dimension), split = row
                        attendHeadsRow(query: queries, heads: 4, keys: k.baseAddress!, keyOffset: 0,
                                       values: v.baseAddress!, valueOffset: 0, positions: positions,
                                       headDimension: dimension, valueDimension: dimension, scale: 0.125,
                                       scratch: scratch, into: &row)
                        attendHeadsRowSplit(query: queries, heads: 4, keys: k.baseAddress!, keyOffset: 0,
                                            values: v.baseAddress!, valueOffset: 0, positions: positions, cells: 256,
                                            chunkSize: 64, headDimension: dimension, valueDimension: dimension,
                                            scale: 0.125, scratch: scratch, into: &split)
                        return row + split
                    }
                }
                #expect(outputs[0].map(\.bitPattern) == outputs[1].map(\.bitPattern), "positions \(positions)")
            }
        } }
    }
}
