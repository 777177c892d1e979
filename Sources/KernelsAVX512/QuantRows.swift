// AVX-512 + VNNI versions of the quantized matmul row kernels in `Kernels` (MatMul.swift,
// BlockKernels.swift). Everything here is compiled for `icelake-server` and must only run
// when `CPUDispatch.useAVX512` says so.
//
// The results are bitwise identical to the AVX2 kernels: the integer dot products of a
// block are exact in both (vpdpbusd / vpmaddubsw+vpdpwssd give the same Int32 lanes as
// vpmaddubsw+vpmaddwd, whose 16-bit pair sums never saturate for these formats), and every
// float operation (f16 conversions, scale products, FMAs per lane, the min/correction sums,
// the final horizontal sum) is the same operation in the same order.
//  - 32-element formats: llama.cpp's vec_dot arithmetic. Few tokens: one 512-bit dpbusd per
//    block pair and row, its halves fed to the 8-lane chain in block order. Prompt batches:
//    16-row tiles with rows in vector lanes (see `PairKernel.tiles`).
//  - K-quants: two 32-element chunks per 512-bit step, folded to the same 8 Int32 lanes per
//    block before the (256-bit, unchanged) float FMA.
//
// Only `avx512QuantRows` is called from outside, and only after `Kernels.CPUDispatch` found
// the CPU features: any code in this target may contain AVX-512 instructions, so nothing
// that runs before that check (feature detection, dispatch policy) lives here.
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
import GGUF

/// Activation layout of `Kernels.QuantizedActivations`, as raw pointers.
public struct AVX512Activations: @unchecked Sendable {
    public let q: UnsafePointer<Int8>
    public let d: UnsafePointer<Float>
    public let ds: UnsafePointer<Float>
    public let bsums: UnsafePointer<Int16>
    /// For offsets 8, 16, 128 (`offsetStride` apart): per token and block, 8 Int32 lanes of
    /// -offset · (sum of the lane's 4 q).
    public let offsetSums: UnsafePointer<Int32>
    public let offsetStride: Int
    /// Tokens whose Q4_K rows take llama.cpp's gemm form (sums per pair of sub-blocks).
    public let gemmRows: Int
    public let columns: Int
    public init(q: UnsafePointer<Int8>, d: UnsafePointer<Float>, ds: UnsafePointer<Float>,
                bsums: UnsafePointer<Int16>, offsetSums: UnsafePointer<Int32>, offsetStride: Int, gemmRows: Int,
                columns: Int) {
        self.q = q; self.d = d; self.ds = ds; self.bsums = bsums
        self.offsetSums = offsetSums; self.offsetStride = offsetStride; self.gemmRows = gemmRows
        self.columns = columns
    }
}

/// Rows `range` of a `type` matrix (`rows` × `rowBytes` at `data`) for all `tokens`, into y
/// (token stride `rows`), exactly as `Kernels.quantRows`. Returns false (nothing written)
/// for a type without an AVX-512 kernel.
@inline(never)
public func avx512QuantRows(_ type: TensorType, data: UnsafeRawPointer, rows: Int, rowBytes: Int, columns: Int,
                            act: AVX512Activations, tokens: Int, range: Range<Int>,
                            y: UnsafeMutablePointer<Float>) -> Bool {
    let m = Mat(data: data, rows: rows, rowBytes: rowBytes, columns: columns)
    switch type {
    case .q4_0: pairRows(P4_0.self, m, act, tokens, range, y)
    case .q4_1: pairRows(P4_1.self, m, act, tokens, range, y)
    case .q5_0: pairRows(P5_0.self, m, act, tokens, range, y)
    case .q5_1: pairRows(P5_1.self, m, act, tokens, range, y)
    case .q8_0: pairRows(P8_0.self, m, act, tokens, range, y)
    case .q2_K: superRows(S2_K.self, m, act, tokens, range, y)
    case .q3_K: superRows(S3_K.self, m, act, tokens, range, y)
    case .q4_K: superRows(S4_K.self, m, act, tokens, range, y)
    case .q5_K: superRows(S5_K.self, m, act, tokens, range, y)
    case .q6_K: superRows(S6_K.self, m, act, tokens, range, y)
    case .iq4_NL: pairRows(PIQ4_NL.self, m, act, tokens, range, y)
    case .iq4_XS: superRows(SIQ4_XS.self, m, act, tokens, range, y)
    case .mxfp4: pairRows(PMXFP4.self, m, act, tokens, range, y)
    case .tq1_0: superRows(STQ1_0.self, m, act, tokens, range, y)
    case .tq2_0: superRows(STQ2_0.self, m, act, tokens, range, y)
    default: return false
    }
    return true
}

struct Mat {
    let data: UnsafeRawPointer
    let rows: Int
    let rowBytes: Int
    let columns: Int
}

protocol RowKernel {
    associatedtype Consts
    static var blockBytes: Int { get }
    static var blockElements: Int { get }
    static func consts() -> Consts
    static func rowDot(_ k: Consts, _ row: UnsafeRawPointer, _ nb: Int, _ act: AVX512Activations,
                       _ t0: Int, _ nt: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int)
}

@inline(__always)
func pairRows<F: PairFormat>(_ f: F.Type, _ m: Mat, _ act: AVX512Activations, _ tokens: Int,
                             _ range: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
    if tokens >= pairTileMinTokens {
        PairKernel<F>.tiles(PairKernel<F>.consts(), m, act, tokens, range, y)
    } else {
        rowsLoop(PairKernel<F>.self, m, act, tokens, range, y)
    }
}

@inline(__always)
func superRows<F: SuperFormat>(_ f: F.Type, _ m: Mat, _ act: AVX512Activations, _ tokens: Int,
                               _ range: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
    if F.self == S4_K.self {
        // decoding a tile pays from a few tokens on; 1–3 tokens (decode) read the rows directly
        if tokens >= q4KTileMinTokens {
            Q4KTiles.rows(m, act, tokens, range, y)
        } else {
            rowsLoop(SuperKernel<F>.self, m, act, tokens, range, y)
        }
    } else if tokens > 8 {
        SuperKernel<F>.decodedRows(SuperKernel<F>.consts(), m, act, tokens, range, y)
    } else {
        rowsLoop(SuperKernel<F>.self, m, act, tokens, range, y)
    }
}

/// The row/token tiling of `Kernels.quantRows` (results do not depend on it).
@inline(__always)
func rowsLoop<K: RowKernel>(_ k: K.Type, _ m: Mat, _ act: AVX512Activations, _ tokens: Int,
                            _ range: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
    let consts = K.consts()  // constant-folded after inlining
    let rows = m.rows, nb = m.columns / K.blockElements
    let tile = max(1, min(64, (32 << 10) / max(m.rowBytes, 1)))
    var r0 = range.lowerBound
    while r0 < range.upperBound {
        let r1 = min(r0 + tile, range.upperBound)
        var t0 = 0
        while t0 < tokens {
            let nt = min(4, tokens - t0)
            for r in r0..<r1 {
                let row = m.data + r * m.rowBytes
                let out = y + t0 * rows + r
                switch nt {
                case 4: K.rowDot(consts, row, nb, act, t0, 4, out, rows)
                case 3: K.rowDot(consts, row, nb, act, t0, 3, out, rows)
                case 2: K.rowDot(consts, row, nb, act, t0, 2, out, rows)
                default: K.rowDot(consts, row, nb, act, t0, 1, out, rows)
                }
            }
            t0 += nt
        }
        r0 = r1
    }
}

// MARK: helpers

@inline(__always)
func bytes64(_ f: (Int) -> Int) -> __m512i {
    var v = SIMD64<UInt8>()
    for i in 0..<64 { v[i] = UInt8(truncatingIfNeeded: f(i)) }
    return unsafeBitCast(v, to: __m512i.self)
}

@inline(__always)
func words32(_ f: (Int) -> Int) -> __m512i {
    var v = SIMD32<Int16>()
    for i in 0..<32 { v[i] = Int16(truncatingIfNeeded: f(i)) }
    return unsafeBitCast(v, to: __m512i.self)
}

@inline(__always)
func dwords16(_ f: (Int) -> Int) -> __m512i {
    var v = SIMD16<Int32>()
    for i in 0..<16 { v[i] = Int32(truncatingIfNeeded: f(i)) }
    return unsafeBitCast(v, to: __m512i.self)
}

@inline(__always)
func byteMask(_ n: Int) -> UInt64 { n >= 64 ? ~0 : (1 << UInt64(n)) - 1 }

/// The same horizontal sum as `Kernels.hsum` (llama.cpp's hsum_float_8 order).
@inline(__always)
func hsum8(_ v: __m256) -> Float {
    let a = v.lowHalf + v.highHalf
    return (a[0] + a[2]) + (a[1] + a[3])
}

/// Lanes 0..<8 of the 16-lane Int32 vector plus lanes 8..<16.
@inline(__always)
func foldI32(_ v: __m512i, _ hiIdx: __m512i) -> __m256i {
    _mm512_castsi512_si256(_mm512_add_epi32(v, _mm512_permutexvar_epi64(hiIdx, v)))
}

@inline(__always)
func foldF32(_ v: __m512, _ hiIdx: __m512i) -> __m256 {
    _mm512_castps512_ps256(_mm512_add_ps(v, _mm512_permutexvar_ps(hiIdx, v)))
}

@inline(__always)
func f16(_ p: UnsafeRawPointer, _ off: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: off, as: UInt16.self)))
}

// MARK: 32-element formats

/// A 32-element format's bytes, decoded two blocks at a time.
protocol PairFormat {
    static var blockBytes: Int { get }
    /// Two decoded blocks (the second one only if `two`; else zeros) as 64 unsigned bytes
    /// (weight + offset): lanes 0..<32 the first block's elements in order, 32..<64 the second's.
    static func decode(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool) -> __m512i
    /// [d0, m0, d1, m1] (m = 0 without a min).
    static func pairScales(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float>
    /// Index of the offset the decoded bytes carry in `AVX512Activations.offsetSums` (-1: none).
    static var offsetSlot: Int { get }
    static var hasMin: Bool { get }
}

struct PairConsts {
    var nibbleIdx: __m512i
    var nibbleShift: __m512i
    var low4: __m512i
    /// The four butterfly stages of a 16 × 16 Int32 transpose (lo, hi index per stage).
    var transpose: (__m512i, __m512i, __m512i, __m512i, __m512i, __m512i, __m512i, __m512i)
}

@inline(__always)
func pairConsts(qsOffset: Int, blockBytes: Int) -> PairConsts {
    // stage with distance D swaps bit D of the row and column indices:
    // out[i] takes a[g·2D + j], b[g·2D + j]; out[i + D] takes a[g·2D + D + j], b[g·2D + D + j]
    func stage(_ d: Int, _ hi: Bool) -> __m512i {
        dwords16 { p in
            let g = p / (2 * d), o = p % (2 * d)
            return (o >= d ? 16 : 0) + g * 2 * d + (hi ? d : 0) + o % d
        }
    }
    return PairConsts(nibbleIdx: bytes64 { i in (i & 15) + qsOffset + (i >= 32 ? blockBytes : 0) },
                      nibbleShift: words32 { i in (i & 8) != 0 ? 4 : 0 },
                      low4: _mm512_set1_epi8(0x0F),
                      transpose: (stage(8, false), stage(8, true), stage(4, false), stage(4, true),
                                  stage(2, false), stage(2, true), stage(1, false), stage(1, true)))
}

/// 32 nibbles of each block: bytes qs[0..<16] of a block → low nibbles then high nibbles.
@inline(__always)
func pairNibbles(_ c: PairConsts, _ raw: __m512i) -> __m512i {
    let v = _mm512_permutexvar_epi8(c.nibbleIdx, raw)
    return _mm512_and_si512(_mm512_srlv_epi16(v, c.nibbleShift), c.low4)
}

@inline(__always)
func dPair(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> {
    let d0 = UInt64(p0.loadUnaligned(as: UInt16.self)), d1 = UInt64(p1.loadUnaligned(as: UInt16.self))
    return _mm_cvtph_ps(_mm_cvtsi64_si128(Int64(bitPattern: d0 | d1 << 32)))
}

@inline(__always)
func dmPair(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> {
    let a = UInt64(p0.loadUnaligned(as: UInt32.self)), b = UInt64(p1.loadUnaligned(as: UInt32.self))
    return _mm_cvtph_ps(_mm_cvtsi64_si128(Int64(bitPattern: a | b << 32)))
}

struct P4_0: PairFormat {
    static var blockBytes: Int { 18 }
    static var offsetSlot: Int { 0 }
    static var hasMin: Bool { false }
    @inline(__always) static func decode(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool) -> __m512i {
        pairNibbles(c, _mm512_maskz_loadu_epi8(byteMask(two ? 36 : 18), p))
    }
    @inline(__always) static func pairScales(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> { dPair(p0, p1) }
}

struct P4_1: PairFormat {
    static var blockBytes: Int { 20 }
    static var offsetSlot: Int { -1 }
    static var hasMin: Bool { true }
    @inline(__always) static func decode(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool) -> __m512i {
        pairNibbles(c, _mm512_maskz_loadu_epi8(byteMask(two ? 40 : 20), p))
    }
    @inline(__always) static func pairScales(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> { dmPair(p0, p1) }
}

struct P5_0: PairFormat {
    static var blockBytes: Int { 22 }
    static var offsetSlot: Int { 1 }
    static var hasMin: Bool { false }
    @inline(__always) static func decode(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool) -> __m512i {
        let n = pairNibbles(c, _mm512_maskz_loadu_epi8(byteMask(two ? 44 : 22), p))
        let h0 = UInt64(p.loadUnaligned(fromByteOffset: 2, as: UInt32.self))
        let h1 = two ? UInt64(p.loadUnaligned(fromByteOffset: 24, as: UInt32.self)) : 0
        return _mm512_mask_add_epi8(n, h0 | h1 << 32, n, _mm512_set1_epi8(0x10))
    }
    @inline(__always) static func pairScales(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> { dPair(p0, p1) }
}

struct P5_1: PairFormat {
    static var blockBytes: Int { 24 }
    static var offsetSlot: Int { -1 }
    static var hasMin: Bool { true }
    @inline(__always) static func decode(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool) -> __m512i {
        let n = pairNibbles(c, _mm512_maskz_loadu_epi8(byteMask(two ? 48 : 24), p))
        let h0 = UInt64(p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let h1 = two ? UInt64(p.loadUnaligned(fromByteOffset: 28, as: UInt32.self)) : 0
        return _mm512_mask_add_epi8(n, h0 | h1 << 32, n, _mm512_set1_epi8(0x10))
    }
    @inline(__always) static func pairScales(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> { dmPair(p0, p1) }
}

struct P8_0: PairFormat {
    static var blockBytes: Int { 34 }
    /// q + 128 as an unsigned byte (q ^ 0x80), so Σ q·x = dpbusd - 128·Σ x exactly.
    static var offsetSlot: Int { 2 }
    static var hasMin: Bool { false }
    @inline(__always) static func decode(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool) -> __m512i {
        let a = p.loadUnaligned(fromByteOffset: 2, as: __m256i.self)
        let b = _mm256_maskz_loadu_epi8(two ? UInt32.max : 0, p + 36)
        let q = _mm512_inserti64x4_(a, b)
        let flip = _mm512_set1_epi8(-128)
        return two ? _mm512_xor_si512(q, flip) : _mm512_maskz_xor_epi32(0x00FF, q, flip)
    }
    @inline(__always) static func pairScales(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> { dPair(p0, p1) }
}

/// [a, b] as one 512-bit vector.
@inline(__always)
func _mm512_inserti64x4_(_ a: __m256i, _ b: __m256i) -> __m512i {
    let idx = _mm512_set_epi64(11, 10, 9, 8, 3, 2, 1, 0)
    return _mm512_permutex2var_epi64(_mm512_castsi256_si512(a), idx, _mm512_castsi256_si512(b))
}

/// Prompt batches of at least this many tokens use the row-tile kernel (`PairKernel.tiles`).
let pairTileMinTokens = 2

/// The 32-element formats: llama.cpp's vec_dot arithmetic (see `Kernels.QuantKernel`), by
/// rows (`rowDot`, a few tokens) or by 16-row tiles (`tiles`, prompt batches).
struct PairKernel<F: PairFormat>: RowKernel {
    static var blockBytes: Int { F.blockBytes }
    static var blockElements: Int { 32 }
    @inline(__always) static func consts() -> PairConsts {
        pairConsts(qsOffset: F.blockBytes - 16, blockBytes: F.blockBytes)
    }

    /// One row with `nt` tokens: per block pair one dpbusd gives both blocks' 8 lanes; the
    /// two halves then enter the token's 8-lane FMA chain in block order.
    @inline(__always)
    static func rowDot(_ k: PairConsts, _ row: UnsafeRawPointer, _ nb: Int, _ act: AVX512Activations,
                       _ t0: Int, _ nt: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        let cols = act.columns
        let bb = F.blockBytes
        let q0 = UnsafeRawPointer(act.q + t0 * cols)
        let ds0 = UnsafeRawPointer(act.ds + 2 * t0 * nb)
        let o0 = UnsafeRawPointer(act.offsetSums + max(F.offsetSlot, 0) * act.offsetStride + 8 * t0 * nb)
        let dsStride = 8 * nb
        var a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps()
        var m0: Float = 0, m1: Float = 0, m2: Float = 0, m3: Float = 0

        @inline(__always)
        func step(_ w: __m512i, _ sc: SIMD4<Float>, _ j: Int, _ b: Int, _ two: Bool,
                  _ a: inout __m256, _ m: inout Float) {
            let x = _mm512_maskz_loadu_epi8(two ? ~0 : 0xFFFF_FFFF, q0 + j * cols + b * 32)
            var i = _mm512_setzero_si512()
            if F.offsetSlot >= 0 {
                i = _mm512_maskz_loadu_epi32(two ? 0xFFFF : 0x00FF, o0 + 32 * (j * nb + b))
            }
            let lanes = unsafeBitCast(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(i, w, x)), to: SIMD16<Float>.self)
            let dsOffset = j * dsStride + 8 * b
            let ds: SIMD4<Float>
            if two {
                ds = ds0.loadUnaligned(fromByteOffset: dsOffset, as: SIMD4<Float>.self)
            } else {
                let d2 = ds0.loadUnaligned(fromByteOffset: dsOffset, as: SIMD2<Float>.self)
                ds = SIMD4(lowHalf: d2, highHalf: SIMD2<Float>())
            }
            let f = sc * ds
            a = _mm256_fmadd_ps(_mm256_set1_ps(f[0]), lanes.lowHalf, a)
            if F.hasMin { m = m.addingProduct(sc[1], ds[1]) }
            if two {
                a = _mm256_fmadd_ps(_mm256_set1_ps(f[2]), lanes.highHalf, a)
                if F.hasMin { m = m.addingProduct(sc[3], ds[3]) }
            }
        }

        @inline(__always)
        func pair(_ b: Int, _ two: Bool) {
            let p0 = row + b * bb
            let sc = F.pairScales(p0, two ? p0 + bb : p0)
            let w = F.decode(k, p0, two)
            step(w, sc, 0, b, two, &a0, &m0)
            if nt > 1 { step(w, sc, 1, b, two, &a1, &m1) }
            if nt > 2 { step(w, sc, 2, b, two, &a2, &m2) }
            if nt > 3 { step(w, sc, 3, b, two, &a3, &m3) }
        }

        var b = 0
        while b + 1 < nb {
            pair(b, true)
            b += 2
        }
        if b < nb { pair(b, false) }
        out[0] = F.hasMin ? hsum8(a0) + m0 : hsum8(a0)
        if nt > 1 { out[outStride] = F.hasMin ? hsum8(a1) + m1 : hsum8(a1) }
        if nt > 2 { out[2 * outStride] = F.hasMin ? hsum8(a2) + m2 : hsum8(a2) }
        if nt > 3 { out[3 * outStride] = F.hasMin ? hsum8(a3) + m3 : hsum8(a3) }
    }

    /// Rows `range` for all tokens, 16 rows at a time: each tile is unpacked once into a
    /// scratch layout where one 64-byte vector holds the same 4 elements (one dpbusd lane) of
    /// 16 rows, so that with a token's 4 activation bytes broadcast, one dpbusd yields that
    /// lane for all 16 rows. The 8 lanes then enter 8 FMA chains of 16 rows each: per row,
    /// exactly the operations of `rowDot`, with lane l of llama.cpp's accumulator in chain l.
    static func tiles(_ k: PairConsts, _ m: Mat, _ act: AVX512Activations, _ tokens: Int,
                      _ range: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
        let nb = m.columns / 32, bb = F.blockBytes, pairs = (nb + 1) / 2
        // weights: per block pair 16 vectors (block 2p lanes 0..<8, block 2p+1 lanes 0..<8)
        let w = UnsafeMutableRawPointer.allocate(byteCount: pairs * 16 * 64 + 2 * nb * 64 + 16 * 64, alignment: 64)
        defer { w.deallocate() }
        let regs = w.assumingMemoryBound(to: __m512i.self)
        let dScale = (w + pairs * 16 * 64).assumingMemoryBound(to: Float.self)   // [block][row]
        let mScale = dScale + nb * 16
        let tmp = (w + pairs * 16 * 64 + 2 * nb * 64).assumingMemoryBound(to: __m512i.self)

        var r0 = range.lowerBound
        while r0 < range.upperBound {
            let nr = min(16, range.upperBound - r0)
            // unpack: decode row by row (sequential reads), then transpose each block pair's
            // 16 rows × 16 lanes in place
            for r in 0..<16 {
                let row = m.data + (r0 + r) * m.rowBytes
                for p in 0..<pairs {
                    regs[p * 16 + r] = r < nr ? F.decode(k, row + 2 * p * bb, 2 * p + 1 < nb) : _mm512_setzero_si512()
                }
                for b in 0..<nb {
                    let sc = r < nr ? F.pairScales(row + b * bb, row + b * bb) : .zero
                    dScale[b * 16 + r] = sc[0]
                    mScale[b * 16 + r] = sc[1]
                }
            }
            for p in 0..<pairs { transpose16(k, regs + p * 16, tmp) }
            let storeMask = UInt16(truncatingIfNeeded: (1 << nr) - 1)
            forTokenPairs(tokens) { t0, nt in
                tileDot(F.self, nb, act, t0, nt, y + t0 * m.rows + r0, m.rows, storeMask, blockTotals: false) { b in
                    let v = regs + 8 * b
                    return (v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7])
                } scales: { b in
                    (UnsafeRawPointer(dScale + 16 * b).load(as: __m512.self), UnsafeRawPointer(mScale + 16 * b).load(as: __m512.self))
                }
            }
            r0 += nr
        }
    }
}

/// In-place 16 × 16 Int32 transpose of `regs[0..<16]` (`tmp`: 16 more vectors).
@inline(__always)
func transpose16(_ k: PairConsts, _ regs: UnsafeMutablePointer<__m512i>, _ tmp: UnsafeMutablePointer<__m512i>) {
    let t = k.transpose
    @inline(__always)
    func stage(_ d: Int, _ lo: __m512i, _ hi: __m512i, _ src: UnsafeMutablePointer<__m512i>, _ dst: UnsafeMutablePointer<__m512i>) {
        for i in 0..<16 where i & d == 0 {
            dst[i] = _mm512_permutex2var_epi32(src[i], lo, src[i + d])
            dst[i + d] = _mm512_permutex2var_epi32(src[i], hi, src[i + d])
        }
    }
    stage(8, t.0, t.1, regs, tmp)
    stage(4, t.2, t.3, tmp, regs)
    stage(2, t.4, t.5, regs, tmp)
    stage(1, t.6, t.7, tmp, regs)
}

// MARK: K-quants, two 32-element chunks per 512-bit step

struct SuperConsts {
    var hiHalfQ: __m512i
    var low4: __m512i
    var nibbleShift: __m512i      // words [0 ×16, 4 ×16]
    var scaleIdx: (__m512i, __m512i, __m512i, __m512i)  // per chunk pair: vpermw indices
    var bitSel: (__m512i, __m512i, __m512i, __m512i)    // Q5_K: high-bit selectors per chunk pair
    var twoBitShift: (__m512i, __m512i)                 // Q6_K: words [2s ×16, 2s+2 ×16], s = 0, 2
    var quadIdx: __m512i          // IQ4_XS: qwords [0, 1, 0, 1, 2, 3, 2, 3] (16 bytes per 128-bit lane, twice)
    var quadShift: __m512i        // IQ4_XS: words [0 ×8, 4 ×8, 0 ×8, 4 ×8]
    var iq4Table: __m512i         // IQ4_XS: the signed IQ4 grid in each 128-bit lane
}

struct KHeader {
    var d: Float
    var dmin: Float
    /// Scales as Int16 lanes, the source of the per-pair vpermw.
    var scales: __m512i
    /// 16 Int16 multipliers of the activation group sums (the correction).
    var mins: __m256i
}

/// How a 256-element block's integer lanes become floats: what `SuperKernel.dot` needs.
protocol SuperArithmetic {
    static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float
    static var style: SuperStyle { get }
    /// `pair` gives signed bytes (IQ4_XS's grid values) rather than unsigned ones: each chunk
    /// pair's activations then take the weights' signs and the weights their magnitudes, as
    /// llama.cpp's AVX2 `mul_add_epi8` (sign_epi8) does.
    static var signedWeights: Bool { get }
    /// `.laneOffset`: lane l loses (Σ mins·group sums over its two groups) << this (Q6_K's 32·).
    static var laneOffsetShift: Int32 { get }
}

/// A 256-element format read from its GGUF blocks.
protocol SuperFormat: SuperArithmetic {
    static var blockBytes: Int { get }
    /// 1: one scale per 32-element chunk (Q4_K/Q5_K); 2: one per 16 elements.
    static var scalesPerChunk: Int { get }
    static func header(_ p: UnsafeRawPointer) -> KHeader
    /// Chunks 2cp and 2cp+1 as 64 unsigned bytes.
    static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i
}

/// As `Kernels.SuperStyle`: how a K-quant block's integer lanes become floats in llama.cpp.
enum SuperStyle {
    /// per-lane FMA, the offsets/mins as a float correction
    case lanes
    /// Q5_K: per-lane FMA, the mins as one scalar FMA per block
    case minChain
    /// Q6_K: the offset leaves the integer lanes, then per-lane FMA
    case laneOffset
    /// Q4_K: whole-row sums (per block, or per chunk pair for llama.cpp's gemm rows)
    case rowSums
}

extension SuperArithmetic {
    static var style: SuperStyle { .lanes }
    static var signedWeights: Bool { false }
    static var laneOffsetShift: Int32 { 5 }
}

@inline(__always)
func sel4(_ t: (__m512i, __m512i, __m512i, __m512i), _ i: Int) -> __m512i {
    switch i { case 0: t.0; case 1: t.1; case 2: t.2; default: t.3 }
}

/// Σ mins[i]·bsums[i] (Int32), as `Kernels.dotI16`.
@inline(__always)
func minsDot(_ mins: __m256i, _ bsums: UnsafePointer<Int16>) -> Int32 {
    let p = _mm256_madd_epi16(mins, UnsafeRawPointer(bsums).loadUnaligned(as: __m256i.self))
    return unsafeBitCast(p, to: SIMD8<Int32>.self).wrappedSum()
}

/// Q4_K/Q5_K: eight 6-bit scales (Int16 lanes 0..<8) and the eight mins, each twice.
@inline(__always)
func kScalesMins(_ p: UnsafeRawPointer) -> (__m512i, __m256i) {
    let w0 = p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
    let w1 = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
    let w2 = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    let scLo = w0 & 0x3F3F_3F3F, scHi = (w2 & 0x0F0F_0F0F) | ((w0 >> 2) & 0x3030_3030)
    let mnLo = w1 & 0x3F3F_3F3F, mnHi = ((w2 >> 4) & 0x0F0F_0F0F) | ((w1 >> 2) & 0x3030_3030)
    let sc = UInt64(scLo) | UInt64(scHi) << 32
    let mn = UInt64(mnLo) | UInt64(mnHi) << 32
    let scales = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(Int64(bitPattern: sc))))
    let m = _mm_cvtsi64_si128(Int64(bitPattern: mn))
    return (scales, _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m)))
}

@inline(__always)
func broadcast256(_ p: UnsafeRawPointer) -> __m512i { _mm512_broadcast_i64x4(p.loadUnaligned(as: __m256i.self)) }

struct S4_K: SuperFormat {
    static var style: SuperStyle { .rowSums }
    static var scalesPerChunk: Int { 1 }
    static var blockBytes: Int { 144 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let (sc, mn) = kScalesMins(p + 4)
        return KHeader(d: f16(p, 0), dmin: f16(p, 2), scales: sc, mins: mn)
    }
    @inline(__always) static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i {
        _mm512_and_si512(_mm512_srlv_epi16(broadcast256(p + 16 + cp * 32), k.nibbleShift), k.low4)
    }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -(h.dmin * dx) * Float(minsDot(h.mins, bsums))
    }
}

struct S5_K: SuperFormat {
    static var style: SuperStyle { .minChain }
    static var scalesPerChunk: Int { 1 }
    static var blockBytes: Int { 176 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let (sc, mn) = kScalesMins(p + 4)
        return KHeader(d: f16(p, 0), dmin: f16(p, 2), scales: sc, mins: mn)
    }
    @inline(__always) static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i {
        let lo = _mm512_and_si512(_mm512_srlv_epi16(broadcast256(p + 48 + cp * 32), k.nibbleShift), k.low4)
        let hb = _mm512_test_epi8_mask(broadcast256(p + 16), sel4(k.bitSel, cp))
        return _mm512_mask_add_epi8(lo, hb, lo, _mm512_set1_epi8(0x10))
    }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -(h.dmin * dx) * Float(minsDot(h.mins, bsums))
    }
}

struct S6_K: SuperFormat {
    static var style: SuperStyle { .laneOffset }
    static var scalesPerChunk: Int { 2 }
    static var blockBytes: Int { 210 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let sc = _mm256_cvtepi8_epi16(p.loadUnaligned(fromByteOffset: 192, as: __m128i.self))
        return KHeader(d: f16(p, 208), dmin: 0, scales: _mm512_castsi256_si512(sc), mins: sc)
    }
    @inline(__always) static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i {
        // chunks 2cp, 2cp+1: half hf = cp/2; low nibbles ql[hf*64 ..< hf*64+64] >> 4·(cp&1),
        // high bits qh[hf*32 ..< hf*32+32] >> (2s, 2s+2), s = 2·(cp&1)
        let hf = cp >> 1
        let ql = _mm512_loadu_si512(p + hf * 64)
        let lo = _mm512_and_si512(_mm512_srli_epi16(ql, UInt32(4 * (cp & 1))), k.low4)
        let qh = _mm512_srlv_epi16(broadcast256(p + 128 + hf * 32), cp & 1 == 0 ? k.twoBitShift.0 : k.twoBitShift.1)
        let hi = _mm512_slli_epi16(_mm512_and_si512(qh, _mm512_set1_epi8(3)), 4)
        return _mm512_or_si512(lo, hi)
    }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -32 * (h.d * dx) * Float(minsDot(h.mins, bsums))
    }
}

struct S2_K: SuperFormat {
    static var scalesPerChunk: Int { 2 }
    static var blockBytes: Int { 84 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let b = p.loadUnaligned(as: __m128i.self)
        let m = _mm_set1_epi8(0x0F)
        let sc = _mm256_cvtepu8_epi16(_mm_and_si128(b, m))
        let mn = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(b, 4), m))
        return KHeader(d: f16(p, 80), dmin: f16(p, 82), scales: _mm512_castsi256_si512(sc), mins: mn)
    }
    @inline(__always) static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i {
        // chunks 2cp, 2cp+1: bits 2s.. and 2s+2.. (s = 2·(cp&1)) of qs[(cp/2)*32 ..< +32]
        let q = _mm512_srlv_epi16(broadcast256(p + 16 + (cp >> 1) * 32), cp & 1 == 0 ? k.twoBitShift.0 : k.twoBitShift.1)
        return _mm512_and_si512(q, _mm512_set1_epi8(3))
    }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -(h.dmin * dx) * Float(minsDot(h.mins, bsums))
    }
}

struct S3_K: SuperFormat {
    static var scalesPerChunk: Int { 2 }
    static var blockBytes: Int { 110 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        // sixteen 6-bit scales minus 32 from the 12 bytes at 96 (as `Kernels`' q3Scales)
        let lo8 = p.loadUnaligned(fromByteOffset: 96, as: UInt64.self)
        let h = p.loadUnaligned(fromByteOffset: 104, as: UInt32.self)
        let loA = lo8 & 0x0F0F_0F0F_0F0F_0F0F, loB = (lo8 >> 4) & 0x0F0F_0F0F_0F0F_0F0F
        let hiA = UInt64(h & 0x0303_0303) | UInt64((h >> 2) & 0x0303_0303) << 32
        let hiB = UInt64((h >> 4) & 0x0303_0303) | UInt64((h >> 6) & 0x0303_0303) << 32
        let a = loA | hiA << 4, b = loB | hiB << 4
        let bytes = _mm_sub_epi8(_mm_set_epi64x(Int64(bitPattern: b), Int64(bitPattern: a)), _mm_set1_epi8(32))
        let sc = _mm256_cvtepi8_epi16(bytes)
        return KHeader(d: f16(p, 108), dmin: 0, scales: _mm512_castsi256_si512(sc), mins: sc)
    }
    @inline(__always) static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i {
        // low 2 bits as Q2_K from qs at 32; bit 2 from hmask bit c of byte i
        let q = _mm512_srlv_epi16(broadcast256(p + 32 + (cp >> 1) * 32), cp & 1 == 0 ? k.twoBitShift.0 : k.twoBitShift.1)
        let lo = _mm512_and_si512(q, _mm512_set1_epi8(3))
        let hb = _mm512_test_epi8_mask(broadcast256(p), sel4(k.bitSel, cp))
        return _mm512_mask_add_epi8(lo, hb, lo, _mm512_set1_epi8(4))
    }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -4 * (h.d * dx) * Float(minsDot(h.mins, bsums))
    }
}

/// IQ4_XS (`Kernels.KIQ4_XS`, llama.cpp's `ggml_vec_dot_iq4_xs_q8_K`): per 32-element
/// sub-block a 6-bit scale minus 32 multiplies its pair sums in the integer lanes; then per
/// block fma(d·d_x, lanes, acc) and hsum(acc) (`.lanes`, no correction: the grid is signed).
/// The weights stay signed bytes; `signedWeights` moves their signs onto the activations, so
/// every pair sum is llama.cpp's exactly (|w| ≤ 127, |x| ≤ 127: within Int16) and every lane too.
struct SIQ4_XS: SuperFormat {
    static var scalesPerChunk: Int { 1 }
    static var blockBytes: Int { 136 }
    static var signedWeights: Bool { true }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        // scale k: low 4 bits = nibble k of the 4 bytes at 4 (byte k/2, low nibble first), high
        // 2 bits = bits 2k, 2k+1 of the UInt16 at 2; assembled in a register as the AVX2 kernel
        let low = UInt64(p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let high = UInt64(p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        var packed: UInt64 = 0
        for sub in 0..<8 {
            packed |= (((low >> UInt64(4 * sub)) & 0x0F) | ((high >> UInt64(2 * sub)) & 3) << 4) << UInt64(8 * sub)
        }
        let sc = _mm_sub_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128(Int64(bitPattern: packed))), _mm_set1_epi16(32))
        return KHeader(d: f16(p, 0), dmin: 0, scales: _mm512_castsi128_si512(sc), mins: _mm256_setzero_si256())
    }
    @inline(__always) static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i {
        // chunks 2cp, 2cp+1: 16 code bytes each at 8 + 16c, low nibbles elements 0..<16, high 16..<32
        let q = _mm512_permutexvar_epi64(k.quadIdx, _mm512_castsi256_si512(p.loadUnaligned(fromByteOffset: 8 + 32 * cp, as: __m256i.self)))
        let codes = _mm512_and_si512(_mm512_srlv_epi16(q, k.quadShift), k.low4)
        return _mm512_shuffle_epi8(k.iq4Table, codes)  // codes < 16: vpshufb indexes the table exactly
    }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float { 0 }
}

/// The ternary formats (llama.cpp's `ggml_vec_dot_tq{1,2}_0_q8_K`): unsigned codes n = value + 1,
/// no sub-block scales; the +1 leaves the integer lanes as the activations' group sums
/// (`.laneOffset`, shift 0), then per block fma(d·d_x, lanes, acc) and hsum(acc).
protocol TernaryFormat: SuperFormat {
    /// Where the block's f16 d is.
    static var dOffset: Int { get }
}

extension TernaryFormat {
    static var style: SuperStyle { .laneOffset }
    static var laneOffsetShift: Int32 { 0 }
    static var scalesPerChunk: Int { 2 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let ones = _mm256_set1_epi16(1)
        return KHeader(d: f16(p, dOffset), dmin: 0, scales: _mm512_castsi256_si512(ones), mins: ones)
    }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float { 0 }
}

/// TQ2_0 (`Kernels.KTQ2_0`): codes 0…3, four to a byte.
struct STQ2_0: TernaryFormat {
    static var blockBytes: Int { 66 }
    static var dOffset: Int { 64 }
    @inline(__always) static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i {
        // chunk c: bits 2·(c & 3) of qs[(c / 4)·32 ..< +32], so chunks 2cp, 2cp+1 share their bytes (as Q2_K)
        let q = _mm512_srlv_epi16(broadcast256(p + (cp >> 1) * 32), cp & 1 == 0 ? k.twoBitShift.0 : k.twoBitShift.1)
        return _mm512_and_si512(q, _mm512_set1_epi8(3))
    }
}

/// TQ1_0 (`Kernels.KTQ1_0`): five base-3 digits per byte, digit k the top of
/// (byte · 3^k mod 256) · 3. Chunk c's bytes and powers: c < 5: qs[0..<32] · 3^c; c = 5, 6:
/// qs[32..<48] · (1, 3), (9, 27); c = 7: qs[32..<48] · 81, then qh[0..<4] · (1, 3, 9, 27), each
/// power over the 4 bytes.
struct STQ1_0: TernaryFormat {
    static var blockBytes: Int { 54 }
    static var dOffset: Int { 52 }
    @inline(__always) static func pair(_ k: SuperConsts, _ p: UnsafeRawPointer, _ cp: Int) -> __m512i {
        let bytes: __m512i
        switch cp {
        case 0, 1: bytes = broadcast256(p)
        case 2: bytes = _mm512_mask_broadcast_i32x4(_mm512_castsi256_si512(p.loadUnaligned(as: __m256i.self)), 0xFF00,
                                                    p.loadUnaligned(fromByteOffset: 32, as: __m128i.self))
        default:
            let rest = _mm512_broadcast_i32x4(p.loadUnaligned(fromByteOffset: 32, as: __m128i.self))
            bytes = _mm512_mask_set1_epi32(rest, 0xF000, p.loadUnaligned(fromByteOffset: 48, as: Int32.self))
        }
        // bytes · powers mod 256: even bytes from the words' low halves, odd bytes from their high halves
        let powers = Self.powers(cp)
        let even = _mm512_mullo_epi16(bytes, powers)
        let odd = _mm512_slli_epi16(_mm512_mullo_epi16(_mm512_srli_epi16(bytes, 8), _mm512_srli_epi16(powers, 8)), 8)
        let v = _mm512_mask_blend_epi8(0xAAAA_AAAA_AAAA_AAAA, even, odd)
        // the leading digit (v · 3) >> 8: 1 from v = 86 on, 2 from v = 171 on (-86 is 170 as a byte)
        let one = _mm512_set1_epi8(1)
        return _mm512_add_epi8(_mm512_min_epu8(_mm512_subs_epu8(v, _mm512_set1_epi8(85)), one),
                               _mm512_min_epu8(_mm512_subs_epu8(v, _mm512_set1_epi8(-86)), one))
    }
    /// Chunk pair cp's power of 3 for each of its 64 bytes (as listed above), in eight qwords of
    /// literal bytes, so it is a constant rather than a table built per call.
    @inline(__always) static func powers(_ cp: Int) -> __m512i {
        @inline(__always) func eight(_ p: Int64) -> Int64 { p &* 0x0101_0101_0101_0101 }
        switch cp {
        case 0: return _mm512_set_epi64(eight(3), eight(3), eight(3), eight(3), eight(1), eight(1), eight(1), eight(1))
        case 1: return _mm512_set_epi64(eight(27), eight(27), eight(27), eight(27), eight(9), eight(9), eight(9), eight(9))
        case 2: return _mm512_set_epi64(eight(3), eight(3), eight(1), eight(1), eight(81), eight(81), eight(81), eight(81))
        default:  // qh's bytes: powers 1, 3, 9, 27, four bytes each
            return _mm512_set_epi64(0x1B1B_1B1B_0909_0909, 0x0303_0303_0101_0101, eight(81), eight(81),
                                    eight(27), eight(27), eight(9), eight(9))
        }
    }
}

/// `scalesPerChunk`: 1 (Q4_K/Q5_K: words of chunk pair cp take scale 2cp + i/16) or 2
/// (Q2_K/Q3_K/Q6_K: one scale per 16 elements, 4cp + i/8).
@inline(__always)
func superConsts(scalesPerChunk: Int) -> SuperConsts {
    func idx(_ cp: Int) -> __m512i {
        words32 { scalesPerChunk == 1 ? 2 * cp + $0 / 16 : 4 * cp + $0 / 8 }
    }
    func bits(_ cp: Int) -> __m512i { bytes64 { 1 << (2 * cp + $0 / 32) } }
    return SuperConsts(hiHalfQ: dwords16 { i in i & 1 == 0 ? ((i / 2) + 4) & 7 : 0 },
                       low4: _mm512_set1_epi8(0x0F),
                       nibbleShift: words32 { $0 < 16 ? 0 : 4 },
                       scaleIdx: (idx(0), idx(1), idx(2), idx(3)),
                       bitSel: (bits(0), bits(1), bits(2), bits(3)),
                       twoBitShift: (words32 { $0 < 16 ? 0 : 2 }, words32 { $0 < 16 ? 4 : 6 }),
                       quadIdx: _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0),
                       quadShift: words32 { ($0 / 8) & 1 == 1 ? 4 : 0 },
                       iq4Table: bytes64 { Int(PIQ4_NL.table[$0 & 15]) - 128 })
}

extension SuperKernel: RowKernel where F: SuperFormat {
    static var blockBytes: Int { F.blockBytes }
    static var blockElements: Int { 256 }
    @inline(__always) static func consts() -> SuperConsts { superConsts(scalesPerChunk: F.scalesPerChunk) }

    @inline(__always)
    static func rowDot(_ k: SuperConsts, _ row: UnsafeRawPointer, _ nb: Int, _ act: AVX512Activations,
                       _ t0: Int, _ nt: Int, _ out: UnsafeMutablePointer<Float>, _ outStride: Int) {
        dot(k, nb, act, t0, nt, out, outStride) { b in F.header(row + b * F.blockBytes) } pair: { b, cp, h in
            (F.pair(k, row + b * F.blockBytes, cp), _mm512_permutexvar_epi16(sel4(k.scaleIdx, cp), h.scales))
        }
    }

    /// Prompt batches: each tile of rows is decoded once (chunk pairs with their scale
    /// vectors, headers) into scratch that all token groups read: `rowDot`'s operations.
    static func decodedRows(_ k: SuperConsts, _ m: Mat, _ act: AVX512Activations, _ tokens: Int,
                            _ range: Range<Int>, _ y: UnsafeMutablePointer<Float>) {
        let nb = m.columns / 256
        let tile = 16
        let pairs = UnsafeMutablePointer<(__m512i, __m512i)>.allocate(capacity: tile * nb * 4)
        let headers = UnsafeMutablePointer<KHeader>.allocate(capacity: tile * nb)
        defer { pairs.deallocate(); headers.deallocate() }
        var r0 = range.lowerBound
        while r0 < range.upperBound {
            let r1 = min(r0 + tile, range.upperBound)
            for r in r0..<r1 {
                let row = m.data + r * m.rowBytes
                for b in 0..<nb {
                    let h = F.header(row + b * F.blockBytes)
                    headers[(r - r0) * nb + b] = h
                    for cp in 0..<4 {
                        pairs[((r - r0) * nb + b) * 4 + cp] = (F.pair(k, row + b * F.blockBytes, cp),
                                                               _mm512_permutexvar_epi16(sel4(k.scaleIdx, cp), h.scales))
                    }
                }
            }
            tileDot(k, nb, act, tokens, rows: r1 - r0, y + r0, m.rows) { r, b in headers[r * nb + b] } pair: { r, b, cp, _ in
                pairs[(r * nb + b) * 4 + cp]
            }
            r0 = r1
        }
    }
}

struct SuperKernel<F: SuperArithmetic> {
    /// `rows` decoded rows for all tokens, 4 tokens at a time (their activations stay in L1
    /// while the rows stream past): `header(r, b)`, `pair(r, b, cp, header)` give row r's
    /// blocks as `dot` takes them; row r of token t goes to `y[t·outStride + r]`.
    @inline(__always)
    static func tileDot(_ k: SuperConsts, _ nb: Int, _ act: AVX512Activations, _ tokens: Int, rows: Int,
                        _ y: UnsafeMutablePointer<Float>, _ outStride: Int, _ header: (Int, Int) -> KHeader,
                        pair: (Int, Int, Int, KHeader) -> (__m512i, __m512i)) {
        var t0 = 0
        while t0 < tokens {
            let nt = min(4, tokens - t0)
            for r in 0..<rows {
                // nt as a literal in each call, so `dot`'s per-token branches fold away
                @inline(__always)
                func run(_ n: Int) {
                    dot(k, nb, act, t0, n, y + t0 * outStride + r, outStride) { header(r, $0) } pair: { b, cp, h in
                        pair(r, b, cp, h)
                    }
                }
                switch nt {
                case 4: run(4)
                case 3: run(3)
                case 2: run(2)
                default: run(1)
                }
            }
            t0 += nt
        }
    }

    /// `header(b)`: block b's header; `pair(b, cp, header)`: its chunk pair cp and scale vector.
    @inline(__always)
    static func dot(_ k: SuperConsts, _ nb: Int, _ act: AVX512Activations, _ t0: Int, _ nt: Int,
                    _ out: UnsafeMutablePointer<Float>, _ outStride: Int, _ header: (Int) -> KHeader,
                    pair: (Int, Int, KHeader) -> (__m512i, __m512i)) {
        let cols = act.columns
        let q0 = UnsafeRawPointer(act.q + t0 * cols)
        let d0 = act.d + t0 * nb
        let g0 = act.bsums + t0 * nb * 16
        var a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps()
        var c0: Float = 0, c1: Float = 0, c2: Float = 0, c3: Float = 0
        var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
        for b in 0..<nb {
            let h = header(b)
            var i0 = _mm512_setzero_si512(), i1 = _mm512_setzero_si512()
            var i2 = _mm512_setzero_si512(), i3 = _mm512_setzero_si512()
            // llama.cpp's gemm rows (Q4_K): each chunk pair's own integer sum (lane cp), then
            // one FMA per pair (in `acc`)
            var g0s = SIMD4<Int32>(), g1s = SIMD4<Int32>(), g2s = SIMD4<Int32>(), g3s = SIMD4<Int32>()
            let gemm = F.style == .rowSums && t0 < act.gemmRows
            @inline(__always)
            func pairSum(_ p: __m512i) -> Int32 {
                unsafeBitCast(foldI32(p, k.hiHalfQ), to: SIMD8<Int32>.self).wrappedSum()
            }
            for cp in 0..<4 {
                let (w, s) = pair(b, cp, h)
                let off = b * 256 + cp * 64
                // signed weights: |w| times x with w's sign (the IQ4 grid has no 0, and x ∈ [-127, 127]
                // as QuantizedActivations rounds it, so 0 - x is exactly sign_epi8(x, w)); |w| and
                // the mask are shared by the tokens
                let neg = F.signedWeights ? _mm512_movepi8_mask(w) : 0
                let wu = F.signedWeights ? _mm512_abs_epi8(w) : w
                // llama.cpp's gemm form needs each pair's own sum as well; otherwise the pair goes
                // straight into the block's integer lanes (the same wrapping Int32 lanes, one add fewer)
                @inline(__always)
                func pairDot(_ j: Int, _ i: inout __m512i, _ g: inout SIMD4<Int32>) {
                    var xv = _mm512_loadu_si512(q0 + off + j * cols)
                    if F.signedWeights { xv = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv) }
                    let x = _mm512_maddubs_epi16(wu, xv)
                    if gemm {
                        let p = _mm512_dpwssd_epi32(_mm512_setzero_si512(), x, s)
                        g[cp] = pairSum(p)
                        i = _mm512_add_epi32(i, p)
                    } else {
                        i = _mm512_dpwssd_epi32(i, x, s)
                    }
                }
                pairDot(0, &i0, &g0s)
                if nt > 1 { pairDot(1, &i1, &g1s) }
                if nt > 2 { pairDot(2, &i2, &g2s) }
                if nt > 3 { pairDot(3, &i3, &g3s) }
            }
            let ws = h.d
            @inline(__always)
            func acc(_ i: __m512i, _ j: Int, _ a: inout __m256, _ c: inout Float, _ s: inout Float) {
                let dx = d0[j * nb + b]
                let bsums = g0 + 16 * (j * nb + b)
                var lanes = foldI32(i, k.hiHalfQ)
                switch F.style {
                case .lanes:
                    a = _mm256_fmadd_ps(_mm256_set1_ps(ws * dx), _mm256_cvtepi32_ps(lanes), a)
                    c += F.correction(h, dx: dx, bsums: bsums)
                case .minChain:
                    a = _mm256_fmadd_ps(_mm256_set1_ps(ws * dx), _mm256_cvtepi32_ps(lanes), a)
                    c = c.addingProduct(-(h.dmin * dx), Float(minsDot(h.mins, bsums)))
                case .laneOffset:
                    let offset = _mm256_madd_epi16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: __m256i.self))
                    lanes = _mm256_sub_epi32(lanes, _mm256_slli_epi32(offset, F.laneOffsetShift))
                    a = _mm256_fmadd_ps(_mm256_set1_ps(ws * dx), _mm256_cvtepi32_ps(lanes), a)
                case .rowSums:
                    if t0 + j < act.gemmRows {
                        // mins of pair cp: groups 4cp..<4cp+4 = madd lanes 2cp, 2cp+1
                        let m8 = unsafeBitCast(_mm256_madd_epi16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: __m256i.self)),
                                               to: SIMD8<Int32>.self)
                        let m = SIMD4<Float>(SIMD4(m8[0] &+ m8[1], m8[2] &+ m8[3], m8[4] &+ m8[5], m8[6] &+ m8[7]))
                        let g = SIMD4<Float>(j == 0 ? g0s : j == 1 ? g1s : j == 2 ? g2s : g3s)
                        let dd = ws * dx, dm = h.dmin * dx
                        s = s.addingProduct(g[0], dd); c = c.addingProduct(m[0], dm)
                        s = s.addingProduct(g[1], dd); c = c.addingProduct(m[1], dm)
                        s = s.addingProduct(g[2], dd); c = c.addingProduct(m[2], dm)
                        s = s.addingProduct(g[3], dd); c = c.addingProduct(m[3], dm)
                        return
                    }
                    let total = unsafeBitCast(lanes, to: SIMD8<Int32>.self).wrappedSum()
                    s = s.addingProduct(Float(total), ws * dx)
                    c = c.addingProduct(Float(minsDot(h.mins, bsums)), h.dmin * dx)
                }
            }
            acc(i0, 0, &a0, &c0, &s0)
            if nt > 1 { acc(i1, 1, &a1, &c1, &s1) }
            if nt > 2 { acc(i2, 2, &a2, &c2, &s2) }
            if nt > 3 { acc(i3, 3, &a3, &c3, &s3) }
        }
        @inline(__always)
        func result(_ a: __m256, _ c: Float, _ s: Float) -> Float {
            switch F.style {
            case .lanes, .minChain: hsum8(a) + c
            case .laneOffset: hsum8(a)
            case .rowSums: s - c
            }
        }
        out[0] = result(a0, c0, s0)
        if nt > 1 { out[outStride] = result(a1, c1, s1) }
        if nt > 2 { out[2 * outStride] = result(a2, c2, s2) }
        if nt > 3 { out[3 * outStride] = result(a3, c3, s3) }
    }
}
#endif
