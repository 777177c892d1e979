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

/// Random weights of `type` times random activations, for each (rows, columns, tokens): the
/// product on every kernel ISA equals `reference` bit for bit. Activations that are tiny but not
/// zero are replaced (subnormals would only test the reference's flush behaviour).
func expectBitwiseEqualOnEveryISA(_ type: TensorType, shapes: [(Int, Int, Int)],
                                  reference: (MatMulCase, [Float], Int) -> [Float]) {
    for (rows, columns, tokens) in shapes {
        let c = MatMulCase(type, rows: rows, columns: columns)
        var x = randomInput(tokens: tokens, columns: columns, seed: 7 &+ UInt64(tokens))
        for i in x.indices where x[i] != 0 && abs(x[i]) < 1e-30 { x[i] = Float(i % 7) - 3 }
        let expected = reference(c, x, tokens)
        for isa in KernelISA.allCases {
            let y = CPUDispatch.with(isa) { c.run(x, tokens: tokens, pool: matmulPool) }
            let differing = zip(y, expected).filter { $0.bitPattern != $1.bitPattern }.count
            #expect(differing == 0, "\(type) \(rows)×\(columns) tokens \(tokens) \(isa): \(differing) of \(y.count) differ")
        }
    }
}

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
    /// batches (unpacked tiles), with an odd number of 32-element blocks. For the 256-element
    /// formats every token count of a group (1–4) and a batch ending in a part group (9), on
    /// rows of llama.cpp's ffn_down width for small models (1536).
    @Test(arguments: types)
    func bitwiseEqualToLlamaCppArithmetic(_ type: TensorType) {
        let shapes = type.blockSize == 256 ? [(37, 256, 1), (19, 768, 6), (45, 512, 22), (21, 1536, 3), (17, 512, 9), (9, 1536, 2)]
                                           : [(37, 96, 1), (19, 800, 3), (45, 32, 20), (64, 96, 12)]
        expectBitwiseEqualOnEveryISA(type, shapes: shapes, reference: Self.reference)
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
        for isa in KernelISA.allCases {
            let y = CPUDispatch.with(isa) { c.run(x, tokens: 4, pool: matmulPool) }
            #expect(zip(y, expected).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type) \(isa)")
        }
    }
}

/// The grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M) with Q8_K activations
/// against llama.cpp's x86 arithmetic for them (`ggml_vec_dot_<type>_q8_K`), written here from
/// the block layouts element by element: integer lanes of 4 consecutive elements of each
/// 32-element chunk (signed grid value × activation × the odd scale 2s + 1 of its 16 or 32
/// elements), fma(d·d_x, lane, acc) per block, and the format's constant on hsum_float_8:
/// ⅛·hsum (IQ2), ¼·hsum (IQ3_XXS), hsum (IQ3_S); IQ1_S adds ⅛·(a scalar FMA chain of
/// d·d_x · Σ ±(2s + 1)·group sums), IQ1_M ⅛·hsum of a second vector accumulator of the ±1
/// offset signs' lanes.
@Suite(.serialized) struct GridVecDotTests {
    struct Block {
        /// Signed grid value of each element (sign applied).
        var values: [Int32] = []
        /// 2s + 1 per 16 elements.
        var scales: [Int32] = []
        var d: Float = 0
        /// IQ1: sign of the ⅛ offset per 8 elements.
        var offsets: [Int32] = []
    }

    static func decode(_ type: TensorType, _ p: UnsafeRawPointer) -> Block {
        func u8(_ o: Int) -> Int { Int(p.load(fromByteOffset: o, as: UInt8.self)) }
        func u16(_ o: Int) -> Int { Int(p.loadUnaligned(fromByteOffset: o, as: UInt16.self)) }
        func u32(_ o: Int) -> Int { Int(p.loadUnaligned(fromByteOffset: o, as: UInt32.self)) }
        func f16(_ o: Int) -> Float { Float(Float16(bitPattern: p.loadUnaligned(fromByteOffset: o, as: UInt16.self))) }
        func grid8(_ table: [UInt64], _ index: Int, _ j: Int) -> Int32 { Int32(Int8(truncatingIfNeeded: table[index] >> UInt64(8 * j))) }
        func grid4(_ table: [UInt32], _ index: Int, _ j: Int) -> Int32 { Int32(Int8(truncatingIfNeeded: table[index] >> UInt32(8 * j))) }
        func signed(_ v: Int32, _ signs: Int, _ j: Int) -> Int32 { (signs >> j) & 1 == 1 ? -v : v }
        func nibble(_ o: Int, _ k: Int) -> Int { (u8(o + k / 2) >> (4 * (k % 2))) & 15 }
        var b = Block()
        switch type {
        case .iq2_XXS:
            b.d = f16(0)
            for e in 0..<256 {
                let ib = e / 32, k = (e % 32) / 8
                let aux = u32(6 + 8 * ib)
                b.values.append(signed(grid8(iq2xxsGrid, u8(2 + 8 * ib + k), e % 8), Int(ksigns[(aux >> (7 * k)) & 127]), e % 8))
            }
            b.scales = (0..<16).map { h in Int32(2 * (u32(6 + 8 * (h / 2)) >> 28) + 1) }
        case .iq2_XS:
            b.d = f16(0)
            b.values = (0..<256).map { e in
                let q = u16(2 + 2 * (e / 8))
                return signed(grid8(iq2xsGrid, q & 511, e % 8), Int(ksigns[q >> 9]), e % 8)
            }
            b.scales = (0..<16).map { Int32(2 * nibble(66, $0) + 1) }
        case .iq2_S:
            b.d = f16(0)
            b.values = (0..<256).map { e in
                let g = e / 8
                let index = u8(2 + g) | ((u8(66 + g / 4) >> (2 * (g % 4))) & 3) << 8
                return signed(grid8(iq2sGrid, index, e % 8), u8(34 + g), e % 8)
            }
            b.scales = (0..<16).map { Int32(2 * nibble(74, $0) + 1) }
        case .iq3_XXS:
            b.d = f16(0)
            b.values = (0..<256).map { e in
                let aux = u32(66 + 4 * (e / 32))
                return signed(grid4(iq3xxsGrid, u8(2 + e / 4), e % 4), Int(ksigns[(aux >> (7 * ((e % 32) / 8))) & 127]), e % 8)
            }
            b.scales = (0..<16).map { h in Int32(2 * (u32(66 + 4 * (h / 2)) >> 28) + 1) }
        case .iq3_S:
            b.d = f16(0)
            b.values = (0..<256).map { e in
                let g = e / 4
                let index = u8(2 + g) | ((u8(66 + g / 8) >> (g % 8)) & 1) << 8
                return signed(grid4(iq3sGrid, index, e % 4), u8(74 + e / 8), e % 8)
            }
            b.scales = (0..<16).map { h in Int32(2 * nibble(106, h / 2) + 1) }
        case .iq1_S:
            b.d = f16(0)
            b.values = (0..<256).map { e in
                let ib = e / 32, g = (e % 32) / 8
                return grid8(iq1sGrid, u8(2 + 4 * ib + g) | ((u16(34 + 2 * ib) >> (3 * g)) & 7) << 8, e % 8)
            }
            b.scales = (0..<16).map { h in Int32(2 * ((u16(34 + 2 * (h / 2)) >> 12) & 7) + 1) }
            b.offsets = (0..<32).map { g in u16(34 + 2 * (g / 4)) & 0x8000 != 0 ? -1 : 1 }
        case .iq1_M:
            let top = (0..<4).map { (u16(48 + 2 * $0) >> 12) << (4 * $0) }.reduce(0, |)
            b.d = Float(Float16(bitPattern: UInt16(top)))
            b.values = (0..<256).map { e in
                let g = e / 8
                return grid8(iq1sGrid, u8(g) | (nibble(32, g) & 7) << 8, e % 8)
            }
            b.scales = (0..<16).map { h in Int32(2 * ((u16(48 + 2 * (h / 4)) >> (3 * (h % 4))) & 7) + 1) }
            b.offsets = (0..<32).map { g in nibble(32, g) & 8 != 0 ? -1 : 1 }
        default: fatalError("not a grid format")
        }
        return b
    }

    static func reference(_ c: MatMulCase, _ x: [Float], tokens: Int) -> [Float] {
        let hsum = LlamaVecDotTests.hsum
        return LlamaVecDotTests.outputs(c, x, tokens: tokens, quantize: LlamaVecDotTests.quantizeK) { row, xq, _ in
            var acc = [Float](repeating: 0, count: 8), acc2 = [Float](repeating: 0, count: 8)
            var chain: Float = 0
            for (i, xb) in xq.enumerated() {
                let b = decode(c.type, row + i * c.type.blockBytes)
                let d = xb.d * b.d
                for l in 0..<8 {
                    var lane: Int32 = 0, offsetLane: Int32 = 0
                    for chunk in 0..<8 {
                        for e in (32 * chunk + 4 * l)..<(32 * chunk + 4 * l + 4) {
                            lane += b.values[e] * xb.q[e] * b.scales[e / 16]
                            if c.type == .iq1_M { offsetLane += b.offsets[e / 8] * xb.q[e] * b.scales[e / 16] }
                        }
                    }
                    acc[l] = acc[l].addingProduct(d, Float(lane))
                    acc2[l] = acc2[l].addingProduct(d, Float(offsetLane))
                }
                if c.type == .iq1_S {
                    // one offset sign and scale per 32 elements: group sums 2ib, 2ib + 1
                    var sum: Int32 = 0
                    for ib in 0..<8 {
                        let groups: Int32 = xb.bsums[2 * ib] + xb.bsums[2 * ib + 1]
                        sum += groups * b.offsets[4 * ib] * b.scales[2 * ib]
                    }
                    chain = chain.addingProduct(d, Float(sum))
                }
            }
            switch c.type {
            case .iq2_XXS, .iq2_XS, .iq2_S: return 0.125 * hsum(acc)
            case .iq3_XXS: return 0.25 * hsum(acc)
            case .iq1_S: return hsum(acc) + 0.125 * chain
            case .iq1_M: return hsum(acc) + 0.125 * hsum(acc2)
            default: return hsum(acc)
            }
        }
    }

    static let types: [TensorType] = [.iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S, .iq1_M]

    /// One token, a few (read from the rows, and unpacked), and a prompt batch (unpacked tiles).
    @Test(arguments: types)
    func bitwiseEqualToLlamaCppArithmetic(_ type: TensorType) {
        expectBitwiseEqualOnEveryISA(type, shapes: [(37, 256, 1), (23, 512, 3), (19, 768, 6), (45, 512, 22)],
                                     reference: Self.reference)
    }

    /// The largest grid magnitudes (every index at its table's last row, all scales 15) against
    /// ±127 activations: the signed-byte pair sums' worst case.
    @Test(arguments: types)
    func extremeCodes(_ type: TensorType) {
        var c = MatMulCase(type, rows: 16, columns: 512)
        var weights = c.weights
        for b in 0..<weights.count / type.blockBytes {
            // everything but the f16 scale (IQ1_M: the top nibbles of its last 8 bytes) set to ones
            let keep: Range<Int> = type == .iq1_M ? 0..<0 : 0..<2
            for j in 0..<type.blockBytes where !keep.contains(j) {
                if type == .iq1_M && j >= 48 { weights[b * type.blockBytes + j] |= j % 2 == 0 ? 0xFF : 0x0F } else {
                    weights[b * type.blockBytes + j] = 0xFF
                }
            }
        }
        c = MatMulCase(type, rows: c.rows, columns: c.columns, weights: weights)
        // 4 tokens (rows read block by block) and 12 (a prompt batch: unpacked tiles)
        for tokens in [4, 12] {
            let x = (0..<tokens * c.columns).map { i in Float(i % 3 == 0 ? -1 : 1) }
            let expected = Self.reference(c, x, tokens: tokens)
            for isa in KernelISA.allCases {
                let y = CPUDispatch.with(isa) { c.run(x, tokens: tokens, pool: matmulPool) }
                #expect(zip(y, expected).allSatisfy { $0.bitPattern == $1.bitPattern }, "\(type) tokens \(tokens) \(isa)")
            }
        }
    }
}
