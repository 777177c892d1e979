import GGUF

/// Types `quantizeRow` can encode.
public let quantizableTypes: [TensorType] = [
    .f32, .f16, .bf16, .q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_NL, .iq4_XS,
]

/// Types whose quantizer takes per-column importance weights (llama.cpp's `quant_weights`);
/// Q8_0 and the float types ignore them, as in llama.cpp.
public let importanceWeightedTypes: [TensorType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_NL, .iq4_XS]

/// Encodes `count` floats (a whole number of `type` blocks) from `source` into `type`'s block
/// layout at `destination` (`type.byteCount(elements: count)` bytes).
///
/// Every type follows the quantizer llama-quantize runs (ggml-quants.c), in the same float32
/// operations in the same order with no fused multiply-add, so the bytes are llama.cpp's:
/// without `importance`, the `quantize_row_*_ref` reference quantizers (and, for IQ4_NL and
/// IQ4_XS, the search with 7 scale steps each side llama-quantize uses); with `importance`
/// (`count` per-column weights from an importance matrix), the weighted `quantize_row_*_impl`
/// searches. Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16 and BF16 without weights are also what
/// `gguf.quants.quantize` of the Python `gguf` package gives (Q8_0 rounds half away from zero,
/// the 4/5-bit types truncate `x/d + offset + 0.5`).
public func quantizeRow(_ type: TensorType, _ source: UnsafePointer<Float>, into destination: UnsafeMutableRawPointer,
                        count: Int, importance: UnsafePointer<Float>? = nil) {
    precondition(count % type.blockSize == 0, "quantizeRow: \(count) is not a whole number of \(type) blocks")
    let blocks = count / type.blockSize
    let bb = type.blockBytes
    if let importance, importanceWeightedTypes.contains(type) {
        quantizeRowWeighted(type, source, into: destination, count: count, importance: importance)
        return
    }
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
    case .q2_K:
        for b in 0..<blocks { quantizeQ2_K(source + 256 * b, destination + b * bb, importance: nil) }
    case .q3_K:
        for b in 0..<blocks { quantizeQ3_K(source + 256 * b, destination + b * bb, importance: nil) }
    case .q4_K:
        for b in 0..<blocks { quantizeQ4Q5_K(source + 256 * b, destination + b * bb, bits: 4, importance: nil) }
    case .q5_K:
        for b in 0..<blocks { quantizeQ4Q5_K(source + 256 * b, destination + b * bb, bits: 5, importance: nil) }
    case .q6_K:
        for b in 0..<blocks { quantizeQ6_K(source + 256 * b, destination + b * bb, importance: nil) }
    case .iq4_NL:
        for b in 0..<blocks { quantizeIQ4(source + 32 * b, destination + b * bb, superBlock: 32, importance: nil) }
    case .iq4_XS:
        for b in 0..<blocks { quantizeIQ4(source + 256 * b, destination + b * bb, superBlock: 256, importance: nil) }
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
