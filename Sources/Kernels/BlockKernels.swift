#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif

/// One weight format's integer dot product with 8-bit activations (see QuantizedActivations).
///
/// A weight block is visited as `chunks` runs of 32 elements. For each run the kernel yields
/// 32 small integers (unsigned bytes n, or signed bytes for Q8_0) and a 16-bit multiplier per
/// pair of lanes (the sub-block scale), and `dot` gives 8 exact Int32 lanes of Σ n·q_x·scale,
/// lane l covering elements 4l..<4l+4.
///
/// 32-element formats reproduce llama.cpp's `ggml_vec_dot_*_q8_*` exactly (see `smallRowDot`):
///     lanes  = dot(n, q_x) - offset · Σ₄ q_x                 (integer, exact: n - offset is
///                                                             the signed weight, e.g. v - 16)
///     acc    = fma(d·d_x, Float(lanes), acc)  per block, in block order, 8 lanes
///     summ   = fma(m, s_x, summ)              (Q4_1/Q5_1: the min term)
///     result = hsum(acc) + summ               (hsum in llama.cpp's order)
/// K-quants follow llama.cpp's kernel for each format (see `SuperStyle` and `superDot`).
protocol QuantKernel: SendableMetatype {
    associatedtype Header
    associatedtype Chunk
    static var blockBytes: Int { get }
    /// 32 or 256; the activations use the same block size.
    static var blockElements: Int { get }
    static func header(_ p: UnsafeRawPointer) -> Header
    static func chunk(_ p: UnsafeRawPointer, _ h: Header, _ c: Int) -> (Chunk, SIMD16<Int16>)
    static func dot(_ w: Chunk, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32>
    static func blockScale(_ h: Header) -> Float
    static func correction(_ h: Header, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float
    /// 32-element formats: the block's f16 (d, m) as floats (m = 0 without a min).
    static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float>
    /// 32-element formats whose chunk holds weight + offset: the offset's index in
    /// `QuantizedActivations.offsets` (Q4_0: 0, Q5_0: 1), else -1.
    static var offsetSlot: Int { get }
    /// 32-element formats with a min (Q4_1, Q5_1).
    static var hasMin: Bool { get }
    /// K-quants: how the block's integer lanes become floats.
    static var superStyle: SuperStyle { get }
    /// 256-element formats whose unpacked chunks (signed bytes, a multiplier per pair, `.lanes`
    /// with no correction, a Float header) the AVX-512 kernel multiplies in prompt batches.
    static var avx512UnpackedChunks: Bool { get }
    /// `.laneOffset`: what llama.cpp subtracts from the 8 lanes for the format's offset.
    static func laneOffset(_ h: Header, bsums: UnsafePointer<Int16>) -> SIMD8<Int32>
    /// `.rowSums`, `.minChain`: the block's min multiplier and Σ mins · group sums.
    static func blockMin(_ h: Header) -> Float
    static func minSum(_ h: Header, bsums: UnsafePointer<Int16>) -> Int32
    /// `.rowSums`: Σ mins · group sums over chunk pair `pair` (groups 4·pair..<4·pair+4).
    static func minPairSum(_ h: Header, bsums: UnsafePointer<Int16>, pair: Int) -> Int32
}

/// The float step of a K-quant block, as llama.cpp's x86 kernel for that format does it.
enum SuperStyle {
    /// acc[l] = fma(d·d_x, lane l, acc[l]); corr += correction; result hsum(acc) + corr.
    case lanes
    /// `ggml_vec_dot_q5_K_q8_K`: as `.lanes`, but the mins are one FMA per block into the
    /// scalar sum, mins = fma(-(dmin·d_x), Σ mins·group sums, mins) (the compiler fuses
    /// llama.cpp's `summs += dmin * sum`).
    case minChain
    /// `ggml_vec_dot_q6_K_q8_K`: the offset leaves the integer lanes first (`laneOffset`),
    /// then acc[l] = fma(d·d_x, lane l, acc[l]); result hsum(acc).
    case laneOffset
    /// llama.cpp's repacked Q4_K kernels: sum = fma(Σ lanes, d·d_x, sum),
    /// mins = fma(Σ m·bsums, dmin·d_x, mins); result sum - mins. Its gemv kernel takes the sums
    /// over whole blocks, its gemm kernel (`QuantizedActivations.gemmRows`) over each pair of
    /// 32-element sub-blocks.
    case rowSums
}

extension QuantKernel {
    static func blockScale(_ h: Header) -> Float { fatalError("blockScale is only for K-quants") }
    static func correction(_ h: Header, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float {
        fatalError("correction is only for K-quants")
    }
    static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float> {
        fatalError("scales is only for 32-element formats")
    }
    static var offsetSlot: Int { -1 }
    static var hasMin: Bool { false }
    static var superStyle: SuperStyle { .lanes }
    static var avx512UnpackedChunks: Bool { false }
    static func laneOffset(_ h: Header, bsums: UnsafePointer<Int16>) -> SIMD8<Int32> {
        fatalError("laneOffset is only for .laneOffset K-quants")
    }
    static func blockMin(_ h: Header) -> Float { fatalError("blockMin is only for .rowSums and .minChain K-quants") }
    static func minSum(_ h: Header, bsums: UnsafePointer<Int16>) -> Int32 {
        fatalError("minSum is only for .rowSums and .minChain K-quants")
    }
    static func minPairSum(_ h: Header, bsums: UnsafePointer<Int16>, pair: Int) -> Int32 {
        fatalError("minPairSum is only for .rowSums K-quants")
    }
}

/// [d, 0] for formats with an f16 d at the block start.
@inline(__always)
func dScales(_ p: UnsafeRawPointer) -> SIMD2<Float> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    halfFloats(UInt32(p.loadUnaligned(as: UInt16.self)))
#else
    SIMD2(loadF16(p, 0), 0)
#endif
}

/// [d, m] for formats with an f16 (d, m) pair at the block start.
@inline(__always)
func dmScales(_ p: UnsafeRawPointer) -> SIMD2<Float> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    halfFloats(p.loadUnaligned(as: UInt32.self))
#else
    SIMD2(loadF16(p, 0), loadF16(p, 2))
#endif
}

#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
/// The two f16 in `bits` (low half first) as floats: one vcvtph2ps for both, where a
/// `Float16` load each cost an insert and a conversion, both on the shuffle port that the
/// matrix-vector kernels are short of.
@inline(__always)
private func halfFloats(_ bits: UInt32) -> SIMD2<Float> {
    unsafeBitCast(_mm_cvtph_ps(_mm_cvtsi32_si128(Int32(bitPattern: bits))), to: SIMD4<Float>.self).lowHalf
}
#endif

extension QuantKernel where Chunk == SIMD32<UInt8> {
    @inline(__always)
    static func dot(_ w: Chunk, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotU8I8(w, x, scale)
    }
}

extension QuantKernel {
    static var chunks: Int { blockElements / 32 }
}

@inline(__always) private var ones16: SIMD16<Int16> { splat16(1) }

// MARK: 32-element formats (activations: d, s = d·Σq and lane sums per block)

struct KQ4_0: QuantKernel {
    static var blockBytes: Int { 18 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        (nibbles(p + 2), ones16)
    }
    @inline(__always) static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float> { dScales(p) }
    static var offsetSlot: Int { 0 }
}

struct KQ4_1: QuantKernel {
    static var blockBytes: Int { 20 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> (Float, Float) { (loadF16(p, 0), loadF16(p, 2)) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: (Float, Float), _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        (nibbles(p + 4), ones16)
    }
    @inline(__always) static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float> { dmScales(p) }
    static var hasMin: Bool { true }
}

struct KQ5_0: QuantKernel {
    static var blockBytes: Int { 22 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
        return (or(nibbles(p + 6), expandBits(qh, 0x10)), ones16)
    }
    @inline(__always) static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float> { dScales(p) }
    static var offsetSlot: Int { 1 }
}

struct KQ5_1: QuantKernel {
    static var blockBytes: Int { 24 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> (Float, Float) { (loadF16(p, 0), loadF16(p, 2)) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: (Float, Float), _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        return (or(nibbles(p + 8), expandBits(qh, 0x10)), ones16)
    }
    @inline(__always) static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float> { dmScales(p) }
    static var hasMin: Bool { true }
}

struct KQ8_0: QuantKernel {
    static var blockBytes: Int { 34 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        (p.loadUnaligned(fromByteOffset: 2, as: SIMD32<Int8>.self), ones16)
    }
    @inline(__always) static func dot(_ w: SIMD32<Int8>, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotI8I8(w, x)
    }
    @inline(__always) static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float> { dScales(p) }
}

// MARK: K-quants, 256-element super-blocks (activations: d and 16 group sums per block)

struct KHeader {
    var d: Float
    var dmin: Float
    /// Per-chunk (Q4_K/Q5_K: lanes 0..<8) or per-16-group (Q2_K/Q3_K/Q6_K) integer scales.
    var scales: SIMD16<Int16>
    /// Per-16-group multipliers of the activation group sums.
    var mins: SIMD16<Int16>
    /// Q2_K/Q3_K/Q6_K: the 16 group scales as bytes, for `scalePair(bytes:chunk:)`.
    var bytes = SIMD16<Int8>()
}

/// [s[2c] ×8, s[2c+1] ×8] as Int16 from 16 byte scales: one byte shuffle and a widening.
@inline(__always)
func scalePair(bytes s: SIMD16<Int8>, chunk c: Int) -> SIMD16<Int16> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let lo = UInt64(2 * c) &* 0x0101_0101_0101_0101, hi = UInt64(2 * c + 1) &* 0x0101_0101_0101_0101
    let mask = _mm_set_epi64x(Int64(bitPattern: hi), Int64(bitPattern: lo))
    let v = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(unsafeBitCast(s, to: __m128i.self), mask))
    return unsafeBitCast(v, to: SIMD16<Int16>.self)
#else
    return scalePair(Int16(s[2 * c]), Int16(s[2 * c + 1]))
#endif
}

/// Q4_K/Q5_K: the eight 6-bit scales (Int16 lanes 0..<8) and the eight mins, each repeated
/// twice (one per 16-element activation group), from the 12 packed bytes.
/// Done with whole-word bit operations: writing SIMD lanes one by one stalls on store forwarding.
@inline(__always)
private func kScalesMins(_ p: UnsafeRawPointer) -> (SIMD16<Int16>, SIMD16<Int16>) {
    let w0 = p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)
    let w1 = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
    let w2 = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    let scLo = w0 & 0x3F3F_3F3F, scHi = (w2 & 0x0F0F_0F0F) | ((w0 >> 2) & 0x3030_3030)
    let mnLo = w1 & 0x3F3F_3F3F, mnHi = ((w2 >> 4) & 0x0F0F_0F0F) | ((w1 >> 2) & 0x3030_3030)
    let sc = UInt64(scLo) | UInt64(scHi) << 32
    let mn = UInt64(mnLo) | UInt64(mnHi) << 32
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let scales = _mm256_cvtepu8_epi16(_mm_cvtsi64_si128(Int64(bitPattern: sc)))
    let m = _mm_cvtsi64_si128(Int64(bitPattern: mn))
    let mins = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m))
    return (unsafeBitCast(scales, to: SIMD16<Int16>.self), unsafeBitCast(mins, to: SIMD16<Int16>.self))
#else
    var scales = SIMD16<Int16>(), mins = SIMD16<Int16>()
    for j in 0..<8 {
        scales[j] = Int16(truncatingIfNeeded: sc >> UInt64(8 * j)) & 0xFF
        let mj = Int16(truncatingIfNeeded: mn >> UInt64(8 * j)) & 0xFF
        mins[2 * j] = mj
        mins[2 * j + 1] = mj
    }
    return (scales, mins)
#endif
}

/// Q3_K: the sixteen 6-bit scales minus 32, from the 12 packed bytes at p (as Int16 and as bytes).
@inline(__always)
private func q3Scales(_ p: UnsafeRawPointer) -> (SIMD16<Int16>, SIMD16<Int8>) {
    let lo8 = p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
    let h = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
    // low 4 bits: k < 8 from the low nibbles of bytes 0..<8, k ≥ 8 from their high nibbles
    let loA = lo8 & 0x0F0F_0F0F_0F0F_0F0F, loB = (lo8 >> 4) & 0x0F0F_0F0F_0F0F_0F0F
    // high 2 bits: byte 8 + k%4, bits 2·(k/4)
    let hiA = UInt64(h & 0x0303_0303) | UInt64((h >> 2) & 0x0303_0303) << 32
    let hiB = UInt64((h >> 4) & 0x0303_0303) | UInt64((h >> 6) & 0x0303_0303) << 32
    let a = loA | hiA << 4, b = loB | hiB << 4
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let bytes = _mm_sub_epi8(_mm_set_epi64x(Int64(bitPattern: b), Int64(bitPattern: a)), _mm_set1_epi8(32))
    return (unsafeBitCast(_mm256_cvtepi8_epi16(bytes), to: SIMD16<Int16>.self), unsafeBitCast(bytes, to: SIMD16<Int8>.self))
#else
    var r = SIMD16<Int16>(), r8 = SIMD16<Int8>()
    for k in 0..<8 {
        r[k] = Int16(truncatingIfNeeded: a >> UInt64(8 * k)) & 0xFF - 32
        r[k + 8] = Int16(truncatingIfNeeded: b >> UInt64(8 * k)) & 0xFF - 32
    }
    for k in 0..<16 { r8[k] = Int8(r[k]) }
    return (r, r8)
#endif
}

struct KQ4_K: QuantKernel {
    static var blockBytes: Int { 144 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let (sc, mn) = kScalesMins(p + 4)
        return KHeader(d: loadF16(p, 0), dmin: loadF16(p, 2), scales: sc, mins: mn)
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        let n = shiftMask(load32(p + 16 + (c >> 1) * 32), 4 * (c & 1), 0x0F)
        return (n, splat16(h.scales[c]))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    static var superStyle: SuperStyle { .rowSums }
    @inline(__always) static func blockMin(_ h: KHeader) -> Float { h.dmin }
    @inline(__always) static func minSum(_ h: KHeader, bsums: UnsafePointer<Int16>) -> Int32 {
        dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self))
    }
    @inline(__always) static func minPairSum(_ h: KHeader, bsums: UnsafePointer<Int16>, pair: Int) -> Int32 {
        var sum: Int32 = 0
        for g in 4 * pair..<4 * pair + 4 { sum &+= Int32(h.mins[g]) &* Int32(bsums[g]) }
        return sum
    }
}

struct KQ5_K: QuantKernel {
    static var blockBytes: Int { 176 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let (sc, mn) = kScalesMins(p + 4)
        return KHeader(d: loadF16(p, 0), dmin: loadF16(p, 2), scales: sc, mins: mn)
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        let lo = shiftMask(load32(p + 48 + (c >> 1) * 32), 4 * (c & 1), 0x0F)
        let hb = shiftMaskUp(load32(p + 16), c, 1, 4)
        return (or(lo, hb), splat16(h.scales[c]))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    static var superStyle: SuperStyle { .minChain }
    @inline(__always) static func blockMin(_ h: KHeader) -> Float { h.dmin }
    @inline(__always) static func minSum(_ h: KHeader, bsums: UnsafePointer<Int16>) -> Int32 {
        dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self))
    }
}

struct KQ6_K: QuantKernel {
    static var blockBytes: Int { 210 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let sc = widenI8(p + 192)
        return KHeader(d: loadF16(p, 208), dmin: 0, scales: sc, mins: sc,
                       bytes: p.loadUnaligned(fromByteOffset: 192, as: SIMD16<Int8>.self))
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        // chunk c: half hf = c/4, s = c%4; low 4 bits from ql[hf*64 + (s&1)*32 + i] nibble s/2,
        // high 2 bits from qh[hf*32 + i] bits 2s..2s+1; value n - 32 (the -32 is in `laneOffset`)
        let hf = c >> 2, s = c & 3
        let lo = shiftMask(load32(p + hf * 64 + (s & 1) * 32), 4 * (s >> 1), 0x0F)
        let hi = shiftMaskUp(load32(p + 128 + hf * 32), 2 * s, 3, 4)
        return (or(lo, hi), scalePair(bytes: h.bytes, chunk: c))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    static var superStyle: SuperStyle { .laneOffset }
    /// 32 · (scale·bsum of groups 2l and 2l+1) for lane l (the lanes are exact integers; this is
    /// how llama.cpp spreads the offset over them).
    @inline(__always) static func laneOffset(_ h: KHeader, bsums: UnsafePointer<Int16>) -> SIMD8<Int32> {
        maddPairs(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self)) &<< 5
    }
}

struct KQ2_K: QuantKernel {
    static var blockBytes: Int { 84 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let b = load16(p)
        let lo = shiftMask16(b, 0, 0x0F)
        return KHeader(d: loadF16(p, 80), dmin: loadF16(p, 82),
                       scales: widenU8(lo), mins: widenU8(shiftMask16(b, 4, 0x0F)),
                       bytes: unsafeBitCast(lo, to: SIMD16<Int8>.self))
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        // chunk c: half hf = c/4, bits 2s.. (s = c%4) of qs[hf*32 + i]
        let n = shiftMask(load32(p + 16 + (c >> 2) * 32), 2 * (c & 3), 3)
        return (n, scalePair(bytes: h.bytes, chunk: c))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -(h.dmin * dx) * Float(dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self)))
    }
}

struct KQ3_K: QuantKernel {
    static var blockBytes: Int { 110 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let (sc, sc8) = q3Scales(p + 96)
        return KHeader(d: loadF16(p, 108), dmin: 0, scales: sc, mins: sc, bytes: sc8)
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        // n = low 2 bits | hmask bit << 2 ∈ 0..7; weight value n - 4 (the -4 is in `correction`)
        let lo = shiftMask(load32(p + 32 + (c >> 2) * 32), 2 * (c & 3), 3)
        let hb = shiftMaskUp(load32(p), c, 1, 2)
        return (or(lo, hb), scalePair(bytes: h.bytes, chunk: c))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -4 * (h.d * dx) * Float(dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self)))
    }
}

