import GGUF
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif

/// y[t][r] = dot(W[r], x[t]) for every token t and output row r.
/// `input` holds `tokens` rows of `weight.columns` floats; `output` holds `tokens` rows of `weight.rows`.
///
/// Quantized weights: the activations are first quantized to 8 bits per block (Q8_1-style
/// 32-blocks with scale and scaled block sum for Q4_0/Q4_1/Q5_0/Q5_1/Q8_0, Q8_K-style
/// 256-blocks with 16-element group sums for the K-quants and the 256-element IQ/TQ formats;
/// see `QuantizedActivations` for the error this implies, ≤ max|x|_block/254 per element),
/// then each weight block is multiplied with integer SIMD dot products (AVX2 vpmaddubsw/vpmaddwd on x86-64).
/// F32/F16/BF16 weights use float FMA on the unquantized activations.
///
/// Rows are split across the pool. Several tokens (up to 4) share each weight-block load,
/// and rows are processed in tiles small enough to stay in L1/L2 while every token visits
/// them, so for prompt prefill each weight byte is read from memory once.
/// Results do not depend on the thread count or on how tokens are grouped: every (t, r)
/// is accumulated in the same order by the same operations.
public func matmul(_ weight: WeightMatrix, input: UnsafePointer<Float>, tokens: Int,
                   output: UnsafeMutablePointer<Float>, pool: ThreadPool, batching: ReferenceBatching = .ungrouped) {
    matmul([weight], input: input, tokens: tokens, outputs: [output], pool: pool, batching: batching)
}

/// Several weight matrices applied to the same input in one pass over the pool, e.g. the
/// Q, K and V projections or the FFN gate and up projections: the activations are quantized
/// once and there is one hand-off to the threads instead of one per matrix.
/// `outputs[i]` receives `tokens` rows of `weights[i].rows` floats, exactly the floats the
/// single-matrix `matmul` would produce.
///
/// `batching`: where the tokens sit in llama.cpp's micro-batch. Its leading
/// `batching.gemmRows(tokens)` tokens are rows llama.cpp would multiply with its repacked gemm
/// kernel, which rounds Q4_K differently from its gemv kernel (see `SuperStyle.rowSums`); the
/// others take the gemv form.
// Unchecked: each weight's data spans rows · rowBytes bytes (GGUFFile rejects a tensor that passes the end of the file).
public func matmul(_ weights: [WeightMatrix], input: UnsafePointer<Float>, tokens: Int,
                   outputs: [UnsafeMutablePointer<Float>], pool: ThreadPool,
                   batching: ReferenceBatching = .ungrouped) {
    guard tokens > 0, !weights.isEmpty else { return }
    guard weights.count == outputs.count, let columns = weights.first?.columns,
          weights.allSatisfy({ $0.columns == columns }) else {
        fatalError("matmul: weights must share the input width and have one output each")
    }
    for w in weights {
        let block = activationBlock(w.type)
        if block > 0 && (w.columns % block != 0 || w.rowBytes != w.columns / w.type.blockSize * w.type.blockBytes) {
            fatalError("matmul: rows of \(w.columns) \(w.type) elements are not whole blocks")
        }
    }
    WeightAccess.willRead(weights)
    let needs32 = weights.contains { activationBlock($0.type) == 32 }
    let needs256 = weights.contains { activationBlock($0.type) == 256 }
    let slots = weights.reduce(UInt8(0)) { $0 | QuantizedActivations.offsetSlots(for: $1.type) }
    let act32 = needs32 ? QuantizedActivations(columns: columns, tokens: tokens, blockSize: 32, offsetSlots: slots) : nil
    let act256 = needs256
        ? QuantizedActivations(columns: columns, tokens: tokens, blockSize: 256, gemmRows: batching.gemmRows(tokens)) : nil
    defer { act32?.deallocate(); act256?.deallocate() }
    nonisolated(unsafe) let x = input
    for act in [act32, act256].compactMap({ $0 }) {
        if tokens >= 8 && pool.threadCount > 1 {
            let n = min(tokens, pool.threadCount)
            pool.parallelFor(n) { i in act.quantize(x, tokens: tokens * i / n ..< tokens * (i + 1) / n) }
        } else {
            act.quantize(x, tokens: 0..<tokens)
        }
    }
    // all matrices' rows form one index space, split across the pool
    var starts = [0]
    var bytes = 0
    for w in weights {
        starts.append(starts.last! + w.rows)
        bytes += w.rows * w.rowBytes
    }
    let totalRows = starts.last!
    guard totalRows > 0 else { return }
    nonisolated(unsafe) let ys = outputs
    let ws = weights, segmentStarts = starts
    forEachRowRange(totalRows, rowBytes: bytes / totalRows, tokens: tokens, pool: pool) { range in
        for (i, w) in ws.enumerated() {
            let lo = max(range.lowerBound, segmentStarts[i]), hi = min(range.upperBound, segmentStarts[i + 1])
            guard lo < hi else { continue }
            let rows = lo - segmentStarts[i] ..< hi - segmentStarts[i]
            let act = activationBlock(w.type) == 256 ? act256 : act32
            computeRows(w, act, x, tokens, rows, ys[i])
        }
    }
}

/// Activation block size a weight type's kernel uses (0: float activations).
@inline(__always)
func activationBlock(_ type: TensorType) -> Int {
    switch type {
    case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: 32
    case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: 256
    case .iq4_NL, .mxfp4: 32
    case .iq4_XS, .tq1_0, .tq2_0: 256
    case .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S, .iq1_M: 256
    case .f32, .f16, .bf16: 0
    default: fatalError("matmul: \(KernelError.unsupportedType(type))")
    }
}

/// Rows `rows` of `w` for every token, into y (token stride `w.rows`).
func computeRows(_ w: WeightMatrix, _ act: QuantizedActivations?, _ x: UnsafePointer<Float>, _ tokens: Int,
                 _ rows: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
    if case .rowTiles16 = w.layout {
        if let act, avx512TiledRows(w, act, tokens, rows, y) { return }
        untiledRows(w, act, x, tokens, rows, y)
        return
    }
    if let act, avx512Rows(w, act, tokens, rows, y) { return }  // run-time AVX-512 dispatch, CPUDispatch.swift
    switch w.type {
    case .q4_0: quantRows(KQ4_0.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q4_1: quantRows(KQ4_1.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q5_0: quantRows(KQ5_0.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q5_1: quantRows(KQ5_1.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q8_0: quantRows(KQ8_0.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q2_K: quantRows(KQ2_K.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q3_K: quantRows(KQ3_K.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q4_K: quantRows(KQ4_K.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q5_K: quantRows(KQ5_K.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .q6_K: quantRows(KQ6_K.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq4_NL: quantRows(KIQ4_NL.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq4_XS: quantRows(KIQ4_XS.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .mxfp4: quantRows(KMXFP4.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .tq1_0: quantRows(KTQ1_0.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .tq2_0: quantRows(KTQ2_0.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq2_XXS: quantRows(KIQ2_XXS.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq2_XS: quantRows(KIQ2_XS.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq2_S: quantRows(KIQ2_S.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq3_XXS: quantRows(KIQ3_XXS.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq3_S: quantRows(KIQ3_S.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq1_S: quantRows(KIQ1_S.self, w, act.unsafelyUnwrapped, tokens, rows, y)
    case .iq1_M: iq1mRows(w, act.unsafelyUnwrapped, tokens, rows, y)
    default: floatRows(w, x, tokens, rows, y)
    }
}

/// A tiled matrix under another kernel family (AVX2 forced by a test or benchmark): rows
/// `rows` back in GGUF order in scratch, then the row kernels (the same floats).
func untiledRows(_ w: WeightMatrix, _ act: QuantizedActivations?, _ x: UnsafePointer<Float>, _ tokens: Int,
                 _ rows: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(rows.count * w.rowBytes, 1), alignment: 64)
    defer { scratch.deallocate() }
    unpackTiledRows(w, rows, into: scratch)
    // based so that row r (in `rows`) is where the kernels look for it
    let view = WeightMatrix(type: w.type, data: UnsafeRawPointer(scratch) - rows.lowerBound * w.rowBytes,
                            rows: w.rows, columns: w.columns)
    computeRows(view, act, x, tokens, rows, y)
}

/// Tokens sharing one pass over a weight row.
let tokenTile = 4

/// `body(nt)` with nt (1...`tokenTile`) as a literal, so that after inlining the kernels'
/// per-token branches fold away.
@inline(__always)
func withTokenCount(_ nt: Int, _ body: (Int) -> Void) {
    switch nt {
    case 4: body(4)
    case 3: body(3)
    case 2: body(2)
    default: body(1)
    }
}

/// Rows per cache tile: about 32 KB of weights, so a tile stays in L1/L2 while all token
/// groups pass over it.
@inline(__always)
func rowTileSize(_ rowBytes: Int) -> Int { max(1, min(64, (32 << 10) / max(rowBytes, 1))) }

/// Splits `rows` into work items for the pool: a few per thread so a preempted thread
/// does not hold everyone up, but each big enough to amortize the hand-off.
@inline(__always)
func forEachRowRange(_ rows: Int, rowBytes: Int, tokens: Int, pool: ThreadPool,
                     _ body: @escaping @Sendable (Range<Int>) -> Void) {
    let threads = pool.threadCount
    let work = rows * rowBytes * max(1, tokens / 4)
    if threads == 1 || work < 16 << 10 || rows < 16 {
        body(0..<rows)
        return
    }
    let granularity = 16  // whole 16-row tiles (`WeightMatrix.Layout.rowTiles16`)
    let units = (rows + granularity - 1) / granularity
    let items = min(units, threads * (work > 4 << 20 ? 8 : 2))
    pool.parallelFor(items) { i in
        let lo = units * i / items * granularity
        let hi = min(rows, units * (i + 1) / items * granularity)
        if lo < hi { body(lo..<hi) }
    }
}

/// Quantized weights: rows `range` × all tokens, in row tiles of ~32 KB (kept in cache while
/// every group of `tokenTile` tokens passes over them).
func quantRows<K: QuantKernel>(_ k: K.Type, _ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int,
                               _ range: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
    let rows = w.rows, nb = w.columns / K.blockElements
    let tile = rowTileSize(w.rowBytes)
    // from one whole token group on (e.g. a decode step of several serving clients), the
    // unpacked tile's 2-row × 4-token kernel pays for the unpacking, shared by every group
    if K.blockElements == 32 && tokens >= tokenTile {
        decodedQuantRows(K.self, w, act, tokens, range, y)
        return
    }
    if K.blockElements == 256 && tokens > 2 * tokenTile {
        decodedSuperRows(K.self, w, act, tokens, range, y)
        return
    }
    if K.blockElements == 32 && tokens == 1 {
        let quarter = range.count / 4
        for r in range.lowerBound..<range.lowerBound + quarter {
            smallDotFourRows(K.self, w, first: r, spacing: quarter, act, token: 0, y)
        }
        for r in range.lowerBound + 4 * quarter..<range.upperBound { smallRowDot(K.self, w.row(r), nb, act, 0, 1, y + r, rows) }
        return
    }
    var r0 = range.lowerBound
    while r0 < range.upperBound {
        let r1 = min(r0 + tile, range.upperBound)
        var t0 = 0
        while t0 < tokens {
            let nt = min(tokenTile, tokens - t0)
            // nt as a literal in each call, so the kernels' per-token branches fold away
            // (`withTokenCount`'s closure is not always inlined around the 256-element kernels)
            @inline(__always)
            func tileRows(_ n: Int) {
                for r in r0..<r1 { quantRowDot(K.self, w.row(r), nb, act, t0, n, y + t0 * rows + r, rows) }
            }
            switch nt {
            case 4: tileRows(4)
            case 3: tileRows(3)
            case 2: tileRows(2)
            default: tileRows(1)
            }
            t0 += nt
        }
        r0 = r1
    }
}

/// Dot products of one weight row with `nt` (1...4, a constant after inlining) consecutive tokens.
@inline(__always)
func quantRowDot<K: QuantKernel>(_ k: K.Type, _ row: UnsafeRawPointer, _ nb: Int, _ act: QuantizedActivations,
                                 _ t0: Int, _ nt: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    if K.blockElements == 32 {
        smallRowDot(K.self, row, nb, act, t0, nt, out, outStride)
    } else {
        superRowDot(K.self, row, nb, act, t0, nt, out, outStride)
    }
}

/// 32-element formats, as llama.cpp's `ggml_vec_dot_*_q8_*` (see `QuantKernel`): per token,
/// one 8-lane FMA chain over the blocks in order, the min term as a scalar FMA chain, and
/// llama.cpp's horizontal sum. Every path (AVX2, AVX-512 row and tile kernels, portable)
/// performs exactly these float operations, so results are bitwise equal across them.
@inline(__always)
func smallRowDot<K: QuantKernel>(_ k: K.Type, _ row: UnsafeRawPointer, _ nb: Int, _ act: QuantizedActivations,
                                 _ t0: Int, _ nt: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    smallDot(K.self, nb, act, t0, nt, out, outStride) { b in
        let p = row + b * K.blockBytes
        return (K.chunk(p, K.header(p), 0).0, K.scales(p))
    }
}

/// The shared body of `smallRowDot` and `decodedQuantRows`: `block(b)` yields block b's
/// weight bytes and its (d, m).
@inline(__always)
func smallDot<K: QuantKernel>(_ k: K.Type, _ nb: Int, _ act: QuantizedActivations, _ t0: Int, _ nt: Int,
                              _ out: UnsafeMutablePointer<Float>, _ outStride: Int,
                              _ block: (Int) -> (K.Chunk, SIMD2<Float>)) {
    let cols = act.columns
    let q0 = UnsafeRawPointer(act.q + t0 * cols)
    let ds0 = act.ds + 2 * t0 * nb
    let offsets0 = UnsafeRawPointer(act.offsetSums + max(K.offsetSlot, 0) * act.offsetStride + 8 * t0 * nb)
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    var m0: Float = 0, m1: Float = 0, m2: Float = 0, m3: Float = 0

    @inline(__always)
    func step(_ w: K.Chunk, _ sc: SIMD2<Float>, _ j: Int, _ b: Int, _ a: inout SIMD8<Float>, _ m: inout Float) {
        let x = q0.loadUnaligned(fromByteOffset: j * cols + b * 32, as: SIMD32<Int8>.self)
        var lanes = K.dot(w, x, splat16(1))
        if K.offsetSlot >= 0 {
            lanes &+= offsets0.loadUnaligned(fromByteOffset: 32 * (j * nb + b), as: SIMD8<Int32>.self)
        }
        let i = 2 * (j * nb + b)
        a = a.addingProduct(SIMD8(repeating: sc[0] * ds0[i]), floats(lanes))
        if K.hasMin { m = m.addingProduct(sc[1], ds0[i + 1]) }
    }

    for b in 0..<nb {
        let (w, sc) = block(b)
        step(w, sc, 0, b, &a0, &m0)
        if nt > 1 { step(w, sc, 1, b, &a1, &m1) }
        if nt > 2 { step(w, sc, 2, b, &a2, &m2) }
        if nt > 3 { step(w, sc, 3, b, &a3, &m3) }
    }
    out[0] = K.hasMin ? hsum(a0) + m0 : hsum(a0)
    if nt > 1 { out[outStride] = K.hasMin ? hsum(a1) + m1 : hsum(a1) }
    if nt > 2 { out[2 * outStride] = K.hasMin ? hsum(a2) + m2 : hsum(a2) }
    if nt > 3 { out[3 * outStride] = K.hasMin ? hsum(a3) + m3 : hsum(a3) }
}

/// Prompt-sized batches of the 32-element formats: each row tile's blocks are unpacked once
/// (weight bytes and scales) into a scratch buffer that every token group then reads,
/// instead of unpacking them again for each group of `tokenTile` tokens; whole groups run two
/// rows at a time (`smallDotTwoRowsFourTokens`). Same operations in the same order as
/// `smallRowDot`: bitwise the same results.
func decodedQuantRows<K: QuantKernel>(_ k: K.Type, _ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int,
                                      _ range: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
    let rows = w.rows, nb = w.columns / 32, bb = K.blockBytes
    let tile = rowTileSize(w.rowBytes)
    let chunks = UnsafeMutablePointer<K.Chunk>.allocate(capacity: tile * nb)
    let scales = UnsafeMutablePointer<SIMD2<Float>>.allocate(capacity: tile * nb)
    let group = TokenGroupScales(blocks: nb)
    let pairScales = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: tile / 2 * nb)
    let pairMins = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: K.hasMin ? tile / 2 * nb : 0)
    defer {
        chunks.deallocate()
        scales.deallocate()
        group.deallocate()
        pairScales.deallocate()
        pairMins.deallocate()
    }
    var r0 = range.lowerBound
    while r0 < range.upperBound {
        let r1 = min(r0 + tile, range.upperBound)
        for r in r0..<r1 {
            let row = w.row(r)
            for b in 0..<nb {
                let p = row + b * bb
                (chunks + (r - r0) * nb + b).initialize(to: K.chunk(p, K.header(p), 0).0)
                scales[(r - r0) * nb + b] = K.scales(p)
            }
        }
        for pair in 0..<(r1 - r0) / 2 {
            let i = 2 * pair * nb
            spreadPairScales(scales + i, scales + i + nb, blocks: nb, d: pairScales + pair * nb,
                             m: K.hasMin ? pairMins + pair * nb : nil)
        }
        var t0 = 0
        while t0 < tokens {
            let nt = min(tokenTile, tokens - t0)
            var r = r0
            if nt == tokenTile {
                group.gather(act, t0: t0, blocks: nb, withMins: K.hasMin)
                while r + 2 <= r1 {
                    let i = (r - r0) * nb
                    let pair = (r - r0) / 2 * nb
                    smallDotTwoRowsFourTokens(K.self, nb, act, t0: t0, group, chunks: chunks + i, chunks + i + nb,
                                              pairScales: pairScales + pair, pairMins: pairMins + pair,
                                              y + t0 * rows + r, rows)
                    r += 2
                }
            }
            for r in r..<r1 {
                let c = chunks + (r - r0) * nb, sc = scales + (r - r0) * nb
                withTokenCount(nt) { n in smallDot(K.self, nb, act, t0, n, y + t0 * rows + r, rows) { (c[$0], sc[$0]) } }
            }
            t0 += nt
        }
        chunks.deinitialize(count: (r1 - r0) * nb)
        r0 = r1
    }
}

/// 256-element K-quants: integer lanes over the 8 chunks, then per block and token the float
/// step of llama.cpp's kernel for the format (see `SuperStyle`).
@inline(__always)
func superRowDot<K: QuantKernel>(_ k: K.Type, _ row: UnsafeRawPointer, _ nb: Int, _ act: QuantizedActivations,
                                 _ t0: Int, _ nt: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    superDot(K.self, nb, act, t0, nt, out, outStride) { b in K.header(row + b * K.blockBytes) } chunk: { b, c, h in
        K.chunk(row + b * K.blockBytes, h, c)
    }
}

/// The shared body of `superRowDot` and the unpacked-tile path: `block(b)` yields block b's
/// header, `chunk(b, c, header)` its chunk c.
@inline(__always)
func superDot<K: QuantKernel>(_ k: K.Type, _ nb: Int, _ act: QuantizedActivations, _ t0: Int, _ nt: Int,
                              _ out: UnsafeMutablePointer<Float>, _ outStride: Int,
                              _ block: (Int) -> K.Header,
                              chunk: (Int, Int, K.Header) -> (K.Chunk, SIMD16<Int16>)) {
    assert(K.chunks == 8, "superDot: 256-element blocks")
    let be = K.blockElements
    let cols = act.columns
    let q0 = UnsafeRawPointer(act.q + t0 * cols)
    let d0 = act.d + t0 * nb
    let g0 = act.bsums + t0 * nb * 16
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    // .lanes: the correction sum; .rowSums: the min chain
    var c0: Float = 0, c1: Float = 0, c2: Float = 0, c3: Float = 0
    // .rowSums: the main chain
    var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0

    @inline(__always)
    func finishBlock(_ h: K.Header, _ i: SIMD8<Int32>, _ j: Int, _ b: Int,
                     _ a: inout SIMD8<Float>, _ c: inout Float, _ s: inout Float) {
        let dx = d0[j * nb + b]
        let bsums = g0 + 16 * (j * nb + b)
        switch K.superStyle {
        case .lanes:
            a = a.addingProduct(SIMD8(repeating: K.blockScale(h) * dx), floats(i))
            c += K.correction(h, dx: dx, sx: 0, bsums: bsums)
        case .minChain:
            a = a.addingProduct(SIMD8(repeating: K.blockScale(h) * dx), floats(i))
            c = c.addingProduct(-(K.blockMin(h) * dx), Float(K.minSum(h, bsums: bsums)))
        case .laneOffset:
            let lanes = i &- K.laneOffset(h, bsums: bsums)
            a = a.addingProduct(SIMD8(repeating: K.blockScale(h) * dx), floats(lanes))
        case .rowSums:
            guard t0 + j >= act.gemmRows else { return }  // (gemm rows: done per pair)
            s = s.addingProduct(Float(i.wrappedSum()), K.blockScale(h) * dx)
            c = c.addingProduct(Float(K.minSum(h, bsums: bsums)), K.blockMin(h) * dx)
        }
    }

    // .rowSums rows of llama.cpp's gemm kernel: one FMA per pair of chunks (sub-blocks)
    @inline(__always)
    func gemmPair(_ h: K.Header, _ pair: SIMD8<Int32>, _ j: Int, _ b: Int, _ cp: Int, _ c: inout Float, _ s: inout Float) {
        guard K.superStyle == .rowSums, t0 + j < act.gemmRows else { return }
        let dx = d0[j * nb + b]
        s = s.addingProduct(Float(pair.wrappedSum()), K.blockScale(h) * dx)
        c = c.addingProduct(Float(K.minPairSum(h, bsums: g0 + 16 * (j * nb + b), pair: cp)), K.blockMin(h) * dx)
    }

    for b in 0..<nb {
        let h = block(b)
        var i0 = SIMD8<Int32>(), i1 = SIMD8<Int32>(), i2 = SIMD8<Int32>(), i3 = SIMD8<Int32>()
        var p0 = SIMD8<Int32>(), p1 = SIMD8<Int32>(), p2 = SIMD8<Int32>(), p3 = SIMD8<Int32>()
        // Called with literal chunk indices (every 256-element format has 8 chunks): with a
        // loop index, the chunk's scale went through the stack each time (a vector store, then
        // a lane load inside it, a stalled forwarding) and matrix-vector products ran at half speed.
        @inline(__always)
        func chunkStep(_ c: Int) {
            let (wv, sc) = chunk(b, c, h)
            let off = b * be + c * 32
            p0 &+= K.dot(wv, q0.loadUnaligned(fromByteOffset: off, as: SIMD32<Int8>.self), sc)
            if nt > 1 { p1 &+= K.dot(wv, q0.loadUnaligned(fromByteOffset: off + cols, as: SIMD32<Int8>.self), sc) }
            if nt > 2 { p2 &+= K.dot(wv, q0.loadUnaligned(fromByteOffset: off + 2 * cols, as: SIMD32<Int8>.self), sc) }
            if nt > 3 { p3 &+= K.dot(wv, q0.loadUnaligned(fromByteOffset: off + 3 * cols, as: SIMD32<Int8>.self), sc) }
            if c & 1 == 1 {
                gemmPair(h, p0, 0, b, c / 2, &c0, &s0)
                if nt > 1 { gemmPair(h, p1, 1, b, c / 2, &c1, &s1) }
                if nt > 2 { gemmPair(h, p2, 2, b, c / 2, &c2, &s2) }
                if nt > 3 { gemmPair(h, p3, 3, b, c / 2, &c3, &s3) }
                i0 &+= p0; i1 &+= p1; i2 &+= p2; i3 &+= p3
                p0 = .zero; p1 = .zero; p2 = .zero; p3 = .zero
            }
        }
        chunkStep(0); chunkStep(1); chunkStep(2); chunkStep(3)
        chunkStep(4); chunkStep(5); chunkStep(6); chunkStep(7)
        finishBlock(h, i0, 0, b, &a0, &c0, &s0)
        if nt > 1 { finishBlock(h, i1, 1, b, &a1, &c1, &s1) }
        if nt > 2 { finishBlock(h, i2, 2, b, &a2, &c2, &s2) }
        if nt > 3 { finishBlock(h, i3, 3, b, &a3, &c3, &s3) }
    }
    @inline(__always)
    func result(_ a: SIMD8<Float>, _ c: Float, _ s: Float) -> Float {
        switch K.superStyle {
        case .lanes, .minChain: hsum(a) + c
        case .laneOffset: hsum(a)
        case .rowSums: s - c
        }
    }
    out[0] = result(a0, c0, s0)
    if nt > 1 { out[outStride] = result(a1, c1, s1) }
    if nt > 2 { out[2 * outStride] = result(a2, c2, s2) }
    if nt > 3 { out[3 * outStride] = result(a3, c3, s3) }
}

/// K-quants for prompt-sized batches: as `decodedQuantRows`, each row tile's block headers
/// and chunks (lanes and sub-block multipliers) are unpacked once for all token groups.
func decodedSuperRows<K: QuantKernel>(_ k: K.Type, _ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int,
                                      _ range: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
    let rows = w.rows, nb = w.columns / K.blockElements, nc = K.chunks
    let tile = rowTileSize(w.rowBytes)
    let headers = UnsafeMutablePointer<K.Header>.allocate(capacity: tile * nb)
    let lanes = UnsafeMutablePointer<K.Chunk>.allocate(capacity: tile * nb * nc)
    let multipliers = UnsafeMutablePointer<SIMD16<Int16>>.allocate(capacity: tile * nb * nc)
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let gemmGroups = K.superStyle == .rowSums && K.Header.self == KHeader.self && act.gemmRows >= 4
#else
    let gemmGroups = false
#endif
    let group = SuperTokenGroup(blocks: gemmGroups ? nb : 0)
    defer {
        headers.deallocate()
        lanes.deallocate()
        multipliers.deallocate()
        group.deallocate()
    }
    var r0 = range.lowerBound
    while r0 < range.upperBound {
        let r1 = min(r0 + tile, range.upperBound)
        for r in r0..<r1 {
            let row = w.row(r)
            for b in 0..<nb {
                let p = row + b * K.blockBytes
                let i = (r - r0) * nb + b
                let h = K.header(p)
                (headers + i).initialize(to: h)
                for c in 0..<nc {
                    let (wv, sc) = K.chunk(p, h, c)
                    (lanes + i * nc + c).initialize(to: wv)
                    multipliers[i * nc + c] = sc
                }
            }
        }
        if avx512UnpackedRows(K.self, w, act, tokens, headers: headers, lanes: lanes, multipliers: multipliers,
                              rows: r1 - r0, y + r0) {
            headers.deinitialize(count: (r1 - r0) * nb)
            lanes.deinitialize(count: (r1 - r0) * nb * nc)
            r0 = r1
            continue
        }
        var t0 = 0
        while t0 < tokens {
            let nt = min(tokenTile, tokens - t0)
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
            if gemmGroups && nt == 4 && t0 + 4 <= act.gemmRows {
                group.gather(act, t0: t0, blocks: nb)
                for r in r0..<r1 {
                    let i = (r - r0) * nb
                    let h = UnsafeRawPointer(headers + i).assumingMemoryBound(to: KHeader.self)
                    superGemmDotFourTokens(K.self, nb, act, t0: t0, group, headers: h, lanes: lanes + i * nc,
                                           multipliers: multipliers + i * nc, y + t0 * rows + r, rows)
                }
                t0 += nt
                continue
            }
#endif
            // nt as a literal in each call (see `quantRows`)
            @inline(__always)
            func tileRows(_ n: Int) {
                for r in r0..<r1 {
                    let i = (r - r0) * nb
                    let (h, l, m) = (headers + i, lanes + i * nc, multipliers + i * nc)
                    superDot(K.self, nb, act, t0, n, y + t0 * rows + r, rows) { h[$0] } chunk: { b, c, _ in
                        (l[b * nc + c], m[b * nc + c])
                    }
                }
            }
            switch nt {
            case 4: tileRows(4)
            case 3: tileRows(3)
            case 2: tileRows(2)
            default: tileRows(1)
            }
            t0 += nt
        }
        headers.deinitialize(count: (r1 - r0) * nb)
        lanes.deinitialize(count: (r1 - r0) * nb * nc)
        r0 = r1
    }
}

// MARK: float weights

@inline(__always)
func loadWeights8(_ type: TensorType, _ p: UnsafeRawPointer, _ i: Int) -> SIMD8<Float> {
    switch type {
    case .f16:
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        return _mm256_cvtph_ps(p.loadUnaligned(fromByteOffset: 2 * i, as: __m128i.self))
#else
        return SIMD8<Float>(p.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<Float16>.self))
#endif
    case .bf16:
        let h = SIMD8<UInt32>(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<UInt16>.self))
        return unsafeBitCast(h &<< 16, to: SIMD8<Float>.self)
    default:
        return p.loadUnaligned(fromByteOffset: 4 * i, as: SIMD8<Float>.self)
    }
}

@inline(__always)
func loadWeight1(_ type: TensorType, _ p: UnsafeRawPointer, _ i: Int) -> Float {
    switch type {
    case .f16: return loadF16(p, 2 * i)
    case .bf16: return Float(bitPattern: UInt32(p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
    default: return p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self)
    }
}

/// Float weights: rows `range` × all tokens, tiled like `quantRows`.
func floatRows(_ w: WeightMatrix, _ x: UnsafePointer<Float>, _ tokens: Int, _ range: Range<Int>,
               _ y: UnsafeMutablePointer<Float>) {
    let rows = w.rows, cols = w.columns
    let tile = rowTileSize(w.rowBytes)
    var r0 = range.lowerBound
    while r0 < range.upperBound {
        let r1 = min(r0 + tile, range.upperBound)
        var t0 = 0
        while t0 < tokens {
            let nt = min(tokenTile, tokens - t0)
            for r in r0..<r1 {
                let out = y + t0 * rows + r
                let xt = x + t0 * cols
                switch (w.type, nt) {
                case (.f16, 4): floatRowDot(.f16, w.row(r), cols, xt, 4, out, rows)
                case (.f16, 3): floatRowDot(.f16, w.row(r), cols, xt, 3, out, rows)
                case (.f16, 2): floatRowDot(.f16, w.row(r), cols, xt, 2, out, rows)
                case (.f16, _): floatRowDot(.f16, w.row(r), cols, xt, 1, out, rows)
                case (.bf16, 4): floatRowDot(.bf16, w.row(r), cols, xt, 4, out, rows)
                case (.bf16, 3): floatRowDot(.bf16, w.row(r), cols, xt, 3, out, rows)
                case (.bf16, 2): floatRowDot(.bf16, w.row(r), cols, xt, 2, out, rows)
                case (.bf16, _): floatRowDot(.bf16, w.row(r), cols, xt, 1, out, rows)
                case (_, 4): floatRowDot(.f32, w.row(r), cols, xt, 4, out, rows)
                case (_, 3): floatRowDot(.f32, w.row(r), cols, xt, 3, out, rows)
                case (_, 2): floatRowDot(.f32, w.row(r), cols, xt, 2, out, rows)
                default: floatRowDot(.f32, w.row(r), cols, xt, 1, out, rows)
                }
            }
            t0 += nt
        }
        r0 = r1
    }
}

/// Float dot products of one row with `nt` tokens. Two accumulators per token (alternate
/// 8-element groups) so consecutive FMAs do not wait on each other; the same order for
/// every `nt`, so results do not depend on how tokens are grouped.
@inline(__always)
func floatRowDot(_ type: TensorType, _ row: UnsafeRawPointer, _ cols: Int, _ x: UnsafePointer<Float>,
                 _ nt: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
    let xr = UnsafeRawPointer(x)
    let xs = 4 * cols
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    var b0 = SIMD8<Float>(), b1 = SIMD8<Float>(), b2 = SIMD8<Float>(), b3 = SIMD8<Float>()
    let n16 = cols & ~15, n8 = cols & ~7
    @inline(__always)
    func x8(_ t: Int, _ i: Int) -> SIMD8<Float> { xr.loadUnaligned(fromByteOffset: 4 * i + t * xs, as: SIMD8<Float>.self) }
    var i = 0
    while i < n16 {
        let wa = loadWeights8(type, row, i), wb = loadWeights8(type, row, i + 8)
        a0 = a0.addingProduct(wa, x8(0, i)); b0 = b0.addingProduct(wb, x8(0, i + 8))
        if nt > 1 { a1 = a1.addingProduct(wa, x8(1, i)); b1 = b1.addingProduct(wb, x8(1, i + 8)) }
        if nt > 2 { a2 = a2.addingProduct(wa, x8(2, i)); b2 = b2.addingProduct(wb, x8(2, i + 8)) }
        if nt > 3 { a3 = a3.addingProduct(wa, x8(3, i)); b3 = b3.addingProduct(wb, x8(3, i + 8)) }
        i += 16
    }
    if i < n8 {
        let wa = loadWeights8(type, row, i)
        a0 = a0.addingProduct(wa, x8(0, i))
        if nt > 1 { a1 = a1.addingProduct(wa, x8(1, i)) }
        if nt > 2 { a2 = a2.addingProduct(wa, x8(2, i)) }
        if nt > 3 { a3 = a3.addingProduct(wa, x8(3, i)) }
    }
    for t in 0..<nt {
        var s = hsum(t == 0 ? a0 + b0 : t == 1 ? a1 + b1 : t == 2 ? a2 + b2 : a3 + b3)
        for j in n8..<cols { s += loadWeight1(type, row, j) * x[t * cols + j] }
        out[t * outStride] = s
    }
}

