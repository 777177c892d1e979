import GGUF
import Testing
@testable import Kernels

/// IQ4_NL, MXFP4 (with Q8_0 activations), IQ4_XS, TQ1_0 and TQ2_0 (with Q8_K activations)
/// against llama.cpp's CPU arithmetic for them, written here from the block layouts alone,
/// element by element: the integer lanes of its x86 kernels (`ggml_vec_dot_iq4_nl_q8_0`,
/// `…_mxfp4_q8_0`, `…_iq4_xs_q8_K`, `…_tq1_0_q8_K`, `…_tq2_0_q8_K`: exact integer sums of 4
/// consecutive elements of each 32-element chunk), each block's lanes added with
/// fma(d·d_x, lane, acc), and hsum_float_8 at the end. (llama.cpp's AVX2 IQ4_NL/MXFP4 loops keep
/// two accumulators for alternate blocks, and its repacked gemv another order: those differ
/// from this single chain in the last bits only.)
@Suite(.serialized) struct LookupTernaryVecDotTests {
    static let iq4: [Int32] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
    static let fp4: [Int32] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12]

    /// The signed integer weights of one block and its float scale (IQ4_XS: per 32 elements the
    /// integer sub-block scale is in `subScales`).
    static func decode(_ type: TensorType, _ p: UnsafeRawPointer) -> (values: [Int32], d: Float, subScales: [Int32]) {
        func u8(_ o: Int) -> Int32 { Int32(p.load(fromByteOffset: o, as: UInt8.self)) }
        func f16(_ o: Int) -> Float { Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
        func nibble(_ qs: Int, _ j: Int) -> Int { Int(j < 16 ? u8(qs + j) & 15 : u8(qs + j - 16) >> 4) }
        switch type {
        case .iq4_NL:
            return ((0..<32).map { iq4[nibble(2, $0)] }, f16(0), [])
        case .mxfp4:
            let e = u8(0)
            let d = Float(bitPattern: e < 2 ? UInt32(0x0020_0000) << UInt32(e) : UInt32(e - 1) << 23)  // 2^(e-128)
            return ((0..<32).map { fp4[nibble(1, $0)] }, d, [])
        case .iq4_XS:
            let high = Int32(p.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            let scales = (0..<8).map { s in (((u8(4 + s / 2) >> Int32(4 * (s % 2))) & 15) | (((high >> Int32(2 * s)) & 3) << 4)) - 32 }
            return ((0..<256).map { e in iq4[nibble(8 + 16 * (e / 32), e % 32)] }, f16(0), scales)
        case .tq2_0:
            // element 128h + 32s + i: bits 2s.. of byte 32h + i, minus 1
            return ((0..<256).map { e in ((u8(32 * (e / 128) + e % 32) >> Int32(2 * ((e / 32) % 4))) & 3) - 1 }, f16(64), [])
        case .tq1_0:
            // base-3 digits: byte · 3^k (mod 256), times 3, top byte
            func digit(_ byte: Int32, _ k: Int) -> Int32 { (((byte * [1, 3, 9, 27, 81][k]) & 255) * 3) >> 8 }
            let values = (0..<256).map { e -> Int32 in
                if e < 160 { return digit(u8(e % 32), e / 32) - 1 }
                if e < 240 { return digit(u8(32 + (e - 160) % 16), (e - 160) / 16) - 1 }
                return digit(u8(48 + (e - 240) % 4), (e - 240) / 4) - 1
            }
            return (values, f16(52), [])
        default: fatalError("not one of these formats")
        }
    }

    static func reference(_ c: MatMulCase, _ x: [Float], tokens: Int) -> [Float] {
        func lanes(_ v: [Int32], _ q: [Int32], scale: (Int) -> Int32) -> [Int32] {
            (0..<8).map { l in
                stride(from: 0, to: v.count, by: 32).reduce(Int32(0)) { sum, chunk in
                    sum + scale(chunk / 32) * (0..<4).reduce(Int32(0)) { $0 + v[chunk + 4 * l + $1] * q[chunk + 4 * l + $1] }
                }
            }
        }
        if c.type.blockSize == 32 {
            return LlamaVecDotTests.outputs(c, x, tokens: tokens, quantize: LlamaVecDotTests.quantize) { row, xq, _ in
                var acc = [Float](repeating: 0, count: 8)
                for (b, xb) in xq.enumerated() {
                    let (v, d, _) = decode(c.type, row + b * c.type.blockBytes)
                    for (l, lane) in lanes(v, xb.q, scale: { _ in 1 }).enumerated() { acc[l] = acc[l].addingProduct(d * xb.d, Float(lane)) }
                }
                return LlamaVecDotTests.hsum(acc)
            }
        }
        return LlamaVecDotTests.outputs(c, x, tokens: tokens, quantize: LlamaVecDotTests.quantizeK) { row, xq, _ in
            var acc = [Float](repeating: 0, count: 8)
            for (b, xb) in xq.enumerated() {
                let (v, d, subScales) = decode(c.type, row + b * c.type.blockBytes)
                var blockLanes: [Int32]
                if c.type == .iq4_XS {
                    blockLanes = lanes(v, xb.q) { subScales[$0] }
                } else {
                    // the codes are value + 1: multiplied unsigned, the +1 comes off with the group sums
                    blockLanes = lanes(v.map { $0 + 1 }, xb.q) { _ in 1 }
                    for l in 0..<8 { blockLanes[l] -= xb.bsums[2 * l] + xb.bsums[2 * l + 1] }
                }
                for l in 0..<8 { acc[l] = acc[l].addingProduct(d * xb.d, Float(blockLanes[l])) }
            }
            return LlamaVecDotTests.hsum(acc)
        }
    }

    static let types: [TensorType] = [.iq4_NL, .mxfp4, .iq4_XS, .tq1_0, .tq2_0]

    /// Shapes reach every row kernel: one token (four-row decode kernel), a few, and prompt
    /// batches (unpacked tiles), with an odd number of 32-element blocks.
    @Test(arguments: types)
    func bitwiseEqualToLlamaCppArithmetic(_ type: TensorType) {
        let shapes = type.blockSize == 256 ? [(37, 256, 1), (19, 768, 6), (45, 512, 22)]
                                           : [(37, 96, 1), (19, 800, 3), (45, 32, 20), (64, 96, 12)]
        for (rows, columns, tokens) in shapes {
            let c = MatMulCase(type, rows: rows, columns: columns)
            var x = randomInput(tokens: tokens, columns: columns, seed: 7 &+ UInt64(tokens))
            for i in x.indices where x[i] != 0 && abs(x[i]) < 1e-30 { x[i] = Float(i % 7) - 3 }
            let expected = Self.reference(c, x, tokens: tokens)
            for isa in KernelISA.allCases {
                let y = CPUDispatch.with(isa) { c.run(x, tokens: tokens, pool: matmulPool) }
                let differing = zip(y, expected).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differing == 0, "\(type) \(rows)×\(columns) tokens \(tokens) \(isa): \(differing) of \(y.count) differ")
            }
        }
    }

    /// Codes at the ends of their ranges: the largest IQ4 magnitude (-127) against ±127
    /// activations (the signed-byte pair sums' worst case), and TQ2_0's unused code 3 (+2).
    @Test(arguments: types)
    func extremeCodes(_ type: TensorType) {
        var c = MatMulCase(type, rows: 16, columns: 512)
        var weights = c.weights
        for b in 0..<weights.count / type.blockBytes {
            let p = b * type.blockBytes
            switch type {
            case .iq4_NL: for j in 2..<18 { weights[p + j] = 0 }           // code 0: -127
            case .mxfp4: for j in 1..<17 { weights[p + j] = 0xFF }          // code 15: -12
            case .iq4_XS: for j in 8..<136 { weights[p + j] = 0 }          // -127, random scales
            case .tq2_0: for j in 0..<64 { weights[p + j] = 0xFF }          // code 3: +2
            default: for j in 0..<48 { weights[p + j] = 0xFF }              // 255·3^k: digits 2 and 0
            }
        }
        c = MatMulCase(type, rows: c.rows, columns: c.columns, weights: weights)
        let x = (0..<4 * c.columns).map { i in Float(i % 3 == 0 ? -1 : 1) }
        let expected = Self.reference(c, x, tokens: 4)
        let y = c.run(x, tokens: 4, pool: matmulPool)
        #expect(zip(y, expected).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type)")
    }
}
