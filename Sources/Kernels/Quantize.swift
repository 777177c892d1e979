import GGUF

/// Types `quantizeRow` can encode.
public let quantizableTypes: [TensorType] = [.f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K]

/// Encodes `count` floats (a whole number of `type` blocks) from `source` into `type`'s block
/// layout at `destination` (`type.byteCount(elements: count)` bytes).
///
/// Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16 and BF16 are bit-exact with `gguf.quants.quantize` of the
/// Python `gguf` package (which follows ggml's reference quantizers): same float32 operations
/// in the same order, no fused multiply-add, the same rounding (Q8_0 rounds half away from
/// zero, the 4/5-bit types truncate `x/d + offset + 0.5`). Q4_K and Q6_K follow ggml's
/// reference quantizers without an importance matrix (`quantize_row_q4_K_ref`: per 32-block
/// weighted least-squares scale and min search, 6-bit scales; `quantize_row_q6_K_ref`:
/// per 16-block scale search around max/-32, 8-bit scales).
public func quantizeRow(_ type: TensorType, _ source: UnsafePointer<Float>, into destination: UnsafeMutableRawPointer, count: Int) {
    precondition(count % type.blockSize == 0, "quantizeRow: \(count) is not a whole number of \(type) blocks")
    let blocks = count / type.blockSize
    let bb = type.blockBytes
    switch type {
    case .f32:
        destination.copyMemory(from: source, byteCount: 4 * count)
    case .f16:
        for i in 0..<count { destination.storeBytes(of: Float16(source[i]).bitPattern, toByteOffset: 2 * i, as: UInt16.self) }
    case .bf16:
        for i in 0..<count { destination.storeBytes(of: bf16Bits(source[i]), toByteOffset: 2 * i, as: UInt16.self) }
    case .q8_0:
        for b in 0..<blocks { quantizeQ8_0(source + 32 * b, destination + b * bb) }
    case .q4_0:
        for b in 0..<blocks { quantizeSymmetric(source + 32 * b, destination + b * bb, bits: 4) }
    case .q5_0:
        for b in 0..<blocks { quantizeSymmetric(source + 32 * b, destination + b * bb, bits: 5) }
    case .q4_1:
        for b in 0..<blocks { quantizeWithMin(source + 32 * b, destination + b * bb, bits: 4) }
    case .q5_1:
        for b in 0..<blocks { quantizeWithMin(source + 32 * b, destination + b * bb, bits: 5) }
    case .q4_K:
        for b in 0..<blocks { quantizeQ4_K(source + 256 * b, destination + b * bb) }
    case .q6_K:
        for b in 0..<blocks { quantizeQ6_K(source + 256 * b, destination + b * bb) }
    default:
        fatalError("quantizeRow: \(type) not supported")
    }
}

/// float32 → bfloat16, round to nearest even, NaN kept quiet (ggml_compute_fp32_to_bf16).
@inline(__always)
func bf16Bits(_ x: Float) -> UInt16 {
    let n = x.bitPattern
    if n & 0x7fff_ffff > 0x7f80_0000 { return UInt16((n & 0xffff_0000 | 64 << 16) >> 16) }
    return UInt16(truncatingIfNeeded: (UInt64(n) + UInt64(0x7fff + ((n >> 16) & 1))) >> 16)
}

@inline(__always)
func storeF16(_ p: UnsafeMutableRawPointer, _ offset: Int, _ value: Float) {
    p.storeBytes(of: Float16(value).bitPattern, toByteOffset: offset, as: UInt16.self)
}

@inline(__always)
func roundHalfAwayFromZero(_ x: Float) -> Float { x.rounded(.toNearestOrAwayFromZero) }

/// Q8_0: d = max|x|/127, q = round(x/d) half away from zero.
@inline(__always)
func quantizeQ8_0(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
    var amax: Float = 0
    for i in 0..<32 { amax = max(amax, abs(x[i])) }
    let d = amax / 127
    let id: Float = d == 0 ? 0 : 1 / d
    storeF16(y, 0, d)
    for i in 0..<32 {
        y.storeBytes(of: Int8(roundHalfAwayFromZero(x[i] * id)), toByteOffset: 2 + i, as: Int8.self)
    }
}

/// Q4_0 / Q5_0: d = m / -2^(bits-1) where m is the element of largest magnitude (first one on
/// ties), q = min(2^bits - 1, trunc(x/d + 2^(bits-1) + 0.5)).
@inline(__always)
func quantizeSymmetric(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, bits: Int) {
    // numpy's argmax of |x|: the first element of largest magnitude, signed
    var amax = abs(x[0]), maxValue = x[0]
    for i in 1..<32 where abs(x[i]) > amax { amax = abs(x[i]); maxValue = x[i] }
    let half = Float(1 << (bits - 1))
    let d = maxValue / -half
    let id: Float = d == 0 ? 0 : 1 / d
    let top = UInt8((1 << bits) - 1)
    var q = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
    withUnsafeMutableBytes(of: &q) { qs in
        for i in 0..<32 { qs[i] = min(top, UInt8(clamping: Int((x[i] * id + (half + 0.5)).rounded(.towardZero)))) }
        storeF16(y, 0, d)
        packNibbles(qs, y, highBits: bits == 5 ? 2 : nil, lowOffset: bits == 5 ? 6 : 2)
    }
}

/// Q4_1 / Q5_1: d = (max - min) / (2^bits - 1), m = min, q = min(2^bits - 1, trunc((x - min)/d + 0.5)).
@inline(__always)
func quantizeWithMin(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, bits: Int) {
    var lo = x[0], hi = x[0]
    for i in 1..<32 { lo = min(lo, x[i]); hi = max(hi, x[i]) }
    let top = UInt8((1 << bits) - 1)
    let d = (hi - lo) / Float(top)
    let id: Float = d == 0 ? 0 : 1 / d
    var q = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
    withUnsafeMutableBytes(of: &q) { qs in
        for i in 0..<32 { qs[i] = min(top, UInt8(clamping: Int(((x[i] - lo) * id + 0.5).rounded(.towardZero)))) }
        storeF16(y, 0, d)
        storeF16(y, 2, lo)
        packNibbles(qs, y, highBits: bits == 5 ? 4 : nil, lowOffset: bits == 5 ? 8 : 4)
    }
}

/// Low nibbles of q[j] and q[j+16] share byte j; the fifth bits (if any) form a little-endian
/// 32-bit mask, bit j for element j.
@inline(__always)
func packNibbles(_ q: UnsafeMutableRawBufferPointer, _ y: UnsafeMutableRawPointer, highBits: Int?, lowOffset: Int) {
    for j in 0..<16 {
        y.storeBytes(of: (q[j] & 0x0F) | (q[j + 16] & 0x0F) << 4, toByteOffset: lowOffset + j, as: UInt8.self)
    }
    if let highBits {
        var mask: UInt32 = 0
        for j in 0..<32 { mask |= UInt32(q[j] >> 4) << UInt32(j) }
        y.storeBytes(of: mask.littleEndian, toByteOffset: highBits, as: UInt32.self)
    }
}

/// ggml's `nearest_int`: round half to even through the float mantissa (valid for |x| < 2^22).
@inline(__always)
func nearestInt(_ x: Float) -> Int {
    let v = x + 12_582_912
    return Int(Int32(bitPattern: v.bitPattern & 0x007f_ffff)) - 0x0040_0000
}

/// Weighted least-squares fit of x ≈ scale·L - min with L in 0...nmax (ggml's make_qkx2_quants
/// with rmin -1, rdelta 0.1, 20 steps, squared error). Returns (scale, min ≥ 0).
@inline(__always)
func fitScaleMin(_ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ n: Int, nmax: Int,
                 _ L: UnsafeMutablePointer<UInt8>, _ Laux: UnsafeMutablePointer<UInt8>) -> (Float, Float) {
    let rmin: Float = -1, rdelta: Float = 0.1, nstep = 20
    var lo = x[0], hi = x[0]
    var sumW = weights[0]
    var sumX = sumW * x[0]
    for i in 1..<n {
        if x[i] < lo { lo = x[i] }
        if x[i] > hi { hi = x[i] }
        let w = weights[i]
        sumW += w
        sumX += w * x[i]
    }
    if lo > 0 { lo = 0 }
    if hi == lo {
        for i in 0..<n { L[i] = 0 }
        return (0, -lo)
    }
    var iscale = Float(nmax) / (hi - lo)
    var scale = 1 / iscale
    var bestError: Float = 0
    for i in 0..<n {
        let l = nearestInt(iscale * (x[i] - lo))
        L[i] = UInt8(max(0, min(nmax, l)))
        let diff = scale * Float(L[i]) + lo - x[i]
        bestError += weights[i] * (diff * diff)
    }
    // As in ggml, an accepted fit's min (≤ 0) becomes the origin of the following steps' grids.
    for step in 0...nstep {
        iscale = (rmin + rdelta * Float(step) + Float(nmax)) / (hi - lo)
        var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
        for i in 0..<n {
            let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lo))))
            Laux[i] = UInt8(l)
            let w = weights[i], fl = Float(l)
            sumL += w * fl
            sumL2 += w * fl * fl
            sumXL += w * fl * x[i]
        }
        let D = sumW * sumL2 - sumL * sumL
        if D > 0 {
            var thisScale = (sumW * sumXL - sumX * sumL) / D
            var thisMin = (sumL2 * sumX - sumL * sumXL) / D
            if thisMin > 0 {
                thisMin = 0
                thisScale = sumXL / sumL2
            }
            var error: Float = 0
            for i in 0..<n {
                let diff = thisScale * Float(Laux[i]) + thisMin - x[i]
                error += weights[i] * (diff * diff)
            }
            if error < bestError {
                for i in 0..<n { L[i] = Laux[i] }
                bestError = error
                scale = thisScale
                lo = thisMin
            }
        }
    }
    return (scale, -lo)
}

/// Q4_K super-block: 8 sub-blocks of 32 with 6-bit scales and mins relative to two half
/// floats d and dmin; 4-bit quants.
func quantizeQ4_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 32) { buffer in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 16) { floats in
            let L = buffer.baseAddress!, Laux = L + 256
            let weights = floats.baseAddress!, scales = weights + 32, mins = scales + 8
            var maxScale: Float = 0, maxMin: Float = 0
            for j in 0..<8 {
                let xs = x + 32 * j
                var sumX2: Float = 0
                for l in 0..<32 { sumX2 += xs[l] * xs[l] }
                let average = (sumX2 / 32).squareRoot()
                for l in 0..<32 { weights[l] = average + abs(xs[l]) }
                (scales[j], mins[j]) = fitScaleMin(xs, weights, 32, nmax: 15, L + 32 * j, Laux)
                if scales[j] > maxScale { maxScale = scales[j] }
                if mins[j] > maxMin { maxMin = mins[j] }
            }
            let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
            let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
            let packed = y + 4
            for j in 0..<8 {
                let ls = min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * scales[j])))
                let lm = min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * mins[j])))
                if j < 4 {
                    packed.storeBytes(of: ls, toByteOffset: j, as: UInt8.self)
                    packed.storeBytes(of: lm, toByteOffset: j + 4, as: UInt8.self)
                } else {
                    packed.storeBytes(of: (ls & 0x0F) | (lm & 0x0F) << 4, toByteOffset: j + 4, as: UInt8.self)
                    let a = packed.load(fromByteOffset: j - 4, as: UInt8.self), b = packed.load(fromByteOffset: j, as: UInt8.self)
                    packed.storeBytes(of: a | (ls >> 4) << 6, toByteOffset: j - 4, as: UInt8.self)
                    packed.storeBytes(of: b | (lm >> 4) << 6, toByteOffset: j, as: UInt8.self)
                }
            }
            storeF16(y, 0, maxScale / 63)
            storeF16(y, 2, maxMin / 63)
            let dAll = loadF16(y, 0), dminAll = loadF16(y, 2)
            for j in 0..<8 {
                let (sc, m) = kScaleMin(UnsafeRawPointer(packed), j)
                let d = dAll * Float(sc)
                if d == 0 { continue }
                let dm = dminAll * Float(m)
                for i in 0..<32 {
                    L[32 * j + i] = UInt8(max(0, min(15, nearestInt((x[32 * j + i] + dm) / d))))
                }
            }
            for c in 0..<4 {
                for l in 0..<32 {
                    y.storeBytes(of: L[64 * c + l] | L[64 * c + l + 32] << 4, toByteOffset: 16 + 32 * c + l, as: UInt8.self)
                }
            }
        }
    }
}

/// Scale search for signed quants in -nmax..<nmax (ggml's make_qx_quants, rmse_type 1:
/// weights x²). Writes L + nmax and returns the scale.
@inline(__always)
func fitSymmetricScale(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, _ L: UnsafeMutablePointer<Int8>) -> Float {
    var maxValue: Float = 0, amax: Float = 0
    for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); maxValue = x[i] }
    if amax < 1e-15 {
        for i in 0..<n { L[i] = 0 }
        return 0
    }
    @inline(__always) func level(_ iscale: Float, _ v: Float) -> Int { max(-nmax, min(nmax - 1, nearestInt(iscale * v))) }
    var iscale = Float(-nmax) / maxValue
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = level(iscale, x[i])
        L[i] = Int8(l + nmax)
        let w = x[i] * x[i], fl = Float(l)
        sumLX += w * x[i] * fl
        sumL2 += w * fl * fl
    }
    var scale: Float = sumL2 != 0 ? sumLX / sumL2 : 0
    var best = scale * sumLX
    for step in -9...9 where step != 0 {
        iscale = -(Float(nmax) + 0.1 * Float(step)) / maxValue
        sumLX = 0
        sumL2 = 0
        for i in 0..<n {
            let l = level(iscale, x[i])
            let w = x[i] * x[i], fl = Float(l)
            sumLX += w * x[i] * fl
            sumL2 += w * fl * fl
        }
        if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
            for i in 0..<n { L[i] = Int8(level(iscale, x[i]) + nmax) }
            scale = sumLX / sumL2
            best = scale * sumLX
        }
    }
    return scale
}

/// Q6_K super-block: 16 sub-blocks of 16 with signed 8-bit scales relative to one half
/// float d; 6-bit quants split into 4 low bits (ql) and 2 high bits (qh).
func quantizeQ6_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer) {
    withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { buffer in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { scaleBuffer in
            let L = buffer.baseAddress!, scales = scaleBuffer.baseAddress!
            var maxScale: Float = 0, maxAbsScale: Float = 0
            for ib in 0..<16 {
                let scale = fitSymmetricScale(x + 16 * ib, 16, nmax: 32, L + 16 * ib)
                scales[ib] = scale
                if abs(scale) > maxAbsScale { maxAbsScale = abs(scale); maxScale = scale }
            }
            if maxAbsScale < 1e-15 {
                y.initializeMemory(as: UInt8.self, repeating: 0, count: TensorType.q6_K.blockBytes)
                return
            }
            let iscale = -128 / maxScale
            storeF16(y, 208, 1 / iscale)
            for ib in 0..<16 {
                y.storeBytes(of: Int8(truncatingIfNeeded: min(127, nearestInt(iscale * scales[ib]))), toByteOffset: 192 + ib, as: Int8.self)
            }
            let dAll = loadF16(y, 208)
            for j in 0..<16 {
                let d = dAll * Float(y.load(fromByteOffset: 192 + j, as: Int8.self))
                if d == 0 { continue }
                for i in 0..<16 {
                    L[16 * j + i] = Int8(max(-32, min(31, nearestInt(x[16 * j + i] / d))) + 32)
                }
            }
            for h in 0..<2 {
                let base = 128 * h
                for l in 0..<32 {
                    let q1 = UInt8(L[base + l]), q2 = UInt8(L[base + l + 32])
                    let q3 = UInt8(L[base + l + 64]), q4 = UInt8(L[base + l + 96])
                    y.storeBytes(of: (q1 & 0x0F) | (q3 & 0x0F) << 4, toByteOffset: 64 * h + l, as: UInt8.self)
                    y.storeBytes(of: (q2 & 0x0F) | (q4 & 0x0F) << 4, toByteOffset: 64 * h + l + 32, as: UInt8.self)
                    y.storeBytes(of: (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6,
                                 toByteOffset: 128 + 32 * h + l, as: UInt8.self)
                }
            }
        }
    }
}
