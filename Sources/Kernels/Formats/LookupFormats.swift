#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif
import GGUF

// Formats whose 4-bit codes index a 16-entry table of signed values: IQ4_NL and IQ4_XS (a
// non-uniform grid), MXFP4 (FP4 E2M1 values, doubled, with a power-of-two block scale).
// The kernels decode a chunk to 32 signed bytes with one byte shuffle and multiply them with
// the 8-bit activations as signed × signed bytes, as llama.cpp's x86 kernels do:
//   IQ4_NL, MXFP4 with Q8_0 activations (`ggml_vec_dot_{iq4_nl,mxfp4}_q8_0`),
//   IQ4_XS with Q8_K activations, a 6-bit signed scale per 32 elements (`ggml_vec_dot_iq4_xs_q8_K`).

/// IQ4_NL/IQ4_XS grid.
var iq4Values: SIMD16<Int8> { SIMD16(-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113) }
/// MXFP4 (E2M1) values times 2; the block scale is halved to match (`mxfp4HalfScale`).
var mxfp4Values: SIMD16<Int8> { SIMD16(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12) }

/// table[i] for each of 32 indices (all < 16).
@inline(__always)
func lookup(_ table: SIMD16<Int8>, _ indices: SIMD32<UInt8>) -> SIMD32<Int8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let t = unsafeBitCast(table, to: __m128i.self)
    return unsafeBitCast(_mm256_shuffle_epi8(_mm256_set_m128i(t, t), unsafeBitCast(indices, to: __m256i.self)),
                         to: SIMD32<Int8>.self)
#else
    var r = SIMD32<Int8>()
    for i in 0..<32 { r[i] = table[Int(indices[i] & 15)] }
    return r
#endif
}

/// Signed × signed bytes with a 16-bit multiplier per pair of lanes (as `dotU8I8`):
/// lane j = Σ over pairs k of (a[4j+2k]·b[4j+2k] + a[4j+2k+1]·b[4j+2k+1]) · s[2j+k].
/// Needs |a| ≤ 127 (the pair sums stay within Int16: 2·127·127 < 2¹⁵).
@inline(__always)
func dotI8I8(_ a: SIMD32<Int8>, _ b: SIMD32<Int8>, _ s: SIMD16<Int16>) -> SIMD8<Int32> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let av = unsafeBitCast(a, to: __m256i.self), bv = unsafeBitCast(b, to: __m256i.self)
    let p = _mm256_maddubs_epi16(_mm256_sign_epi8(av, av), _mm256_sign_epi8(bv, av))
    return unsafeBitCast(_mm256_madd_epi16(p, unsafeBitCast(s, to: __m256i.self)), to: SIMD8<Int32>.self)
#else
    var r = SIMD8<Int32>()
    for j in 0..<8 {
        var acc: Int32 = 0
        for k in 0..<2 {
            let i = 4 * j + 2 * k
            acc += (Int32(a[i]) * Int32(b[i]) + Int32(a[i + 1]) * Int32(b[i + 1])) * Int32(s[2 * j + k])
        }
        r[j] = acc
    }
    return r
#endif
}

// MARK: dequantization (bit-identical to gguf.quants.dequantize: one product per element)

func dequantizeIQ4NL(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 18
        decodeTableBlock(iq4Values, p + 2, scale: loadF16(p, 0), into: y + 32 * b)
    }
}

func dequantizeMXFP4(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 17
        decodeTableBlock(mxfp4Values, p + 1, scale: mxfp4HalfScale(byte(p, 0)), into: y + 32 * b)
    }
}

func dequantizeIQ4XS(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 136
        let d = loadF16(p, 0)
        for sub in 0..<8 {
            decodeTableBlock(iq4Values, p + 8 + 16 * sub, scale: d * Float(iq4xsScale(p, sub)), into: y + 256 * b + 32 * sub)
        }
    }
}

/// 32 elements from 16 bytes of 4-bit codes (low nibbles first, then high), each scale · table value.
@inline(__always)
private func decodeTableBlock(_ table: SIMD16<Int8>, _ qs: UnsafeRawPointer, scale: Float, into y: UnsafeMutablePointer<Float>) {
    for j in 0..<16 {
        let q = byte(qs, j)
        y[j] = scale * Float(table[Int(q & 0x0F)])
        y[j + 16] = scale * Float(table[Int(q >> 4)])
    }
}

/// IQ4_XS: the 6-bit scale of sub-block `sub` minus 32 (low 4 bits in scales_l, high 2 in scales_h).
@inline(__always)
private func iq4xsScale(_ p: UnsafeRawPointer, _ sub: Int) -> Int16 {
    let low = (byte(p, 4 + sub / 2) >> UInt8(4 * (sub & 1))) & 0x0F
    let high = UInt8((p.loadUnaligned(fromByteOffset: 2, as: UInt16.self) >> UInt16(2 * sub)) & 3)
    return Int16(low | high << 4) - 32
}

// MARK: matrix-product kernels

struct KIQ4_NL: QuantKernel {
    static var blockBytes: Int { 18 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        (lookup(iq4Values, nibbles(p + 2)), splat16(1))
    }
    @inline(__always) static func dot(_ w: SIMD32<Int8>, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotI8I8(w, x)
    }
    @inline(__always) static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float> { dScales(p) }
}

struct KMXFP4: QuantKernel {
    static var blockBytes: Int { 17 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { mxfp4HalfScale(byte(p, 0)) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        (lookup(mxfp4Values, nibbles(p + 1)), splat16(1))
    }
    @inline(__always) static func dot(_ w: SIMD32<Int8>, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotI8I8(w, x)
    }
    @inline(__always) static func scales(_ p: UnsafeRawPointer) -> SIMD2<Float> { SIMD2(mxfp4HalfScale(byte(p, 0)), 0) }
}

/// IQ4_XS block header: d and the eight sub-block scales (minus 32) in Int16 lanes 0..<8.
struct IQ4XSHeader {
    var d: Float
    var scales: SIMD8<Int16>
}

/// IQ4_XS: llama.cpp's kernel multiplies each 32-element chunk's pair sums by its scale
/// (integer lanes), then acc = fma(d·d_x, lanes, acc) per block and hsum(acc): `SuperStyle.lanes`
/// with no correction term.
struct KIQ4_XS: QuantKernel {
    static var blockBytes: Int { 136 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> IQ4XSHeader {
        // the 8 scales as bytes, assembled in a register (lane-by-lane SIMD writes stall on store forwarding)
        let low = UInt64(p.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        let high = UInt64(p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        var packed: UInt64 = 0
        for sub in 0..<8 {
            let l = (low >> UInt64(4 * sub)) & 0x0F  // sub-block 2i: low nibble of byte i, 2i+1: its high nibble
            let h = (high >> UInt64(2 * sub)) & 3
            packed |= (l | h << 4) << UInt64(8 * sub)
        }
        let bytes = unsafeBitCast(packed, to: SIMD8<UInt8>.self)  // byte k = sub-block k (little-endian)
        return IQ4XSHeader(d: loadF16(p, 0), scales: SIMD8<Int16>(truncatingIfNeeded: bytes) &- 32)
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: IQ4XSHeader, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        (lookup(iq4Values, nibbles(p + 8 + 16 * c)), splat16(h.scales[c]))
    }
    @inline(__always) static func dot(_ w: SIMD32<Int8>, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotI8I8(w, x, scale)
    }
    @inline(__always) static func blockScale(_ h: IQ4XSHeader) -> Float { h.d }
    @inline(__always) static func correction(_ h: IQ4XSHeader, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float { 0 }
}
