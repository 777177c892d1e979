// Integer dot-product primitives on 32-byte vectors. On x86-64 they map to AVX2
// (vpmaddubsw / vpmaddwd / vpsignb / vpshufb); elsewhere they are plain Swift SIMD.
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif

/// Int32 lanes to floats (vcvtdq2ps, round to nearest like `Float(_:)`). The standard library's
/// generic `SIMD8<Float>(_:)` is not always specialized: in the matrix-product loops it became
/// a call per block (a third of an AVX2 prompt batch's time).
@inline(__always)
func floats(_ v: SIMD8<Int32>) -> SIMD8<Float> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    unsafeBitCast(_mm256_cvtepi32_ps(unsafeBitCast(v, to: __m256i.self)), to: SIMD8<Float>.self)
#else
    SIMD8<Float>(v)
#endif
}

/// Lane-wise max(acc, |v|) (vandnps + vmaxps; `pointwiseMax` compiled to an outlined call). A NaN
/// in v leaves acc as it was, as `pointwiseMax(acc, pointwiseMax(v, -v))` did.
@inline(__always)
func maxMagnitude(_ acc: SIMD8<Float>, _ v: SIMD8<Float>) -> SIMD8<Float> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let magnitude = _mm256_andnot_ps(_mm256_set1_ps(-0.0), unsafeBitCast(v, to: __m256.self))
    return unsafeBitCast(_mm256_max_ps(magnitude, unsafeBitCast(acc, to: __m256.self)), to: SIMD8<Float>.self)
#else
    pointwiseMax(acc, pointwiseMax(v, -v))
#endif
}

/// Sum over pairs: lane k = a[2k]*b[2k] + a[2k+1]*b[2k+1] (a unsigned, b signed), then
/// lane j of the result = p[2j]*s[2j] + p[2j+1]*s[2j+1] in Int32.
/// Callers keep |a|·|b| small enough that the 16-bit pair sums never saturate
/// (a ≤ 63 with |b| ≤ 127, or a ≤ 128 with |b| ≤ 127).
@inline(__always)
func dotU8I8(_ a: SIMD32<UInt8>, _ b: SIMD32<Int8>, _ s: SIMD16<Int16>) -> SIMD8<Int32> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let p = _mm256_maddubs_epi16(unsafeBitCast(a, to: __m256i.self), unsafeBitCast(b, to: __m256i.self))
    return unsafeBitCast(_mm256_madd_epi16(p, unsafeBitCast(s, to: __m256i.self)), to: SIMD8<Int32>.self)
#else
    var r = SIMD8<Int32>()
    for j in 0..<8 {
        var acc: Int32 = 0
        for k in 0..<2 {
            let i = 4 * j + 2 * k
            let pair = Int32(a[i]) * Int32(b[i]) + Int32(a[i + 1]) * Int32(b[i + 1])
            acc += pair * Int32(s[2 * j + k])
        }
        r[j] = acc
    }
    return r
#endif
}

/// Signed × signed version: lane j = Σ over 4 consecutive bytes of a·b (|a| ≤ 127 or -128 with |b| ≤ 127).
@inline(__always)
func dotI8I8(_ a: SIMD32<Int8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let av = unsafeBitCast(a, to: __m256i.self), bv = unsafeBitCast(b, to: __m256i.self)
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(av, av), _mm256_sign_epi8(bv, av))
    return unsafeBitCast(_mm256_madd_epi16(p, _mm256_set1_epi16(1)), to: SIMD8<Int32>.self)
#else
    var r = SIMD8<Int32>()
    for j in 0..<8 {
        var acc: Int32 = 0
        for k in 0..<4 { acc += Int32(a[4 * j + k]) * Int32(b[4 * j + k]) }
        r[j] = acc
    }
    return r
#endif
}

/// Lane i is `value` when bit i of `bits` is set, else 0.
@inline(__always)
func expandBits(_ bits: UInt32, _ value: UInt8) -> SIMD32<UInt8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let shuffle = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                   2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3)
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(Int32(bitPattern: bits)), shuffle)
    let mask = _mm256_set1_epi64x(Int64(bitPattern: 0x8040_2010_0804_0201))
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, mask), mask)
    return unsafeBitCast(_mm256_and_si256(set, _mm256_set1_epi8(CChar(bitPattern: value))), to: SIMD32<UInt8>.self)
#else
    var r = SIMD32<UInt8>()
    for i in 0..<32 where (bits >> UInt32(i)) & 1 != 0 { r[i] = value }
    return r
#endif
}

@inline(__always)
func load16(_ p: UnsafeRawPointer) -> SIMD16<UInt8> { p.loadUnaligned(as: SIMD16<UInt8>.self) }

@inline(__always)
func load32(_ p: UnsafeRawPointer) -> SIMD32<UInt8> { p.loadUnaligned(as: SIMD32<UInt8>.self) }

// The helpers below exist because generic Swift SIMD lane shuffles and shifts by a scalar
// (`SIMD32(lowHalf:highHalf:)`, `v &>> 4` on bytes) compile to per-lane scalar loops.

/// Sixteen bytes → 32 lanes: low nibbles first, then high nibbles.
@inline(__always)
func nibbles(_ p: UnsafeRawPointer) -> SIMD32<UInt8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    // the 16 bytes in both halves (vbroadcasti128, a load), the upper half shifted by 4: no
    // lane insert on the shuffle port
    let both = _mm256_broadcastsi128_si256(p.loadUnaligned(as: __m128i.self))
    let shifted = _mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4))
    return unsafeBitCast(_mm256_and_si256(shifted, _mm256_set1_epi8(0x0F)), to: SIMD32<UInt8>.self)
#else
    let v = load16(p)
    return SIMD32(lowHalf: v & 0x0F, highHalf: v &>> 4)
#endif
}

/// (v >> shift) & mask per byte.
@inline(__always)
func shiftMask(_ v: SIMD32<UInt8>, _ shift: Int, _ mask: UInt8) -> SIMD32<UInt8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let s = _mm256_srl_epi16(unsafeBitCast(v, to: __m256i.self), _mm_cvtsi32_si128(Int32(shift)))
    return unsafeBitCast(_mm256_and_si256(s, _mm256_set1_epi8(CChar(bitPattern: mask))), to: SIMD32<UInt8>.self)
#else
    return (v &>> UInt8(shift)) & mask
#endif
}

/// (v >> shift) & mask, then << up (up < 8, result bits stay inside the byte).
@inline(__always)
func shiftMaskUp(_ v: SIMD32<UInt8>, _ shift: Int, _ mask: UInt8, _ up: Int) -> SIMD32<UInt8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let m = shiftMask(v, shift, mask)
    return unsafeBitCast(_mm256_sll_epi16(unsafeBitCast(m, to: __m256i.self), _mm_cvtsi32_si128(Int32(up))), to: SIMD32<UInt8>.self)
#else
    return ((v &>> UInt8(shift)) & mask) &<< UInt8(up)
#endif
}

@inline(__always)
func or(_ a: SIMD32<UInt8>, _ b: SIMD32<UInt8>) -> SIMD32<UInt8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    unsafeBitCast(_mm256_or_si256(unsafeBitCast(a, to: __m256i.self), unsafeBitCast(b, to: __m256i.self)), to: SIMD32<UInt8>.self)
#else
    a | b
#endif
}

/// [a ×8, b ×8] for the 16-bit multiplier of `dotU8I8` (two 16-element scale groups).
@inline(__always)
func scalePair(_ a: Int16, _ b: Int16) -> SIMD16<Int16> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let v = _mm256_set_m128i(_mm_set1_epi16(b), _mm_set1_epi16(a))
    return unsafeBitCast(v, to: SIMD16<Int16>.self)
#else
    SIMD16(lowHalf: SIMD8(repeating: a), highHalf: SIMD8(repeating: b))
#endif
}

@inline(__always)
func splat16(_ a: Int16) -> SIMD16<Int16> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    unsafeBitCast(_mm256_set1_epi16(a), to: SIMD16<Int16>.self)
#else
    SIMD16(repeating: a)
#endif
}

/// Σ a[i]·b[i] over 16 Int16 lanes, in Int32.
@inline(__always)
func dotI16(_ a: SIMD16<Int16>, _ b: SIMD16<Int16>) -> Int32 {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let p = unsafeBitCast(_mm256_madd_epi16(unsafeBitCast(a, to: __m256i.self), unsafeBitCast(b, to: __m256i.self)), to: SIMD8<Int32>.self)
    return p.wrappedSum()
#else
    var acc: Int32 = 0
    for i in 0..<16 { acc &+= Int32(a[i]) * Int32(b[i]) }
    return acc
#endif
}

/// a[2l]·b[2l] + a[2l+1]·b[2l+1] for l in 0..<8, in Int32 (vpmaddwd).
@inline(__always)
func maddPairs(_ a: SIMD16<Int16>, _ b: SIMD16<Int16>) -> SIMD8<Int32> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    unsafeBitCast(_mm256_madd_epi16(unsafeBitCast(a, to: __m256i.self), unsafeBitCast(b, to: __m256i.self)), to: SIMD8<Int32>.self)
#else
    var r = SIMD8<Int32>()
    for l in 0..<8 { r[l] = Int32(a[2 * l]) &* Int32(b[2 * l]) &+ Int32(a[2 * l + 1]) &* Int32(b[2 * l + 1]) }
    return r
#endif
}

/// Horizontal sum in a fixed order (so results never depend on the caller).
@inline(__always)
func hsum(_ v: SIMD8<Float>) -> Float {
    // llama.cpp's order (hsum_float_8): halves added lane-wise, then (r0 + r2) + (r1 + r3)
    let a = v.lowHalf + v.highHalf
    return (a[0] + a[2]) + (a[1] + a[3])
}

/// 16 signed bytes at p → Int16 lanes.
@inline(__always)
func widenI8(_ p: UnsafeRawPointer) -> SIMD16<Int16> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    unsafeBitCast(_mm256_cvtepi8_epi16(p.loadUnaligned(as: __m128i.self)), to: SIMD16<Int16>.self)
#else
    SIMD16<Int16>(truncatingIfNeeded: p.loadUnaligned(as: SIMD16<Int8>.self))
#endif
}

/// 16 unsigned bytes → Int16 lanes.
@inline(__always)
func widenU8(_ v: SIMD16<UInt8>) -> SIMD16<Int16> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    unsafeBitCast(_mm256_cvtepu8_epi16(unsafeBitCast(v, to: __m128i.self)), to: SIMD16<Int16>.self)
#else
    SIMD16<Int16>(truncatingIfNeeded: v)
#endif
}

/// (v >> shift) & mask on 16 bytes.
@inline(__always)
func shiftMask16(_ v: SIMD16<UInt8>, _ shift: Int32, _ mask: UInt8) -> SIMD16<UInt8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let s = _mm_srli_epi16(unsafeBitCast(v, to: __m128i.self), shift)
    return unsafeBitCast(_mm_and_si128(s, _mm_set1_epi8(CChar(bitPattern: mask))), to: SIMD16<UInt8>.self)
#else
    return (v &>> UInt8(shift)) & mask
#endif
}
