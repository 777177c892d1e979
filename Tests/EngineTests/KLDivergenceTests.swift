@testable import Engine
import Foundation
import Kernels
import TestSupport
import Testing

/// `swiftlet perplexity --kl-divergence-base/--kl-divergence` and llama.cpp's file format.
@Suite struct KLDivergenceTests {
    static let text = "/usr/share/common-licenses/GPL-3"

    @Test func nearestIntRoundsLikeLlamaCpp() {
        #expect(nearestInt(2.4) == 2 && nearestInt(2.6) == 3 && nearestInt(65534.7) == 65535)
        #expect(nearestInt(2.5) == 2 && nearestInt(3.5) == 4, "ties to even, as the float mantissa trick does")
        #expect(nearestInt(0) == 0)
    }

    /// The 16-bit record gives back every log-probability within the top 16 nats to half a
    /// quantization step, and clamps the rest to the floor.
    @Test func recordsKeepLogProbabilitiesToHalfAStep() {
        var rng = SystemRandomNumberGenerator()
        let logits = (0..<1001).map { _ in Float.random(in: -30...12, using: &rng) }
        var record = [UInt16](repeating: 0xffff, count: logProbRecordLength(vocabularySize: logits.count))
        #expect(record.count == 1006, "4 header values, the vocabulary rounded up to even")
        record.withUnsafeMutableBufferPointer { encodeLogProbs(logits, into: $0) }
        #expect(record.last == 0, "padding is zeroed")
        let maxLogit = Double(logits.max()!)
        let logSum = log(logits.reduce(0.0) { $0 + exp(Double($1) - maxLogit) })
        let (scale, floor) = record.withUnsafeBytes { ($0.loadUnaligned(as: Float.self), $0.loadUnaligned(fromByteOffset: 4, as: Float.self)) }
        #expect(scale > 0 && abs(Double(scale) - 16.0 / 65535) < 1e-6)
        for (i, l) in logits.enumerated() {
            let exact = Double(l) - maxLogit - logSum
            let decoded = Double(scale) * Double(record[4 + i]) + Double(floor)
            if Double(l) > maxLogit - 16 {
                #expect(abs(decoded - exact) <= Double(scale) * 0.5 + 1e-5, "token \(i): \(decoded) vs \(exact)")
            } else {
                #expect(record[4 + i] == 0)
            }
        }
    }

    /// The statistics of one position against KL(base ‖ Q) computed directly in double
    /// precision from the two logit rows.
    @Test func divergenceOfOnePositionMatchesTheDefinition() {
        var rng = SystemRandomNumberGenerator()
        let base = (0..<500).map { _ in Float.random(in: -4...4, using: &rng) }
        let model = base.map { $0 + Float.random(in: -0.5...0.5, using: &rng) }
        var record = [UInt16](repeating: 0, count: logProbRecordLength(vocabularySize: base.count))
        record.withUnsafeMutableBufferPointer { encodeLogProbs(base, into: $0) }
        func logSoftmax(_ v: [Float]) -> [Double] {
            let m = Double(v.max()!)
            let s = log(v.reduce(0.0) { $0 + exp(Double($1) - m) })
            return v.map { Double($0) - m - s }
        }
        let p = logSoftmax(base), q = logSoftmax(model)
        let exact = zip(p, q).reduce(0.0) { $0 + exp($1.0) * ($1.0 - $1.1) }
        var sums = KLDivergenceSums()
        let target = 7
        let (kld, diff) = record.withUnsafeBufferPointer { sums.add(logits: model, base: $0, target: target) }
        #expect(abs(kld - exact) < 1e-4 * max(1, exact), "\(kld) vs \(exact)")
        #expect(abs(Double(diff) - (exp(q[target]) - exp(p[target]))) < 1e-4)
        #expect(sums.count == 1)
        #expect((base.indices.max { base[$0] < base[$1] } == model.indices.max { model[$0] < model[$1] }) == (sums.sameTop == 1))
    }

    /// Too few positions for a spread (or two identical runs): the correlation and the ratio's
    /// uncertainty stay finite, so `--json` can report them.
    @Test func resultsWithoutSpreadAreFinite() throws {
        var sums = KLDivergenceSums()
        let logits: [Float] = [0.5, -1, 2, 0.25]
        var record = [UInt16](repeating: 0, count: logProbRecordLength(vocabularySize: logits.count))
        record.withUnsafeMutableBufferPointer { encodeLogProbs(logits, into: $0) }
        var klds: [Double] = [], pDiffs: [Double] = []
        for _ in 0..<4 {
            let (kld, diff) = record.withUnsafeBufferPointer { sums.add(logits: logits, base: $0, target: 2) }
            klds.append(kld)
            pDiffs.append(Double(diff))
        }
        let result = KLDivergenceResult(sums: sums, klds: klds, pDiffs: pDiffs, chunks: 1, context: 8, seconds: 0)
        #expect(result.lnPPLCorrelation.isFinite && result.lnPPLRatio.uncertainty.isFinite)
        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(result)) as! [String: Any]
        #expect(json["same_top_p"] as? Double == 1)
    }

    @Test func aModelAgainstItsOwnBaseHasNoDivergence() throws {
        let loaded = try RealModel.smollm2.load()
        let text = try String(contentsOfFile: Self.text, encoding: .utf8)
        let dir = try TestSupport.scratchDirectory("kld")
        let basePath = dir.appendingPathComponent("smollm2.kld").path
        let pool = ThreadPool(threads: 2)
        let ppl = try perplexity(model: loaded, text: text, context: 128, maxChunks: 2, pool: pool, saveBase: basePath)
        let size = try FileManager.default.attributesOfItem(atPath: basePath)[.size] as! Int
        let vocabulary = loaded.config.vocabularySize
        #expect(size == 20 + 4 * 2 * 128 + 2 * 63 * 2 * logProbRecordLength(vocabularySize: vocabulary))

        let result = try klDivergence(model: loaded, basePath: basePath, pool: pool)
        #expect(result.scoredTokens == 126 && result.chunks == 2 && result.context == 128)
        #expect(abs(result.kld.mean) < 1e-5 && result.kld.max < 1e-3, "the same model: only the 16-bit rounding of the base")
        #expect(result.sameTopP.value == 1)
        #expect(abs(result.ppl.value - ppl.ppl) / ppl.ppl < 1e-6, "PPL(Q) is this run's perplexity (summed in float, as llama.cpp does)")
        #expect(abs(result.pplRatio.value - 1) < 1e-3)

        let json = try JSONSerialization.jsonObject(with: JSONEncoder().encode(result)) as! [String: Any]
        let kld = try #require(json["kld"] as? [String: Any])
        #expect(kld["mean"] is Double && kld["p99"] is Double && kld["max"] is Double)
        #expect(json["same_top_p"] as? Double == 1)
        #expect(json["ppl_base"] is Double && json["ppl_ratio"] is Double)
        #expect(result.summary.contains("Same top p: 100.000 ±"))
    }

    @Test func badBaseFilesAreClearErrors() throws {
        let smol = try RealModel.smollm2.load(), gemma = try RealModel.gemma3.load()
        let text = try String(contentsOfFile: Self.text, encoding: .utf8)
        let dir = try TestSupport.scratchDirectory("kld-bad")
        let good = dir.appendingPathComponent("base.kld").path
        let pool = ThreadPool(threads: 2)
        _ = try perplexity(model: smol, text: text, context: 256, maxChunks: 1, pool: pool, saveBase: good)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: good))

        let notLogits = dir.appendingPathComponent("text.kld").path
        try Data("hello, not a logits file".utf8).write(to: URL(fileURLWithPath: notLogits))
        #expect(throws: KLDivergenceError.notALogitsFile(path: notLogits)) {
            try klDivergence(model: smol, basePath: notLogits, pool: pool)
        }
        let truncated = dir.appendingPathComponent("truncated.kld").path
        try bytes.prefix(bytes.count - 10).write(to: URL(fileURLWithPath: truncated))
        #expect(throws: KLDivergenceError.truncated(path: truncated, needed: bytes.count, size: bytes.count - 10)) {
            try klDivergence(model: smol, basePath: truncated, pool: pool)
        }
        var badToken = bytes
        badToken.replaceSubrange(24..<28, with: withUnsafeBytes(of: Int32(1 << 30).littleEndian) { Data($0) })
        let badTokenPath = dir.appendingPathComponent("token.kld").path
        try badToken.write(to: URL(fileURLWithPath: badTokenPath))
        #expect(throws: KLDivergenceError.tokenOutOfRange(path: badTokenPath, token: 1 << 30, vocabularySize: smol.config.vocabularySize)) {
            try klDivergence(model: smol, basePath: badTokenPath, pool: pool)
        }
        #expect(throws: KLDivergenceError.vocabularyMismatch(path: good, file: smol.config.vocabularySize, model: gemma.config.vocabularySize)) {
            try klDivergence(model: gemma, basePath: good, pool: pool)
        }
        #expect(throws: KLDivergenceError.cannotRead(path: dir.appendingPathComponent("missing").path)) {
            try klDivergence(model: smol, basePath: dir.appendingPathComponent("missing").path, pool: pool)
        }
    }
}
