import Engine
import Foundation
import Models
import Testing
import TestSupport
import Tokenization

/// Embeddings against llama.cpp's `llama-embedding` on the same texts: the engine's pooled,
/// L2-normalized final hidden states, through the same batched loop as generation.
@Suite(.serialized) struct EmbeddingTests {
    static let available = TestSupport.llamaCppTool("llama-embedding") != nil
        && FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)
        && FileManager.default.fileExists(atPath: TestSupport.gemma3Path)
    static let reason: Comment = "needs both real models and llama.cpp's llama-embedding (scripts/test pulls and builds them)"

    static let texts = ["Paris is the capital of France.", "A completely different sentence about cooking pasta with tomatoes"]

    /// llama-embedding's vectors for `texts`, one per text, normalized as `--embd-normalize 2`.
    static func llamaCppEmbeddings(_ model: RealModel, pooling: EmbeddingPooling) throws -> [[Double]] {
        let output = try TestSupport.run(TestSupport.llamaCppTool("llama-embedding")!, [
            "-m", model.path, "-p", texts.joined(separator: "<#sep#>"), "--embd-separator", "<#sep#>",
            "--pooling", pooling.rawValue, "--embd-normalize", "2", "--embd-output-format", "json", "-t", "2",
        ])
        let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [String: Any]
        return (json["data"] as! [[String: Any]]).map { ($0["embedding"] as! [NSNumber]).map(\.doubleValue) }
    }

    static func cosine(_ a: [Double], _ b: [Float]) -> Double {
        let dot = zip(a, b).reduce(0.0) { $0 + $1.0 * Double($1.1) }
        let na = a.reduce(0.0) { $0 + $1 * $1 }.squareRoot(), nb = b.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
        return dot / (na * nb)
    }

    static func embed(_ model: RealModel, _ texts: [String], pooling: EmbeddingPooling, parallel: Int = 4,
                      llamaCppOrder: Bool = false) throws -> [[Float]] {
        let loaded = try llamaCppOrder ? model.loadInLlamaCppOrder() : model.load()
        let generator = try Generator(model: loaded, configuration: .init(contextLength: 256, parallel: parallel, threads: 2))
        defer { generator.shutdownAndWait() }
        return try generator.embed(texts.map { loaded.tokenizer.encode($0, addSpecial: true, parseSpecial: true) }, pooling: pooling)
    }

    /// Summing in llama.cpp's order SmolLM2 reproduces llama.cpp's floats, so every pooling
    /// agrees to rounding; Gemma 3's whole-prompt pass is within the KLD bounds of llama.cpp, not
    /// bitwise, so its mean embedding is held to the cosine bound users rely on, and so is each
    /// model's default load (the fidelity policy; measured: SmolLM2 ≥ 0.9997).
    @Test(.enabled(if: available, reason), arguments: [
        (RealModel.smollm2, EmbeddingPooling.mean, 0.99999), (.smollm2, .cls, 0.99999), (.smollm2, .last, 0.99999),
        (.gemma3, .mean, 0.999),
    ])
    func matchesLlamaEmbedding(_ model: RealModel, _ pooling: EmbeddingPooling, _ bound: Double) throws {
        let reference = try Self.llamaCppEmbeddings(model, pooling: pooling)
        // one sequence per step, as llama-embedding runs each text in its own micro-batch
        let exact = try Self.embed(model, Self.texts, pooling: pooling, parallel: 1, llamaCppOrder: true)
        let ours = try Self.embed(model, Self.texts, pooling: pooling, parallel: 1)
        #expect(reference.count == Self.texts.count && ours.count == Self.texts.count && exact.count == ours.count)
        for (r, (e, o)) in zip(reference, zip(exact, ours)) {
            #expect(o.count == model.loadedWidth)
            let cos = Self.cosine(r, e)
            #expect(cos >= bound, "\(model) \(pooling): cosine \(cos) with llama-embedding")
            let defaultCos = Self.cosine(r, o)
            #expect(defaultCos >= 0.999, "\(model) \(pooling), default load: cosine \(defaultCos) with llama-embedding")
            let norm = o.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
            #expect(abs(norm - 1) < 1e-5)
        }
        // the two texts are different: their vectors are not the same
        #expect(Self.cosine(reference[0], ours[1]) < 0.999)
    }

    /// Several texts batched together with a generation in flight give the vectors they get
    /// alone (rounding aside), and the generation is undisturbed.
    @Test(.enabled(if: available, reason))
    func batchedWithGenerationMatchesAlone() async throws {
        let model = RealModel.smollm2
        let loaded = try model.load()
        let alone = try Self.embed(model, Self.texts, pooling: .mean, parallel: 1)
        let generator = try Generator(model: loaded, configuration: .init(contextLength: 256, parallel: 4, threads: 2))
        let prompt = loaded.tokenizer.encode("Once upon a time", addSpecial: true, parseSpecial: true)
        let plain = try generator.generate(prompt: prompt, options: GenerationOptions(maxTokens: 12))
        let handle = try generator.submit([SequenceSpec(prompt: prompt)], options: GenerationOptions(maxTokens: 12))
        let together = try generator.embed(Self.texts.map { loaded.tokenizer.encode($0, addSpecial: true, parseSpecial: true) },
                                           pooling: .mean)
        var text = ""
        for await event in handle.events { if case .text(_, let piece, _, _) = event { text += piece } }
        generator.shutdownAndWait()
        #expect(text == plain.text)
        for (a, b) in zip(alone, together) {
            #expect(Self.cosine(a.map(Double.init), b) > 0.9999)
        }
    }

    /// An embedding may fill the whole context (nothing is generated after it); one token more
    /// is refused before it runs, naming the lengths.
    @Test(.enabled(if: available, reason))
    func contextBoundIsThePromptItself() throws {
        let loaded = try RealModel.smollm2.load()
        let generator = try Generator(model: loaded, configuration: .init(contextLength: 32, parallel: 1, threads: 2))
        defer { generator.shutdownAndWait() }
        let full = [TokenID](repeating: 42, count: 32)
        #expect(try generator.embed([full], pooling: .last).first?.count == loaded.config.embeddingLength)
        #expect(throws: EngineError.promptTooLong(tokens: 33, context: 32)) {
            try generator.embed([full + [42]], pooling: .last)
        }
    }
}

extension RealModel {
    var loadedWidth: Int { (try? load().config.embeddingLength) ?? -1 }
}
