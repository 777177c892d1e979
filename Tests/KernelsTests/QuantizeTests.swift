import Foundation
import GGUF
import Kernels
import Testing
import TestSupport

/// Deterministic test inputs: rows of 512 floats drawn from several distributions, with the
/// edge cases quantizers get wrong (all-zero, constant, negative zero, single outlier, ties).
enum QuantizeInput {
    static let columns = 512
    static let rows = 48

    static let values: [Float] = {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Double {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Double(state >> 11) / Double(1 << 53)
        }
        func normal() -> Float {
            Float((-2 * log(max(next(), 1e-300))).squareRoot() * cos(2 * Double.pi * next()))
        }
        var v = [Float](repeating: 0, count: rows * columns)
        for r in 0..<rows {
            let row = r * columns
            for i in 0..<columns {
                switch r % 8 {
                case 0, 1: v[row + i] = normal() * 0.02
                case 2: v[row + i] = Float(next() * 2 - 1)
                case 3: v[row + i] = Float(next())  // all positive: min > 0
                case 4: v[row + i] = -Float(next()) * 1e-3  // all negative, small
                case 5: v[row + i] = normal() * (i % 97 == 0 ? 40 : 1)  // outliers
                case 6: v[row + i] = Float(Int(next() * 9) - 4) * 0.25  // ties and exact levels
                default: v[row + i] = normal() * 1e4
                }
            }
        }
        // whole blocks of zeros, negative zeros and constants
        for i in 0..<256 { v[7 * columns + i] = 0; v[15 * columns + i] = -0.0; v[23 * columns + i] = 0.37 }
        for i in 0..<32 { v[31 * columns + 64 + i] = -1.5 }
        return v
    }()
}

/// Runs python3 with `gguf` on the test inputs. Fails (never skips) when python or gguf is missing.
func runPython(_ script: String, arguments: [String]) throws {
    try TestSupport.python(["-c", script] + arguments)
}

func readFloats(_ url: URL) throws -> [Float] {
    let d = try Data(contentsOf: url)
    return d.withUnsafeBytes { b in (0..<d.count / 4).map { b.loadUnaligned(fromByteOffset: 4 * $0, as: Float.self) } }
}

func quantizeAll(_ type: TensorType, _ values: [Float], columns: Int) -> [UInt8] {
    let rowBytes = type.byteCount(elements: columns)!
    let rows = values.count / columns
    var out = [UInt8](repeating: 0xAA, count: rows * rowBytes)
    values.withUnsafeBufferPointer { src in
        out.withUnsafeMutableBytes { dst in
            for r in 0..<rows {
                quantizeRow(type, src.baseAddress! + r * columns, into: dst.baseAddress! + r * rowBytes, count: columns)
            }
        }
    }
    return out
}

func dequantizeAll(_ type: TensorType, _ bytes: [UInt8], count: Int) -> [Float] {
    var out = [Float](repeating: .nan, count: count)
    bytes.withUnsafeBytes { src in
        out.withUnsafeMutableBufferPointer { dequantizeRow(type, src.baseAddress!, into: $0.baseAddress!, count: count) }
    }
    return out
}

/// Relative RMS error of a round trip, over rows that are not constant.
func relativeRMSError(_ a: [Float], _ b: [Float]) -> Double {
    var num = 0.0, den = 0.0
    for (x, y) in zip(a, b) { num += Double(x - y) * Double(x - y); den += Double(x) * Double(x) }
    return (num / max(den, 1e-30)).squareRoot()
}

@Suite(.serialized) struct QuantizeTests {
    static let referenceScript = """
    import sys, numpy as np
    from gguf.quants import quantize, dequantize
    from gguf import GGMLQuantizationType as T
    src, out, rows, cols = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    x = np.fromfile(src, dtype=np.float32).reshape(rows, cols)
    for name in ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16", "F16"]:
        t = T[name]
        q = x.astype(np.float16) if t == T.F16 else quantize(x, t)
        np.ascontiguousarray(q).view(np.uint8).tofile(f"{out}/{name}.bin")
    for name in ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]:
        raw = np.fromfile(f"{out}/{name}.swift.bin", dtype=np.uint8).reshape(rows, -1)
        dequantize(raw, T[name]).astype(np.float32).tofile(f"{out}/{name}.f32")
    """

    /// Types gguf-py cannot quantize (only decode).
    static let kTypes: [TensorType] = [.q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_NL, .iq4_XS]

    /// Quantizes the inputs once in Swift and once with gguf-py.
    static let reference: Result<URL, Error> = {
        do {
            let dir = try TestSupport.scratchDirectory("quantize")
            let input = dir.appendingPathComponent("input.f32")
            try QuantizeInput.values.withUnsafeBytes { try Data($0).write(to: input) }
            for type in kTypes {
                try Data(quantizeAll(type, QuantizeInput.values, columns: QuantizeInput.columns))
                    .write(to: dir.appendingPathComponent("\(type).swift.bin"))
            }
            try runPython(referenceScript, arguments: [input.path, dir.path, "\(QuantizeInput.rows)", "\(QuantizeInput.columns)"])
            return .success(dir)
        } catch {
            return .failure(error)
        }
    }()

    @Test(arguments: [TensorType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .bf16, .f16])
    func bitExactWithGGUFPy(_ type: TensorType) throws {
        let dir = try Self.reference.get()
        let expected = [UInt8](try Data(contentsOf: dir.appendingPathComponent("\(type).bin")))
        let mine = quantizeAll(type, QuantizeInput.values, columns: QuantizeInput.columns)
        #expect(mine.count == expected.count)
        let rowBytes = type.byteCount(elements: QuantizeInput.columns)!
        let firstBad = zip(mine, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(firstBad == nil, "\(type): first differing byte \(firstBad ?? -1) (row \((firstBad ?? 0) / rowBytes))")
    }

    /// gguf-py has no K-quant or IQ4 quantizer: its decoder must read our blocks as our decoder
    /// does, and the worst row's round trip must be as close as the format allows (new types'
    /// bounds about 1.5× the measured worst row: Q2_K 0.342, Q3_K 0.162, Q5_K 0.055, IQ4_NL
    /// 0.111, IQ4_XS 0.113; byte equality with llama.cpp's quantizers is tested against
    /// llama-quantize in EngineTests).
    @Test(arguments: [(TensorType.q4_K, 0.11), (.q6_K, 0.04), (.q2_K, 0.5), (.q3_K, 0.24), (.q5_K, 0.08),
                      (.iq4_NL, 0.17), (.iq4_XS, 0.17)])
    func kQuantsRoundTrip(_ type: TensorType, bound: Double) throws {
        let dir = try Self.reference.get()
        let x = QuantizeInput.values, columns = QuantizeInput.columns
        let bytes = quantizeAll(type, x, columns: columns)
        let mine = dequantizeAll(type, bytes, count: x.count)
        let theirs = try readFloats(dir.appendingPathComponent("\(type).f32"))
        #expect(theirs.count == mine.count)
        #expect(zip(mine, theirs).allSatisfy { $0.bitPattern == $1.bitPattern }, "gguf-py dequantizes our \(type) blocks differently")

        // per-row relative RMS error, skipping constant rows (exact or nearly)
        var worst = 0.0
        for r in 0..<QuantizeInput.rows {
            let a = Array(x[r * columns..<(r + 1) * columns]), b = Array(mine[r * columns..<(r + 1) * columns])
            worst = max(worst, relativeRMSError(a, b))
        }
        print("\(type): worst row relative RMS error \(worst)")
        #expect(worst < bound, "\(type): worst row relative RMS error \(worst)")
        // better than the 32-block type of the same bit width
        let simple: TensorType = type == .q4_K ? .q4_0 : .q8_0
        let simpleError = relativeRMSError(x, dequantizeAll(simple, quantizeAll(simple, x, columns: columns), count: x.count))
        let kError = relativeRMSError(x, mine)
        if type == .q4_K { #expect(kError < simpleError, "Q4_K \(kError) vs Q4_0 \(simpleError)") }
        // zero blocks stay exactly zero
        for i in 0..<256 { #expect(mine[7 * columns + i] == 0) }
    }

    @Test func dequantizeOfQuantizeIsStable() throws {
        // Quantizing values that are already exactly representable gives the same bytes back.
        for type in [TensorType.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q6_K, .q4_K, .q5_K, .q3_K, .iq4_NL, .iq4_XS] {
            let x = QuantizeInput.values
            let once = quantizeAll(type, x, columns: QuantizeInput.columns)
            let back = dequantizeAll(type, once, count: x.count)
            let twice = dequantizeAll(type, quantizeAll(type, back, columns: QuantizeInput.columns), count: x.count)
            let drift = relativeRMSError(back, twice)
            // Q3_K's element-by-element refinement moves more (measured 0.029)
            #expect(drift < (type == .q3_K ? 0.045 : 0.02), "\(type): re-quantization drift \(drift)")
        }
    }

    /// With importance weights (llama.cpp's imatrix path) the quantizers trade error on
    /// unimportant columns for error on important ones: over all rows, the importance-weighted
    /// squared error is lower than without weights, for every type that takes them.
    @Test(arguments: importanceWeightedTypes)
    func importanceWeightsLowerTheWeightedError(_ type: TensorType) {
        let x = QuantizeInput.values, columns = QuantizeInput.columns, rows = QuantizeInput.rows
        // every seventh column 50× as important
        let importance = (0..<columns).map { $0 % 7 == 0 ? Float(50) : 1 }
        let rowBytes = type.byteCount(elements: columns)!
        var weighted = [UInt8](repeating: 0, count: rows * rowBytes)
        x.withUnsafeBufferPointer { src in
            importance.withUnsafeBufferPointer { qw in
                weighted.withUnsafeMutableBytes { dst in
                    for r in 0..<rows {
                        quantizeRow(type, src.baseAddress! + r * columns, into: dst.baseAddress! + r * rowBytes,
                                    count: columns, importance: qw.baseAddress!)
                    }
                }
            }
        }
        let plain = dequantizeAll(type, quantizeAll(type, x, columns: columns), count: x.count)
        let withWeights = dequantizeAll(type, weighted, count: x.count)
        func weightedError(_ y: [Float]) -> Double {
            var e = 0.0
            for i in 0..<x.count { e += Double(importance[i % columns]) * Double(x[i] - y[i]) * Double(x[i] - y[i]) }
            return e
        }
        let (a, b) = (weightedError(withWeights), weightedError(plain))
        print("\(type): importance-weighted error \(a) with weights, \(b) without")
        #expect(a < b, "\(type): weighted error \(a) with importance weights, \(b) without")
        #expect(relativeRMSError(x, withWeights) < 0.7, "\(type): the weighted encoding is not close to the input")
    }
}
