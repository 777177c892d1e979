import GGUF

public enum KernelError: Error, CustomStringConvertible {
    case unsupportedType(TensorType)
    public var description: String {
        switch self {
        case .unsupportedType(let t): "no kernel for tensor type \(t)"
        }
    }
}

/// Types `dequantizeRow` and `matmul` handle.
public let supportedWeightTypes: [TensorType] = [
    .f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K,
    .iq4_NL, .iq4_XS, .mxfp4, .tq1_0, .tq2_0,
    .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S, .iq1_M,
]

@inline(__always)
func loadF16(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
}

@inline(__always)
func byte(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
    p.load(fromByteOffset: offset, as: UInt8.self)
}

extension TensorType {
    /// Whether weights of this type can be multiplied and dequantized (`matmul`,
    /// `dequantizeRow`); models refuse files with other weight types at load.
    public var hasWeightKernels: Bool {
        switch self {
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: true
        case .iq4_NL, .iq4_XS, .mxfp4, .tq1_0, .tq2_0: true
        case .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S, .iq1_M: true
        default: false
        }
    }
}

/// Expands `count` elements (a whole number of blocks) of `type` at `source` into floats.
///
/// The results are bit-identical to the reference decoder (the `gguf` Python package's
/// `gguf.quants.dequantize`): every product/sum is rounded to Float in the same order and
/// no multiply-add is fused, e.g. Q4_1 is `(d * q) + m`, Q4_K is `(d * sc) * q - (dmin * m)`.
public func dequantizeRow(_ type: TensorType, _ source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>, count: Int) {
    let blocks = count / type.blockSize
    let bb = type.blockBytes
    switch type {
    case .f32:
        destination.update(from: source.assumingMemoryBound(to: Float.self), count: count)
    case .f16:
        for i in 0..<count { destination[i] = loadF16(source, 2 * i) }
    case .bf16:
        for i in 0..<count {
            destination[i] = Float(bitPattern: UInt32(source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) << 16)
        }
    case .q4_0:
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 32
            let d = loadF16(p, 0)
            for j in 0..<16 {
                let q = byte(p, 2 + j)
                y[j] = d * Float(Int32(q & 0x0F) - 8)
                y[j + 16] = d * Float(Int32(q >> 4) - 8)
            }
        }
    case .q4_1:
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 32
            let d = loadF16(p, 0), m = loadF16(p, 2)
            for j in 0..<16 {
                let q = byte(p, 4 + j)
                y[j] = d * Float(q & 0x0F) + m
                y[j + 16] = d * Float(q >> 4) + m
            }
        }
    case .q5_0:
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 32
            let d = loadF16(p, 0)
            let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
            for j in 0..<16 {
                let q = byte(p, 6 + j)
                let lo = Int32(q & 0x0F) | Int32((qh >> UInt32(j)) & 1) << 4
                let hi = Int32(q >> 4) | Int32((qh >> UInt32(j + 16)) & 1) << 4
                y[j] = d * Float(lo - 16)
                y[j + 16] = d * Float(hi - 16)
            }
        }
    case .q5_1:
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 32
            let d = loadF16(p, 0), m = loadF16(p, 2)
            let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
            for j in 0..<16 {
                let q = byte(p, 8 + j)
                let lo = UInt32(q & 0x0F) | ((qh >> UInt32(j)) & 1) << 4
                let hi = UInt32(q >> 4) | ((qh >> UInt32(j + 16)) & 1) << 4
                y[j] = d * Float(lo) + m
                y[j + 16] = d * Float(hi) + m
            }
        }
    case .q8_0:
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 32
            let d = loadF16(p, 0)
            for j in 0..<32 { y[j] = Float(Int8(bitPattern: byte(p, 2 + j))) * d }
        }
    case .q2_K:
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 256
            let d = loadF16(p, 80), dmin = loadF16(p, 82)
            // element e = h*128 + s*32 + i  ←  bits 2s..2s+1 of qs[h*32 + i]; group e/16
            for h in 0..<2 {
                for s in 0..<4 {
                    for g in 0..<2 {
                        let e0 = h * 128 + s * 32 + g * 16
                        let sc = byte(p, e0 / 16)
                        let dl = d * Float(sc & 0x0F), ml = dmin * Float(sc >> 4)
                        for i in 0..<16 {
                            let q = (byte(p, 16 + h * 32 + g * 16 + i) >> UInt8(2 * s)) & 3
                            y[e0 + i] = dl * Float(q) - ml
                        }
                    }
                }
            }
        }
    case .q3_K:
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 256
            let d = loadF16(p, 108)
            var dl = (Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0),
                      Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0), Float(0))
            withUnsafeMutableBytes(of: &dl) { raw in
                let out = raw.bindMemory(to: Float.self)
                for k in 0..<16 {
                    let lo = k < 8 ? byte(p, 96 + k) & 0x0F : byte(p, 96 + k - 8) >> 4
                    let hi = (byte(p, 96 + 8 + k % 4) >> UInt8(2 * (k / 4))) & 3
                    out[k] = d * Float(Int32(lo | hi << 4) - 32)
                }
            }
            withUnsafeBytes(of: &dl) { raw in
                let scale = raw.bindMemory(to: Float.self)
                // low bits: element e = h*128 + s*32 + i ← bits 2s.. of qs[h*32+i]
                // high bit: element e = b*32 + i ← bit b of hmask[i]; offset 4 applies when the bit is 0
                for e in 0..<256 {
                    let h = e >> 7, s = (e >> 5) & 3, i = e & 31
                    let lo = Int32((byte(p, 32 + h * 32 + i) >> UInt8(2 * s)) & 3)
                    let hb = Int32((byte(p, i) >> UInt8(e >> 5)) & 1)
                    let q = lo - ((hb ^ 1) << 2)
                    y[e] = scale[e >> 4] * Float(q)
                }
            }
        }
    case .q4_K, .q5_K:
        let isQ5 = type == .q5_K
        let qsOffset = isQ5 ? 48 : 16
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 256
            let d = loadF16(p, 0), dmin = loadF16(p, 2)
            for j in 0..<8 {
                let (sc, m) = kScaleMin(p + 4, j)
                let dj = d * Float(sc), mj = dmin * Float(m)
                let c = j >> 1, shift = UInt8(4 * (j & 1))
                for i in 0..<32 {
                    var q = (byte(p, qsOffset + c * 32 + i) >> shift) & 0x0F
                    if isQ5 { q |= ((byte(p, 16 + i) >> UInt8(j)) & 1) << 4 }
                    y[j * 32 + i] = dj * Float(q) - mj
                }
            }
        }
    case .q6_K:
        for b in 0..<blocks {
            let p = source + b * bb, y = destination + b * 256
            let d = loadF16(p, 208)
            // low nibble: e = h*128 + s*64 + i ← nibble s of ql[h*64 + i]
            // high bits:  e = h*128 + s*32 + i ← bits 2s.. of qh[h*32 + i]
            for g in 0..<16 {
                let dg = d * Float(Int8(bitPattern: byte(p, 192 + g)))
                for k in 0..<16 {
                    let e = g * 16 + k
                    let h = e >> 7, r = e & 127
                    let lo = (byte(p, h * 64 + (r & 63)) >> UInt8(4 * (r >> 6))) & 0x0F
                    let hi = (byte(p, 128 + h * 32 + (r & 31)) >> UInt8(2 * (r >> 5))) & 3
                    y[e] = dg * Float(Int32(lo | hi << 4) - 32)
                }
            }
        }
    case .iq4_NL: dequantizeIQ4NL(source, into: destination, blocks: blocks)
    case .iq4_XS: dequantizeIQ4XS(source, into: destination, blocks: blocks)
    case .mxfp4: dequantizeMXFP4(source, into: destination, blocks: blocks)
    case .tq1_0: dequantizeTQ1(source, into: destination, blocks: blocks)
    case .tq2_0: dequantizeTQ2(source, into: destination, blocks: blocks)
    case .iq2_XXS: dequantizeIQ2XXS(source, into: destination, blocks: blocks)
    case .iq2_XS: dequantizeIQ2XS(source, into: destination, blocks: blocks)
    case .iq2_S: dequantizeIQ2S(source, into: destination, blocks: blocks)
    case .iq3_XXS: dequantizeIQ3XXS(source, into: destination, blocks: blocks)
    case .iq3_S: dequantizeIQ3S(source, into: destination, blocks: blocks)
    case .iq1_S: dequantizeIQ1S(source, into: destination, blocks: blocks)
    case .iq1_M: dequantizeIQ1M(source, into: destination, blocks: blocks)
    default:
        fatalError("dequantizeRow: \(type) not supported")
    }
}

/// The 6-bit scale and min of sub-block `j` (0..<8) from the 12 packed bytes of a Q4_K/Q5_K block.
@inline(__always)
func kScaleMin(_ s: UnsafeRawPointer, _ j: Int) -> (UInt8, UInt8) {
    if j < 4 {
        return (byte(s, j) & 63, byte(s, j + 4) & 63)
    }
    let k = j - 4
    let sc = (byte(s, 8 + k) & 0x0F) | ((byte(s, k) >> 2) & 0x30)
    let m = (byte(s, 8 + k) >> 4) | ((byte(s, 4 + k) >> 2) & 0x30)
    return (sc, m)
}
