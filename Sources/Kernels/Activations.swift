import Foundation
#if arch(x86_64)
import _Builtin_intrinsics.intel
#endif

/// g[i] = gelu(g[i]) · u[i] as ggml's geglu: 0 for x ≤ −10, x·u for x ≥ 10, otherwise the
/// tanh-GELU of x rounded to half, itself rounded to half (ggml's 65536-entry table), times u.
/// Needs: `g` and `u` hold `count` floats.
public func geglu(_ g: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, count: Int) {
    geluHalfTable.withUnsafeBufferPointer { table in
        // 8 at a time: the half rounding and both ends as vector selects, the table read per lane
        var i = 0
        while i + 8 <= count {
            let x = load8(g + i), v = load8(u + i)
            let bits = SIMD8<Int32>(truncatingIfNeeded: unsafeBitCast(SIMD8<Float16>(x), to: SIMD8<UInt16>.self))
            let t = SIMD8<Float>(table[Int(bits[0])], table[Int(bits[1])], table[Int(bits[2])], table[Int(bits[3])],
                                 table[Int(bits[4])], table[Int(bits[5])], table[Int(bits[6])], table[Int(bits[7])])
            var r = t * v
            r.replace(with: x * v, where: x .>= 10)
            r.replace(with: 0, where: x .<= -10)
            store8(r, g + i)
            i += 8
        }
        for i in i..<count {
            let x = g[i]
            if x <= -10 { g[i] = 0 } else if x >= 10 { g[i] = x * u[i] } else {
                g[i] = table[Int(Float16(x).bitPattern)] * u[i]
            }
        }
    }
}

/// x[i] = gelu(x[i]) as ggml's gelu (non-gated, starcoder2's MLP): 0 for x ≤ −10, x for
/// x ≥ 10, otherwise the tanh-GELU of x rounded to half, from the same table as `geglu`.
/// Needs: `x` holds `count` floats.
public func gelu(_ x: UnsafeMutablePointer<Float>, count: Int) {
    geluHalfTable.withUnsafeBufferPointer { table in
        for i in 0..<count {
            let v = x[i]
            if v <= -10 { x[i] = 0 } else if v < 10 { x[i] = table[Int(Float16(v).bitPattern)] }
        }
    }
}

/// gelu(h) rounded to half for every half h (by bit pattern), as float. The formula is ggml's
/// 0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²))) with its compiler's fusion of 0.044715·x·x + 1.
let geluHalfTable: [Float] = (0..<65536).map { bits in
    let x = Float(Float16(bitPattern: UInt16(bits)))
    let inner = Float(1).addingProduct(0.044715 * x, x)
    return Float(Float16(0.5 * x * (1 + tanhf(Float(0.797_884_560_802_865_4) * x * inner))))
}

/// g[i] = silu(g[i]) · u[i] with the same floats as ggml's swiglu on an AVX-512 build:
/// silu(x) = x / (1 + e^(0 − x)) with `ggmlExp8`, then times u. ggml runs 16 lanes at a time
/// and a scalar libm expf on a row's last `columns % 16` elements; so do we. `elements` are flat
/// indices into rows of `columns` (any range: each element depends only on its value and column).
/// Needs: `g` and `u` hold `elements.upperBound` floats.
public func swiglu(_ g: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, elements: Range<Int>, columns: Int) {
    let body = columns / 16 * 16
    var i = elements.lowerBound
    while i < elements.upperBound {
        let rowStart = i / columns * columns
        let bodyEnd = min(rowStart + body, elements.upperBound), rowEnd = min(rowStart + columns, elements.upperBound)
        while i + 8 <= bodyEnd {
            let x = load8(g + i)
            store8(x / (1 + ggmlExp8(SIMD8<Float>() - x)) * load8(u + i), g + i)
            i += 8
        }
        while i < bodyEnd {  // a piece boundary inside a 16-lane block: the same lane arithmetic
            let x = SIMD8<Float>(repeating: g[i])
            g[i] = (x / (1 + ggmlExp8(SIMD8<Float>() - x)))[0] * u[i]
            i += 1
        }
        while i < rowEnd { g[i] = g[i] / (1 + expf(-g[i])) * u[i]; i += 1 }
    }
}

/// x[i] = silu(x[i]) with the same floats as ggml's silu on an AVX-512 build: x / (1 + e^(0 − x))
/// with `ggmlExp8` over 16-lane blocks, a scalar libm expf on a row's last `columns % 16`
/// elements (the lane split of `swiglu`). `elements` are flat indices into rows of `columns`.
/// Needs: `x` holds `elements.upperBound` floats.
public func silu(_ x: UnsafeMutablePointer<Float>, elements: Range<Int>, columns: Int) {
    let body = columns / 16 * 16
    var i = elements.lowerBound
    while i < elements.upperBound {
        let rowStart = i / columns * columns
        let bodyEnd = min(rowStart + body, elements.upperBound), rowEnd = min(rowStart + columns, elements.upperBound)
        while i + 8 <= bodyEnd {
            let v = load8(x + i)
            store8(v / (1 + ggmlExp8(SIMD8<Float>() - v)), x + i)
            i += 8
        }
        while i < bodyEnd {
            let v = SIMD8<Float>(repeating: x[i])
            x[i] = (v / (1 + ggmlExp8(SIMD8<Float>() - v)))[0]
            i += 1
        }
        while i < rowEnd { x[i] = x[i] / (1 + expf(-x[i])); i += 1 }
    }
}

/// g[i] = x·σ(α·x)·(y + 1) with x = min(g[i], limit), y = clamp(u[i], −limit, limit): gpt-oss's
/// clamped SwiGLU, with ggml's scalar arithmetic (`swiglu_oai`: x / (1 + e^(α·(−x))), libm expf).
/// Needs: `g` and `u` hold `count` floats.
public func clampedSwiGLU(_ g: UnsafeMutablePointer<Float>, _ u: UnsafePointer<Float>, count: Int, alpha: Float, limit: Float) {
    for i in 0..<count {
        let x = min(g[i], limit)
        let y = min(max(u[i], -limit), limit)
        g[i] = x / (1 + expf(alpha * -x)) * (y + 1)
    }
}

/// e^x for 8 lanes with ggml's SIMD expf (`ggml_v_expf`, the AVX-512 variant, which
/// llama.cpp's CPU backend uses for SiLU and for softmax on this hardware): n = round(x/ln2)
/// by the 1.5·2²³ shift, b = x − n·ln2 in two fused steps, a degree-5 polynomial (ARM
/// optimized-routines' expf coefficients) evaluated with the same fused multiply-adds, then
/// scaled by 2ⁿ as vscalefps does (one rounding). |n| > 192 gives 0 or +∞.
@inline(__always)
func ggmlExp8(_ x: SIMD8<Float>) -> SIMD8<Float> {
    let shift = SIMD8<Float>(repeating: 0x1.8p23)
    let z = shift.addingProduct(x, SIMD8<Float>(repeating: 0x1.715476p+0))
    let n = z - shift
    let b = x.addingProduct(-n, SIMD8<Float>(repeating: 0x1.62e4p-1)).addingProduct(-n, SIMD8<Float>(repeating: 0x1.7f7d1cp-20))
    let u = b * b
    let p = SIMD8<Float>(repeating: 0x1.573e2ep-5).addingProduct(SIMD8<Float>(repeating: 0x1.0e4020p-7), b)
    let q = SIMD8<Float>(repeating: 0x1.fffdb6p-2).addingProduct(SIMD8<Float>(repeating: 0x1.555e66p-3), b)
    let l = SIMD8<Float>(repeating: 1).addingProduct(SIMD8<Float>(repeating: 0x1.ffffecp-1), b)
    let j = l.addingProduct(q.addingProduct(p, u), u)
    // j·2ⁿ as two exact power-of-two factors (|n| ≤ 192 → each ≤ 96), so only the last
    // multiply rounds, as scalef does for a subnormal result.
    let ni = unsafeBitCast(z, to: SIMD8<Int32>.self) &- 0x4B40_0000
    let n1 = ni &>> 1, n2 = ni &- (ni &>> 1)
    let p1 = unsafeBitCast((n1 &+ 127) &<< 23, to: SIMD8<Float>.self)
    let p2 = unsafeBitCast((n2 &+ 127) &<< 23, to: SIMD8<Float>.self)
    let result = j * p1 * p2
    let big = (n .> 192) .| (n .< -192)  // false for NaN, as an ordered compare
#if arch(x86_64)
    if _mm256_movemask_ps(unsafeBitCast(big, to: SIMD8<Float>.self)) == 0 { return result }
#else
    if !any(big) { return result }
#endif
    return result.replacing(with: SIMD8<Float>(repeating: 0).replacing(with: .infinity, where: n .> 0), where: big)
}
