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

    /// Relative RMS logit error allowed per mix, about 1.5× what these random-weight
    /// models show (they amplify the weights' relative error ~2.5×, and a routing flip in the
    /// MoE model moves a whole token's logits; a broken quantizer gives errors near 1).
    static let cases: [(ModelQuantizer.Mix, Float)] = [
        (.q8_0, 0.03), (.q6_K, 0.08), (.q5_1, 0.18), (.q5_0, 0.15), (.q4_K_S, 0.25), (.q4_1, 0.28), (.q4_0, 0.3),
        // measured (dense, MoE): Q5_K_S 0.082/0.094, IQ4_NL 0.163/0.186, IQ4_XS 0.165/0.200,
        // Q3_K_S 0.330/0.414, Q2_K 0.520/0.566
        (.q5_K_S, 0.14), (.iq4_NL, 0.28), (.iq4_XS, 0.3), (.q3_K_S, 0.62), (.q2_K, 0.85),
    ]

    /// The type llama.cpp's rules give a tensor of these 2-layer models (4 heads, 2 KV heads,
    /// 4 experts): Q4_K_S gives the first four attn_v Q5_K, Q2_K gives attn_v, ffn_down and
    /// attn_output Q3_K.
    static func expectedType(_ t: TensorInfo, _ mix: ModelQuantizer.Mix) -> TensorType {
        if t.shape.count == 1 || t.name.contains("ffn_gate_inp") { return .f32 }
        if t.name == "output.weight" { return mix == .q8_0 ? .q8_0 : .q6_K }
        if mix == .q4_K_S && t.name.contains("attn_v") { return .q5_K }
        if mix == .q2_K && ["attn_v", "ffn_down", "attn_output"].contains(where: t.name.contains) { return .q3_K }
        return mix.base
    }

    @Test(arguments: cases)
    func quantizedModelRunsCloseToF32(_ mix: ModelQuantizer.Mix, tolerance: Float) throws {
        for (name, spec) in [("dense", quantizeDense), ("moe", quantizeMoE)] {
            let input = try spec.write(name: "quantize-\(name)-f32")
            let output = SyntheticGGUF.directory.appendingPathComponent("quantize-\(name)-\(mix).gguf").path
            let summary = try ModelQuantizer.quantize(input: input, output: output, mix: mix, threads: 2)
            #expect(summary.outputBytes < summary.inputBytes)

            let file = try GGUFFile(path: output)
            #expect(file["general.file_type"]?.int == Int(mix.fileType))
            #expect(file["general.quantization_version"]?.int == 2)
            #expect(file.metadataKeys.count == (try GGUFFile(path: input)).metadataKeys.count + 2)
            for t in file.tensors {
                #expect(t.type == Self.expectedType(t, mix), "\(t.name)")
            }
            let error = relativeLogitError(try logits(input, prompt: Self.prompt), try logits(output, prompt: Self.prompt))
            print("\(name) \(mix): relative logit error \(error)")
            #expect(error < tolerance, "\(name) \(mix): relative logit error \(error)")
        }
    }

    /// Rows that do not fill a block fall back the way llama.cpp's do (the python synthetic
    /// models are 64 wide), norms and the router keep their type, and the per-layer rules of
    /// the mixes follow llama.cpp's layer pattern.
    @Test func typeRulesFollowLlamaCpp() throws {
        let dense = ModelQuantizer.ModelFacts(architecture: "llama", layers: 32, heads: 32, kvHeads: 8)
        func type(_ name: String, _ shape: [Int], _ mix: ModelQuantizer.Mix, tied: Bool = false,
                  model: ModelQuantizer.ModelFacts = dense, pure: Bool = false, importance: Bool = false) throws -> TensorType {
            var tensors: [(name: String, shape: [Int], type: TensorType)] = [(name, shape, .f32)]
            if !tied && name != "output.weight" { tensors.append(("output.weight", [4096, 100], .f32)) }
            return try ModelQuantizer.types(for: tensors, model: model, mix: mix, pure: pure, hasImportance: importance)[0]
        }
        #expect(try type("output.weight", [256, 100], .q4_0) == .q6_K)
        #expect(try type("output.weight", [256, 100], .q8_0) == .q8_0)
        #expect(try type("output.weight", [256, 100], .q4_K_M, pure: true) == .q4_K)
        #expect(try type("output.weight", [96, 100], .q4_K_S) == .q8_0)
        #expect(try type("token_embd.weight", [256, 100], .q4_K_S) == .q4_K)
        #expect(try type("token_embd.weight", [256, 100], .q4_K_S, tied: true) == .q6_K)
        #expect(try type("blk.0.attn_q.weight", [64, 64], .q4_K_S) == .q5_0)
        #expect(try type("blk.0.attn_q.weight", [64, 64], .q5_K_S) == .q5_1)
        #expect(try type("blk.0.attn_q.weight", [64, 64], .q6_K) == .q8_0)
        #expect(try type("blk.0.attn_q.weight", [64, 64], .q3_K_S) == .q4_0)
        #expect(try type("blk.0.attn_q.weight", [64, 64], .iq4_XS) == .iq4_NL)
        #expect(try type("blk.0.attn_q.weight", [48, 64], .q4_K_S) == .f16)
        #expect(try type("blk.0.attn_norm.weight", [256], .q4_0) == .f32)
        #expect(try type("blk.0.ffn_gate_inp.weight", [256, 8], .q4_0) == .f32)
        #expect(try type("blk.0.ffn_down.weight", [256, 256], .q4_0, importance: true) == .q4_1)
        #expect(try type("blk.0.ffn_down.weight", [256, 256], .iq4_XS) == .q5_K)
        #expect(try type("blk.0.ffn_down.weight", [256, 256], .iq4_XS, importance: true) == .iq4_XS)
        #expect(try type("blk.0.attn_v.weight", [256, 256], .iq4_NL) == .q5_K)  // 4 query heads per KV head

        // 32 layers: use_more_bits is layers 0-3, 28-31 and every third from 6
        let moreBits: Set<Int> = [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
        var tensors: [(name: String, shape: [Int], type: TensorType)] = [("output.weight", [256, 100], .f32)]
        for layer in 0..<32 {
            for part in ["attn_v", "ffn_down", "attn_output", "attn_q"] {
                tensors.append(("blk.\(layer).\(part).weight", [256, 256], .f32))
            }
        }
        func layers(_ types: [TensorType], _ part: String, _ type: TensorType) -> Set<Int> {
            Set(zip(tensors, types).filter { $0.0.name.contains(part) && $0.1 == type }
                .map { Int($0.0.name.split(separator: ".")[1])! })
        }
        let km = try ModelQuantizer.types(for: tensors, model: dense, mix: .q4_K_M)
        #expect(layers(km, "ffn_down", .q6_K) == moreBits)
        #expect(layers(km, "attn_v", .q6_K) == moreBits)
        #expect(layers(km, "attn_q", .q4_K).count == 32)
        let ks = try ModelQuantizer.types(for: tensors, model: dense, mix: .q4_K_S)
        #expect(layers(ks, "attn_v", .q5_K) == [0, 1, 2, 3])
        #expect(layers(ks, "ffn_down", .q5_K) == [0, 1, 2, 3])
        let m3 = try ModelQuantizer.types(for: tensors, model: dense, mix: .q3_K_M)
        #expect(layers(m3, "attn_v", .q5_K) == [0, 1])
        #expect(layers(m3, "ffn_down", .q5_K) == [0, 1])
        #expect(layers(m3, "ffn_down", .q4_K) == Set(2..<32))
        #expect(layers(m3, "attn_output", .q4_K).count == 32)
        let q2 = try ModelQuantizer.types(for: tensors, model: dense, mix: .q2_K)
        #expect(layers(q2, "attn_v", .q4_K).count == 32)  // 4 query heads per KV head
        #expect(layers(q2, "ffn_down", .q3_K).count == 32)
        // llama.cpp counts layers in name order, not file order
        let shuffled = try ModelQuantizer.types(for: tensors.reversed(), model: dense, mix: .q4_K_M)
        #expect(Array(shuffled.reversed()) == km)
        // an expert model needs a layer index in each ffn name
        let moe = ModelQuantizer.ModelFacts(architecture: "qwen3moe", layers: 2, heads: 4, kvHeads: 4, experts: 8)
        #expect(throws: ModelQuantizer.QuantizeError.self) {
            try ModelQuantizer.types(for: [("ffn_down_exps.weight", [256, 256, 8], .f32)], model: moe, mix: .q4_K_M)
        }
        #expect(try ModelQuantizer.types(for: [("blk.0.attn_v.weight", [256, 256], .f32)], model: moe, mix: .q4_K_M) == [.q8_0])
        #expect(ModelQuantizer.Mix(name: "q4_k") == .q4_K_M)
        #expect(ModelQuantizer.Mix(name: "15") == .q4_K_M)
        #expect(ModelQuantizer.Mix(name: "Q4_K_X") == nil)
    }

    /// The python `gguf` reader opens the output; every tensor gguf-py can quantize is
    /// byte-identical to `gguf.quants.quantize` of the F32 input, and the K-quant tensors
    /// dequantize (gguf-py) close to the input.
    @Test(arguments: [ModelQuantizer.Mix.q4_0, .q5_1, .q8_0, .q4_K_S, .q6_K])
    func outputMatchesGGUFPy(_ mix: ModelQuantizer.Mix) throws {
        let input = try quantizeMoE.write(name: "quantize-moe-f32")
        let output = SyntheticGGUF.directory.appendingPathComponent("pycheck-moe-\(mix).gguf").path
        _ = try ModelQuantizer.quantize(input: input, output: output, mix: mix, threads: 2)
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
            elif t.tensor_type in (T.Q4_K, T.Q5_K, T.Q6_K):
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
        p.arguments = ["python3", "-c", script, input, output, "\(mix.fileType)"]
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
        print("\(mix): \(report)")
        #expect((report["kept"] as! Int) > 0)
        if mix.base.blockSize == 256 {
            #expect((report["kquant"] as! Int) > 0)
            #expect((report["worst_k_error"] as! Double) < (mix.base == .q4_K ? 0.12 : 0.03))
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

    /// A legacy `.dat` importance matrix: entries of (name, call count, values), then the
    /// chunk count and the dataset's name.
    static func legacyMatrix(_ entries: [(String, Int32, [Float])], chunks: Int32 = 3, dataset: String = "text.txt") -> Data {
        var d = Data()
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { d.append(contentsOf: $0) } }
        put(Int32(entries.count))
        for (name, calls, values) in entries {
            put(Int32(name.utf8.count))
            d.append(contentsOf: Array(name.utf8))
            put(calls)
            put(Int32(values.count))
            for v in values { put(v.bitPattern) }
        }
        put(chunks)
        put(Int32(dataset.utf8.count))
        d.append(contentsOf: Array(dataset.utf8))
        return d
    }

    /// Both formats read as llama-quantize normalizes them; malformed files are refused with
    /// the problem named.
    @Test func importanceMatrixFiles() throws {
        let dir = try TestSupport.scratchDirectory("imatrix")
        let dat = dir.appendingPathComponent("m.dat")
        try Self.legacyMatrix([("blk.0.attn_q.weight", 4, [4, 8, 2]), ("blk.0.ffn_up.weight", 0, [3])]).write(to: dat)
        let legacy = try ImportanceMatrix(path: dat.path)
        #expect(legacy.entries["blk.0.attn_q.weight"] == [1, 2, 0.5])
        #expect(legacy.entries["blk.0.ffn_up.weight"] == [3])
        #expect(legacy.chunkCount == 3 && legacy.datasets == ["text.txt"])

        // GGUF: sums per expert divided by that expert's token count (1 where it saw none)
        var w = GGUFWriter()
        w.set("imatrix.datasets", .array(.string, [.string("a.txt")]))
        w.set("imatrix.chunk_count", .uint32(2))
        w.set("imatrix.chunk_size", .uint32(512))
        w.addTensor(name: "blk.0.ffn_down_exps.weight.in_sum2", shape: [2, 2], floats: [6, 9, 5, 7])
        w.addTensor(name: "blk.0.ffn_down_exps.weight.counts", shape: [1, 2], floats: [3, 0])
        let gguf = dir.appendingPathComponent("m.gguf")
        try w.write(to: gguf.path)
        let matrix = try ImportanceMatrix(path: gguf.path)
        #expect(matrix.entries["blk.0.ffn_down_exps.weight"] == [2, 3, 1, 1])
        #expect(matrix.chunkCount == 2 && matrix.datasets == ["a.txt"])

        func refused(_ data: Data, _ problem: String) {
            let path = dir.appendingPathComponent("bad-\(UUID().uuidString)").path
            FileManager.default.createFile(atPath: path, contents: data)
            do {
                _ = try ImportanceMatrix(path: path)
                Issue.record("accepted a matrix with \(problem)")
            } catch {
                #expect("\(error)".contains(problem), "\(error)")
            }
        }
        let good = Self.legacyMatrix([("blk.0.attn_q.weight", 1, [1, 2])])
        refused(good.prefix(9), "bad name length")
        refused(good.prefix(30), "truncated")
        refused(Data([0, 0, 0, 0]), "no entries")
        refused(Self.legacyMatrix([("x", 1, [.nan])]), "non-finite")
        var noMeta = GGUFWriter()
        noMeta.addTensor(name: "a.in_sum2", shape: [2], floats: [1, 2])
        noMeta.addTensor(name: "a.counts", shape: [1], floats: [1])
        refused(Data(noMeta.serialized()), "missing imatrix.datasets")
        var unpaired = w
        unpaired.addTensor(name: "b.in_sum2", shape: [2], floats: [1, 2])
        refused(Data(unpaired.serialized()), "'b' has sums without counts")
    }

    /// A matrix entry of the wrong size and a Q2_K_S tensor without an entry are refused; a
    /// tensor the matrix does not list is quantized without weights, as in llama.cpp.
    @Test func importanceMatrixMismatchesAreRefused() throws {
        let input = try quantizeDense.write(name: "quantize-dense-f32")
        let dir = try TestSupport.scratchDirectory("imatrix-use")
        let output = dir.appendingPathComponent("out.gguf").path
        let wrong = dir.appendingPathComponent("wrong.dat")
        try Self.legacyMatrix([("blk.0.ffn_down.weight", 1, [Float](repeating: 1, count: 100))]).write(to: wrong)
        let sizeError = #expect(throws: ModelQuantizer.QuantizeError.self) {
            try ModelQuantizer.quantize(input: input, output: output, mix: .q4_K_M,
                                        importance: try ImportanceMatrix(path: wrong.path), threads: 2)
        }
        #expect(sizeError?.description.contains("'blk.0.ffn_down.weight' has 100 values, the tensor needs 512") == true)

        let partial = dir.appendingPathComponent("partial.dat")
        try Self.legacyMatrix([("blk.0.attn_q.weight", 1, [Float](repeating: 2, count: 256))]).write(to: partial)
        let matrix = try ImportanceMatrix(path: partial.path)
        for importance in [matrix, nil] {
            let missing = #expect(throws: ModelQuantizer.QuantizeError.self) {
                try ModelQuantizer.quantize(input: input, output: output, mix: .q2_K_S, importance: importance, threads: 2)
            }
            // without a matrix the first Q2_K tensor fails; with this one, the first it does not list
            let tensor = importance == nil ? "" : "'blk.0.attn_k.weight' "
            #expect(missing?.description.contains("\(tensor)becomes Q2_K in this mix, which needs an importance matrix") == true,
                    "\(String(describing: missing))")
        }
        // Q4_K_M with it: attn_q of layer 0 weighted, the rest plain; the metadata says so
        _ = try ModelQuantizer.quantize(input: input, output: output, mix: .q4_K_M, importance: matrix, threads: 2)
        let file = try GGUFFile(path: output)
        #expect(file["quantize.imatrix.file"]?.string == partial.path)
        #expect(file["quantize.imatrix.entries_count"]?.int == 1)
        #expect(file["quantize.imatrix.chunks_count"]?.int == 3)
        #expect(file["quantize.imatrix.dataset"]?.string == "text.txt")
        let plainPath = dir.appendingPathComponent("plain.gguf").path
        _ = try ModelQuantizer.quantize(input: input, output: plainPath, mix: .q4_K_M, threads: 2)
        let plain = try GGUFFile(path: plainPath)
        for t in file.tensors {
            let u = try #require(plain.tensor(named: t.name))
            let same = memcmp(file.data(for: t), plain.data(for: u), t.byteCount) == 0
            #expect(same == (t.name != "blk.0.attn_q.weight"), "\(t.name)")
        }
    }
}
