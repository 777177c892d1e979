import Foundation
@testable import Kernels
import Testing

/// The element-wise pieces that reproduce llama.cpp's CPU arithmetic (checked bitwise against
/// llama.cpp's own tensors when written; these tests pin down their properties).
@Suite struct GGMLNumericsTests {
    /// The vector rounding to half equals the scalar half conversion, ties to even,
    /// half subnormals, overflow, infinities, NaN and the sign of zero included.
    @Test func roundingToHalfEqualsHalfConversion() {
        var rng = SystemRandomNumberGenerator()
        var checked = 0
        for trial in 0..<20_000 {
            var v = SIMD8<Float>()
            for i in 0..<8 {
                let e = Float(Int.random(in: -30...16, using: &rng))
                var x = Float.random(in: 1..<2, using: &rng) * powf(2, e) * (Bool.random(using: &rng) ? 1 : -1)
                if trial % 3 == 0 {  // exactly halfway between two halves
                    let h = Float16(x)
                    x = (Float(h) + Float(h.nextUp)) / 2
                }
                v[i] = x
            }
            if trial == 0 { v = SIMD8(0, -0.0, 65504, -1e-30, 65519.99, -65520, .infinity, -.infinity) }
            let r = roundedToHalf(v)
            for i in 0..<8 {
                #expect(r[i].bitPattern == Float(Float16(v[i])).bitPattern, "\(v[i])")
                #expect(roundedToHalf(SIMD8(repeating: .nan))[i].isNaN)
                checked += 1
            }
        }
        #expect(checked == 160_000)
    }

    /// ggml's SIMD e^x: close to libm's, and its range ends handled as ggml does.
    @Test func ggmlExpMatchesExpfClosely() {
        var x = SIMD8<Float>(-87, -20, -1.5, -1e-7, 0, 0.5, 10, 88)
        let e = ggmlExp8(x)
        for i in 0..<8 {
            let reference = expf(x[i])
            #expect(abs(e[i] - reference) <= 4 * reference.ulp, "e^\(x[i])")
        }
        x = SIMD8<Float>(-.infinity, -200, -104, 89, 200, .infinity, .nan, -0.0)
        let ends = ggmlExp8(x)
        #expect(ends[0] == 0 && ends[1] == 0 && ends[2] == 0)
        #expect(ends[3] == .infinity && ends[4] == .infinity && ends[5] == .infinity)
        #expect(ends[6].isNaN)
        #expect(ends[7] == 1)
    }

    /// The half-precision dot product sums 64-element blocks in ggml's order, the tail in double.
    @Test func halfDotMatchesADoubleSum() {
        for count in [16, 64, 100, 256] {
            let a = (0..<count).map { Float16(Float($0 % 7) - 3.25) }
            let b = (0..<count).map { Float16(Float($0 % 5) * 0.5 - 1) }
            let exact = zip(a, b).reduce(0.0) { $0 + Double(Float($1.0)) * Double(Float($1.1)) }
            let bWidened = b.map { Float($0) }
            let dot = a.withUnsafeBufferPointer { x in bWidened.withUnsafeBufferPointer { y in
                dotHalfGGML(x.baseAddress!, y.baseAddress!, count: count)
            } }
            #expect(dot == Float(exact))  // small integers and halves: every partial sum is exact
        }
    }

    /// SwiGLU: 16-lane blocks through ggmlExp8, the row's tail through libm, same formula;
    /// independent of how the elements are split into pieces.
    @Test func swigluRowsAndTails() {
        let columns = 21, rows = 2
        var g = (0..<rows * columns).map { Float($0) / 7 - 3 }
        let u = (0..<rows * columns).map { Float($0 % 5) - 2 }
        let original = g
        g.withUnsafeMutableBufferPointer { swiglu($0.baseAddress!, u, elements: 0..<rows * columns, columns: columns) }
        // any split into pieces gives the same floats
        var pieces = original
        pieces.withUnsafeMutableBufferPointer { p in
            for r in [0..<8, 8..<13, 13..<16, 16..<40, 40..<rows * columns] { swiglu(p.baseAddress!, u, elements: r, columns: columns) }
        }
        #expect(pieces.map(\.bitPattern) == g.map(\.bitPattern))
        for i in 0..<rows * columns {
            let x = original[i]
            let expected = x / (1 + expf(-x)) * u[i]
            #expect(abs(g[i] - expected) <= 4 * max(abs(expected).ulp, Float.leastNormalMagnitude))
        }
    }
    /// Eight slices at once (one per lane) give exactly the floats of the one-slice norm, for
    /// slice counts that leave remainders and lengths that are not multiples of 8.
    @Test func rmsNormOverSlicesEqualsOneSliceAtATime() {
        var rng = SystemRandomNumberGenerator()
        for (length, slices) in [(640, 21), (256, 8), (13, 17), (256, 3)] {
            let src = (0..<length * slices).map { _ in Float.random(in: -4...4, using: &rng) * (Bool.random(using: &rng) ? 1e-3 : 10) }
            let w = (0..<length).map { _ in Float.random(in: -2...2, using: &rng) }
            var expected = [Float](repeating: 0, count: src.count), got = expected
            for s in 0..<slices {
                rmsNormalize(src.withUnsafeBufferPointer { $0.baseAddress! + s * length }, w, count: length, epsilon: 1e-6,
                             into: expected.withUnsafeMutableBufferPointer { $0.baseAddress! + s * length })
            }
            // split as the pool would: the slices in two uneven ranges
            for range in [0..<slices / 3, slices / 3..<slices] {
                rmsNormalizeSlices(src, w, length: length, slices: range, epsilon: 1e-6,
                                   into: got.withUnsafeMutableBufferPointer { $0.baseAddress! })
            }
            #expect(got.map(\.bitPattern) == expected.map(\.bitPattern), "length \(length), \(slices) slices")
            // in place, as the models call it
            var inPlace = src
            inPlace.withUnsafeMutableBufferPointer {
                rmsNormalizeSlices($0.baseAddress!, w, length: length, slices: 0..<slices, epsilon: 1e-6, into: $0.baseAddress!)
            }
            #expect(inPlace.map(\.bitPattern) == expected.map(\.bitPattern), "in place, length \(length)")
        }
    }
    /// The 8-wide GEGLU equals the element-by-element definition (table of half GELUs, the ±10
    /// ends), on a length with a scalar tail and values around both ends.
    @Test func gegluEqualsElementwiseDefinition() {
        var rng = SystemRandomNumberGenerator()
        let count = 8 * 37 + 5
        var g = (0..<count).map { _ in Float.random(in: -14...14, using: &rng) }
        g[0] = -10; g[1] = 10; g[2] = .nan; g[3] = -0.0; g[4] = 9.999; g[5] = -9.999
        let u = (0..<count).map { _ in Float.random(in: -3...3, using: &rng) }
        let expected = zip(g, u).map { x, v -> Float in
            if x <= -10 { return 0 }
            if x >= 10 { return x * v }
            return geluHalfTable[Int(Float16(x).bitPattern)] * v
        }
        var got = g
        got.withUnsafeMutableBufferPointer { geglu($0.baseAddress!, u, count: count) }
        #expect(got.map(\.bitPattern) == expected.map(\.bitPattern))
    }

    /// GELU without a gate is GEGLU with an up of 1: the same table and ends (x ≥ 10 passes x).
    @Test func geluEqualsGegluWithUnitUp() {
        var rng = SystemRandomNumberGenerator()
        let count = 8 * 11 + 3
        var x = (0..<count).map { _ in Float.random(in: -14...14, using: &rng) }
        x[0] = -10; x[1] = 10; x[2] = -0.0; x[3] = 9.999
        var expected = x
        expected.withUnsafeMutableBufferPointer { geglu($0.baseAddress!, [Float](repeating: 1, count: count), count: count) }
        var got = x
        got.withUnsafeMutableBufferPointer { gelu($0.baseAddress!, count: count) }
        #expect(got.map(\.bitPattern) == expected.map(\.bitPattern))
    }

    /// LayerNorm: near the definition in double (mean 0 and unit variance before the weight and
    /// bias), the same floats in place, and a missing bias is a zero bias.
    @Test func layerNormMatchesTheDefinition() {
        var rng = SystemRandomNumberGenerator()
        for count in [7, 16, 40, 256] {
            let x = (0..<count).map { _ in Float.random(in: -3...5, using: &rng) }
            let w = (0..<count).map { _ in Float.random(in: 0.5...1.5, using: &rng) }
            let b = (0..<count).map { _ in Float.random(in: -1...1, using: &rng) }
            let mean = x.reduce(0.0) { $0 + Double($1) } / Double(count)
            let variance = x.reduce(0.0) { $0 + (Double($1) - mean) * (Double($1) - mean) } / Double(count)
            let expected = (0..<count).map { (Double(x[$0]) - mean) / (variance + 1e-5).squareRoot() * Double(w[$0]) + Double(b[$0]) }
            var out = [Float](repeating: .nan, count: count)
            layerNormalize(x, w, b, count: count, epsilon: 1e-5, into: &out)
            #expect(zip(out, expected).allSatisfy { abs(Double($0) - $1) <= 1e-5 }, "count \(count)")
            var inPlace = x
            inPlace.withUnsafeMutableBufferPointer { layerNormalize($0.baseAddress!, w, b, count: count, epsilon: 1e-5, into: $0.baseAddress!) }
            #expect(inPlace.map(\.bitPattern) == out.map(\.bitPattern), "in place, count \(count)")
            var unbiased = [Float](repeating: .nan, count: count), zeroBias = unbiased
            layerNormalize(x, w, nil, count: count, epsilon: 1e-5, into: &unbiased)
            layerNormalize(x, w, [Float](repeating: 0, count: count), count: count, epsilon: 1e-5, into: &zeroBias)
            #expect(unbiased == zeroBias, "no bias, count \(count)")
        }
    }
}
