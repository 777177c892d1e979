// Q4_K prompt batches with 16 rows in the 16 lanes of a vector (the K-quant counterpart of
// `PairKernel.tiles`). Results are bitwise those of `SuperKernel<S4_K>.dot`: its integer sums
// are exact whatever their order, and its float chains (per row and token: s over the block's
// pair sums or block total, c over the mins, result s - c) are the same operations in the same
// order here, one row per lane.
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel

/// Prompt batches of at least this many tokens take `Q4KTiles` (the tile unpack costs about
/// as much as a few tokens' products).
let q4KTileMinTokens = 4

enum Q4KTiles {
    // Scratch layout of a 16-row tile, per block, in 64-byte vectors (one Int32/Float lane per row):
    /// [cp][j]: dpbusd lane j (4 bytes) of chunk pair cp's 64 decoded elements (j < 8: sub-block
    /// 2cp, j ≥ 8: 2cp+1), i.e. 4 consecutive weights (unsigned nibbles) per row.
    static var weights: Int { 0 }
    /// [sub-block]: its 6-bit scale (Int32).
    static var scales: Int { 64 }
    /// [cp]: the mins of sub-blocks 2cp, 2cp+1 as an Int16 pair, for one vpmaddwd with the
    /// token's matching pair of bsums-pair sums.
    static var mins: Int { 72 }
    static var d: Int { 76 }
    static var dmin: Int { 77 }
    static var blockVectors: Int { 78 }

    /// Rows `range` of a Q4_K matrix for all tokens, as `SuperKernel<S4_K>.decodedRows`.
    static func rows(_ m: Mat, _ act: AVX512Activations, _ tokens: Int, _ range: Range<Int>,
                     _ y: UnsafeMutablePointer<Float>) {
        let nb = m.columns / 256
        let k = superConsts(scalesPerChunk: 1)
        let transposeConsts = pairConsts(qsOffset: 0, blockBytes: 0)
        let tile = UnsafeMutablePointer<__m512i>.allocate(capacity: nb * blockVectors + 16)
        let zeroBlock = UnsafeMutableRawPointer.allocate(byteCount: 144, alignment: 16)
        zeroBlock.initializeMemory(as: UInt8.self, repeating: 0, count: 144)
        // per token, block and chunk pair: (bsums 4cp + 4cp+1, bsums 4cp+2 + 4cp+3) as an Int16
        // pair (|sum| ≤ 2 · 16 · 128 fits)
        let bsumPairs = UnsafeMutablePointer<Int32>.allocate(capacity: tokens * nb * 4)
        defer { tile.deallocate(); zeroBlock.deallocate(); bsumPairs.deallocate() }
        for i in 0..<tokens * nb {
            let g = act.bsums + 16 * i
            for cp in 0..<4 {
                let lo = Int32(g[4 * cp]) + Int32(g[4 * cp + 1]), hi = Int32(g[4 * cp + 2]) + Int32(g[4 * cp + 3])
                bsumPairs[4 * i + cp] = (lo & 0xFFFF) | (hi << 16)
            }
        }

        var r0 = range.lowerBound
        while r0 < range.upperBound {
            let nr = min(16, range.upperBound - r0)
            unpack(k, transposeConsts, m, r0, nr, nb, UnsafeRawPointer(zeroBlock), tile)
            let mask = UInt16(truncatingIfNeeded: (1 << nr) - 1)
            // passes of up to 4 tokens, never straddling gemmRows (the form is per pass)
            var t = 0
            while t < tokens {
                let gemm = t < act.gemmRows
                let n = min(4, (gemm ? act.gemmRows : tokens) - t)
                let out = y + t * m.rows + r0
                @inline(__always)
                func run(_ nt: Int, _ gemm: Bool) {
                    pass(tile, nb, act, bsumPairs, t, nt, gemm, out, m.rows, mask)
                }
                switch (n, gemm) {
                case (4, true): run(4, true)
                case (3, true): run(3, true)
                case (2, true): run(2, true)
                case (_, true): run(1, true)
                case (4, false): run(4, false)
                case (3, false): run(3, false)
                case (2, false): run(2, false)
                default: run(1, false)
                }
                t += n
            }
            r0 += nr
        }
    }

    /// Decodes rows r0..<r0+nr (rows beyond `nr`: zeros) into the tile layout: each chunk pair
    /// row by row as `S4_K.pair` gives it (16 Int32 lanes), then its 16 rows × 16 lanes transposed.
    @inline(__always)
    static func unpack(_ k: SuperConsts, _ tc: PairConsts, _ m: Mat, _ r0: Int, _ nr: Int, _ nb: Int,
                       _ zeroBlock: UnsafeRawPointer, _ tile: UnsafeMutablePointer<__m512i>) {
        let tmp = tile + nb * blockVectors
        for r in 0..<16 {
            let row = m.data + (r0 + r) * m.rowBytes
            for b in 0..<nb {
                let p = r < nr ? row + b * 144 : zeroBlock
                let blk = tile + b * blockVectors
                for cp in 0..<4 { blk[weights + 16 * cp + r] = S4_K.pair(k, p, cp) }
                let (sc, mn) = kScalesMins(p + 4)
                let s16 = unsafeBitCast(sc, to: SIMD32<Int16>.self), m16 = unsafeBitCast(mn, to: SIMD16<Int16>.self)
                let lanes = UnsafeMutableRawPointer(blk).assumingMemoryBound(to: Int32.self)
                for sb in 0..<8 { lanes[16 * (scales + sb) + r] = Int32(s16[sb]) }
                // m16 holds each min twice: min of sub-block s at 2s
                for cp in 0..<4 {
                    lanes[16 * (mins + cp) + r] = Int32(UInt16(bitPattern: m16[4 * cp])) | Int32(m16[4 * cp + 2]) << 16
                }
                let floats = UnsafeMutableRawPointer(blk).assumingMemoryBound(to: Float.self)
                floats[16 * d + r] = f16(p, 0)
                floats[16 * dmin + r] = f16(p, 2)
            }
        }
        for b in 0..<nb {
            for cp in 0..<4 { transpose16(tc, tile + b * blockVectors + weights + 16 * cp, tmp) }
        }
    }

    /// Tokens t0..<t0+nt (1...4, all in the gemm form or all in the gemv form) over one tile:
    /// per token and sub-block, 8 dpbusd with the token's 4 activation bytes broadcast give the
    /// sub-block's dot for all 16 rows; the per-row scales multiply it once.
    @inline(__always)
    static func pass(_ tile: UnsafePointer<__m512i>, _ nb: Int, _ act: AVX512Activations,
                     _ bsumPairs: UnsafePointer<Int32>, _ t0: Int, _ nt: Int, _ gemm: Bool,
                     _ out: UnsafeMutablePointer<Float>, _ outStride: Int, _ mask: UInt16) {
        let cols = act.columns
        let q = UnsafeRawPointer(act.q + t0 * cols)
        let zf = _mm512_setzero_ps(), zi = _mm512_setzero_si512()
        var s0 = zf, s1 = zf, s2 = zf, s3 = zf
        var c0 = zf, c1 = zf, c2 = zf, c3 = zf
        for b in 0..<nb {
            let blk = tile + b * blockVectors
            let dw = unsafeBitCast(blk[d], to: __m512.self), mw = unsafeBitCast(blk[dmin], to: __m512.self)
            // the Float products d_w · d_x, dmin_w · d_x of the reference, per lane
            @inline(__always)
            func dx(_ j: Int) -> __m512 { _mm512_set1_ps(act.d[(t0 + j) * nb + b]) }
            let dd0 = _mm512_mul_ps(dw, dx(0)), dm0 = _mm512_mul_ps(mw, dx(0))
            let dd1 = nt > 1 ? _mm512_mul_ps(dw, dx(1)) : zf, dm1 = nt > 1 ? _mm512_mul_ps(mw, dx(1)) : zf
            let dd2 = nt > 2 ? _mm512_mul_ps(dw, dx(2)) : zf, dm2 = nt > 2 ? _mm512_mul_ps(mw, dx(2)) : zf
            let dd3 = nt > 3 ? _mm512_mul_ps(dw, dx(3)) : zf, dm3 = nt > 3 ? _mm512_mul_ps(mw, dx(3)) : zf
            // gemv form: the block's integer totals
            var g0 = zi, g1 = zi, g2 = zi, g3 = zi
            var n0 = zi, n1 = zi, n2 = zi, n3 = zi
            for cp in 0..<4 {
                let w = blk + weights + 16 * cp
                let xo = b * 256 + cp * 64
                @inline(__always)
                func x(_ j: Int, _ off: Int) -> __m512i {
                    _mm512_set1_epi32(q.loadUnaligned(fromByteOffset: j * cols + xo + off, as: Int32.self))
                }
                var a0 = zi, a1 = zi, a2 = zi, a3 = zi   // sub-block 2cp
                var b0 = zi, b1 = zi, b2 = zi, b3 = zi   // sub-block 2cp+1
                for l in 0..<8 {
                    let wa = w[l], wb = w[8 + l]
                    a0 = _mm512_dpbusd_epi32(a0, wa, x(0, 4 * l))
                    b0 = _mm512_dpbusd_epi32(b0, wb, x(0, 32 + 4 * l))
                    if nt > 1 {
                        a1 = _mm512_dpbusd_epi32(a1, wa, x(1, 4 * l))
                        b1 = _mm512_dpbusd_epi32(b1, wb, x(1, 32 + 4 * l))
                    }
                    if nt > 2 {
                        a2 = _mm512_dpbusd_epi32(a2, wa, x(2, 4 * l))
                        b2 = _mm512_dpbusd_epi32(b2, wb, x(2, 32 + 4 * l))
                    }
                    if nt > 3 {
                        a3 = _mm512_dpbusd_epi32(a3, wa, x(3, 4 * l))
                        b3 = _mm512_dpbusd_epi32(b3, wb, x(3, 32 + 4 * l))
                    }
                }
                let sa = blk[scales + 2 * cp], sb = blk[scales + 2 * cp + 1], mv = blk[mins + cp]
                @inline(__always)
                func finish(_ j: Int, _ a: __m512i, _ bb: __m512i, _ dd: __m512, _ dm: __m512,
                            _ s: inout __m512, _ c: inout __m512, _ g: inout __m512i, _ n: inout __m512i) {
                    // the pair's exact sum Σ q_w·q_x·scale, and Σ mins·bsums over its 4 groups
                    let pairSum = _mm512_add_epi32(_mm512_mullo_epi32(a, sa), _mm512_mullo_epi32(bb, sb))
                    let minSum = _mm512_madd_epi16(mv, _mm512_set1_epi32(bsumPairs[4 * ((t0 + j) * nb + b) + cp]))
                    if gemm {
                        s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(pairSum), dd, s)
                        c = _mm512_fmadd_ps(_mm512_cvtepi32_ps(minSum), dm, c)
                    } else {
                        g = _mm512_add_epi32(g, pairSum)
                        n = _mm512_add_epi32(n, minSum)
                    }
                }
                finish(0, a0, b0, dd0, dm0, &s0, &c0, &g0, &n0)
                if nt > 1 { finish(1, a1, b1, dd1, dm1, &s1, &c1, &g1, &n1) }
                if nt > 2 { finish(2, a2, b2, dd2, dm2, &s2, &c2, &g2, &n2) }
                if nt > 3 { finish(3, a3, b3, dd3, dm3, &s3, &c3, &g3, &n3) }
            }
            if !gemm {
                @inline(__always)
                func block(_ g: __m512i, _ n: __m512i, _ dd: __m512, _ dm: __m512, _ s: inout __m512, _ c: inout __m512) {
                    s = _mm512_fmadd_ps(_mm512_cvtepi32_ps(g), dd, s)
                    c = _mm512_fmadd_ps(_mm512_cvtepi32_ps(n), dm, c)
                }
                block(g0, n0, dd0, dm0, &s0, &c0)
                if nt > 1 { block(g1, n1, dd1, dm1, &s1, &c1) }
                if nt > 2 { block(g2, n2, dd2, dm2, &s2, &c2) }
                if nt > 3 { block(g3, n3, dd3, dm3, &s3, &c3) }
            }
        }
        _mm512_mask_storeu_ps(out, mask, _mm512_sub_ps(s0, c0))
        if nt > 1 { _mm512_mask_storeu_ps(out + outStride, mask, _mm512_sub_ps(s1, c1)) }
        if nt > 2 { _mm512_mask_storeu_ps(out + 2 * outStride, mask, _mm512_sub_ps(s2, c2)) }
        if nt > 3 { _mm512_mask_storeu_ps(out + 3 * outStride, mask, _mm512_sub_ps(s3, c3)) }
    }
}
#endif
