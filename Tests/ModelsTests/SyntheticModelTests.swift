import Foundation
import GGUF
import Kernels
import Models
import Testing
import TestSupport

/// Runs scripts/synthetic_models.py once per test process and hands out its output folder.
enum SyntheticModels {
    static let directory: Result<URL, Error> = {
        let out = TestSupport.scratchRoot.appendingPathComponent("synthetic-models")
        let script = TestSupport.repositoryRoot().appendingPathComponent("scripts/synthetic_models.py").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, out.path]
        p.standardOutput = FileHandle.nullDevice
        do {
            try p.run()
            p.waitUntilExit()
        } catch {
            return .failure(error)
        }
        guard p.terminationStatus == 0 else {
            return .failure(CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey: "synthetic_models.py failed (needs numpy and gguf: pip install numpy gguf)"]))
        }
        return .success(out)
    }()

    struct Reference {
        let prompt: [Int32]
        let logits: [[Float]]
        let greedy: [Int32]
    }

    static func load(_ stem: String) throws -> (GGUFFile, Reference) {
        let dir = try directory.get()
        let file = try GGUFFile(path: dir.appendingPathComponent("\(stem).gguf").path)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("\(stem).json"))) as! [String: Any]
        let ref = Reference(prompt: (json["prompt"] as! [Int]).map(Int32.init),
                            logits: (json["logits"] as! [[Double]]).map { $0.map(Float.init) },
                            greedy: (json["greedy"] as! [Int]).map(Int32.init))
        return (file, ref)
    }
}

func maxAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
}

func meanAbsDifference(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).map { abs($0 - $1) }.reduce(0, +) / Float(max(a.count, 1))
}

func argmax(_ v: [Float]) -> Int32 { Int32(v.indices.max { v[$0] < v[$1] }!) }

@Suite struct SyntheticModelTests {
    /// The reference follows the engine's defined numerics (half-precision KV cache, 8-bit
    /// activations for quantized weights), so what is left is float32 rounding order.
    /// Gemma 3 rounds to half precision inside the layer (GeGLU's table, as llama.cpp): a
    /// last-bit difference in a float sum can move a value across a half rounding boundary,
    /// and the flip then moves the whole logit row a little (up to 0.08, mean 0.025, at 4 of
    /// 12 positions, against logits of magnitude ~10). Its logits must agree to 0.1 at
    /// worst and 0.03 on average per position (others: 2e-3 for both); the greedy tokens below
    /// must still be identical.
    static let cases: [(String, Float)] = [
        ("llama-f32", 2e-3), ("llama-q8_0", 2e-3),
        ("gemma3-f32", 0.1), ("gemma3-q8_0", 0.1),
        ("qwen2-f32", 2e-3), ("qwen2-q8_0", 2e-3),
        ("mixtral-f32", 2e-3), ("mixtral-q8_0", 2e-3),
        ("mamba-f32", 2e-3), ("mamba-q8_0", 2e-3),
    ]

    @Test(arguments: cases)
    func logitsMatchNumpyReference(stem: String, tolerance: Float) throws {
        let (file, ref) = try SyntheticModels.load(stem)
        let model = try ModelRegistry.load(file)
        let pool = ThreadPool(threads: 2)

        // The whole prompt as one batch, logits at every position.
        let cache = model.makeCache(capacity: 64)
        let batched = try model.forward([BatchSequence(tokens: ref.prompt, cache: cache, allLogits: true)], pool: pool)
        #expect(batched.count == ref.prompt.count)
        for (i, row) in batched.enumerated() {
            let diff = maxAbsDifference(row, ref.logits[i])
            #expect(diff < tolerance, "\(stem) position \(i): max |Δlogit| = \(diff)")
            let meanBound: Float = tolerance > 2e-3 ? 0.03 : 2e-3
            #expect(meanAbsDifference(row, ref.logits[i]) < meanBound, "\(stem) position \(i): mean |Δlogit|")
        }

        // Token by token through the KV cache gives the same logits.
        let incremental = model.makeCache(capacity: 64)
        for (i, token) in ref.prompt.enumerated() {
            let row = try model.forward([BatchSequence(tokens: [token], cache: incremental)], pool: pool)[0]
            let diff = maxAbsDifference(row, ref.logits[i])
            #expect(diff < tolerance, "\(stem) incremental position \(i): max |Δlogit| = \(diff)")
        }
    }

    @Test(arguments: cases.map(\.0))
    func greedyTokensMatchNumpyReference(stem: String) throws {
        let (file, ref) = try SyntheticModels.load(stem)
        let model = try ModelRegistry.load(file)
        let pool = ThreadPool(threads: 2)
        let cache = model.makeCache(capacity: 64)
        var logits = try model.forward([BatchSequence(tokens: ref.prompt, cache: cache)], pool: pool)[0]
        var generated: [Int32] = []
        for _ in 0..<ref.greedy.count {
            let next = argmax(logits)
            generated.append(next)
            logits = try model.forward([BatchSequence(tokens: [next], cache: cache)], pool: pool)[0]
        }
        #expect(generated == ref.greedy)
    }

    @Test func batchOfSequencesEqualsEachAlone() throws {
        let (file, ref) = try SyntheticModels.load("llama-f32")
        let model = try ModelRegistry.load(file)
        let pool = ThreadPool(threads: 2)
        let a = Array(ref.prompt[..<5]), b = Array(ref.prompt[3...])
        let alone = try [a, b].map { try model.forward([BatchSequence(tokens: $0, cache: model.makeCache(capacity: 32))], pool: pool)[0] }
        let together = try model.forward([BatchSequence(tokens: a, cache: model.makeCache(capacity: 32)),
                                          BatchSequence(tokens: b, cache: model.makeCache(capacity: 32))], pool: pool)
        #expect(maxAbsDifference(alone[0], together[0]) < 1e-4)
        #expect(maxAbsDifference(alone[1], together[1]) < 1e-4)
    }

    /// Batches longer than `activationMemoryPassTokens` run as several passes: the same floats as
    /// feeding the pieces by hand, for the last-token and the every-position logits, and
    /// for two sequences sharing passes.
    @Test(arguments: ["llama-q8_0", "gemma3-q8_0", "mamba-f32"])
    func longBatchesEqualTheirPieces(stem: String) throws {
        let (file, ref) = try SyntheticModels.load(stem)
        let model = try ModelRegistry.load(file)
        let pool = ThreadPool(threads: 2)
        let n = activationMemoryPassTokens + 75
        let tokens = (0..<n).map { ref.prompt[$0 % ref.prompt.count] }
        let pieces = [Array(tokens[..<100]), Array(tokens[100...])]
        var byHand: [[Float]] = []
        let handCache = model.makeCache(capacity: n)
        for piece in pieces { byHand += try model.forward([BatchSequence(tokens: piece, cache: handCache, allLogits: true)], pool: pool) }
        let all = try model.forward([BatchSequence(tokens: tokens, cache: model.makeCache(capacity: n), allLogits: true)], pool: pool)
        #expect(all.count == n)
        #expect(zip(all, byHand).allSatisfy { $0 == $1 })
        let last = try model.forward([BatchSequence(tokens: tokens, cache: model.makeCache(capacity: n))], pool: pool)
        #expect(last == [byHand[n - 1]])
        let two = try model.forward([BatchSequence(tokens: Array(tokens[..<100]), cache: model.makeCache(capacity: n)),
                                     BatchSequence(tokens: tokens, cache: model.makeCache(capacity: n))], pool: pool)
        #expect(two == [byHand[99], byHand[n - 1]])
    }

    @Test func contextOverflowIsAnErrorNotACrash() throws {
        let (file, ref) = try SyntheticModels.load("llama-f32")
        let model = try ModelRegistry.load(file)
        let cache = model.makeCache(capacity: 4)
        #expect(throws: ContextFullError.self) {
            try model.forward([BatchSequence(tokens: ref.prompt, cache: cache)], pool: ThreadPool(threads: 1))
        }
        #expect(cache.count == 0)
    }

    @Test func unknownArchitectureIsAClearError() throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("rwkv9"))
        w.set("rwkv9.embedding_length", .uint32(8))
        w.set("rwkv9.block_count", .uint32(1))
        let path = TestSupport.scratchRoot.appendingPathComponent("unknown-arch.gguf").path
        try w.write(to: path)
        #expect {
            try ModelRegistry.load(try GGUFFile(path: path))
        } throws: { error in
            "\(error)".contains("unsupported architecture 'rwkv9'")
        }
    }

    /// Head counts and RoPE sizes the attention kernels would index out of bounds with (they
    /// run unchecked) are load errors. A llama model up to its first attention layer: the
    /// check comes before the layer's tensors are read.
    @Test(arguments: [(6, 4, 8, "llama.attention.head_count (6) is not a multiple of head_count_kv (4)"),
                      (4, 0, 8, "llama.attention.head_count (4) is not a multiple of head_count_kv (0)"),
                      (4, 2, 12, "llama.rope.dimension_count (12) exceeds the head size (8)")])
    func attentionShapesTheKernelsCannotTakeAreLoadErrors(heads: Int, kvHeads: Int, ropeDimensions: Int,
                                                          message: String) throws {
        let (d, vocabulary) = (heads * 8, 16)
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("llama.embedding_length", .uint32(UInt32(d)))
        w.set("llama.block_count", .uint32(1))
        w.set("llama.feed_forward_length", .uint32(16))
        w.set("llama.attention.head_count", .uint32(UInt32(heads)))
        w.set("llama.attention.head_count_kv", .uint32(UInt32(kvHeads)))
        w.set("llama.rope.dimension_count", .uint32(UInt32(ropeDimensions)))
        w.set("llama.vocab_size", .uint32(UInt32(vocabulary)))
        w.addTensor(name: "token_embd.weight", shape: [d, vocabulary], floats: [Float](repeating: 0.5, count: d * vocabulary))
        w.addTensor(name: "output_norm.weight", shape: [d], floats: [Float](repeating: 1, count: d))
        w.addTensor(name: "blk.0.attn_norm.weight", shape: [d], floats: [Float](repeating: 1, count: d))
        let path = TestSupport.scratchRoot.appendingPathComponent("attention-shape-\(heads)-\(kvHeads)-\(ropeDimensions).gguf").path
        try w.write(to: path)
        #expect(throws: ModelError.inconsistentMetadata(message)) {
            try ModelRegistry.load(try GGUFFile(path: path))
        }
    }

    /// The state-space and short-conv sizes the kernels index by are checked against each other
    /// before any tensor is read (metadata only, over a valid base).
    @Test(arguments: [
        ("mamba2", ["mamba2.ssm.time_step_rank": .uint32(5)],
         "mamba2.ssm.inner_size (64) is not a multiple of ssm.time_step_rank (5 heads)"),
        ("mamba2", ["mamba2.ssm.group_count": .uint32(3)],
         "mamba2.ssm.time_step_rank (4 heads) is not a multiple of ssm.group_count (3)"),
        ("mamba2", ["mamba2.ssm.group_count": .uint32(0)], "mamba2.ssm.group_count is 0, not positive"),
        ("lfm2", ["lfm2.shortconv.l_cache": .uint32(1)], "lfm2.shortconv.l_cache is 1, not above 1"),
        ("lfm2", ["lfm2.attention.head_count_kv": .array(.uint32, [.uint32(2)])],
         "lfm2.attention.head_count_kv is neither a number nor one per layer (2)"),
    ] as [(String, [String: MetadataValue], String)])
    func recurrentShapesTheKernelsCannotTakeAreLoadErrors(architecture: String, overrides: [String: MetadataValue],
                                                          message: String) throws {
        var metadata: [String: MetadataValue] = [
            "general.architecture": .string(architecture),
            "\(architecture).embedding_length": .uint32(32),
            "\(architecture).block_count": .uint32(2),
        ]
        if architecture == "mamba2" {
            for (key, value) in ["ssm.conv_kernel": 4, "ssm.inner_size": 64, "ssm.state_size": 16,
                                 "ssm.time_step_rank": 4, "ssm.group_count": 2] {
                metadata["mamba2.\(key)"] = .uint32(UInt32(value))
            }
        } else {
            metadata["lfm2.shortconv.l_cache"] = .uint32(3)
            metadata["lfm2.attention.head_count"] = .uint32(2)
            metadata["lfm2.attention.head_count_kv"] = .array(.uint32, [.uint32(2), .uint32(0)])
        }
        metadata.merge(overrides) { $1 }
        var w = GGUFWriter()
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) { w.set(key, value) }
        let path = TestSupport.scratchRoot.appendingPathComponent("recurrent-shape-\(message.filter { $0.isLetter || $0.isNumber }).gguf").path
        try w.write(to: path)
        #expect(throws: ModelError.inconsistentMetadata(message)) {
            try ModelRegistry.load(try GGUFFile(path: path))
        }
    }
}
