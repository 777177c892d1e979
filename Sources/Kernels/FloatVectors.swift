// Float vector helpers for the element-wise kernels (norms, activations, attention): 8-lane
// loads and stores, half-precision conversions, and the sums in ggml's orders.
#if arch(x86_64)
import _Builtin_intrinsics.intel
import CIntrinsics
#endif

@usableFromInline @inline(__always)
func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> { UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self) }

@usableFromInline @inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

/// Eight halves widened to float.
@inline(__always)
func load8(_ p: UnsafePointer<Float16>) -> SIMD8<Float> {
#if arch(x86_64)
    _mm256_cvtph_ps(UnsafeRawPointer(p).loadUnaligned(as: __m128i.self))  // the generic conversion is not always inlined
#else
    SIMD8<Float>(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float16>.self))
#endif
}

/// v rounded to half precision (nearest even) and back: vcvtps2ph + vcvtph2ps (F16C), inlined
/// at every use. The row attention kernel rounds its accumulator at every cache position, so
/// two instructions here instead of a float-arithmetic emulation (~12) matter to decoding.
@inline(__always)
func roundedToHalf(_ v: SIMD8<Float>) -> SIMD8<Float> {
#if arch(x86_64)
    swiftlet_round_to_half8(v)
#else
    SIMD8<Float>(SIMD8<Float16>(v))
#endif
}

/// The 16 lanes `lo ++ hi` summed as GCC's _mm512_reduce_add_ps does: halves, quarters,
/// then (0+2) + (1+3).
@inline(__always)
func reduceAdd16(_ lo: SIMD8<Float>, _ hi: SIMD8<Float>) -> Float {
    let t3 = hi + lo
    let t6 = t3.highHalf + t3.lowHalf
    return (t6[0] + t6[2]) + (t6[1] + t6[3])
}

/// a[i] += b[i]
@inlinable @inline(__always)
public func addInPlace(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(load8(a + i) + load8(b + i), a + i); i += 8 }
    while i < count { a[i] += b[i]; i += 1 }
}

/// a[i] += s·b[i], the product rounded before the sum (as a scale then an add: no fused multiply-add).
@inlinable @inline(__always)
public func addScaled(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, scale s: Float, count: Int) {
    var i = 0
    let v = SIMD8<Float>(repeating: s)
    while i + 8 <= count { store8(load8(a + i) + load8(b + i) * v, a + i); i += 8 }
    while i < count { a[i] += b[i] * s; i += 1 }
}

/// dst[i] = Float16(src[i]) (round to nearest even, as a scalar conversion).
@inlinable @inline(__always)
public func storeHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float16>, count: Int) {
    var i = 0
    while i + 8 <= count {
        UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD8<Float16>(load8(src + i)), as: SIMD8<Float16>.self)
        i += 8
    }
    while i < count { dst[i] = Float16(src[i]); i += 1 }
}

/// dst[i] = src[i] rounded to half precision, kept as float.
@inline(__always)
func storeRoundedToHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(roundedToHalf(load8(src + i)), dst + i); i += 8 }
    while i < count { dst[i] = Float(Float16(src[i])); i += 1 }
}

/// Σ k[i]·q[i] over two half-precision vectors (q given widened to float, see
/// `storeRoundedToHalf`, so a query is converted once, not once per cache position) as
/// ggml_vec_dot_f16 sums on an AVX-512 build without FP16 arithmetic: 64 elements per step into
/// four 16-lane accumulators (the products of two halves are exact in float), accumulators
/// combined (0+2) + (1+3), the 16 lanes reduced as _mm512_reduce_add_ps, and a tail of fewer
/// than 64 elements added in double.
@inline(__always)
func dotHalfGGML(_ k: UnsafePointer<Float16>, _ q: UnsafePointer<Float>, count: Int) -> Float {
    dotGGML(q, count: count) { load8(k + $0) } element: { Float(k[$0]) }
}

/// `dotHalfGGML` with the key already widened to float (exactly, so the same result).
@inline(__always)
func dotHalfGGML(widened k: UnsafePointer<Float>, _ q: UnsafePointer<Float>, count: Int) -> Float {
    dotGGML(q, count: count) { load8(k + $0) } element: { k[$0] }
}

@inline(__always)
private func dotGGML(_ q: UnsafePointer<Float>, count: Int, key: (Int) -> SIMD8<Float>,
                     element: (Int) -> Float) -> Float {
    var a0 = SIMD8<Float>(), b0 = SIMD8<Float>(), a1 = SIMD8<Float>(), b1 = SIMD8<Float>()
    var a2 = SIMD8<Float>(), b2 = SIMD8<Float>(), a3 = SIMD8<Float>(), b3 = SIMD8<Float>()
    var i = 0
    while i + 64 <= count {
        a0 = a0.addingProduct(key(i), load8(q + i)); b0 = b0.addingProduct(key(i + 8), load8(q + i + 8))
        a1 = a1.addingProduct(key(i + 16), load8(q + i + 16)); b1 = b1.addingProduct(key(i + 24), load8(q + i + 24))
        a2 = a2.addingProduct(key(i + 32), load8(q + i + 32)); b2 = b2.addingProduct(key(i + 40), load8(q + i + 40))
        a3 = a3.addingProduct(key(i + 48), load8(q + i + 48)); b3 = b3.addingProduct(key(i + 56), load8(q + i + 56))
        i += 64
    }
    var total = Double(reduceAdd16((a0 + a2) + (a1 + a3), (b0 + b2) + (b1 + b3)))
    while i < count { total += Double(element(i) * q[i]); i += 1 }
    return Float(total)
}
