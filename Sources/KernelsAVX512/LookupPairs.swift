// AVX-512 decoding of the 32-element table formats (IQ4_NL, MXFP4) for `PairKernel`: each
// 4-bit code becomes its table value + 128 as an unsigned byte, so that dpbusd multiplies it
// with the signed activations and the 128·Σx the offset adds comes off with the activations'
// offset sums (the slot Q8_0 uses): the same exact Int32 lanes as the AVX2 kernel's signed
// products, then the same float steps.
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
import GGUF

/// 64 codes (two blocks' nibbles, `pairNibbles`) through a 16-entry table of unsigned bytes;
/// the second block's lanes are zero unless `two`.
@inline(__always)
private func tablePair(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool, blockBytes: Int,
                       table: SIMD16<UInt8>) -> __m512i {
    let codes = pairNibbles(c, _mm512_maskz_loadu_epi8(byteMask(two ? 2 * blockBytes : blockBytes), p))
    let t = _mm512_broadcast_i32x4(unsafeBitCast(table, to: __m128i.self))
    return _mm512_maskz_shuffle_epi8(two ? ~0 : 0xFFFF_FFFF, t, codes)
}

struct PIQ4_NL: PairFormat {
    static var blockBytes: Int { 18 }
    static var offsetSlot: Int { 2 }
    static var hasMin: Bool { false }
    /// The IQ4_NL grid (-127 … 113) + 128.
    static var table: SIMD16<UInt8> { SIMD16(1, 24, 45, 63, 79, 93, 106, 118, 129, 141, 153, 166, 181, 197, 217, 241) }
    @inline(__always) static func decode(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool) -> __m512i {
        tablePair(c, p, two, blockBytes: 18, table: table)
    }
    @inline(__always) static func pairScales(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> { dPair(p0, p1) }
}

struct PMXFP4: PairFormat {
    static var blockBytes: Int { 17 }
    static var offsetSlot: Int { 2 }
    static var hasMin: Bool { false }
    /// The doubled E2M1 values (0 … ±12) + 128.
    static var table: SIMD16<UInt8> { SIMD16(128, 129, 130, 131, 132, 134, 136, 140, 128, 127, 126, 125, 124, 122, 120, 116) }
    @inline(__always) static func decode(_ c: PairConsts, _ p: UnsafeRawPointer, _ two: Bool) -> __m512i {
        tablePair(c, p, two, blockBytes: 17, table: table)
    }
    @inline(__always) static func pairScales(_ p0: UnsafeRawPointer, _ p1: UnsafeRawPointer) -> SIMD4<Float> {
        SIMD4(mxfp4HalfScale(p0.load(as: UInt8.self)), 0, mxfp4HalfScale(p1.load(as: UInt8.self)), 0)
    }
}
#endif
