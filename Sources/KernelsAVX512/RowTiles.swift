// 32-element formats repacked at load into 16-row tiles (`Kernels.WeightMatrix.Layout.rowTiles16`),
// the layout the tile kernel reads: with the rows of a tile in vector lanes, no prompt batch
// or decode step has to transpose rows any more (in the GGUF layout that transpose and the
// block decode cost more than the dot products at 16 tokens, a busy server's decode step).
//
// A tile group holds rows 16g..<16g+16, `rowTileGroupBytes` apart: 16 × the rows' GGUF bytes,
// rounded up to 64. Within it, blocks come in pairs (the last alone if nb is odd), each pair
// one record of 32 × blockBytes (a multiple of 64) read front to back, so a group is a single
// sequential stream. A record holds, per block of the pair in turn:
//   quants   4/5-bit formats and IQ4_NL: 4 vectors, vector j dword r = qs[4j..<4j+4] of row r
//            (its low nibbles are elements 4j..<4j+4, its high nibbles 16+4j..); Q8_0: 8 vectors,
//            vector l dword r = qs[4l..<4l+4] ^ 0x80 (the unsigned bytes the kernels use)
// then per block: highBits (Q5_0/Q5_1: 8 UInt64, mask l bit 4r+k = bit 4l+k of row r's qh),
// then per block d (16 Float16, row r at r), then per block m (Q4_1/Q5_1, likewise).
// Element i of a block sits in dpbusd lane i/4 in both layouts, so the kernels' integer lanes
// and float operations are exactly those of the GGUF-layout kernels (bitwise equal results).
// IQ4_NL's codes are stored as Q4_0's nibbles and go through `PIQ4_NL.table` (value + 128) when
// a block's lanes are formed, its +128 coming off with the activations' offset sums (slot 2),
// as in `PairKernel<PIQ4_NL>`.
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
import CIntrinsics
import GGUF

/// Bytes of one 16-row group of a `type` matrix with `columns` columns, or nil when `type`
/// has no tile layout (the one list of tileable types: `TileLayout` and the loader ask here).
public func rowTileGroupBytes(_ type: TensorType, columns: Int) -> Int? {
    guard [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .iq4_NL].contains(type) else { return nil }
    return (16 * (columns / 32) * type.blockBytes + 63) / 64 * 64
}

struct TileLayout {
    let nb: Int
    let quantBytes: Int       // per block
    let highBytes: Int        // per block
    let groupBytes: Int
    let blockBytes: Int
    let qsOffset: Int         // in a GGUF block
    let hasHigh: Bool
    let hasMin: Bool
    let isQ8: Bool

    init?(_ type: TensorType, columns: Int) {
        guard let groupBytes = rowTileGroupBytes(type, columns: columns) else { return nil }
        switch type {
        case .q4_0, .iq4_NL: (hasHigh, hasMin, isQ8, qsOffset) = (false, false, false, 2)
        case .q4_1: (hasHigh, hasMin, isQ8, qsOffset) = (false, true, false, 4)
        case .q5_0: (hasHigh, hasMin, isQ8, qsOffset) = (true, false, false, 6)
        case .q5_1: (hasHigh, hasMin, isQ8, qsOffset) = (true, true, false, 8)
        case .q8_0: (hasHigh, hasMin, isQ8, qsOffset) = (false, false, true, 2)
        default: return nil
        }
        nb = columns / 32
        blockBytes = type.blockBytes
        quantBytes = isQ8 ? 512 : 256
        highBytes = hasHigh ? 64 : 0
        self.groupBytes = groupBytes
    }

    /// Offsets in a group of block b's parts (see the file comment).
    @inline(__always) func record(_ b: Int) -> (base: Int, index: Int, count: Int) {
        (b / 2 * 32 * blockBytes, b & 1, b | 1 < nb ? 2 : 1)
    }
    @inline(__always) func quants(_ b: Int) -> Int { let r = record(b); return r.base + r.index * quantBytes }
    @inline(__always) func high(_ b: Int) -> Int { let r = record(b); return r.base + r.count * quantBytes + r.index * 64 }
    @inline(__always) func d(_ b: Int) -> Int {
        let r = record(b)
        return r.base + r.count * (quantBytes + highBytes) + r.index * 32
    }
    @inline(__always) func m(_ b: Int) -> Int {
        let r = record(b)
        return r.base + r.count * (quantBytes + highBytes + 32) + r.index * 32
    }
}

/// Repacks `rows` (a multiple of 16) GGUF rows at `source` into `destination`
/// (`rows / 16 × rowTileGroupBytes` bytes). Returns false for a type without a tile layout.
public func packRowTiles(_ type: TensorType, source: UnsafeRawPointer, rows: Int, columns: Int,
                         destination: UnsafeMutableRawPointer) -> Bool {
    guard let t = TileLayout(type, columns: columns), rows % 16 == 0 else { return false }
    let rowBytes = t.nb * t.blockBytes
    for g in 0..<rows / 16 {
        let group = destination + g * t.groupBytes
        group.initializeMemory(as: UInt8.self, repeating: 0, count: t.groupBytes)
        for b in 0..<t.nb {
            var masks = SIMD8<UInt64>()
            for r in 0..<16 {
                let p = source + (16 * g + r) * rowBytes + b * t.blockBytes
                let q = group + t.quants(b) + 4 * r
                for l in 0..<(t.isQ8 ? 8 : 4) {
                    let dword = p.loadUnaligned(fromByteOffset: t.qsOffset + 4 * l, as: UInt32.self)
                    q.storeBytes(of: t.isQ8 ? dword ^ 0x8080_8080 : dword, toByteOffset: 64 * l, as: UInt32.self)
                }
                if t.hasHigh {
                    let qh = UInt64(p.loadUnaligned(fromByteOffset: t.qsOffset - 4, as: UInt32.self))
                    for l in 0..<8 { masks[l] |= ((qh >> UInt64(4 * l)) & 0xF) << UInt64(4 * r) }
                }
                group.storeBytes(of: p.loadUnaligned(as: UInt16.self), toByteOffset: t.d(b) + 2 * r, as: UInt16.self)
                if t.hasMin {
                    group.storeBytes(of: p.loadUnaligned(fromByteOffset: 2, as: UInt16.self),
                                     toByteOffset: t.m(b) + 2 * r, as: UInt16.self)
                }
            }
            if t.hasHigh { (group + t.high(b)).storeBytes(of: masks, as: SIMD8<UInt64>.self) }
        }
    }
    return true
}

/// The GGUF bytes of rows `range` of a tiled matrix, written to `destination` (row `range.lowerBound` first).
public func unpackRowTiles(_ type: TensorType, tiles: UnsafeRawPointer, columns: Int, range: Range<Int>,
                           destination: UnsafeMutableRawPointer) {
    guard let t = TileLayout(type, columns: columns) else { fatalError("unpackRowTiles: no tile layout for \(type)") }
    let rowBytes = t.nb * t.blockBytes
    for row in range {
        let group = tiles + (row / 16) * t.groupBytes, r = row % 16
        for b in 0..<t.nb {
            let p = destination + (row - range.lowerBound) * rowBytes + b * t.blockBytes
            let q = group + t.quants(b) + 4 * r
            p.storeBytes(of: group.load(fromByteOffset: t.d(b) + 2 * r, as: UInt16.self), as: UInt16.self)
            if t.hasMin {
                p.storeBytes(of: group.load(fromByteOffset: t.m(b) + 2 * r, as: UInt16.self), toByteOffset: 2, as: UInt16.self)
            }
            for l in 0..<(t.isQ8 ? 8 : 4) {
                let dword = q.load(fromByteOffset: 64 * l, as: UInt32.self)
                p.storeBytes(of: t.isQ8 ? dword ^ 0x8080_8080 : dword, toByteOffset: t.qsOffset + 4 * l, as: UInt32.self)
            }
            if t.hasHigh {
                var qh: UInt32 = 0
                for l in 0..<8 {
                    let mask = group.load(fromByteOffset: t.high(b) + 8 * l, as: UInt64.self)
                    qh |= UInt32((mask >> UInt64(4 * r)) & 0xF) << UInt32(4 * l)
                }
                p.storeBytes(of: qh, toByteOffset: t.qsOffset - 4, as: UInt32.self)
            }
        }
    }
}

/// Rows `range` of a tiled matrix for all `tokens`, into y (token stride `rows`): exactly the
/// floats of `avx512QuantRows` on the GGUF layout. Returns false for a type without tiles.
@inline(never)
public func avx512TiledRows(_ type: TensorType, tiles: UnsafeRawPointer, rows: Int, columns: Int,
                            act: AVX512Activations, tokens: Int, range: Range<Int>,
                            y: UnsafeMutablePointer<Float>, blockTotals: Bool) -> Bool {
    guard let t = TileLayout(type, columns: columns) else { return false }
    // literal flags, so each form is its own specialization of the inlined kernel
    @inline(__always) func run<F: PairFormat>(_ f: F.Type) {
        if blockTotals {
            tiledRows(f, t, tiles, rows, act, tokens, range, y, blockTotals: true)
        } else {
            tiledRows(f, t, tiles, rows, act, tokens, range, y, blockTotals: false)
        }
    }
    switch type {
    case .q4_0: run(P4_0.self)
    case .q4_1: run(P4_1.self)
    case .q5_0: run(P5_0.self)
    case .q5_1: run(P5_1.self)
    case .q8_0: run(P8_0.self)
    case .iq4_NL: run(PIQ4_NL.self)
    default: return false
    }
    return true
}

/// How far ahead of a decoding step's tile stream the L2 prefetches run. On Sapphire Rapids the
/// hardware prefetchers alone leave one core well below a plain read loop's bandwidth on this
/// stream; prefetching 2 KiB ahead closes most of the gap (decoding about a fifth faster), and
/// 1 KiB or 4 KiB ahead less of it.
let tilePrefetchDistance = 2048

/// Token counts from which a group is unpacked once into scratch (8 vectors and the float
/// scales per block) for all token pairs, rather than unpacked in registers for each pair.
let tileScratchMinTokens = 5

/// The 8 lane vectors of a block.
typealias Lanes8 = (__m512i, __m512i, __m512i, __m512i, __m512i, __m512i, __m512i, __m512i)

@inline(__always)
func tiledRows<F: PairFormat>(_ f: F.Type, _ t: TileLayout, _ tiles: UnsafeRawPointer, _ rows: Int,
                              _ act: AVX512Activations, _ tokens: Int, _ range: Range<Int>,
                              _ y: UnsafeMutablePointer<Float>, blockTotals: Bool) {
    let nb = t.nb
    let low4 = _mm512_set1_epi8(0x0F), bit4 = _mm512_set1_epi8(0x10)
    // IQ4_NL: codes → table value + 128 (the 16 entries in each 128-bit lane for vpshufb)
    let isTable = F.self == PIQ4_NL.self
    let table = _mm512_broadcast_i32x4(unsafeBitCast(PIQ4_NL.table, to: __m128i.self))
    let scratchBytes = tokens >= tileScratchMinTokens ? nb * (8 * 64 + 2 * 64) : 0
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(scratchBytes, 64), alignment: 64)
    defer { scratch.deallocate() }
    let sLanes = scratch.assumingMemoryBound(to: __m512i.self)
    let sScales = (scratch + nb * 8 * 64).assumingMemoryBound(to: __m512.self)  // [block][d, m]

    var g = range.lowerBound / 16
    while g * 16 < range.upperBound {
        let group = tiles + g * t.groupBytes
        let lo = max(range.lowerBound - 16 * g, 0), hi = min(range.upperBound - 16 * g, 16)
        let storeMask = UInt16(truncatingIfNeeded: (1 << hi) - (1 << lo))

        @inline(__always)
        func lanes(_ b: Int) -> Lanes8 {
            let q = group + t.quants(b)
            if t.isQ8 {
                return (q.load(as: __m512i.self), q.load(fromByteOffset: 64, as: __m512i.self),
                        q.load(fromByteOffset: 128, as: __m512i.self), q.load(fromByteOffset: 192, as: __m512i.self),
                        q.load(fromByteOffset: 256, as: __m512i.self), q.load(fromByteOffset: 320, as: __m512i.self),
                        q.load(fromByteOffset: 384, as: __m512i.self), q.load(fromByteOffset: 448, as: __m512i.self))
            }
            let v0 = q.load(as: __m512i.self), v1 = q.load(fromByteOffset: 64, as: __m512i.self)
            let v2 = q.load(fromByteOffset: 128, as: __m512i.self), v3 = q.load(fromByteOffset: 192, as: __m512i.self)
            // codes < 16, so vpshufb (which looks at the low 4 bits) indexes the table exactly
            @inline(__always) func code(_ c: __m512i) -> __m512i { isTable ? _mm512_shuffle_epi8(table, c) : c }
            @inline(__always) func low(_ v: __m512i) -> __m512i { code(_mm512_and_si512(v, low4)) }
            @inline(__always) func high(_ v: __m512i) -> __m512i { code(_mm512_and_si512(_mm512_srli_epi16(v, 4), low4)) }
            var l: Lanes8 = (low(v0), low(v1), low(v2), low(v3), high(v0), high(v1), high(v2), high(v3))
            if t.hasHigh {
                let h = group + t.high(b)
                @inline(__always) func add(_ v: inout __m512i, _ i: Int) {
                    v = _mm512_mask_add_epi8(v, h.load(fromByteOffset: 8 * i, as: UInt64.self), v, bit4)
                }
                add(&l.0, 0); add(&l.1, 1); add(&l.2, 2); add(&l.3, 3)
                add(&l.4, 4); add(&l.5, 5); add(&l.6, 6); add(&l.7, 7)
            }
            return l
        }
        @inline(__always)
        func scales(_ b: Int) -> (__m512, __m512) {
            let d = _mm512_cvtph_ps((group + t.d(b)).load(as: __m256i.self))
            let m = t.hasMin ? _mm512_cvtph_ps((group + t.m(b)).load(as: __m256i.self)) : d
            return (d, m)
        }

        let out = y + 16 * g
        if scratchBytes > 0 {
            for b in 0..<nb {
                let l = lanes(b), s = scales(b), w = sLanes + 8 * b
                w[0] = l.0; w[1] = l.1; w[2] = l.2; w[3] = l.3; w[4] = l.4; w[5] = l.5; w[6] = l.6; w[7] = l.7
                sScales[2 * b] = s.0; sScales[2 * b + 1] = s.1
            }
            forTokenPairs(tokens) { t0, nt in
                tileDot(F.self, nb, act, t0, nt, out + t0 * rows, rows, storeMask, blockTotals: blockTotals) { b in
                    let w = sLanes + 8 * b
                    return (w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7])
                } scales: { b in (sScales[2 * b], sScales[2 * b + 1]) }
            }
        } else if tokens == 1 {
            // Decoding streams the matrix from memory once per token: the stream runs
            // `tilePrefetchDistance` bytes ahead, spread evenly over the group's blocks.
            let chunk = (t.groupBytes / nb + 63) / 64 * 64
            let ahead = group + tilePrefetchDistance
            tileDot(F.self, nb, act, 0, 1, out, rows, storeMask, blockTotals: blockTotals, lanes: { b in
                let p = ahead + b * chunk
                for k in stride(from: 0, to: chunk, by: 64) { swiftlet_prefetch_l2(p + k) }
                return lanes(b)
            }, scales: scales)
        } else {
            forTokenPairs(tokens) { t0, nt in
                tileDot(F.self, nb, act, t0, nt, out + t0 * rows, rows, storeMask, blockTotals: blockTotals,
                        lanes: lanes, scales: scales)
            }
        }
        g += 1
    }
}

/// `body(t0, nt)` over the tokens two at a time (nt a literal 1 or 2 after inlining).
@inline(__always)
func forTokenPairs(_ tokens: Int, _ body: (Int, Int) -> Void) {
    var t = 0
    while t + 1 < tokens {
        body(t, 2)
        t += 2
    }
    if t < tokens { body(t, 1) }
}

/// Tokens t0..<t0+nt (1 or 2) over one tile of 16 rows, rows in vector lanes: `lanes(b)` gives
/// block b's 8 vectors (vector l, dword r: elements 4l..<4l+4 of row r, unsigned), `scales(b)`
/// its 16 rows' d and m. With the token's 4 activation bytes of lane l broadcast, one dpbusd
/// yields lane l for all 16 rows; lane l then enters FMA chain l: per row exactly the
/// operations of `PairKernel.rowDot` (llama.cpp's lane l in chain l); with `blockTotals` the 8
/// lanes' dpbusd instead accumulate in two integer chains, one conversion and FMA per block.
/// Rows outside `storeMask` are computed but not stored.
@inline(__always)
func tileDot<F: PairFormat>(_ f: F.Type, _ nb: Int, _ act: AVX512Activations, _ t0: Int, _ nt: Int,
                            _ out: UnsafeMutablePointer<Float>, _ outStride: Int, _ storeMask: UInt16,
                            blockTotals: Bool, lanes: (Int) -> Lanes8, scales: (Int) -> (__m512, __m512)) {
    let cols = act.columns
    let q = UnsafeRawPointer(act.q + t0 * cols)
    let ds = act.ds + 2 * t0 * nb
    let offsets = act.offsetSums + max(F.offsetSlot, 0) * act.offsetStride + 8 * t0 * nb
    let zero = _mm512_setzero_ps()
    var a0 = (zero, zero, zero, zero, zero, zero, zero, zero), a1 = a0
    var m0 = zero, m1 = zero

    @inline(__always)
    func lane(_ wk: __m512i, _ f: __m512, _ j: Int, _ b: Int, _ l: Int, _ acc: inout __m512) {
        var i = _mm512_setzero_si512()
        if F.offsetSlot >= 0 { i = _mm512_set1_epi32(offsets[8 * (j * nb + b) + l]) }
        let x = _mm512_set1_epi32(q.loadUnaligned(fromByteOffset: j * cols + 32 * b + 4 * l, as: Int32.self))
        acc = _mm512_fmadd_ps(f, _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(i, wk, x)), acc)
    }

    // Block totals (`blockTotals`): per row s = fma(d·dx, Float(the block's exact integer dot), s)
    // over the blocks, one chain (offsets and the min term as in llama.cpp's lane form). A third
    // of the lane form's conversions and FMAs: other floats, bounded by the fidelity tests.
    var s0 = zero, s1 = zero
    for b in 0..<nb {
        let (dv, mv) = scales(b)
        let f0 = _mm512_mul_ps(dv, _mm512_set1_ps(ds[2 * b]))
        let f1 = nt > 1 ? _mm512_mul_ps(dv, _mm512_set1_ps(ds[2 * (nb + b)])) : zero
        if F.hasMin {
            m0 = _mm512_fmadd_ps(mv, _mm512_set1_ps(ds[2 * b + 1]), m0)
            if nt > 1 { m1 = _mm512_fmadd_ps(mv, _mm512_set1_ps(ds[2 * (nb + b) + 1]), m1) }
        }
        let w = lanes(b)
        if blockTotals {
            @inline(__always)
            func total(_ j: Int) -> __m512i {
                var even = _mm512_setzero_si512(), odd = even
                if F.offsetSlot >= 0 {
                    let o = offsets + 8 * (j * nb + b)
                    even = _mm512_set1_epi32(((o[0] &+ o[1]) &+ (o[2] &+ o[3])) &+ ((o[4] &+ o[5]) &+ (o[6] &+ o[7])))
                }
                let x = q + j * cols + 32 * b
                @inline(__always) func xs(_ l: Int) -> __m512i { _mm512_set1_epi32(x.loadUnaligned(fromByteOffset: 4 * l, as: Int32.self)) }
                even = _mm512_dpbusd_epi32(even, w.0, xs(0)); odd = _mm512_dpbusd_epi32(odd, w.1, xs(1))
                even = _mm512_dpbusd_epi32(even, w.2, xs(2)); odd = _mm512_dpbusd_epi32(odd, w.3, xs(3))
                even = _mm512_dpbusd_epi32(even, w.4, xs(4)); odd = _mm512_dpbusd_epi32(odd, w.5, xs(5))
                even = _mm512_dpbusd_epi32(even, w.6, xs(6)); odd = _mm512_dpbusd_epi32(odd, w.7, xs(7))
                return _mm512_add_epi32(even, odd)
            }
            s0 = _mm512_fmadd_ps(f0, _mm512_cvtepi32_ps(total(0)), s0)
            if nt > 1 { s1 = _mm512_fmadd_ps(f1, _mm512_cvtepi32_ps(total(1)), s1) }
            continue
        }
        @inline(__always)
        func both(_ wk: __m512i, _ l: Int, _ x0: inout __m512, _ x1: inout __m512) {
            lane(wk, f0, 0, b, l, &x0)
            if nt > 1 { lane(wk, f1, 1, b, l, &x1) }
        }
        both(w.0, 0, &a0.0, &a1.0); both(w.1, 1, &a0.1, &a1.1); both(w.2, 2, &a0.2, &a1.2); both(w.3, 3, &a0.3, &a1.3)
        both(w.4, 4, &a0.4, &a1.4); both(w.5, 5, &a0.5, &a1.5); both(w.6, 6, &a0.6, &a1.6); both(w.7, 7, &a0.7, &a1.7)
    }
    if blockTotals {
        _mm512_mask_storeu_ps(out, storeMask, F.hasMin ? _mm512_add_ps(s0, m0) : s0)
        if nt > 1 { _mm512_mask_storeu_ps(out + outStride, storeMask, F.hasMin ? _mm512_add_ps(s1, m1) : s1) }
        return
    }

    @inline(__always)
    func finish(_ a: (__m512, __m512, __m512, __m512, __m512, __m512, __m512, __m512), _ m: __m512,
                _ o: UnsafeMutablePointer<Float>) {
        // llama.cpp's hsum_float_8 per row: (a0 + a4) + (a2 + a6), (a1 + a5) + (a3 + a7)
        let even = _mm512_add_ps(_mm512_add_ps(a.0, a.4), _mm512_add_ps(a.2, a.6))
        let odd = _mm512_add_ps(_mm512_add_ps(a.1, a.5), _mm512_add_ps(a.3, a.7))
        var r = _mm512_add_ps(even, odd)
        if F.hasMin { r = _mm512_add_ps(r, m) }
        _mm512_mask_storeu_ps(o, storeMask, r)
    }
    finish(a0, m0, out)
    if nt > 1 { finish(a1, m1, out + outStride) }
}
#endif
