import Engine
import Foundation
import GGUF
import Kernels
import Models
import TestSupport
import Testing

/// llama.cpp's own per-architecture test models (`test-llama-archs -o`, weights drawn with
/// stdev 0.25 so the logits are far from uniform) are the outside judge of each forward pass:
/// llama-perplexity writes its log-probabilities over a text, and Swiftlet's distributions at
/// the same positions must match them (mean KL divergence ≤ 1e-4, same top token ≥ 99 %).
enum LlamaArchModels {
    static let available = TestSupport.llamaCppTool("test-llama-archs") != nil && TestSupport.llamaCppTool("llama-perplexity") != nil
    static let reason: Comment = "needs llama.cpp's test-llama-archs and llama-perplexity: scripts/llama_cpp.py builds them (scripts/test does)"

    /// The generated models, once per test process.
    static let directory: Result<URL, Error> = Result {
        let dir = TestSupport.scratchRoot.appendingPathComponent("llama-archs")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try TestSupport.run(TestSupport.llamaCppTool("test-llama-archs")!, ["-o", dir.path, "-d", "0.25", "-s", "42"])
        return dir
    }

    /// llama-perplexity's base file for one model: ctx 128, 6 chunks of the GPL-3 text (its
    /// `test` vocabulary hashes 5-byte pieces, so any text gives tokens).
    static func base(for model: String) throws -> String {
        let dir = try directory.get()
        let base = dir.appendingPathComponent("\(model).kld").path
        try TestSupport.run(TestSupport.llamaCppTool("llama-perplexity")!, [
            "-m", dir.appendingPathComponent("\(model).gguf").path, "-f", "/usr/share/common-licenses/GPL-3",
            "-c", "128", "--chunks", "6", "-t", "2", "--kl-divergence-base", base,
        ])
        return base
    }

    /// A copy of `model` with some metadata replaced or added, written as `name`.
    static func variant(of model: String, name: String, metadata: [String: MetadataValue]) throws {
        let dir = try directory.get()
        let file = try GGUFFile(path: dir.appendingPathComponent("\(model).gguf").path)
        var writer = GGUFWriter()
        for key in file.metadataKeys where key != "general.alignment" { writer.set(key, metadata[key] ?? file[key]!) }
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) where file[key] == nil { writer.set(key, value) }
        for tensor in file.tensors {
            writer.addTensor(name: tensor.name, type: tensor.type, shape: tensor.shape, data: Array(file.bytes(for: tensor)))
        }
        try writer.write(to: dir.appendingPathComponent("\(name).gguf").path)
    }
}

@Suite(.serialized) struct LlamaArchsTests {
    /// The architectures Swiftlet runs, as test-llama-archs names its files.
    static let models = [
        "llama-dense", "llama-moe", "qwen2-dense", "qwen3-dense", "qwen3moe-moe", "mistral3-dense", "mistral3-moe",
        "smollm3-dense", "granite-dense", "granite-moe", "granitemoe-dense", "granitemoe-moe", "gemma2-dense",
        "gemma3-dense", "olmo2-dense", "exaone4-dense", "phi3-dense", "starcoder2-dense", "cohere2-dense",
        "glm4-dense", "deepseek2-moe", "gpt-oss-moe", "mamba-dense", "mamba2-dense",
        "lfm2-dense",
    ]

    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason), arguments: models)
    func distributionsMatchLlamaCpp(_ model: String) throws {
        let base = try LlamaArchModels.base(for: model)
        let loaded = try LoadedModel(path: try LlamaArchModels.directory.get().appendingPathComponent("\(model).gguf").path)
        let result = try klDivergence(model: loaded, basePath: base, pool: ThreadPool(threads: 2))
        print("[\(model)] mean KLD \(result.kld.mean), max \(result.kld.max), same top p \(result.sameTopP.value), PPL \(result.ppl.value) vs llama.cpp \(result.pplBase.value)")
        #expect(result.kld.mean <= 1e-4, "\(model): mean KLD \(result.kld.mean)")
        #expect(result.sameTopP.value >= 0.99, "\(model): same top p \(result.sameTopP.value)")
    }

    /// RoPE scaling as the metadata asks for it: YaRN (the context extension of gpt-oss, Qwen
    /// and DeepSeek long-context files; here with an original context of 32 tokens so the
    /// 128-token chunks are far beyond it) and linear scaling with an attention factor.
    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason), arguments: [
        ("llama-dense", "llama-yarn", ["rope.scaling.type": .string("yarn"), "rope.scaling.factor": .float32(4),
                                       "rope.scaling.original_context_length": .uint32(32)]),
        ("gpt-oss-moe", "gpt-oss-yarn", ["rope.scaling.type": .string("yarn"), "rope.scaling.factor": .float32(8),
                                         "rope.scaling.original_context_length": .uint32(32),
                                         "rope.scaling.yarn_beta_fast": .float32(16)]),
        ("deepseek2-moe", "deepseek2-yarn", ["rope.scaling.type": .string("yarn"), "rope.scaling.factor": .float32(4),
                                             "rope.scaling.original_context_length": .uint32(32),
                                             "rope.scaling.yarn_log_multiplier": .float32(0.0707)]),
        ("qwen2-dense", "qwen2-linear", ["rope.scaling.type": .string("linear"), "rope.scaling.factor": .float32(2),
                                         "rope.scaling.attn_factor": .float32(0.8)]),
    ] as [(String, String, [String: MetadataValue])])
    func ropeScalingMatchesLlamaCpp(_ model: String, _ name: String, _ rope: [String: MetadataValue]) throws {
        let architecture = try GGUFFile(path: try LlamaArchModels.directory.get().appendingPathComponent("\(model).gguf").path)
            .architecture!
        try LlamaArchModels.variant(of: model, name: name,
                                    metadata: Dictionary(uniqueKeysWithValues: rope.map { ("\(architecture).\($0.key)", $0.value) }))
        let base = try LlamaArchModels.base(for: name)
        let loaded = try LoadedModel(path: try LlamaArchModels.directory.get().appendingPathComponent("\(name).gguf").path)
        let result = try klDivergence(model: loaded, basePath: base, pool: ThreadPool(threads: 2))
        print("[\(name)] mean KLD \(result.kld.mean), same top p \(result.sameTopP.value), PPL \(result.ppl.value) vs llama.cpp \(result.pplBase.value)")
        #expect(result.kld.mean <= 1e-4, "\(name): mean KLD \(result.kld.mean)")
        #expect(result.sameTopP.value >= 0.99, "\(name): same top p \(result.sameTopP.value)")
        // Random weights barely use positions, so leaving the scaling out stays under the
        // tolerance above too (KLD ~1e-5); what shows the scaling is applied as llama.cpp
        // applies it is that Swiftlet is an order of magnitude closer than the unscaled model.
        let unscaled = try LoadedModel(path: try LlamaArchModels.directory.get().appendingPathComponent("\(model).gguf").path)
        let ignored = try klDivergence(model: unscaled, basePath: base, pool: ThreadPool(threads: 2))
        print("[\(name)] without the scaling: mean KLD \(ignored.kld.mean), same top p \(ignored.sameTopP.value)")
        #expect(10 * result.kld.mean < ignored.kld.mean, "\(name): \(result.kld.mean) scaled vs \(ignored.kld.mean) unscaled")
    }

    /// Metadata the generated models leave at one setting, rewritten: GLM-4 without M-RoPE
    /// sections (interleaved pairs) and with half the head rotated, as GLM-4-0414 files are.
    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason), arguments: [
        ("glm4-dense", "glm4-partial-rotary", ["glm4.rope.dimension_sections": .array(.int32, [.int32(0), .int32(0), .int32(0), .int32(0)]),
                                               "glm4.rope.dimension_count": .uint32(64)]),
    ] as [(String, String, [String: MetadataValue])])
    func metadataVariantsMatchLlamaCpp(_ model: String, _ name: String, _ metadata: [String: MetadataValue]) throws {
        try LlamaArchModels.variant(of: model, name: name, metadata: metadata)
        let base = try LlamaArchModels.base(for: name)
        let loaded = try LoadedModel(path: try LlamaArchModels.directory.get().appendingPathComponent("\(name).gguf").path)
        let result = try klDivergence(model: loaded, basePath: base, pool: ThreadPool(threads: 2))
        print("[\(name)] mean KLD \(result.kld.mean), same top p \(result.sameTopP.value)")
        #expect(result.kld.mean <= 1e-4, "\(name): mean KLD \(result.kld.mean)")
        #expect(result.sameTopP.value >= 0.99, "\(name): same top p \(result.sameTopP.value)")
    }

    /// What Swiftlet does not run is refused by name, before any kernel runs.
    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason))
    func unsupportedModelsAreRefusedByName() throws {
        let dir = try LlamaArchModels.directory.get()
        #expect(throws: ModelError.unsupportedArchitecture("bloom")) {
            try LoadedModel(path: dir.appendingPathComponent("bloom-dense.gguf").path)
        }
    }
}
