#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif

/// Several (row, token) chains of the 32-element formats at once, for the AVX2/portable kernels.
///
/// Each chain is exactly `smallDot`'s: acc = fma(d·d_x, Float(lanes), acc) per block in block
/// order, the min term as its own FMA chain, llama.cpp's horizontal sum at the end; so the
/// results are bitwise those of `smallRowDot`. What changes is how many chains run side by
/// side. One chain alone waits on its FMA's latency at every block (decoding: one row, one
/// token); 2 rows × 4 tokens share each weight and activation load and keep the integer
/// multipliers busy (prompts).

/// Rows `first + i·spacing` (i < 4) × one token, straight from the GGUF rows (decoding); `y[r]`
/// receives row r. Callers space the rows a quarter of their range apart, so that the weights
/// are read as four sequential streams, which the hardware prefetchers follow (four adjacent
/// rows read block by block are slower than one row at a time).
@inline(__always)
func smallDotFourRows<K: QuantKernel>(_ k: K.Type, _ w: WeightMatrix, first: Int, spacing: Int,
                                      _ act: QuantizedActivations, token t: Int, _ y: UnsafeMutablePointer<Float>) {
    let nb = w.columns / 32, rowBytes = spacing * w.rowBytes
    let base = w.row(first)
    let x0 = UnsafeRawPointer(act.q + t * act.columns)
    let ds = act.ds + 2 * t * nb
    let offsets = UnsafeRawPointer(act.offsetSums + max(K.offsetSlot, 0) * act.offsetStride + 8 * t * nb)
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>()
    // The min chain in lane 1 of a pair, m = fma([d, m], [0, s_x], m), so the block's scales
    // stay in one register (lane 0 only ever adds d·0 and is not read).
    var m0 = SIMD2<Float>(), m1 = SIMD2<Float>(), m2 = SIMD2<Float>(), m3 = SIMD2<Float>()
    for b in 0..<nb {
        let x = x0.loadUnaligned(fromByteOffset: 32 * b, as: SIMD32<Int8>.self)
        let off = K.offsetSlot >= 0 ? offsets.loadUnaligned(fromByteOffset: 32 * b, as: SIMD8<Int32>.self) : .zero
        let dx = ds[2 * b], sxOnly = SIMD2<Float>(0, ds[2 * b + 1])
        @inline(__always)
        func chain(_ r: Int, _ a: inout SIMD8<Float>, _ m: inout SIMD2<Float>) {
            let p = base + r * rowBytes + b * K.blockBytes
            let sc = K.scales(p)
            var lanes = K.dot(K.chunk(p, K.header(p), 0).0, x, splat16(1))
            if K.offsetSlot >= 0 { lanes &+= off }
            a = a.addingProduct(SIMD8(repeating: sc[0] * dx), floats(lanes))
            if K.hasMin { m = m.addingProduct(sc, sxOnly) }
        }
        chain(0, &a0, &m0)
        chain(1, &a1, &m1)
        chain(2, &a2, &m2)
        chain(3, &a3, &m3)
    }
    y[first] = K.hasMin ? hsum(a0) + m0[1] : hsum(a0)
    y[first + spacing] = K.hasMin ? hsum(a1) + m1[1] : hsum(a1)
    y[first + 2 * spacing] = K.hasMin ? hsum(a2) + m2[1] : hsum(a2)
    y[first + 3 * spacing] = K.hasMin ? hsum(a3) + m3[1] : hsum(a3)
}

/// Per-token-group data of `smallDotTwoRowsFourTokens`, gathered once per group of 4 tokens
/// and shared by every row pair: block b's four d_x and four s_x, each twice (a row pair's
/// chains as the 8 lanes of one vector, row-major).
struct TokenGroupScales {
    let dx: UnsafeMutablePointer<SIMD8<Float>>
    let sx: UnsafeMutablePointer<SIMD8<Float>>
    /// Scratch of the row pair: block b's eight d·d_x products, rows × tokens.
    let products: UnsafeMutablePointer<SIMD8<Float>>

    init(blocks nb: Int) {
        dx = .allocate(capacity: nb)
        sx = .allocate(capacity: nb)
        products = .allocate(capacity: nb)
    }

    func deallocate() {
        dx.deallocate(); sx.deallocate(); products.deallocate()
    }

    /// Gathers tokens t0..<t0+4.
    @inline(__always)
    func gather(_ act: QuantizedActivations, t0: Int, blocks nb: Int, withMins: Bool) {
        let ds = act.ds + 2 * t0 * nb, stride = 2 * nb
        for b in 0..<nb {
            let i = 2 * b
            let d = SIMD4(ds[i], ds[i + stride], ds[i + 2 * stride], ds[i + 3 * stride])
            dx[b] = SIMD8(lowHalf: d, highHalf: d)
            if withMins {
                let s = SIMD4(ds[i + 1], ds[i + 1 + stride], ds[i + 1 + 2 * stride], ds[i + 1 + 3 * stride])
                sx[b] = SIMD8(lowHalf: s, highHalf: s)
            }
        }
    }
}

/// A row pair's block scales as `smallDotTwoRowsFourTokens` reads them: block b's d (and m)
/// of row r four times, then those of row r+1 four times. Built once per row tile.
@inline(__always)
func spreadPairScales(_ scales0: UnsafePointer<SIMD2<Float>>, _ scales1: UnsafePointer<SIMD2<Float>>, blocks nb: Int,
                      d: UnsafeMutablePointer<SIMD8<Float>>, m: UnsafeMutablePointer<SIMD8<Float>>?) {
    for b in 0..<nb {
        d[b] = SIMD8(lowHalf: SIMD4(repeating: scales0[b][0]), highHalf: SIMD4(repeating: scales1[b][0]))
        m?[b] = SIMD8(lowHalf: SIMD4(repeating: scales0[b][1]), highHalf: SIMD4(repeating: scales1[b][1]))
    }
}

/// Two rows × four tokens (t0..<t0+4) from unpacked blocks (`chunks` of each row, as
/// `decodedQuantRows` keeps them, and the pair's `spreadPairScales`): eight chains sharing
/// every weight and activation load.
/// `out` is (row r, token t0); row r+1 is `out + 1`, token t0+j is `out + j·outStride`.
@inline(__always)
func smallDotTwoRowsFourTokens<K: QuantKernel>(
    _ k: K.Type, _ nb: Int, _ act: QuantizedActivations, t0: Int, _ g: TokenGroupScales,
    chunks c0: UnsafePointer<K.Chunk>, _ c1: UnsafePointer<K.Chunk>,
    pairScales: UnsafePointer<SIMD8<Float>>, pairMins: UnsafePointer<SIMD8<Float>>,
    _ out: UnsafeMutablePointer<Float>, _ outStride: Int
) {
    let cols = act.columns
    let q0 = UnsafeRawPointer(act.q + t0 * cols)
    let offsets = UnsafeRawPointer(act.offsetSums + max(K.offsetSlot, 0) * act.offsetStride + 8 * t0 * nb)
    let tokenOffsetBytes = 32 * nb
    // d·d_x of the eight chains for every block (one 8-lane product each, the roundings of
    // the scalar ones), read back below as broadcasts from memory.
    for b in 0..<nb { g.products[b] = pairScales[b] * g.dx[b] }
    var a00 = SIMD8<Float>(), a01 = SIMD8<Float>(), a02 = SIMD8<Float>(), a03 = SIMD8<Float>()
    var a10 = SIMD8<Float>(), a11 = SIMD8<Float>(), a12 = SIMD8<Float>(), a13 = SIMD8<Float>()
    var m = SIMD8<Float>()  // lane 4·row + token
    for b in 0..<nb {
        let w0 = c0[b], w1 = c1[b]
        let p = UnsafeRawPointer(g.products + b).assumingMemoryBound(to: Float.self)
        @inline(__always)
        func token(_ j: Int, _ a0: inout SIMD8<Float>, _ a1: inout SIMD8<Float>) {
            let x = q0.loadUnaligned(fromByteOffset: j * cols + 32 * b, as: SIMD32<Int8>.self)
            var l0 = K.dot(w0, x, splat16(1)), l1 = K.dot(w1, x, splat16(1))
            if K.offsetSlot >= 0 {
                let off = offsets.loadUnaligned(fromByteOffset: j * tokenOffsetBytes + 32 * b, as: SIMD8<Int32>.self)
                l0 &+= off
                l1 &+= off
            }
            a0 = a0.addingProduct(SIMD8(repeating: p[j]), floats(l0))
            a1 = a1.addingProduct(SIMD8(repeating: p[4 + j]), floats(l1))
        }
        token(0, &a00, &a10)
        token(1, &a01, &a11)
        token(2, &a02, &a12)
        token(3, &a03, &a13)
        if K.hasMin { m = m.addingProduct(pairMins[b], g.sx[b]) }
    }
    @inline(__always)
    func result(_ a: SIMD8<Float>, _ lane: Int) -> Float { K.hasMin ? hsum(a) + m[lane] : hsum(a) }
    out[0] = result(a00, 0); out[1] = result(a10, 4)
    out[outStride] = result(a01, 1); out[outStride + 1] = result(a11, 5)
    out[2 * outStride] = result(a02, 2); out[2 * outStride + 1] = result(a12, 6)
    out[3 * outStride] = result(a03, 3); out[3 * outStride + 1] = result(a13, 7)
}

/// Per-token-group data of `superGemmDotFourTokens`: block b's four d_x, and for each pair of
/// 32-element chunks the four tokens' group sums of that pair's 4 groups side by side
/// ([t0 g0..3, t1 g0..3, t2 g0..3, t3 g0..3] as Int16), gathered once and shared by every row.
struct SuperTokenGroup {
    let dx: UnsafeMutablePointer<SIMD4<Float>>
    let pairSums: UnsafeMutableRawPointer  // nb × 4 pairs × 32 bytes

    init(blocks nb: Int) {
        dx = .allocate(capacity: nb)
        pairSums = .allocate(byteCount: nb * 4 * 32, alignment: 32)
    }

    func deallocate() {
        dx.deallocate(); pairSums.deallocate()
    }

    @inline(__always)
    func gather(_ act: QuantizedActivations, t0: Int, blocks nb: Int) {
        let d = act.d + t0 * nb
        for b in 0..<nb {
            dx[b] = SIMD4(d[b], d[b + nb], d[b + 2 * nb], d[b + 3 * nb])
            for pair in 0..<4 {
                let dest = pairSums + (4 * b + pair) * 32
                for j in 0..<4 {
                    let src = UnsafeRawPointer(act.bsums + 16 * ((t0 + j) * nb + b) + 4 * pair)
                    dest.storeBytes(of: src.loadUnaligned(as: UInt64.self), toByteOffset: 8 * j, as: UInt64.self)
                }
            }
        }
    }
}

#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
/// The upper 128 bits (vextracti128, whose intrinsic is a C macro Swift cannot import).
@inline(__always)
private func high128(_ v: __m256i) -> __m128i {
    unsafeBitCast(unsafeBitCast(v, to: SIMD8<Int32>.self).highHalf, to: __m128i.self)
}

/// The four Int32 sums of a, b, c, d's eight lanes each (exact integers, so any order).
@inline(__always)
private func laneSums(_ a: SIMD8<Int32>, _ b: SIMD8<Int32>, _ c: SIMD8<Int32>, _ d: SIMD8<Int32>) -> __m128i {
    let ab = _mm256_hadd_epi32(unsafeBitCast(a, to: __m256i.self), unsafeBitCast(b, to: __m256i.self))
    let cd = _mm256_hadd_epi32(unsafeBitCast(c, to: __m256i.self), unsafeBitCast(d, to: __m256i.self))
    let all = _mm256_hadd_epi32(ab, cd)  // [a b c d](low halves' sums) | [a b c d](high halves')
    return _mm_add_epi32(_mm256_castsi256_si128(all), high128(all))
}

/// One row × four gemm tokens (t0..<t0+4, all below `act.gemmRows`) of a `.rowSums` K-quant
/// (Q4_K) from unpacked blocks: llama.cpp's gemm form, per pair of chunks
///     s_t = fma(Float(Σ lanes), d·d_x,t, s_t),  c_t = fma(Float(Σ mins·group sums), dmin·d_x,t, c_t)
/// with the four tokens' scalar chains as the four lanes of one vector: the same floats as
/// `superDot`'s `gemmPair`, without a horizontal sum per token and pair.
@inline(__always)
func superGemmDotFourTokens<K: QuantKernel>(
    _ k: K.Type, _ nb: Int, _ act: QuantizedActivations, t0: Int, _ g: SuperTokenGroup,
    headers: UnsafePointer<KHeader>, lanes: UnsafePointer<K.Chunk>, multipliers: UnsafePointer<SIMD16<Int16>>,
    _ out: UnsafeMutablePointer<Float>, _ outStride: Int
) {
    let cols = act.columns
    let q0 = UnsafeRawPointer(act.q + t0 * cols)
    var s = _mm_setzero_ps(), c = _mm_setzero_ps()
    for b in 0..<nb {
        let h = headers[b]
        let dx = unsafeBitCast(g.dx[b], to: __m128.self)
        let scale = _mm_mul_ps(_mm_set1_ps(h.d), dx), minScale = _mm_mul_ps(_mm_set1_ps(h.dmin), dx)
        let mins = unsafeBitCast(h.mins, to: SIMD4<Int64>.self)
        // Called with literal pairs: with a loop index, `mins[pair]` went through the stack
        // every pair (a 32-byte store, then an 8-byte load inside it: a stalled forwarding).
        @inline(__always)
        func pairStep(_ pair: Int) {
            var p0 = SIMD8<Int32>(), p1 = SIMD8<Int32>(), p2 = SIMD8<Int32>(), p3 = SIMD8<Int32>()
            for half in 0..<2 {
                let ci = 8 * b + 2 * pair + half
                let w = lanes[ci], m = multipliers[ci]
                let off = b * 256 + (2 * pair + half) * 32
                p0 &+= K.dot(w, q0.loadUnaligned(fromByteOffset: off, as: SIMD32<Int8>.self), m)
                p1 &+= K.dot(w, q0.loadUnaligned(fromByteOffset: off + cols, as: SIMD32<Int8>.self), m)
                p2 &+= K.dot(w, q0.loadUnaligned(fromByteOffset: off + 2 * cols, as: SIMD32<Int8>.self), m)
                p3 &+= K.dot(w, q0.loadUnaligned(fromByteOffset: off + 3 * cols, as: SIMD32<Int8>.self), m)
            }
            s = _mm_fmadd_ps(_mm_cvtepi32_ps(laneSums(p0, p1, p2, p3)), scale, s)
            // Σ_g mins[g]·bsums_t[g] over the pair's 4 groups, for the 4 tokens at once
            let groupSums = (g.pairSums + (4 * b + pair) * 32).load(as: __m256i.self)
            let products = _mm256_madd_epi16(_mm256_set1_epi64x(mins[pair]), groupSums)
            let halves = _mm256_hadd_epi32(products, products)  // [t0 t1 t0 t1 | t2 t3 t2 t3]
            let minSums = _mm_unpacklo_epi64(_mm256_castsi256_si128(halves), high128(halves))
            c = _mm_fmadd_ps(_mm_cvtepi32_ps(minSums), minScale, c)
        }
        pairStep(0); pairStep(1); pairStep(2); pairStep(3)
    }
    let r = unsafeBitCast(_mm_sub_ps(s, c), to: SIMD4<Float>.self)
    out[0] = r[0]; out[outStride] = r[1]; out[2 * outStride] = r[2]; out[3 * outStride] = r[3]
}
#endif
