import Foundation
import GGUF
import Testing
@testable import Kernels

/// Matrices repacked into 16-row tiles (`WeightMatrix.withRowTiles`) must give bitwise the
/// outputs of the GGUF layout, under either kernel family, for any row split, when they sum in
/// `ggml_vec_dot_*`'s order; summing block totals, bitwise the floats of that definition; in
/// llama.cpp's order, the one or the other as llama.cpp's x86 build chooses for the type. Tiles
/// exist only where the AVX-512 kernels run.
@Suite(.serialized, .enabled(if: hasAVX512, needsAVX512)) struct RowTilesTests {
    static let types: [TensorType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .iq4_NL]

    /// (untiled, tiled) outputs of `tokens` tokens.
    func outputs(_ c: MatMulCase, tokens: Int, pool: ThreadPool, isa: KernelISA,
                 summation: ProductSummation = .vecDot) throws -> ([Float], [Float]) {
        let x = randomInput(tokens: tokens, columns: c.columns, seed: 7 &+ UInt64(tokens))
        return try c.weights.withUnsafeBytes { wb -> ([Float], [Float]) in
            let w = WeightMatrix(type: c.type, data: wb.baseAddress!, rows: c.rows, columns: c.columns)
            let tiled = try #require(CPUDispatch.with(.avx512, { w.withRowTiles(summation: summation) }),
                                     "\(c.type) \(c.rows)×\(c.columns) was not tiled")
            func run(_ m: WeightMatrix) -> [Float] {
                var y = [Float](repeating: .nan, count: tokens * c.rows)
                x.withUnsafeBufferPointer { xb in
                    y.withUnsafeMutableBufferPointer { yb in
                        CPUDispatch.with(isa) { matmul(m, input: xb.baseAddress!, tokens: tokens, output: yb.baseAddress!, pool: pool) }
                    }
                }
                return y
            }
            return (run(w), run(tiled))
        }
    }

    @Test(arguments: types, [1, 2, 3, 4, 5, 16, 33])
    func tiledEqualsGGUFLayout(_ type: TensorType, tokens: Int) throws {
        for (c, pool) in [(MatMulCase(type, rows: 48, columns: 800), serialPool), (MatMulCase(type, rows: 160, columns: 1536), matmulPool)] {
            // llama.cpp's order is vec_dot's for the types it does not repack
            let orders: [ProductSummation] = ProductSummation.llamaCpp.addsBlockTotals(type, rows: c.rows) ? [.vecDot] : [.vecDot, .llamaCpp]
            for order in orders {
                let (a, b) = try outputs(c, tokens: tokens, pool: pool, isa: .avx512, summation: order)
                let differ = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differ == 0, "\(type) \(order) \(c.rows)×\(c.columns), \(tokens) tokens: \(differ) outputs differ")
                #expect(!b.contains { $0.isNaN })
            }
        }
    }

    /// Block totals (`ProductSummation.blockTotals`, the default for tiles): per row and token,
    /// s = fma(d·dx, Float(Σ of the block's 32 integer products), s) block by block, plus
    /// llama.cpp's min chain for Q4_1/Q5_1 — bitwise, for every token count and row split. Q4_0
    /// and IQ4_NL in llama.cpp's order too: llama.cpp repacks those matrices (rows a multiple of
    /// 8) and its `gemv/gemm_q4_b32_8x8_q8_0_lut_avx` add exactly these block totals.
    @Test(arguments: types, [1, 2, 5, 16, 33])
    func blockTotalsAreTheirDefinition(_ type: TensorType, tokens: Int) throws {
        for (c, pool) in [(MatMulCase(type, rows: 48, columns: 800), serialPool), (MatMulCase(type, rows: 160, columns: 1536), matmulPool)] {
            // (the reference's 127/amax overflows on a sub-1e-30 block, as llama.cpp's does; ours quantizes it to zeros)
            let x = randomInput(tokens: tokens, columns: c.columns, seed: 7 &+ UInt64(tokens))
            let expected = LlamaVecDotTests.referenceBlockTotals(c, x.map { $0 != 0 && abs($0) < 1e-30 ? 0 : $0 }, tokens: tokens)
            let orders: [ProductSummation] = ProductSummation.llamaCpp.addsBlockTotals(type, rows: c.rows) ? [.blockTotals, .llamaCpp] : [.blockTotals]
            #expect(orders.count == ([.q4_0, .iq4_NL].contains(type) ? 2 : 1))
            for order in orders {
                let tiled = try outputs(c, tokens: tokens, pool: pool, isa: .avx512, summation: order).1
                let differ = zip(expected, tiled).filter { $0.bitPattern != $1.bitPattern }.count
                #expect(differ == 0, "\(type) \(order) \(c.rows)×\(c.columns), \(tokens) tokens: \(differ) outputs differ")
            }
        }
    }

    /// AVX2 forced on a tiled matrix (tests, A/B benchmarks) reads its rows back in GGUF order.
    @Test(arguments: types)
    func tiledUnderAVX2(_ type: TensorType) throws {
        let (a, b) = try outputs(MatMulCase(type, rows: 64, columns: 512), tokens: 9, pool: matmulPool, isa: .avx2)
        #expect(zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern })
    }

    /// In one `matmul` with several matrices, a matrix whose rows are not a multiple of 16 shifts
    /// the row split: the tiled matrix after it gets ranges that start and end inside tiles.
    @Test(arguments: [TensorType.q5_0, .iq4_NL])
    func unalignedSegments(_ tiledType: TensorType) throws {
        let odd = MatMulCase(.q8_0, rows: 40 + 3, columns: 512), even = MatMulCase(tiledType, rows: 256, columns: 512)
        let tokens = 6
        let x = randomInput(tokens: tokens, columns: 512, seed: 3)
        func run(tiled: Bool) -> [Float] {
            odd.weights.withUnsafeBytes { ob in
                even.weights.withUnsafeBytes { eb in
                    let a = WeightMatrix(type: odd.type, data: ob.baseAddress!, rows: odd.rows, columns: 512)
                    var b = WeightMatrix(type: even.type, data: eb.baseAddress!, rows: even.rows, columns: 512)
                    if tiled { b = CPUDispatch.with(.avx512) { b.withRowTiles(summation: .vecDot) }! }
                    var ya = [Float](repeating: .nan, count: tokens * a.rows), yb = [Float](repeating: .nan, count: tokens * b.rows)
                    x.withUnsafeBufferPointer { xp in
                        ya.withUnsafeMutableBufferPointer { pa in
                            yb.withUnsafeMutableBufferPointer { pb in
                                CPUDispatch.with(.avx512) {
                                    matmul([a, b], input: xp.baseAddress!, tokens: tokens, outputs: [pa.baseAddress!, pb.baseAddress!],
                                           pool: matmulPool)
                                }
                            }
                        }
                    }
                    return ya + yb
                }
            }
        }
        let (plain, tiled) = (run(tiled: false), run(tiled: true))
        #expect(zip(plain, tiled).allSatisfy { $0.bitPattern == $1.bitPattern })
    }

    /// The tile kernel on row ranges that start and end inside tiles (as a row split of several
    /// matrices gives them) writes exactly the GGUF-layout kernel's floats for those rows, and no others.
    @Test(arguments: types, [1, 2, 5, 16])
    func unalignedRanges(_ type: TensorType, tokens: Int) throws {
        let c = MatMulCase(type, rows: 64, columns: 288)
        let x = randomInput(tokens: tokens, columns: c.columns, seed: 11 &+ UInt64(tokens))
        let act = QuantizedActivations(columns: c.columns, tokens: tokens, blockSize: 32,
                                       offsetSlots: QuantizedActivations.offsetSlots(for: type))
        defer { act.deallocate() }
        x.withUnsafeBufferPointer { act.quantize($0.baseAddress!, tokens: 0..<tokens) }
        try c.weights.withUnsafeBytes { wb in
            let w = WeightMatrix(type: type, data: wb.baseAddress!, rows: c.rows, columns: c.columns)
            let tiled = try #require(CPUDispatch.with(.avx512) { w.withRowTiles(summation: .vecDot) })
            for range in [3..<29, 17..<18, 0..<5, 33..<64, 47..<49] {
                func run(_ m: WeightMatrix) -> [Float] {
                    var y = [Float](repeating: .nan, count: tokens * c.rows)
                    x.withUnsafeBufferPointer { xb in
                        y.withUnsafeMutableBufferPointer { yb in
                            CPUDispatch.with(.avx512) { computeRows(m, act, xb.baseAddress!, tokens, range, yb.baseAddress!) }
                        }
                    }
                    return y
                }
                let (a, b) = (run(w), run(tiled))
                let inside = (0..<tokens * c.rows).filter { range.contains($0 % c.rows) }
                let differ = inside.filter { a[$0].isNaN || a[$0].bitPattern != b[$0].bitPattern }.count
                let written = (0..<tokens * c.rows).filter { !range.contains($0 % c.rows) && !(a[$0].isNaN && b[$0].isNaN) }.count
                #expect(differ == 0, "\(type) rows \(range), \(tokens) tokens: \(differ) of \(inside.count) outputs differ")
                #expect(written == 0, "\(type) rows \(range), \(tokens) tokens: \(written) outputs outside the range written")
            }
        }
    }

    /// Unpacking gives back the GGUF bytes, for every row range.
    @Test(arguments: types)
    func unpackRestoresBytes(_ type: TensorType) throws {
        let c = MatMulCase(type, rows: 32, columns: 96)
        try c.weights.withUnsafeBytes { wb in
            let w = WeightMatrix(type: type, data: wb.baseAddress!, rows: c.rows, columns: c.columns)
            let tiled = try #require(CPUDispatch.with(.avx512) { w.withRowTiles() })
            for range in [0..<32, 5..<21, 31..<32] {
                var bytes = [UInt8](repeating: 0, count: range.count * w.rowBytes)
                bytes.withUnsafeMutableBytes { unpackTiledRows(tiled, range, into: $0.baseAddress!) }
                #expect(bytes == Array(c.weights[range.lowerBound * w.rowBytes ..< range.upperBound * w.rowBytes]))
            }
        }
        // not tiled: rows not a multiple of 16, or a type without a tile layout
        MatMulCase(type, rows: 24, columns: 96).weights.withUnsafeBytes { wb in
            #expect(CPUDispatch.with(.avx512) { WeightMatrix(type: type, data: wb.baseAddress!, rows: 24, columns: 96).withRowTiles() } == nil)
        }
        let k = MatMulCase(.q4_K, rows: 32, columns: 256)
        k.weights.withUnsafeBytes { wb in
            #expect(CPUDispatch.with(.avx512) { WeightMatrix(type: .q4_K, data: wb.baseAddress!, rows: 32, columns: 256).withRowTiles() } == nil)
        }
    }
}
