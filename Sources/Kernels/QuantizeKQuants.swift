import GGUF

// The searches behind llama.cpp's k-quant and IQ4 quantizers (ggml-quants.c), in the same
// float32 operations and order. llama.cpp builds them without fused multiply-add, and Swift
// never fuses on its own, so the blocks are llama-quantize's byte for byte.

/// ggml's `nearest_int`: round half to even through the float mantissa (valid for |x| < 2^22).
@inline(__always)
func nearestInt(_ x: Float) -> Int {
    let v = x + 12_582_912
    return Int(Int32(bitPattern: v.bitPattern & 0x007f_ffff)) - 0x0040_0000
}

/// Below this largest magnitude a group is treated as all zeros.
let groupMaxEpsilon: Float = 1e-15

/// Weighted least-squares fit of x ≈ scale·L - min with L in 0...nmax (ggml's make_qkx2_quants,
/// and make_qkx3_quants with weights): a first grid from the range, then `steps + 1` grids with
/// nmax + rmin + rdelta·step levels, each refit in closed form and kept when its weighted
/// error (absolute or squared) is lower. An accepted fit's min (≤ 0) becomes the origin of the
/// following grids. Writes L and returns (scale, min ≥ 0).
@inline(__always)
func fitScaleMin(_ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>, _ n: Int, nmax: Int,
                 _ L: UnsafeMutablePointer<UInt8>, _ Laux: UnsafeMutablePointer<UInt8>,
                 rmin: Float, rdelta: Float, steps: Int, absolute: Bool) -> (Float, Float) {
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
    @inline(__always) func cost(_ diff: Float) -> Float { absolute ? abs(diff) : diff * diff }
    var iscale = Float(nmax) / (hi - lo)
    var scale = 1 / iscale
    var bestError: Float = 0
    for i in 0..<n {
        let l = nearestInt(iscale * (x[i] - lo))
        L[i] = UInt8(max(0, min(nmax, l)))
        let diff = scale * Float(L[i]) + lo - x[i]
        bestError += weights[i] * cost(diff)
    }
    for step in 0...steps {
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
                error += weights[i] * cost(diff)
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

/// Scale search for signed quants in -nmax..<nmax (ggml's make_qx_quants, rmse_type 1): weights
/// `weights` (x² when nil), 19 candidate grids around the largest-magnitude element. Writes
/// L + nmax and returns the scale.
@inline(__always)
func fitSymmetricScale(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, _ L: UnsafeMutablePointer<Int8>,
                       weights: UnsafePointer<Float>? = nil) -> Float {
    var maxValue: Float = 0, amax: Float = 0
    for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); maxValue = x[i] }
    if amax < groupMaxEpsilon {
        for i in 0..<n { L[i] = 0 }
        return 0
    }
    @inline(__always) func level(_ iscale: Float, _ v: Float) -> Int { max(-nmax, min(nmax - 1, nearestInt(iscale * v))) }
    @inline(__always) func weight(_ i: Int) -> Float { weights.map { $0[i] } ?? x[i] * x[i] }
    var iscale = Float(-nmax) / maxValue
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = level(iscale, x[i])
        L[i] = Int8(l + nmax)
        let w = weight(i), fl = Float(l)
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
            let w = weight(i), fl = Float(l)
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

/// Q3_K's scale search (ggml's make_q3_quants with rmse): levels from the largest-magnitude
/// element, then up to 5 passes moving single elements to the level that improves the
/// x²-weighted fit. Writes L + nmax and returns the scale.
@inline(__always)
func fitQ3Scale(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, _ L: UnsafeMutablePointer<Int8>) -> Float {
    var maxValue: Float = 0, amax: Float = 0
    for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); maxValue = x[i] }
    if amax < groupMaxEpsilon {
        for i in 0..<n { L[i] = 0 }
        return 0
    }
    let iscale = Float(-nmax) / maxValue
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
        L[i] = Int8(l)
        let w = x[i] * x[i], fl = Float(l)
        sumLX += w * x[i] * fl
        sumL2 += w * fl * fl
    }
    for _ in 0..<5 {
        var changed = 0
        for i in 0..<n {
            let w = x[i] * x[i], li = Float(L[i])
            var slx = sumLX - w * x[i] * li
            guard slx > 0 else { continue }
            var sl2 = sumL2 - w * li * li
            let newL = max(-nmax, min(nmax - 1, nearestInt(x[i] * sl2 / slx)))
            if newL != Int(L[i]) {
                slx += w * x[i] * Float(newL)
                sl2 += w * Float(newL) * Float(newL)
                if sl2 > 0 && slx * slx * sumL2 > sumLX * sumLX * sl2 {
                    L[i] = Int8(newL)
                    sumLX = slx
                    sumL2 = sl2
                    changed += 1
                }
            }
        }
        if changed == 0 { break }
    }
    for i in 0..<n { L[i] += Int8(nmax) }
    return sumL2 > 0 ? sumLX / sumL2 : 0
}

/// Weighted fit of non-negative values (the sub-block scales and mins of a super-block) as
/// scale·L with L in 0...nmax (ggml's make_qp_quants): 9 grids, then up to 5 passes of
/// single-element moves. Writes L and returns the scale.
@inline(__always)
func fitPositiveScale(_ x: UnsafePointer<Float>, _ n: Int, nmax: Int, _ L: UnsafeMutablePointer<UInt8>,
                      weights: UnsafePointer<Float>) -> Float {
    var maxValue: Float = 0
    for i in 0..<n { maxValue = maxValue > x[i] ? maxValue : x[i] }
    if maxValue < groupMaxEpsilon {
        for i in 0..<n { L[i] = 0 }
        return 0
    }
    var iscale = Float(nmax) / maxValue
    for i in 0..<n { L[i] = UInt8(truncatingIfNeeded: nearestInt(iscale * x[i])) }
    let scale = 1 / iscale
    var bestError: Float = 0
    for i in 0..<n {
        let diff = x[i] - scale * Float(L[i])
        bestError += weights[i] * diff * diff
    }
    for step in -4...4 where step != 0 {
        let candidate = (0.1 * Float(step) + Float(nmax)) / maxValue
        let candidateScale = 1 / candidate
        var error: Float = 0
        for i in 0..<n {
            let l = min(nmax, nearestInt(candidate * x[i]))
            let diff = x[i] - candidateScale * Float(l)
            error += weights[i] * diff * diff
        }
        if error < bestError {
            bestError = error
            iscale = candidate
        }
    }
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
        let l = min(nmax, nearestInt(iscale * x[i]))
        L[i] = UInt8(truncatingIfNeeded: l)
        let w = weights[i], fl = Float(l)
        sumLX += w * x[i] * fl
        sumL2 += w * fl * fl
    }
    for _ in 0..<5 {
        var changed = 0
        for i in 0..<n {
            let w = weights[i], li = Float(L[i])
            var slx = sumLX - w * x[i] * li
            var sl2 = sumL2 - w * li * li
            guard slx > 0 && sl2 > 0 else { continue }
            let newL = min(nmax, nearestInt(x[i] * sl2 / slx))
            if newL != Int(L[i]) {
                slx += w * x[i] * Float(newL)
                sl2 += w * Float(newL) * Float(newL)
                if slx * slx * sumL2 > sumLX * sumLX * sl2 {
                    L[i] = UInt8(truncatingIfNeeded: newL)
                    sumLX = slx
                    sumL2 = sl2
                    changed += 1
                }
            }
        }
        if changed == 0 { break }
    }
    return sumL2 > 0 ? sumLX / sumL2 : 0
}

/// Sum of x² over `n` elements, in order.
@inline(__always)
func sumOfSquares(_ x: UnsafePointer<Float>, _ n: Int) -> Float {
    var s: Float = 0
    for i in 0..<n { s += x[i] * x[i] }
    return s
}

/// Importance weights of a group: qw[i]·sqrt(sigma2 + x[i]²) (llama.cpp's weighting of the
/// importance matrix by the element's own magnitude).
@inline(__always)
func importanceWeights(_ qw: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int, sigma2: Float,
                       into weights: UnsafeMutablePointer<Float>) -> Float {
    var sum: Float = 0
    for i in 0..<n { weights[i] = qw[i] * (sigma2 + x[i] * x[i]).squareRoot() }
    for i in 0..<n { sum += weights[i] }
    return sum
}

/// 2- and 4-bit fields of element groups: byte `offset + 32h + l` holds element 128h + l + 32s
/// in bits 2s, 2s+1 (Q2_K and the low bits of Q3_K).
@inline(__always)
func packCrumbs(_ L: UnsafePointer<UInt8>, _ y: UnsafeMutableRawPointer, offset: Int) {
    for h in 0..<2 {
        let base = 128 * h
        for l in 0..<32 {
            let v = L[base + l] | L[base + l + 32] << 2 | L[base + l + 64] << 4 | L[base + l + 96] << 6
            y.storeBytes(of: v, toByteOffset: offset + 32 * h + l, as: UInt8.self)
        }
    }
}

/// Q2_K super-block: 16 sub-blocks of 16 with 4-bit scales and mins relative to two half
/// floats d and dmin (at 80 and 82), 2-bit quants.
func quantizeQ2_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, importance qw: UnsafePointer<Float>?) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 16 + 32) { bytes in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16 * 4) { floats in
            let L = bytes.baseAddress!, Laux = L + 256, Ls = Laux + 16, Lm = Ls + 16
            let weights = floats.baseAddress!, scales = weights + 16, mins = scales + 16, sw = mins + 16
            if let qw {
                let sigma2 = sumOfSquares(x, 256) / 256
                for j in 0..<16 {
                    sw[j] = importanceWeights(qw + 16 * j, x + 16 * j, 16, sigma2: sigma2, into: weights)
                    (scales[j], mins[j]) = fitScaleMin(x + 16 * j, weights, 16, nmax: 3, L + 16 * j, Laux,
                                                       rmin: -0.9, rdelta: 0.05, steps: 36, absolute: false)
                }
                let dm = fitPositiveScale(scales, 16, nmax: 15, Ls, weights: sw)
                let mm = fitPositiveScale(mins, 16, nmax: 15, Lm, weights: sw)
                storeF16(y, 80, dm)
                storeF16(y, 82, mm)
                for j in 0..<16 { y.storeBytes(of: Ls[j] | Lm[j] << 4, toByteOffset: j, as: UInt8.self) }
            } else {
                var maxScale: Float = 0, maxMin: Float = 0
                for j in 0..<16 {
                    let xs = x + 16 * j
                    for l in 0..<16 { weights[l] = abs(xs[l]) }
                    (scales[j], mins[j]) = fitScaleMin(xs, weights, 16, nmax: 3, L + 16 * j, Laux,
                                                       rmin: -0.5, rdelta: 0.1, steps: 15, absolute: true)
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if mins[j] > maxMin { maxMin = mins[j] }
                }
                if maxScale > 0 {
                    let iscale = 15 / maxScale
                    for j in 0..<16 {
                        y.storeBytes(of: UInt8(truncatingIfNeeded: nearestInt(iscale * scales[j])), toByteOffset: j, as: UInt8.self)
                    }
                    storeF16(y, 80, maxScale / 15)
                } else {
                    for j in 0..<16 { y.storeBytes(of: 0, toByteOffset: j, as: UInt8.self) }
                    storeF16(y, 80, 0)
                }
                if maxMin > 0 {
                    let iscale = 15 / maxMin
                    for j in 0..<16 {
                        let m = UInt8(truncatingIfNeeded: nearestInt(iscale * mins[j]) << 4)
                        y.storeBytes(of: byte(y, j) | m, toByteOffset: j, as: UInt8.self)
                    }
                    storeF16(y, 82, maxMin / 15)
                } else {
                    storeF16(y, 82, 0)
                }
            }
            let dAll = loadF16(y, 80), mAll = loadF16(y, 82)
            for j in 0..<16 {
                let sc = byte(y, j)
                let d = dAll * Float(sc & 0x0F)
                if d == 0 { continue }
                let m = mAll * Float(sc >> 4)
                for i in 0..<16 {
                    L[16 * j + i] = UInt8(max(0, min(3, nearestInt((x[16 * j + i] + m) / d))))
                }
            }
            packCrumbs(L, y, offset: 16)
        }
    }
}

/// Q3_K super-block: 16 sub-blocks of 16 with signed 6-bit scales relative to one half float
/// d (at 108); 3-bit quants as 2 low bits (qs) and a high-bit mask (hmask).
func quantizeQ3_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, importance qw: UnsafePointer<Float>?) {
    withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256 + 16) { bytes in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16 * 3) { floats in
            let L = bytes.baseAddress!, Ls = L + 256
            let weights = floats.baseAddress!, scales = weights + 16, sw = scales + 16
            let packed = y + 96
            for i in 0..<12 { packed.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
            // scale j (biased to 0..<64): low 4 bits in a nibble of bytes 0..<8, high 2 bits in bytes 8..<12
            func setScale(_ j: Int, _ l: Int) {
                let low = UInt8(l & 0x0F)
                if j < 8 {
                    packed.storeBytes(of: low, toByteOffset: j, as: UInt8.self)
                } else {
                    packed.storeBytes(of: byte(packed, j - 8) | low << 4, toByteOffset: j - 8, as: UInt8.self)
                }
                let high = UInt8(truncatingIfNeeded: (l >> 4) << (2 * (j / 4)))
                packed.storeBytes(of: byte(packed, 8 + j % 4) | high, toByteOffset: 8 + j % 4, as: UInt8.self)
            }
            if let qw {
                let sigma2 = 2 * sumOfSquares(x, 256) / 256
                for j in 0..<16 {
                    sw[j] = importanceWeights(qw + 16 * j, x + 16 * j, 16, sigma2: sigma2, into: weights)
                    scales[j] = fitSymmetricScale(x + 16 * j, 16, nmax: 4, L + 16 * j, weights: UnsafePointer(weights))
                }
                let dBlock = fitSymmetricScale(scales, 16, nmax: 32, Ls, weights: sw)
                for j in 0..<16 { setScale(j, Int(Ls[j])) }
                storeF16(y, 108, dBlock)
            } else {
                var maxScale: Float = 0, amax: Float = 0
                for j in 0..<16 {
                    scales[j] = fitQ3Scale(x + 16 * j, 16, nmax: 4, L + 16 * j)
                    if abs(scales[j]) > amax { amax = abs(scales[j]); maxScale = scales[j] }
                }
                if maxScale != 0 {
                    let iscale = -32 / maxScale
                    for j in 0..<16 {
                        let l = Int(Int8(truncatingIfNeeded: nearestInt(iscale * scales[j])))
                        setScale(j, max(-32, min(31, l)) + 32)
                    }
                    storeF16(y, 108, 1 / iscale)
                } else {
                    storeF16(y, 108, 0)
                }
            }
            let dAll = loadF16(y, 108)
            for j in 0..<16 {
                let low = j < 8 ? byte(packed, j) & 0x0F : byte(packed, j - 8) >> 4
                let sc = Int(low | ((byte(packed, 8 + j % 4) >> UInt8(2 * (j / 4))) & 3) << 4) - 32
                let d = dAll * Float(sc)
                if d == 0 { continue }
                for i in 0..<16 {
                    L[16 * j + i] = Int8(max(-4, min(3, nearestInt(x[16 * j + i] / d))) + 4)
                }
            }
            for i in 0..<32 { y.storeBytes(of: 0, toByteOffset: i, as: UInt8.self) }
            for j in 0..<256 where L[j] > 3 {
                y.storeBytes(of: byte(y, j % 32) | UInt8(1) << UInt8(j / 32), toByteOffset: j % 32, as: UInt8.self)
                L[j] -= 4
            }
            L.withMemoryRebound(to: UInt8.self, capacity: 256) { packCrumbs($0, y, offset: 32) }
        }
    }
}

/// Q4_K / Q5_K super-block: 8 sub-blocks of 32 with 6-bit scales and mins relative to two half
/// floats d and dmin; 4-bit quants (Q5_K: plus a high-bit plane).
func quantizeQ4Q5_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, bits: Int, importance qw: UnsafePointer<Float>?) {
    let nmax = bits == 5 ? 31 : 15
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 32 + 16) { buffer in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 3 * 8) { floats in
            let L = buffer.baseAddress!, Laux = L + 256, Ls = Laux + 32, Lm = Ls + 8
            let weights = floats.baseAddress!, scales = weights + 32, mins = scales + 8, sw = mins + 8
            let packed = y + 4
            // reference: both clamp to 63; weighted: only Q5_K does
            func pack(clamp: Bool) {
                for j in 0..<8 {
                    let ls = clamp ? min(63, Ls[j]) : Ls[j], lm = clamp ? min(63, Lm[j]) : Lm[j]
                    if j < 4 {
                        packed.storeBytes(of: ls, toByteOffset: j, as: UInt8.self)
                        packed.storeBytes(of: lm, toByteOffset: j + 4, as: UInt8.self)
                    } else {
                        packed.storeBytes(of: (ls & 0x0F) | (lm & 0x0F) << 4, toByteOffset: j + 4, as: UInt8.self)
                        packed.storeBytes(of: byte(packed, j - 4) | (ls >> 4) << 6, toByteOffset: j - 4, as: UInt8.self)
                        packed.storeBytes(of: byte(packed, j) | (lm >> 4) << 6, toByteOffset: j, as: UInt8.self)
                    }
                }
            }
            if let qw {
                let sigma2 = 2 * sumOfSquares(x, 256) / 256
                for j in 0..<8 {
                    sw[j] = importanceWeights(qw + 32 * j, x + 32 * j, 32, sigma2: sigma2, into: weights)
                    (scales[j], mins[j]) = fitScaleMin(x + 32 * j, weights, 32, nmax: nmax, L + 32 * j, Laux,
                                                       rmin: -0.9, rdelta: 0.05, steps: 36, absolute: false)
                }
                let dBlock = fitPositiveScale(scales, 8, nmax: 63, Ls, weights: sw)
                let mBlock = fitPositiveScale(mins, 8, nmax: 63, Lm, weights: sw)
                pack(clamp: bits == 5)
                storeF16(y, 0, dBlock)
                storeF16(y, 2, mBlock)
            } else {
                var maxScale: Float = 0, maxMin: Float = 0
                for j in 0..<8 {
                    let xs = x + 32 * j
                    let average = (sumOfSquares(xs, 32) / 32).squareRoot()
                    for l in 0..<32 { weights[l] = average + abs(xs[l]) }
                    (scales[j], mins[j]) = bits == 5
                        ? fitScaleMin(xs, weights, 32, nmax: nmax, L + 32 * j, Laux, rmin: -0.5, rdelta: 0.1, steps: 15, absolute: false)
                        : fitScaleMin(xs, weights, 32, nmax: nmax, L + 32 * j, Laux, rmin: -1, rdelta: 0.1, steps: 20, absolute: false)
                    if scales[j] > maxScale { maxScale = scales[j] }
                    if mins[j] > maxMin { maxMin = mins[j] }
                }
                let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
                let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
                for j in 0..<8 {
                    Ls[j] = UInt8(truncatingIfNeeded: nearestInt(invScale * scales[j]))
                    Lm[j] = UInt8(truncatingIfNeeded: nearestInt(invMin * mins[j]))
                }
                pack(clamp: true)
                storeF16(y, 0, maxScale / 63)
                storeF16(y, 2, maxMin / 63)
            }
            let dAll = loadF16(y, 0), dminAll = loadF16(y, 2)
            for j in 0..<8 {
                let (sc, m) = kScaleMin(UnsafeRawPointer(packed), j)
                let d = dAll * Float(sc)
                if d == 0 { continue }
                let dm = dminAll * Float(m)
                for i in 0..<32 {
                    L[32 * j + i] = UInt8(max(0, min(nmax, nearestInt((x[32 * j + i] + dm) / d))))
                }
            }
            if bits == 4 {
                for c in 0..<4 {
                    for l in 0..<32 {
                        y.storeBytes(of: L[64 * c + l] | L[64 * c + l + 32] << 4, toByteOffset: 16 + 32 * c + l, as: UInt8.self)
                    }
                }
            } else {
                // high bit of sub-block j in bit j of qh[l]; low nibbles as Q4_K's at offset 48
                for l in 0..<32 { y.storeBytes(of: 0, toByteOffset: 16 + l, as: UInt8.self) }
                for c in 0..<4 {
                    for l in 0..<32 {
                        var l1 = L[64 * c + l], l2 = L[64 * c + l + 32]
                        var qh = byte(y, 16 + l)
                        if l1 > 15 { l1 -= 16; qh |= UInt8(1) << UInt8(2 * c) }
                        if l2 > 15 { l2 -= 16; qh |= UInt8(2) << UInt8(2 * c) }
                        y.storeBytes(of: qh, toByteOffset: 16 + l, as: UInt8.self)
                        y.storeBytes(of: l1 | l2 << 4, toByteOffset: 48 + 32 * c + l, as: UInt8.self)
                    }
                }
            }
        }
    }
}

/// Q6_K super-block: 16 sub-blocks of 16 with signed 8-bit scales relative to one half
/// float d; 6-bit quants split into 4 low bits (ql) and 2 high bits (qh). With importance
/// weights they replace x² in each sub-block's scale search, unscaled, as in llama.cpp.
func quantizeQ6_K(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, importance qw: UnsafePointer<Float>?) {
    withUnsafeTemporaryAllocation(of: Int8.self, capacity: 256) { buffer in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 16) { scaleBuffer in
            let L = buffer.baseAddress!, scales = scaleBuffer.baseAddress!
            var maxScale: Float = 0, maxAbsScale: Float = 0
            for ib in 0..<16 {
                let scale = fitSymmetricScale(x + 16 * ib, 16, nmax: 32, L + 16 * ib, weights: qw.map { $0 + 16 * ib })
                scales[ib] = scale
                if abs(scale) > maxAbsScale { maxAbsScale = abs(scale); maxScale = scale }
            }
            if maxAbsScale < groupMaxEpsilon {
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

/// The IQ4 grid as floats, ascending.
let iq4Levels: [Float] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]

/// Index of the grid value nearest `x` (ggml's best_index_int8: bisection, ties to the upper).
@inline(__always)
func nearestIQ4Index(_ x: Float) -> Int {
    if x <= iq4Levels[0] { return 0 }
    if x >= iq4Levels[15] { return 15 }
    var lo = 0, hi = 15
    while hi - lo > 1 {
        let mid = (lo + hi) / 2
        if x < iq4Levels[mid] { hi = mid } else { lo = mid }
    }
    return x - iq4Levels[hi - 1] < iq4Levels[hi] - x ? hi - 1 : hi
}

/// IQ4_NL block (`superBlock` 32: half-float scale, 16 bytes of codes) or IQ4_XS super-block
/// (256: half-float d, 6-bit signed sub-block scales, codes): per 32 elements, the
/// weighted-least-squares scale over 15 candidate grids around max/-127 (llama-quantize's
/// search); IQ4_XS then re-picks every code for its rounded sub-block scale.
func quantizeIQ4(_ x: UnsafePointer<Float>, _ y: UnsafeMutableRawPointer, superBlock: Int, importance qw: UnsafePointer<Float>?) {
    let blocks = superBlock / 32
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256) { lBuffer in
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 8) { fBuffer in
            let L = lBuffer.baseAddress!, weight = fBuffer.baseAddress!, scales = weight + 32
            var sigma2 = sumOfSquares(x, superBlock)
            sigma2 *= 2 / Float(superBlock)
            var maxScale: Float = 0, amaxScale: Float = 0
            for ib in 0..<blocks {
                let xb = x + 32 * ib, Lb = L + 32 * ib
                if let qw {
                    for j in 0..<32 { weight[j] = qw[32 * ib + j] * (sigma2 + xb[j] * xb[j]).squareRoot() }
                } else {
                    for j in 0..<32 { weight[j] = xb[j] * xb[j] }
                }
                var amax: Float = 0, maxValue: Float = 0
                for j in 0..<32 where abs(xb[j]) > amax { amax = abs(xb[j]); maxValue = xb[j] }
                if amax < groupMaxEpsilon {
                    scales[ib] = 0
                    continue
                }
                var d = -maxValue / iq4Levels[0]
                var id = 1 / d
                var sumQX: Float = 0, sumQ2: Float = 0
                for j in 0..<32 {
                    let l = nearestIQ4Index(id * xb[j])
                    Lb[j] = UInt8(l)
                    let q = iq4Levels[l], w = weight[j]
                    sumQX += w * q * xb[j]
                    sumQ2 += w * q * q
                }
                d = sumQ2 > 0 ? sumQX / sumQ2 : 0
                var best = d * sumQX
                for step in -7...7 {
                    id = Float(step - 127) / maxValue
                    sumQX = 0
                    sumQ2 = 0
                    for j in 0..<32 {
                        let q = iq4Levels[nearestIQ4Index(id * xb[j])], w = weight[j]
                        sumQX += w * q * xb[j]
                        sumQ2 += w * q * q
                    }
                    if sumQ2 > 0 && sumQX * sumQX > best * sumQ2 {
                        d = sumQX / sumQ2
                        best = d * sumQX
                    }
                }
                scales[ib] = d
                if abs(d) > amaxScale { amaxScale = abs(d); maxScale = d }
            }
            let codes: Int
            if blocks > 1 {
                codes = 8
                var scalesHigh: UInt16 = 0
                let d = -maxScale / 32
                storeF16(y, 0, d)
                let id: Float = d != 0 ? 1 / d : 0
                for ib in 0..<blocks {
                    var l = max(-32, min(31, nearestInt(id * scales[ib])))
                    let dl = d * Float(l)
                    let idl: Float = dl != 0 ? 1 / dl : 0
                    for j in 0..<32 { L[32 * ib + j] = UInt8(nearestIQ4Index(idl * x[32 * ib + j])) }
                    l += 32
                    let low = UInt8(l & 0x0F)
                    if ib % 2 == 0 {
                        y.storeBytes(of: low, toByteOffset: 4 + ib / 2, as: UInt8.self)
                    } else {
                        y.storeBytes(of: byte(y, 4 + ib / 2) | low << 4, toByteOffset: 4 + ib / 2, as: UInt8.self)
                    }
                    scalesHigh |= UInt16(l >> 4) << UInt16(2 * (ib % 8))
                }
                y.storeBytes(of: scalesHigh.littleEndian, toByteOffset: 2, as: UInt16.self)
            } else {
                codes = 2
                storeF16(y, 0, scales[0])
                let id: Float = scales[0] != 0 ? 1 / scales[0] : 0
                for j in 0..<32 { L[j] = UInt8(nearestIQ4Index(id * x[j])) }
            }
            for i in 0..<blocks {
                for j in 0..<16 {
                    y.storeBytes(of: L[32 * i + j] | L[32 * i + 16 + j] << 4, toByteOffset: codes + 16 * i + j, as: UInt8.self)
                }
            }
        }
    }
}

/// `quantizeRow` with importance weights (llama.cpp's `quantize_row_*_impl` paths).
func quantizeRowWeighted(_ type: TensorType, _ x: UnsafePointer<Float>, into y: UnsafeMutableRawPointer,
                         count: Int, importance qw: UnsafePointer<Float>) {
    let bb = type.blockBytes
    switch type {
    case .q4_0, .q4_1, .q5_0, .q5_1:
        // sigma² over the whole row, as llama.cpp's 32-block quantizers take it
        let sigma2 = sumOfSquares(x, count) / Float(count)
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 32) { wBuffer in
            withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 64) { lBuffer in
                let weights = wBuffer.baseAddress!, L = lBuffer.baseAddress!, Laux = L + 32
                let q = UnsafeMutableRawBufferPointer(start: L, count: 32)
                for b in 0..<count / 32 {
                    let xb = x + 32 * b, out = y + b * bb
                    _ = importanceWeights(qw + 32 * b, xb, 32, sigma2: sigma2, into: weights)
                    switch type {
                    case .q4_0, .q5_0:
                        let isQ5 = type == .q5_0
                        let d = L.withMemoryRebound(to: Int8.self, capacity: 32) {
                            fitSymmetricScale(xb, 32, nmax: isQ5 ? 16 : 8, $0, weights: UnsafePointer(weights))
                        }
                        storeF16(out, 0, d)
                        packNibbles(q, out, highBits: isQ5 ? 2 : nil, lowOffset: isQ5 ? 6 : 2)
                    default:
                        let isQ5 = type == .q5_1
                        let (d, m) = fitScaleMin(xb, weights, 32, nmax: isQ5 ? 31 : 15, L, Laux,
                                                 rmin: -0.9, rdelta: 0.05, steps: 36, absolute: false)
                        storeF16(out, 0, d)
                        storeF16(out, 2, -m)
                        packNibbles(q, out, highBits: isQ5 ? 4 : nil, lowOffset: isQ5 ? 8 : 4)
                    }
                }
            }
        }
    case .q2_K:
        for b in 0..<count / 256 { quantizeQ2_K(x + 256 * b, y + b * bb, importance: qw + 256 * b) }
    case .q3_K:
        for b in 0..<count / 256 { quantizeQ3_K(x + 256 * b, y + b * bb, importance: qw + 256 * b) }
    case .q4_K:
        for b in 0..<count / 256 { quantizeQ4Q5_K(x + 256 * b, y + b * bb, bits: 4, importance: qw + 256 * b) }
    case .q5_K:
        for b in 0..<count / 256 { quantizeQ4Q5_K(x + 256 * b, y + b * bb, bits: 5, importance: qw + 256 * b) }
    case .q6_K:
        for b in 0..<count / 256 { quantizeQ6_K(x + 256 * b, y + b * bb, importance: qw + 256 * b) }
    case .iq4_NL:
        for b in 0..<count / 32 { quantizeIQ4(x + 32 * b, y + b * bb, superBlock: 32, importance: qw + 32 * b) }
    case .iq4_XS:
        for b in 0..<count / 256 { quantizeIQ4(x + 256 * b, y + b * bb, superBlock: 256, importance: qw + 256 * b) }
    default:
        fatalError("quantizeRowWeighted: \(type) takes no importance weights")
    }
}
