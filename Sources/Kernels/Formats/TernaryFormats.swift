#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif

// Ternary formats (weights d·{-1, 0, 1} per 256-element block, as BitNet b1.58 models use):
// TQ2_0 stores each value + 1 in 2 bits, TQ1_0 packs five values per byte in base 3 (as a
// fixed-point fraction: the digit k is the top of (byte · 3^k mod 256) · 3).
// Both multiply with Q8_K activations as llama.cpp's `ggml_vec_dot_tq{1,2}_0_q8_K` do: the
// unsigned codes n = value + 1 ∈ {0, 1, 2} times the activations in integer lanes, the +1
// taken off each lane with the activation group sums, then acc = fma(d·d_x, lanes, acc) per
// block and hsum(acc) (`SuperStyle.laneOffset`).

// MARK: dequantization (bit-identical to gguf.quants.dequantize)

func dequantizeTQ2(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 66
        let d = loadF16(p, 64)
        // element h·128 + s·32 + i ← bits 2s.. of qs[h·32 + i]
        for e in 0..<256 {
            let q = (byte(p, (e >> 7) * 32 + (e & 31)) >> UInt8(2 * ((e >> 5) & 3))) & 3
            y[256 * b + e] = d * Float(Int32(q) - 1)
        }
    }
}

func dequantizeTQ1(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 54
        let d = loadF16(p, 52)
        for e in 0..<256 {
            let (offset, power) = tq1Digit(e)
            y[256 * b + e] = d * Float(Int32(ternaryDigit(byte(p, offset) &* power)) - 1)
        }
    }
}

/// TQ1_0 element e: the byte holding it and the power of 3 that brings its digit to the top.
/// Elements 0..<160: qs[e % 32] · 3^(e / 32); 160..<240: qs[32 + e % 16] · 3^((e - 160) / 16);
/// 240..<256: qh[e % 4] · 3^((e - 240) / 4).
@inline(__always)
private func tq1Digit(_ e: Int) -> (Int, UInt8) {
    if e < 160 { return (e & 31, powerOf3(e >> 5)) }
    if e < 240 { return (32 + (e & 15), powerOf3((e - 160) >> 4)) }
    return (48 + (e & 3), powerOf3((e - 240) >> 2))
}

/// 3^k for k in 0..<5.
@inline(__always)
private func powerOf3(_ k: Int) -> UInt8 { UInt8(truncatingIfNeeded: UInt64(0x51_1B_09_03_01) >> UInt64(8 * k)) }

/// (v · 3) >> 8 ∈ {0, 1, 2}: the leading base-3 digit of the fraction v/256.
@inline(__always)
private func ternaryDigit(_ v: UInt8) -> UInt8 { UInt8((UInt16(v) * 3) >> 8) }

/// `ternaryDigit` of each byte: (v · 3) >> 8 is 1 from v = 86 and 2 from v = 171 on.
@inline(__always)
private func ternaryDigits(_ v: SIMD32<UInt8>) -> SIMD32<UInt8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let x = unsafeBitCast(v, to: __m256i.self)
    let atLeast86 = _mm256_cmpeq_epi8(_mm256_max_epu8(x, _mm256_set1_epi8(86)), x)   // -1 where v ≥ 86
    let atLeast171 = _mm256_cmpeq_epi8(_mm256_max_epu8(x, _mm256_set1_epi8(-85)), x) // -85 is 171 as a byte
    return unsafeBitCast(_mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(atLeast86, atLeast171)),
                         to: SIMD32<UInt8>.self)
#else
    let one = SIMD32<UInt8>(repeating: 1), zero = SIMD32<UInt8>()
    return zero.replacing(with: one, where: v .>= 86) &+ zero.replacing(with: one, where: v .>= 171)
#endif
}

/// Two 16-byte halves as one 32-byte vector.
@inline(__always)
private func join(_ low: SIMD16<UInt8>, _ high: SIMD16<UInt8>) -> SIMD32<UInt8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    unsafeBitCast(_mm256_set_m128i(unsafeBitCast(high, to: __m128i.self), unsafeBitCast(low, to: __m128i.self)),
                  to: SIMD32<UInt8>.self)
#else
    SIMD32(lowHalf: low, highHalf: high)
#endif
}

// MARK: matrix-product kernels

struct KTQ2_0: QuantKernel {
    static var blockBytes: Int { 66 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 64) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        (shiftMask(load32(p + (c >> 2) * 32), 2 * (c & 3), 3), splat16(1))
    }
    @inline(__always) static func blockScale(_ d: Float) -> Float { d }
    static var superStyle: SuperStyle { .laneOffset }
    @inline(__always) static func laneOffset(_ d: Float, bsums: UnsafePointer<Int16>) -> SIMD8<Int32> {
        ternaryLaneOffset(bsums)
    }
}

struct KTQ1_0: QuantKernel {
    static var blockBytes: Int { 54 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 52) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        // chunks 0..<5: qs[0..<32] · 3^c; 5, 6: qs[32..<48] · (1, 3), (9, 27); 7: qs[32..<48] · 81, then
        // qh[0..<4] · (1, 3, 9, 27), each power over the 4 bytes
        let bytes: SIMD32<UInt8>
        if c < 5 {
            bytes = load32(p) &* SIMD32(repeating: powerOf3(c))
        } else if c < 7 {
            let rest = load16(p + 32)
            bytes = join(rest &* SIMD16(repeating: powerOf3(2 * c - 10)), rest &* SIMD16(repeating: powerOf3(2 * c - 9)))
        } else {
            let qh = SIMD16<UInt8>(truncatingIfNeeded: SIMD16<UInt32>(repeating: p.loadUnaligned(fromByteOffset: 48, as: UInt32.self))
                                   &>> SIMD16(0, 8, 16, 24, 0, 8, 16, 24, 0, 8, 16, 24, 0, 8, 16, 24))
            let qhPowers = SIMD16<UInt8>(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27)
            bytes = join(load16(p + 32) &* SIMD16(repeating: 81), qh &* qhPowers)
        }
        return (ternaryDigits(bytes), splat16(1))
    }
    @inline(__always) static func blockScale(_ d: Float) -> Float { d }
    static var superStyle: SuperStyle { .laneOffset }
    @inline(__always) static func laneOffset(_ d: Float, bsums: UnsafePointer<Int16>) -> SIMD8<Int32> {
        ternaryLaneOffset(bsums)
    }
}

/// The codes' +1 per lane l: the activation sums of groups 2l and 2l+1 (llama.cpp subtracts the
/// group sums from its 16-bit lanes before pairing them; the integers are the same).
@inline(__always)
private func ternaryLaneOffset(_ bsums: UnsafePointer<Int16>) -> SIMD8<Int32> {
    maddPairs(splat16(1), UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self))
}
