import Engine
import Foundation
import GGUF
import Kernels
import Models
import Testing
import TestSupport

/// F32 models whose rows fill K-quant super-blocks (256) — dense and with experts.
let quantizeDense = SyntheticGGUF(embedding: 256, layers: 2, heads: 4, kvHeads: 2, feedForward: 512, seed: 3)
let quantizeMoE = SyntheticGGUF(embedding: 256, layers: 2, heads: 4, kvHeads: 2, feedForward: 512,
                                experts: 4, expertsUsed: 2, seed: 4)

func logits(_ path: String, prompt: [Int32]) throws -> [[Float]] {
    let file = try GGUFFile(path: path)
    let model = try ModelRegistry.load(file)
    let cache = model.makeCache(capacity: 64)
    return try model.forward([BatchSequence(tokens: prompt, cache: cache, allLogits: true)], pool: ThreadPool(threads: 2))
}

/// RMS of the logit differences over all positions, relative to the RMS of the reference logits.
func relativeLogitError(_ a: [[Float]], _ b: [[Float]]) -> Float {
    var num: Double = 0, den: Double = 0
    for (x, y) in zip(a.joined(), b.joined()) { num += Double(x - y) * Double(x - y); den += Double(x) * Double(x) }
    return Float((num / max(den, 1e-30)).squareRoot())
}

@Suite(.serialized) struct QuantizeModelTests {
    static let prompt: [Int32] = [1, 17, 42, 5, 88, 23, 9, 61, 30, 2, 77, 14]

    /// Relative RMS logit error allowed per target type, about 1.5× what these random-weight
    /// models show (they amplify the weights' relative error ~2.5×, and a routing flip in the
    /// MoE model moves a whole token's logits; a broken quantizer gives errors near 1).
    static let cases: [(TensorType, Float)] = [
        (.q8_0, 0.03), (.q6_K, 0.08), (.q5_1, 0.18), (.q5_0, 0.15), (.q4_K, 0.25), (.q4_1, 0.28), (.q4_0, 0.3),
    ]

    @Test(arguments: cases)
    func quantizedModelRunsCloseToF32(_ type: TensorType, tolerance: Float) throws {
        for (name, spec) in [("dense", quantizeDense), ("moe", quantizeMoE)] {
            let input = try spec.write(name: "quantize-\(name)-f32")
            let output = SyntheticGGUF.directory.appendingPathComponent("quantize-\(name)-\(type).gguf").path
            let summary = try ModelQuantizer.quantize(input: input, output: output, target: type, threads: 2)
            #expect(summary.outputBytes < summary.inputBytes)

            let file = try GGUFFile(path: output)
            #expect(file["general.file_type"]?.int == Int(ModelQuantizer.fileType(for: type)))
            #expect(file["general.quantization_version"]?.int == 2)
            #expect(file.metadataKeys.count == (try GGUFFile(path: input)).metadataKeys.count + 2)
            for t in file.tensors {
                let expected: TensorType
                if t.shape.count == 1 || t.name.contains("ffn_gate_inp") {
                    expected = .f32
                } else if t.name == "output.weight" {
                    expected = type == .q8_0 ? .q8_0 : .q6_K
                } else {
                    expected = type
                }
                #expect(t.type == expected, "\(t.name)")
            }
            let error = relativeLogitError(try logits(input, prompt: Self.prompt), try logits(output, prompt: Self.prompt))
            print("\(name) \(type): relative logit error \(error)")
            #expect(error < tolerance, "\(name) \(type): relative logit error \(error)")
        }
    }

    /// Rows that do not fill a block fall back the way llama.cpp's do; the python synthetic
    /// models (64-wide) exercise it.
    @Test func typeRulesFollowLlamaCpp() {
        func info(_ name: String, _ shape: [Int]) -> TensorInfo? {
            // TensorInfo has no public initializer: build one through a tiny file
            var w = GGUFWriter()
            w.addTensor(name: name, shape: shape, floats: [Float](repeating: 0, count: shape.reduce(1, *)))
            let path = SyntheticGGUF.directory.appendingPathComponent("rule-\(UUID().uuidString).gguf").path
            try? w.write(to: path)
            defer { try? FileManager.default.removeItem(atPath: path) }
            return (try? GGUFFile(path: path))?.tensors.first
        }
        let embd = info("token_embd.weight", [256, 100])!, out = info("output.weight", [256, 100])!
        let narrow = info("blk.0.attn_q.weight", [64, 64])!, norm = info("blk.0.attn_norm.weight", [256])!
        let router = info("blk.0.ffn_gate_inp.weight", [256, 8])!, narrowOut = info("output.weight", [96, 100])!
        #expect(ModelQuantizer.targetType(for: out, target: .q4_0, tiedEmbeddings: false) == .q6_K)
        #expect(ModelQuantizer.targetType(for: out, target: .q8_0, tiedEmbeddings: false) == .q8_0)
        #expect(ModelQuantizer.targetType(for: embd, target: .q4_K, tiedEmbeddings: false) == .q4_K)
        #expect(ModelQuantizer.targetType(for: embd, target: .q4_K, tiedEmbeddings: true) == .q6_K)
        #expect(ModelQuantizer.targetType(for: narrow, target: .q4_K, tiedEmbeddings: false) == .q5_0)
        #expect(ModelQuantizer.targetType(for: narrow, target: .q6_K, tiedEmbeddings: false) == .q8_0)
        #expect(ModelQuantizer.targetType(for: narrowOut, target: .q4_K, tiedEmbeddings: false) == .q8_0)
        #expect(ModelQuantizer.targetType(for: norm, target: .q4_0, tiedEmbeddings: false) == .f32)
        #expect(ModelQuantizer.targetType(for: router, target: .q4_0, tiedEmbeddings: false) == .f32)
    }

    /// The python `gguf` reader opens the output; every tensor gguf-py can quantize is
    /// byte-identical to `gguf.quants.quantize` of the F32 input, and the K-quant tensors
    /// dequantize (gguf-py) close to the input.
    @Test(arguments: [TensorType.q4_0, .q5_1, .q8_0, .q4_K, .q6_K])
    func outputMatchesGGUFPy(_ type: TensorType) throws {
        let input = try quantizeMoE.write(name: "quantize-moe-f32")
        let output = SyntheticGGUF.directory.appendingPathComponent("pycheck-moe-\(type).gguf").path
        _ = try ModelQuantizer.quantize(input: input, output: output, target: type, threads: 2)
        let script = """
        import sys, json, numpy as np, gguf
        from gguf.quants import quantize, dequantize
        T = gguf.GGMLQuantizationType
        src = {t.name: t for t in gguf.GGUFReader(sys.argv[1]).tensors}
        out = gguf.GGUFReader(sys.argv[2])
        assert out.fields["general.file_type"].parts[-1][0] == int(sys.argv[3])
        report = {"exact": 0, "kquant": 0, "kept": 0, "worst_k_error": 0.0}
        for t in out.tensors:
            x = np.array(src[t.name].data, dtype=np.float32)
            if t.tensor_type == T.F32:
                assert np.array_equal(np.array(t.data), x), t.name
                report["kept"] += 1
            elif t.tensor_type in (T.Q4_K, T.Q6_K):
                y = dequantize(np.array(t.data), t.tensor_type).reshape(x.shape)
                err = float(np.sqrt(np.mean((x - y) ** 2) / np.mean(x ** 2)))
                report["worst_k_error"] = max(report["worst_k_error"], err)
                report["kquant"] += 1
            else:
                mine = np.array(t.data).view(np.uint8).reshape(-1)
                ref = quantize(x, t.tensor_type).view(np.uint8).reshape(-1)
                assert np.array_equal(mine, ref), f"{t.name} {t.tensor_type.name} differs from gguf-py"
                report["exact"] += 1
        print(json.dumps(report))
        """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, input, output, "\(ModelQuantizer.fileType(for: type))"]
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        let message = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "python check failed (needs numpy and gguf): \(message)")
        guard p.terminationStatus == 0 else { return }
        let report = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        print("\(type): \(report)")
        #expect((report["kept"] as! Int) > 0)
        if type.blockSize == 256 {
            #expect((report["kquant"] as! Int) > 0)
            #expect((report["worst_k_error"] as! Double) < (type == .q4_K ? 0.12 : 0.03))
        } else {
            // everything but the Q6_K output head is compared byte for byte
            #expect((report["exact"] as! Int) >= 1 + 2 * 7)
        }
    }

    @Test func quantizeCommandWritesLoadableFile() throws {
        let input = try quantizeDense.write(name: "quantize-dense-f32")
        let output = SyntheticGGUF.directory.appendingPathComponent("cli-dense-q4_k.gguf").path
        let p = Process()
        p.executableURL = try swiftletBinary()
        p.arguments = ["quantize", input, output, "Q4_K", "-t", "2", "-q"]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let loaded = try LoadedModel(path: output)
        #expect(loaded.file.tensor(named: "blk.0.attn_q.weight")?.type == .q4_K)
        #expect(loaded.file.tensor(named: "output.weight")?.type == .q6_K)
    }
}
