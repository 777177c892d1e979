/// dst[i] = src[i] / rms(src) · w[i], as ggml's rms_norm (+ mul by the weight): the float
/// squares are summed one after another in double, mean = sum / n in double rounded to float,
/// scale = 1 / sqrtf(mean + eps), then (x · scale) · w. Same floats as llama.cpp's CPU backend;
/// the sequential sum costs ~1 % of a decode step.
@inline(__always)
func rmsNormalize(_ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>, count: Int, epsilon: Float,
                  into dst: UnsafeMutablePointer<Float>) {
    var sumSquares: Double = 0
    for i in 0..<count { sumSquares += Double(src[i] * src[i]) }
    let mean = Float(sumSquares / Double(count))
    let scale = 1 / (mean + epsilon).squareRoot()
    var i = 0
    while i + 8 <= count {
        store8(load8(src + i) * scale * load8(w + i), dst + i)
        i += 8
    }
    while i < count { dst[i] = src[i] * scale * w[i]; i += 1 }
}

/// `rmsNormalize` over consecutive slices `slices` of `length` floats (rows, or per-head
/// pieces of rows), all with weight `w`; `dst` may be `src`. Eight slices run at once, one per
/// SIMD lane, so their sequential double sums are eight independent chains instead of one: the
/// same additions in the same order in each lane, so the same floats, at several times the
/// throughput.
/// Needs: `src` and `dst` hold `slices.upperBound · length` floats, `w` holds `length` (the
/// caller, `RMSNorm.normalize`, checks the row width against the weight's length).
public func rmsNormalizeSlices(_ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>, length: Int, slices: Range<Int>,
                               epsilon: Float, into dst: UnsafeMutablePointer<Float>) {
    var s = slices.lowerBound
    while s + 8 <= slices.upperBound {
        let base = src + s * length
        var sums = SIMD8<Double>(repeating: 0)
        for i in 0..<length {
            let p = base + i
            let v = SIMD8<Float>(p[0], p[length], p[2 * length], p[3 * length],
                                 p[4 * length], p[5 * length], p[6 * length], p[7 * length])
            sums += SIMD8<Double>(v * v)
        }
        let means = SIMD8<Float>(sums / Double(length))
        for lane in 0..<8 {
            let scale = 1 / (means[lane] + epsilon).squareRoot()
            let from = base + lane * length, to = dst + (s + lane) * length
            var i = 0
            while i + 8 <= length {
                store8(load8(from + i) * scale * load8(w + i), to + i)
                i += 8
            }
            while i < length { to[i] = from[i] * scale * w[i]; i += 1 }
        }
        s += 8
    }
    while s < slices.upperBound {
        rmsNormalize(src + s * length, w, count: length, epsilon: epsilon, into: dst + s * length)
        s += 1
    }
}

/// dst = (src − mean) / √(variance + ε) · w + b over one row, as ggml's norm followed by its
/// mul and add: the mean from a double sum rounded to float, divided by n in float; the
/// variance of the centered values from their squares, 16 at a time summed as
/// _mm512_reduce_add_ps into a double (the last n mod 16 one by one), divided by n and rounded;
/// then each value × 1/sqrtf(variance + ε), × w, + b, three roundings. `b` nil: no bias.
/// Needs: `src` and `dst` (which may be `src`) hold `count` floats, `w` and `b` as many.
public func layerNormalize(_ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ b: UnsafePointer<Float>?,
                           count: Int, epsilon: Float, into dst: UnsafeMutablePointer<Float>) {
    var sum: Double = 0
    for i in 0..<count { sum += Double(src[i]) }
    let mean = Float(sum) / Float(count)
    var squares: Double = 0
    var i = 0
    while i + 16 <= count {
        let lo = load8(src + i) - mean, hi = load8(src + i + 8) - mean
        store8(lo, dst + i); store8(hi, dst + i + 8)
        squares += Double(reduceAdd16(lo * lo, hi * hi))
        i += 16
    }
    while i < count {
        let centered = src[i] - mean
        dst[i] = centered
        squares += Double(centered * centered)
        i += 1
    }
    let variance = Float(squares / Double(count))
    let scale = 1 / (variance + epsilon).squareRoot()
    i = 0
    while i + 8 <= count {
        var y = load8(dst + i) * scale * load8(w + i)
        if let b { y += load8(b + i) }
        store8(y, dst + i)
        i += 8
    }
    while i < count {
        dst[i] = dst[i] * scale * w[i] + (b?[i] ?? 0)
        i += 1
    }
}
/// `rmsNormalize` of each of the `groups` consecutive `length`-float slices of `rows` rows,
/// slice g with the weight `w + g·length`; `dst` may be `src`.
/// Needs: `src` and `dst` hold `rows · groups · length` floats, `w` holds `groups · length`.
public func rmsNormalizeGroups(_ src: UnsafePointer<Float>, _ w: UnsafePointer<Float>, length: Int, groups: Int, rows: Int,
                               epsilon: Float, into dst: UnsafeMutablePointer<Float>) {
    for r in 0..<rows {
        for g in 0..<groups {
            let offset = (r * groups + g) * length
            rmsNormalize(src + offset, w + g * length, count: length, epsilon: epsilon, into: dst + offset)
        }
    }
}
