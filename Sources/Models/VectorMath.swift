import Foundation
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

// SIMD loops for the element-wise parts of the forward pass (norms, activations, attention).
// Each handles any length: 8 lanes at a time, then a scalar tail doing the same arithmetic.

typealias Float8 = SIMD8<Float>

@inline(__always)
func load8(_ p: UnsafePointer<Float>) -> Float8 { UnsafeRawPointer(p).loadUnaligned(as: Float8.self) }

@inline(__always)
func store8(_ v: Float8, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: Float8.self) }

@inline(__always)
func load8(_ p: UnsafePointer<Float16>) -> Float8 { Float8(UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float16>.self)) }

@inline(__always)
func sum(_ v: Float8) -> Float {
    let a = v.lowHalf + v.highHalf
    let b = a.lowHalf + a.highHalf
    return b[0] + b[1]
}

/// e^x for 8 lanes: range reduction x = n·ln2 + r, |r| ≤ ln2/2, then a degree-6 polynomial
/// for e^r (Cephes' expf coefficients) scaled by 2^n; within 2 ulp of expf. Inputs are
/// clamped to [-88, 88] (e^-88 ≈ 6e-39 flushes to 0 below that, e^88 ≈ 1.7e38 is the top).
@inline(__always)
func exp8(_ x: Float8) -> Float8 {
    let x = clamp88(x)
    // n = round(x·log2 e): adding 1.5·2^23 rounds to an integer held in the low mantissa bits
    let shifted = x * 1.442_695_04 + 12_582_912
    let n = shifted - 12_582_912
    var r = x - n * 0.693_359_375
    r = r + n * 2.121_944_4e-4
    var p: Float8 = Float8(repeating: 1.987_569_15e-4)
    p = p * r + 1.398_199_95e-3
    p = p * r + 8.333_345_19e-3
    p = p * r + 4.166_579_6e-2
    p = p * r + 1.666_666_55e-1
    p = p * r + 5.000_000_1e-1
    p = p * (r * r) + r + 1
    let bits = (unsafeBitCast(shifted, to: SIMD8<Int32>.self) &- 0x4B40_0000 &+ 127) &<< 23
    return p * unsafeBitCast(bits, to: Float8.self)
}

@inline(__always)
func clamp88(_ x: Float8) -> Float8 {
#if arch(x86_64)
    // vminps/vmaxps (the generic pointwiseMin/Max are lane-by-lane calls)
    _mm256_min_ps(_mm256_max_ps(x, Float8(repeating: -88)), Float8(repeating: 88))
#else
    x.replacing(with: -88, where: x .< -88).replacing(with: 88, where: x .> 88)
#endif
}

/// The same e^x one element at a time (for tails), so a value never depends on its index.
@inline(__always)
func exp1(_ x: Float) -> Float { exp8(Float8(repeating: x))[0] }

/// dst[i] = src[i] / rms(src) · w[i], rms over `count` elements (sum of squares in double).
@inline(__always)
func rmsNormalize(_ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>, count: Int, epsilon: Float,
                  into dst: UnsafeMutablePointer<Float>) {
    var acc = SIMD4<Double>()
    var i = 0
    while i + 8 <= count {
        let v = load8(src + i)
        let s = v * v
        acc += SIMD4<Double>(s.lowHalf) + SIMD4<Double>(s.highHalf)
        i += 8
    }
    var sumSquares = acc.sum()
    while i < count { sumSquares += Double(src[i] * src[i]); i += 1 }
    let scale = 1 / (Float(sumSquares / Double(count)) + epsilon).squareRoot()
    i = 0
    while i + 8 <= count {
        store8(load8(src + i) * scale * load8(w + i), dst + i)
        i += 8
    }
    while i < count { dst[i] = src[i] * scale * w[i]; i += 1 }
}

/// g[i] = act(g[i]) · u[i], act(x) = x / (1 + e^(-k·x·(1 + c·x²))): SiLU with k = 1, c = 0;
/// tanh-GELU with k = 2·√(2/π), c = 0.044715 (0.5·(1 + tanh(y)) = 1 / (1 + e^(-2y))).
@inline(__always)
func gatedActivation(_ g: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, count: Int, k: Float, c: Float) {
    var i = 0
    while i + 8 <= count {
        let x = load8(g + i)
        let y = x * k * (1 + c * x * x)
        store8(x / (1 + exp8(-y)) * load8(u + i), g + i)
        i += 8
    }
    while i < count {
        let x = g[i]
        g[i] = x / (1 + exp1(-(x * k * (1 + c * x * x)))) * u[i]
        i += 1
    }
}

/// a[i] += b[i]
@inline(__always)
func addInPlace(_ a: UnsafeMutablePointer<Float>, _ b: UnsafePointer<Float>, count: Int) {
    var i = 0
    while i + 8 <= count { store8(load8(a + i) + load8(b + i), a + i); i += 8 }
    while i < count { a[i] += b[i]; i += 1 }
}

/// dst[i] = Float16(src[i]) (round to nearest even, as a scalar conversion).
@inline(__always)
func storeHalf(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float16>, count: Int) {
    var i = 0
    while i + 8 <= count {
        UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD8<Float16>(load8(src + i)), as: SIMD8<Float16>.self)
        i += 8
    }
    while i < count { dst[i] = Float16(src[i]); i += 1 }
}

/// Σ q[i]·k[i] over a float query and a half-precision key.
@inline(__always)
func dotHalf(_ q: UnsafePointer<Float>, _ k: UnsafePointer<Float16>, count: Int) -> Float {
    var a0 = Float8(), a1 = Float8()
    var i = 0
    while i + 16 <= count {
        a0 = a0.addingProduct(load8(q + i), load8(k + i))
        a1 = a1.addingProduct(load8(q + i + 8), load8(k + i + 8))
        i += 16
    }
    if i + 8 <= count { a0 = a0.addingProduct(load8(q + i), load8(k + i)); i += 8 }
    var total = sum(a0 + a1)
    while i < count { total += q[i] * Float(k[i]); i += 1 }
    return total
}

/// Four dot products of one float query with four half-precision keys (one pass over the
/// query, four independent accumulators).
@inline(__always)
func dotHalf4(_ q: UnsafePointer<Float>, _ k0: UnsafePointer<Float16>, _ k1: UnsafePointer<Float16>,
              _ k2: UnsafePointer<Float16>, _ k3: UnsafePointer<Float16>, count: Int) -> SIMD4<Float> {
    var a0 = Float8(), a1 = Float8(), a2 = Float8(), a3 = Float8()
    var i = 0
    while i + 8 <= count {
        let x = load8(q + i)
        a0 = a0.addingProduct(x, load8(k0 + i))
        a1 = a1.addingProduct(x, load8(k1 + i))
        a2 = a2.addingProduct(x, load8(k2 + i))
        a3 = a3.addingProduct(x, load8(k3 + i))
        i += 8
    }
#if arch(x86_64)
    let h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3))
    var r = h.lowHalf + h.highHalf
#else
    var r = SIMD4(sum(a0), sum(a1), sum(a2), sum(a3))
#endif
    while i < count {
        r += q[i] * SIMD4(Float(k0[i]), Float(k1[i]), Float(k2[i]), Float(k3[i]))
        i += 1
    }
    return r
}
