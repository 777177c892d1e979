import GGUF
import Testing
@testable import Kernels

/// The formats of the real models must compute exactly llama.cpp's CPU arithmetic (x86
/// `ggml_vec_dot_{q4_0,q5_0,q8_0}_q8_0`, `{q4_1,q5_1}_q8_1`, `{q5_K,q6_K}_q8_K`, and the repacked
/// `ggml_gemv/gemm_q4_K_8x8_q8_K`, after `quantize_row_q8_*`), so that a model's logits, and
/// its greedy text, are the same as llama.cpp's. This reference is written from the formulas
/// alone, element by element, independently of the kernels.
@Suite(.serialized) struct LlamaVecDotTests {
    /// Signed weight values and (d, m) of block b of a row, as ggml dequantizes them.
    static func block(_ type: TensorType, _ p: UnsafeRawPointer) -> (values: [Int32], d: Float, m: Float) {
        func f16(_ o: Int) -> Float { Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
        func byte(_ o: Int) -> Int32 { Int32(p.load(fromByteOffset: o, as: UInt8.self)) }
        func nibble(_ qs: Int, _ j: Int) -> Int32 { j < 16 ? byte(qs + j) & 15 : byte(qs + j - 16) >> 4 }
        func highBit(_ qh: Int, _ j: Int) -> Int32 {
            Int32((p.loadUnaligned(fromByteOffset: qh, as: UInt32.self) >> UInt32(j)) & 1) << 4
        }
        switch type {
        case .q4_0: return ((0..<32).map { nibble(2, $0) - 8 }, f16(0), 0)
        case .q4_1: return ((0..<32).map { nibble(4, $0) }, f16(0), f16(2))
        case .q5_0: return ((0..<32).map { (nibble(6, $0) | highBit(2, $0)) - 16 }, f16(0), 0)
        case .q5_1: return ((0..<32).map { nibble(8, $0) | highBit(4, $0) }, f16(0), f16(2))
        case .q8_0: return ((0..<32).map { Int32(p.load(fromByteOffset: 2 + $0, as: Int8.self)) }, f16(0), 0)
        case .iq4_NL:
            let grid: [Int32] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113]
            return ((0..<32).map { grid[Int(nibble(2, $0))] }, f16(0), 0)
        default: fatalError("not a 32-element format")
        }
    }

    /// quantize_row_q8_1: q = round-to-nearest-even(x · 127/amax), d and s = d·Σq stored as f16.
    static func quantize(_ x: ArraySlice<Float>) -> (q: [Int32], d: Float, s: Float) {
        let amax = x.map(abs).max()!
        let d = amax / 127
        let id: Float = amax != 0 ? 127 / amax : 0
        let q = x.map { Int32(($0 * id).rounded(.toNearestOrEven)) }
        return (q, Float(Float16(d)), Float(Float16(d * Float(q.reduce(0, +)))))
    }

    /// Every output of `c` for `tokens` rows of x: each token's blocks quantized by `quantize`,
    /// each weight row (at its first byte) reduced with them by `dot`.
    static func outputs<Q>(_ c: MatMulCase, _ x: [Float], tokens: Int, quantize: (ArraySlice<Float>) -> Q,
                           dot: (UnsafeRawPointer, [Q], Int) -> Float) -> [Float] {
        let be = c.type.blockSize, nb = c.columns / be
        var y = [Float](repeating: 0, count: tokens * c.rows)
        c.weights.withUnsafeBytes { w in
            for t in 0..<tokens {
                let xq = (0..<nb).map { quantize(x[(t * c.columns + be * $0)..<(t * c.columns + be * $0 + be)]) }
                for r in 0..<c.rows { y[t * c.rows + r] = dot(w.baseAddress! + r * nb * c.type.blockBytes, xq, t) }
            }
        }
        return y
    }

    /// hsum_float_8's order: (a0 + a4) + (a2 + a6), (a1 + a5) + (a3 + a7).
    static func hsum(_ acc: [Float]) -> Float {
        let h = (0..<4).map { acc[$0] + acc[$0 + 4] }
        return (h[0] + h[2]) + (h[1] + h[3])
    }

    static func reference(_ c: MatMulCase, _ x: [Float], tokens: Int) -> [Float] {
        outputs(c, x, tokens: tokens, quantize: quantize) { row, xq, _ in
            var acc = [Float](repeating: 0, count: 8)
            var summs: Float = 0
            for (b, xb) in xq.enumerated() {
                let (v, d, m) = block(c.type, row + b * c.type.blockBytes)
                for l in 0..<8 {
                    let lane = (0..<4).reduce(Int32(0)) { $0 + v[4 * l + $1] * xb.q[4 * l + $1] }
                    acc[l] = acc[l].addingProduct(d * xb.d, Float(lane))
                }
                summs = summs.addingProduct(m, xb.s)
            }
            return c.type == .q4_1 || c.type == .q5_1 ? hsum(acc) + summs : hsum(acc)
        }
    }

    /// `ProductSummation.blockTotals`: each block's 32 integer products summed exactly, then
    /// one FMA per block into one chain; the min term as in `reference`.
    static func referenceBlockTotals(_ c: MatMulCase, _ x: [Float], tokens: Int) -> [Float] {
        outputs(c, x, tokens: tokens, quantize: quantize) { row, xq, _ in
            var sum: Float = 0, summs: Float = 0
            for (b, xb) in xq.enumerated() {
                let (v, d, m) = block(c.type, row + b * c.type.blockBytes)
                let total = (0..<32).reduce(Int32(0)) { $0 + v[$1] * xb.q[$1] }
                sum = sum.addingProduct(d * xb.d, Float(total))
                summs = summs.addingProduct(m, xb.s)
            }
            return c.type == .q4_1 || c.type == .q5_1 ? sum + summs : sum
        }
    }

    /// quantize_row_q8_K: d = 1/iscale with |iscale| = 127/amax (the sign convention, which
    /// llama.cpp takes from the largest element, cancels in every product).
    static func quantizeK(_ x: ArraySlice<Float>) -> (q: [Int32], d: Float, bsums: [Int32]) {
        let amax = x.map(abs).max()!
        guard amax > 0 else { return ([Int32](repeating: 0, count: 256), 0, [Int32](repeating: 0, count: 16)) }
        let iscale = 127 / amax
        let q = x.map { Int32(($0 * iscale).rounded(.toNearestOrEven)) }
        return (q, 1 / iscale, (0..<16).map { g in q[(16 * g)..<(16 * g + 16)].reduce(0, +) })
    }

    /// Q4_K: tokens below `gemmRows` as llama.cpp's repacked gemm (one FMA per pair of
    /// sub-blocks), the others as its gemv (one per block).
    static func referenceK(_ c: MatMulCase, _ x: [Float], tokens: Int, gemmRows: Int = 0) -> [Float] {
        outputs(c, x, tokens: tokens, quantize: quantizeK) { row, xq, t in
            var acc = [Float](repeating: 0, count: 8)
            var sum: Float = 0, mins: Float = 0
            for (b, xb) in xq.enumerated() {
                let p = row + b * c.type.blockBytes
                func u8(_ o: Int) -> Int32 { Int32(p.load(fromByteOffset: o, as: UInt8.self)) }
                func f16(_ o: Int) -> Float { Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
                if c.type == .q4_K {
                    // 8 sub-blocks of 32 with 6-bit scale and min; repacked kernel: whole-row sums
                    func scaleMin(_ j: Int) -> (Int32, Int32) {
                        j < 4 ? (u8(4 + j) & 63, u8(4 + j + 4) & 63)
                              : ((u8(4 + j + 4) & 0xF) | ((u8(4 + j - 4) >> 6) << 4),
                                 (u8(4 + j + 4) >> 4) | ((u8(4 + j) >> 6) << 4))
                    }
                    var isum: Int32 = 0, msum: Int32 = 0
                    for j in 0..<8 {
                        let (sc, m) = scaleMin(j)
                        var dot: Int32 = 0
                        for e in 0..<32 {
                            let byte = u8(16 + 32 * (j / 2) + e)
                            dot += (j % 2 == 0 ? byte & 0xF : byte >> 4) * xb.q[32 * j + e]
                        }
                        isum += sc * dot
                        msum += m * (xb.bsums[2 * j] + xb.bsums[2 * j + 1])
                        if t < gemmRows && j % 2 == 1 {
                            sum = sum.addingProduct(Float(isum), f16(0) * xb.d)
                            mins = mins.addingProduct(Float(msum), f16(2) * xb.d)
                            (isum, msum) = (0, 0)
                        }
                    }
                    if t >= gemmRows {
                        sum = sum.addingProduct(Float(isum), f16(0) * xb.d)
                        mins = mins.addingProduct(Float(msum), f16(2) * xb.d)
                    }
                } else if c.type == .q5_K {
                    // ggml_vec_dot_q5_K_q8_K: 5-bit values (bit j of qh[e % 32] on top of sub-block j's nibble),
                    // scaled lanes, and the mins as one FMA per block into a scalar sum
                    func scaleMin(_ j: Int) -> (Int32, Int32) {
                        j < 4 ? (u8(4 + j) & 63, u8(4 + j + 4) & 63)
                              : ((u8(4 + j + 4) & 0xF) | ((u8(4 + j - 4) >> 6) << 4),
                                 (u8(4 + j + 4) >> 4) | ((u8(4 + j) >> 6) << 4))
                    }
                    var msum: Int32 = 0
                    for l in 0..<8 {
                        var lane: Int32 = 0
                        for j in 0..<8 {
                            for e in (32 * j + 4 * l)..<(32 * j + 4 * l + 4) {
                                let byte = u8(48 + 32 * (j / 2) + e % 32)
                                let v = (j % 2 == 0 ? byte & 0xF : byte >> 4) | (((u8(16 + e % 32) >> Int32(j)) & 1) << 4)
                                lane += scaleMin(j).0 * v * xb.q[e]
                            }
                        }
                        acc[l] = acc[l].addingProduct(xb.d * f16(0), Float(lane))
                    }
                    for j in 0..<8 { msum += scaleMin(j).1 * (xb.bsums[2 * j] + xb.bsums[2 * j + 1]) }
                    mins = mins.addingProduct(-xb.d * f16(2), Float(msum))
                } else {
                    // Q6_K: 6-bit values (offset 32 removed per lane from the group sums), int8 scales per 16
                    func value(_ e: Int) -> Int32 {
                        let n = e / 128, l = e % 32, k = (e % 128) / 32
                        let ql = u8(64 * n + l + (k & 1) * 32), qh = u8(128 + 32 * n + l)
                        return (k < 2 ? ql & 0xF : ql >> 4) | (((qh >> Int32(2 * k)) & 3) << 4)
                    }
                    func scale(_ g: Int) -> Int32 { Int32(p.load(fromByteOffset: 192 + g, as: Int8.self)) }
                    for l in 0..<8 {
                        var lane: Int32 = 0
                        for chunk in 0..<8 {
                            for e in (32 * chunk + 4 * l)..<(32 * chunk + 4 * l + 4) {
                                lane += scale(e / 16) * value(e) * xb.q[e]
                            }
                        }
                        lane -= 32 * (scale(2 * l) * xb.bsums[2 * l] + scale(2 * l + 1) * xb.bsums[2 * l + 1])
                        acc[l] = acc[l].addingProduct(xb.d * f16(208), Float(lane))
                    }
                }
            }
            return c.type == .q4_K ? sum - mins : c.type == .q5_K ? hsum(acc) + mins : hsum(acc)
        }
    }

    static let types: [TensorType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q4_K, .q5_K, .q6_K]

    @Test(arguments: types)
    func bitwiseEqualToLlamaCppArithmetic(_ type: TensorType) {
        check(type, isa: .avx2)
    }

    @Test(.enabled(if: hasAVX512, needsAVX512), arguments: types)
    func avx512BitwiseEqualToLlamaCppArithmetic(_ type: TensorType) {
        check(type, isa: .avx512)
    }

    func check(_ type: TensorType, isa: KernelISA) {
        let shapes = type.blockSize == 256 ? [(37, 256, 1), (19, 768, 6), (45, 512, 22)]
                                           : [(37, 96, 1), (19, 800, 3), (45, 32, 20), (64, 96, 12)]
        for (rows, columns, tokens) in shapes {
            let c = MatMulCase(type, rows: rows, columns: columns)
            // (no sub-1e-30 block: there llama.cpp's 127/amax overflows; ours quantizes to zeros)
            var x = randomInput(tokens: tokens, columns: columns, seed: 7 &+ UInt64(tokens))
            for i in x.indices where x[i] != 0 && abs(x[i]) < 1e-30 { x[i] = Float(i % 7) - 3 }
            let expected = type.blockSize == 256 ? Self.referenceK(c, x, tokens: tokens) : Self.reference(c, x, tokens: tokens)
            let y = CPUDispatch.with(isa) { c.run(x, tokens: tokens, pool: matmulPool) }
            if type == .q4_K {
                // the leading rows in llama.cpp's gemm form: a whole micro-batch (its tokens in
                // whole groups of 4), and passes that start into one, whose odd counts end the
                // AVX-512 tiles' 4-token passes early
                for gemmRows in Set([tokens - tokens % 4, tokens / 2 | 1, min(2, tokens)]).sorted() {
                    let groups = (gemmRows + 3) / 4 * 4
                    let batching = ReferenceBatching(tokens: groups, offset: groups - gemmRows)
                    #expect(batching.gemmRows(tokens) == gemmRows)
                    let g = CPUDispatch.with(isa) { c.run(x, tokens: tokens, pool: matmulPool, batching: batching) }
                    let gemmExpected = Self.referenceK(c, x, tokens: tokens, gemmRows: gemmRows)
                    let differing = zip(g, gemmExpected).filter { $0.bitPattern != $1.bitPattern }.count
                    #expect(differing == 0, "Q4_K gemm rows \(gemmRows) of \(tokens) \(isa): \(differing) differ")
                }
            }
            let differing = zip(y, expected).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(type) \(rows)×\(columns) tokens \(tokens) \(isa): \(differing) of \(y.count) differ")
        }
    }
}
