import Engine
import Foundation
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
}

@Suite(.serialized) struct LlamaArchsTests {
    /// The architectures Swiftlet runs, as test-llama-archs names its files.
    static let models = ["llama-dense", "llama-moe", "qwen2-dense", "qwen3-dense", "smollm3-dense", "granite-dense", "gemma3-dense", "olmo2-dense", "mamba-dense", "mamba2-dense", "lfm2-dense"]

    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason), arguments: models)
    func distributionsMatchLlamaCpp(_ model: String) throws {
        let base = try LlamaArchModels.base(for: model)
        let loaded = try LoadedModel(path: try LlamaArchModels.directory.get().appendingPathComponent("\(model).gguf").path)
        let result = try klDivergence(model: loaded, basePath: base, pool: ThreadPool(threads: 2))
        print("[\(model)] mean KLD \(result.kld.mean), max \(result.kld.max), same top p \(result.sameTopP.value), PPL \(result.ppl.value) vs llama.cpp \(result.pplBase.value)")
        #expect(result.kld.mean <= 1e-4, "\(model): mean KLD \(result.kld.mean)")
        #expect(result.sameTopP.value >= 0.99, "\(model): same top p \(result.sameTopP.value)")
    }

    /// What Swiftlet does not run is refused by name, before any kernel runs.
    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason))
    func unsupportedModelsAreRefusedByName() throws {
        let dir = try LlamaArchModels.directory.get()
        #expect(throws: ModelError.unsupportedArchitecture("phi3")) {
            try LoadedModel(path: dir.appendingPathComponent("phi3-dense.gguf").path)
        }
        #expect(throws: ModelError.unsupportedArchitecture("granite with experts (GraniteMoE)")) {
            try LoadedModel(path: dir.appendingPathComponent("granite-moe.gguf").path)
        }
    }
}
