import Foundation
import GGUF
import Testing
import Kernels

/// Deterministic generator (splitmix64) so failures reproduce.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Byte offsets of the f16 scale fields in one block, and whether the field is a
/// non-negative K-quant `dmin`.
func scaleFields(_ type: TensorType) -> [(Int, Bool)] {
    switch type {
    case .q4_0, .q5_0, .q8_0: [(0, false)]
    case .q4_1, .q5_1: [(0, false), (2, false)]
    case .q2_K: [(80, false), (82, true)]
    case .q3_K: [(108, false)]
    case .q4_K, .q5_K: [(0, false), (2, true)]
    case .q6_K: [(208, false)]
    case .iq4_NL, .iq4_XS: [(0, false)]
    case .tq1_0: [(52, false)]
    case .tq2_0: [(64, false)]
    case .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S: [(0, false)]
    default: []
    }
}

/// Random but valid encoded weights: random bytes with sane finite f16 scales
/// (finite random f16/bf16/f32 values for the float types).
func randomWeights(_ type: TensorType, rows: Int, columns: Int, seed: UInt64) -> [UInt8] {
    var rng = SplitMix(state: seed)
    let count = type.byteCount(elements: rows * columns)!
    var bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) }
    func f16(_ v: Float) -> (UInt8, UInt8) {
        let b = Float16(v).bitPattern
        return (UInt8(b & 0xFF), UInt8(b >> 8))
    }
    switch type {
    case .f32, .f16, .bf16:
        let n = rows * columns
        for i in 0..<n {
            let v = Float.random(in: -1...1, using: &rng)
            switch type {
            case .f32: withUnsafeBytes(of: v.bitPattern.littleEndian) { for k in 0..<4 { bytes[4 * i + k] = $0[k] } }
            case .f16: (bytes[2 * i], bytes[2 * i + 1]) = f16(v)
            default:
                let b = UInt16(v.bitPattern >> 16)
                (bytes[2 * i], bytes[2 * i + 1]) = (UInt8(b & 0xFF), UInt8(b >> 8))
            }
        }
    default:
        let blocks = count / type.blockBytes
        // MXFP4's E8M0 block scale: 2^-17 ... 2^3
        if type == .mxfp4 { for b in 0..<blocks { bytes[b * 17] = UInt8.random(in: 110...130, using: &rng) } }
        for b in 0..<blocks {
            for (off, isMin) in scaleFields(type) {
                var v = Float.random(in: 0.002...0.05, using: &rng)
                if !isMin && Bool.random(using: &rng) { v = -v }
                (bytes[b * type.blockBytes + off], bytes[b * type.blockBytes + off + 1]) = f16(v)
            }
            if type == .iq1_M {
                // its f16 scale is the top 4 bits of the four 16-bit words at 48
                var v = Float.random(in: 0.002...0.05, using: &rng)
                if Bool.random(using: &rng) { v = -v }
                let bits = Float16(v).bitPattern
                for k in 0..<4 {
                    let o = b * type.blockBytes + 48 + 2 * k + 1
                    bytes[o] = (bytes[o] & 0x0F) | UInt8((bits >> UInt16(4 * k)) & 0xF) << 4
                }
            }
        }
    }
    return bytes
}

func randomInput(tokens: Int, columns: Int, seed: UInt64) -> [Float] {
    var rng = SplitMix(state: seed)
    var x = (0..<tokens * columns).map { _ in Float.random(in: -1...1, using: &rng) }
    // an outlier, an all-zero block and a tiny block exercise the activation scales
    if x.count > 40 { x[3] = 17; for i in 32..<64 where i < columns { x[i] = 0 } }
    // a block of tiny values (127/max would overflow a float)
    if columns >= 128 && x.count >= 128 { for i in 96..<128 { x[i] = 1e-38 * Float(i - 110) } }
    return x
}

struct MatMulCase {
    let type: TensorType
    let rows: Int
    let columns: Int
    let weights: [UInt8]

    init(_ type: TensorType, rows: Int, columns: Int, weights: [UInt8]) {
        self.type = type
        self.rows = rows
        self.columns = columns
        self.weights = weights
    }

    init(_ type: TensorType, rows: Int = 131, columns: Int = 768) {
        self.type = type
        self.rows = rows
        self.columns = columns
        weights = randomWeights(type, rows: rows, columns: columns, seed: UInt64(type.rawValue) &* 7919 &+ 1)
    }

    func run(_ x: [Float], tokens: Int, pool: ThreadPool, batching: ReferenceBatching = .ungrouped) -> [Float] {
        var y = [Float](repeating: .nan, count: tokens * rows)
        weights.withUnsafeBytes { wb in
            let w = WeightMatrix(type: type, data: wb.baseAddress!, rows: rows, columns: columns)
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { yb in
                    matmul(w, input: xb.baseAddress!, tokens: tokens, output: yb.baseAddress!, pool: pool,
                           batching: batching)
                }
            }
        }
        return y
    }

    func dequantized() -> [Float] {
        var out = [Float](repeating: 0, count: rows * columns)
        weights.withUnsafeBytes { wb in
            out.withUnsafeMutableBufferPointer { ob in
                dequantizeRow(type, wb.baseAddress!, into: ob.baseAddress!, count: rows * columns)
            }
        }
        return out
    }
}

let matmulPool = ThreadPool(threads: 3)
let serialPool = ThreadPool(threads: 1)

@Suite struct MatMulTests {
    /// Checks y against the exact dot product of the dequantized weights.
    /// Tolerance: the 8-bit activation quantization moves each x[i] by at most
    /// max|x|_block/254 (QuantizedActivations), so |y - exact| ≤ Σ_blocks max|x|_b/254 · Σ_b |w[i]|;
    /// we allow that bound ×1.01 plus float rounding of the block partial sums
    /// (1e-4 · max|w| · Σ|x|, far above the ~1e-6 relative error of float accumulation).
    @Test(arguments: supportedWeightTypes, [1, 7, 64])
    func matchesDequantizedDot(_ type: TensorType, tokens: Int) {
        checkAgainstDequantized(MatMulCase(type, rows: tokens == 64 ? 37 : 131), tokens: tokens)
    }

    /// An odd number of 32-element blocks per row (the kernels pair blocks up).
    @Test(arguments: [TensorType.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .f32, .f16, .bf16], [1, 5])
    func oddBlockCount(_ type: TensorType, tokens: Int) {
        let c = MatMulCase(type, rows: 45, columns: 800 + (type.isQuantized ? 0 : 12))
        checkAgainstDequantized(c, tokens: tokens)
        let x = randomInput(tokens: tokens, columns: c.columns, seed: 17)
        #expect(differences(c.run(x, tokens: tokens, pool: matmulPool), c.run(x, tokens: tokens, pool: serialPool)) == 0)
    }

    func checkAgainstDequantized(_ c: MatMulCase, tokens: Int) {
        let type = c.type
        let x = randomInput(tokens: tokens, columns: c.columns, seed: 99 + UInt64(tokens))
        let y = c.run(x, tokens: tokens, pool: matmulPool)
        let w = c.dequantized()
        let block = type.isQuantized ? (type.blockSize == 256 ? 256 : 32) : 0
        var worst = 0.0
        for t in 0..<tokens {
            let xt = Array(x[t * c.columns ..< (t + 1) * c.columns])
            for r in 0..<c.rows {
                let wr = w[r * c.columns ..< (r + 1) * c.columns]
                var exact = 0.0, bound = 0.0, wmax = 0.0, xabs = 0.0
                for (i, wi) in wr.enumerated() {
                    exact += Double(wi) * Double(xt[i])
                    wmax = max(wmax, Double(abs(wi)))
                    xabs += Double(abs(xt[i]))
                }
                if block > 0 {
                    for b in 0..<c.columns / block {
                        let range = b * block ..< (b + 1) * block
                        let amax = range.map { Double(abs(xt[$0])) }.max()!
                        let wsum = range.map { Double(abs(wr[wr.startIndex + $0])) }.reduce(0, +)
                        bound += amax / 254 * wsum
                    }
                }
                let tol = bound * 1.01 + 1e-4 * wmax * xabs + 1e-6
                let err = abs(Double(y[t * c.rows + r]) - exact)
                worst = max(worst, err / tol)
                if err > tol {
                    Issue.record("\(type) t=\(t) r=\(r): got \(y[t * c.rows + r]), exact \(exact), tol \(tol)")
                    return
                }
            }
        }
        #expect(worst <= 1)
    }

    @Test(arguments: supportedWeightTypes)
    func threadCountAndTokenGroupingDoNotChangeResults(_ type: TensorType) {
        let c = MatMulCase(type)
        let tokens = 7
        let x = randomInput(tokens: tokens, columns: c.columns, seed: 5)
        let multi = c.run(x, tokens: tokens, pool: matmulPool)
        let single = c.run(x, tokens: tokens, pool: serialPool)
        #expect(differences(multi, single) == 0, "\(type): multi-threaded vs single-threaded")
        // token t alone gives the same floats as inside the group of 7
        for t in [0, 5, 6] {
            let one = c.run(Array(x[t * c.columns ..< (t + 1) * c.columns]), tokens: 1, pool: matmulPool)
            #expect(differences(one, Array(multi[t * c.rows ..< (t + 1) * c.rows])) == 0, "\(type): token \(t) alone")
        }
    }
}

/// Batches longer than two token groups take the unpacked-tile path (decodedQuantRows,
/// decodedSuperRows): every token must still get exactly the floats it gets alone, including
/// the odd last block of the 32-element formats.
@Suite struct PromptBatchTests {
    @Test(arguments: supportedWeightTypes)
    func promptBatchEqualsTokensAlone(_ type: TensorType) {
        var cases = [MatMulCase(type)]
        if [TensorType.q4_0, .q4_1, .q5_0, .q5_1, .q8_0].contains(type) { cases.append(MatMulCase(type, rows: 45, columns: 800)) }
        for c in cases {
            let tokens = 13
            let x = randomInput(tokens: tokens, columns: c.columns, seed: 11)
            let batch = c.run(x, tokens: tokens, pool: matmulPool)
            #expect(differences(batch, c.run(x, tokens: tokens, pool: serialPool)) == 0, "\(type): threads")
            for t in 0..<tokens {
                let one = c.run(Array(x[t * c.columns ..< (t + 1) * c.columns]), tokens: 1, pool: matmulPool)
                #expect(differences(one, Array(batch[t * c.rows ..< (t + 1) * c.rows])) == 0,
                        "\(type) \(c.columns) columns: token \(t) alone")
            }
        }
    }
}

/// Number of positions whose bit patterns differ (or length mismatch).
func differences(_ a: [Float], _ b: [Float]) -> Int {
    guard a.count == b.count else { return max(a.count, b.count) }
    return zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
}

@Suite struct FusedMatMulTests {
    /// matmul over several matrices (mixed formats, shared input) gives exactly the floats
    /// of one matmul per matrix.
    @Test(arguments: [1, 7])
    func fusedEqualsSeparate(tokens: Int) {
        let cases = [MatMulCase(.q5_0, rows: 40), MatMulCase(.q8_0, rows: 24), MatMulCase(.q4_K, rows: 33),
                     MatMulCase(.f16, rows: 9), MatMulCase(.q4_1, rows: 64)]
        let x = randomInput(tokens: tokens, columns: 768, seed: 3)
        let separate = cases.map { $0.run(x, tokens: tokens, pool: matmulPool) }
        var fused = cases.map { [Float](repeating: .nan, count: tokens * $0.rows) }
        let raws = cases.map { c in
            let p = UnsafeMutableRawPointer.allocate(byteCount: c.weights.count, alignment: 64)
            c.weights.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: c.weights.count) }
            return p
        }
        defer { raws.forEach { $0.deallocate() } }
        let weights = zip(cases, raws).map { WeightMatrix(type: $0.type, data: $1, rows: $0.rows, columns: $0.columns) }
        let buffers = cases.map { UnsafeMutablePointer<Float>.allocate(capacity: tokens * $0.rows) }
        defer { buffers.forEach { $0.deallocate() } }
        x.withUnsafeBufferPointer { xb in
            matmul(weights, input: xb.baseAddress!, tokens: tokens, outputs: buffers, pool: matmulPool)
        }
        for i in cases.indices {
            fused[i] = Array(UnsafeBufferPointer(start: buffers[i], count: tokens * cases[i].rows))
            #expect(differences(fused[i], separate[i]) == 0, "\(cases[i].type)")
        }
    }
}
