import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import GGUF
import Kernels
import Models
import Testing
import TestSupport
import Tokenization
@testable import Engine

/// A small random BERT encoder with BGE's WordPiece vocabulary (from llama.cpp's tokenizer
/// suite), written here and embedded by both Swiftlet and `llama-embedding`.
enum BERTModel {
    static let available = TestSupport.llamaCppTool("llama-embedding") != nil
        && FileManager.default.fileExists(atPath: TestSupport.llamaCppVocabulary("bert-bge").path)
    static let reason: Comment = "needs llama.cpp's llama-embedding and its vocabularies (scripts/test builds and unpacks them)"

    /// `classifier`: with a reranking head (`cls`, `cls.output`) and rank pooling.
    static func write(classifier: Bool = false, pooling: UInt32 = 2) throws -> String {
        let dir = try TestSupport.scratchDirectory("bert")
        let path = dir.appendingPathComponent(classifier ? "bert-reranker.gguf" : "bert-p\(pooling).gguf").path
        if FileManager.default.fileExists(atPath: path) { return path }
        let vocab = try GGUFFile(path: TestSupport.llamaCppVocabulary("bert-bge").path)
        var w = GGUFWriter()
        let (d, heads, layers, ff, ctx) = (64, 4, 2, 128, 512)
        w.set("general.architecture", .string("bert"))
        w.set("general.name", .string("tiny random bert"))
        w.set("bert.context_length", .uint32(UInt32(ctx)))
        w.set("bert.embedding_length", .uint32(UInt32(d)))
        w.set("bert.feed_forward_length", .uint32(UInt32(ff)))
        w.set("bert.block_count", .uint32(UInt32(layers)))
        w.set("bert.attention.head_count", .uint32(UInt32(heads)))
        w.set("bert.attention.layer_norm_epsilon", .float32(1e-12))
        w.set("bert.attention.causal", .bool(false))
        w.set("bert.pooling_type", .uint32(classifier ? 4 : pooling))
        w.set("bert.token_type_count", .uint32(2))
        for key in vocab.metadataKeys where key.hasPrefix("tokenizer.") { w.set(key, vocab[key]!) }
        let vocabularySize = vocab["tokenizer.ggml.tokens"]!.array!.count
        if classifier { w.set("bert.classifier.output_labels", .array(.string, [.string("score")])) }

        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func uniform() -> Float {  // splitmix64: the same weights on every machine
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Float((z ^ (z >> 31)) >> 40) / Float(1 << 24) * 2 - 1
        }
        func tensor(_ name: String, _ shape: [Int], scale: Float, offset: Float = 0) {
            w.addTensor(name: name, shape: shape, floats: (0..<shape.reduce(1, *)).map { _ in offset + scale * uniform() })
        }
        tensor("token_embd.weight", [d, vocabularySize], scale: 1)
        tensor("token_types.weight", [d, 2], scale: 0.5)
        tensor("position_embd.weight", [d, ctx], scale: 0.5)
        tensor("token_embd_norm.weight", [d], scale: 0.1, offset: 1)
        tensor("token_embd_norm.bias", [d], scale: 0.1)
        for i in 0..<layers {
            let p = "blk.\(i)."
            for m in ["attn_q", "attn_k", "attn_v", "attn_output"] {
                tensor(p + m + ".weight", [d, d], scale: 0.4)
                tensor(p + m + ".bias", [d], scale: 0.1)
            }
            tensor(p + "attn_output_norm.weight", [d], scale: 0.1, offset: 1)
            tensor(p + "attn_output_norm.bias", [d], scale: 0.1)
            tensor(p + "ffn_up.weight", [d, ff], scale: 0.3)
            tensor(p + "ffn_up.bias", [ff], scale: 0.1)
            tensor(p + "ffn_down.weight", [ff, d], scale: 0.3)
            tensor(p + "ffn_down.bias", [d], scale: 0.1)
            tensor(p + "layer_output_norm.weight", [d], scale: 0.1, offset: 1)
            tensor(p + "layer_output_norm.bias", [d], scale: 0.1)
        }
        if classifier {
            tensor("cls.weight", [d, d], scale: 0.3)
            tensor("cls.bias", [d], scale: 0.1)
            tensor("cls.output.weight", [d, 1], scale: 0.5)
            tensor("cls.output.bias", [1], scale: 0.1)
        }
        try w.write(to: path)
        return path
    }
}

@Suite(.serialized) struct BERTTests {
    static let texts = ["The cat sat on the mat.", "Quarterly revenue grew by eight percent, beating estimates.",
                        String(repeating: "a long document about many things ", count: 60)]

    /// Swiftlet's embeddings of a random BERT (bidirectional attention, absolute positions,
    /// post-norm layers, CLS and mean pooling) against llama-embedding's. llama.cpp keeps the
    /// keys and values in single precision here, Swiftlet in half, hence a cosine bound.
    @Test(.enabled(if: BERTModel.available, BERTModel.reason), arguments: [EmbeddingPooling.cls, .mean])
    func embeddingsMatchLlamaCpp(_ pooling: EmbeddingPooling) throws {
        let path = try BERTModel.write(pooling: pooling == .cls ? 2 : 1)
        let output = try TestSupport.run(TestSupport.llamaCppTool("llama-embedding")!, [
            "-m", path, "-p", Self.texts.joined(separator: "<#sep#>"), "--embd-separator", "<#sep#>",
            "--embd-normalize", "2", "--embd-output-format", "json", "-t", "2", "-c", "512", "-b", "512", "-ub", "512",
        ])
        let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as! [String: Any]
        let reference = (json["data"] as! [[String: Any]]).map { ($0["embedding"] as! [NSNumber]).map(\.doubleValue) }

        let loaded = try LoadedModel(path: path)
        #expect(loaded.model.isEncoder)
        // the file's pooling_type decides, as for llama-embedding; a step budget smaller than
        // the long text checks that an encoder's prompt still goes through in one pass
        #expect(EmbeddingPooling(file: loaded.file) == pooling)
        let generator = try Generator(model: loaded, configuration: .init(contextLength: 2048, parallel: 2, maxBatchTokens: 64, threads: 2))
        defer { generator.shutdownAndWait() }
        #expect(generator.configuration.contextLength == 512)
        let prompts = Self.texts.map { loaded.tokenizer.encode($0, addSpecial: true, parseSpecial: true) }
        #expect(prompts[2].count > 64)
        let ours = try generator.embed(prompts, pooling: pooling)
        #expect(reference.count == 3 && ours.count == 3)
        for (i, (r, o)) in zip(reference, ours).enumerated() {
            let cos = EmbeddingTests.cosine(r, o)
            print("[bert \(pooling)] text \(i): cosine \(cos) with llama-embedding, \(EmbeddingTests.cosine(r, ours[(i + 1) % 3])) with the next text's")
            #expect(cos > 0.9999, "text \(i): cosine \(cos)")
        }
        #expect(EmbeddingTests.cosine(reference[0], ours[1]) < 0.99)
    }

    /// An encoder computes embeddings only: generating text is refused before anything runs.
    @Test(.enabled(if: BERTModel.available, BERTModel.reason))
    func generationIsRefused() throws {
        let loaded = try LoadedModel(path: try BERTModel.write())
        let generator = try Generator(model: loaded, configuration: .singleSequence(contextLength: 512, threads: 2))
        defer { generator.shutdownAndWait() }
        #expect(throws: EngineError.encoderCannotGenerate(architecture: "bert")) {
            try generator.generate(prompt: [101, 2000, 102], options: GenerationOptions(maxTokens: 4))
        }
    }
}

/// Reranking with a random BERT reranker (rank pooling, `cls` + `cls.output` head): the
/// engine's scores against llama-embedding's, and `/v1/rerank` through `swiftlet serve`.
@Suite(.serialized) struct RerankTests {
    static let query = "What is the capital of France?"
    static let documents = ["Paris is the capital of France.", "Bananas are yellow.", "France borders Spain and Italy."]

    @Test(.enabled(if: BERTModel.available, BERTModel.reason))
    func scoresMatchLlamaCpp() throws {
        let path = try BERTModel.write(classifier: true)
        let output = try TestSupport.run(TestSupport.llamaCppTool("llama-embedding")!, [
            "-m", path, "-p", Self.documents.map { Self.query + "\t" + $0 }.joined(separator: "<#sep#>"),
            "--embd-separator", "<#sep#>", "--embd-normalize", "-1", "--embd-output-format", "json", "-t", "2",
        ])
        // Only each row's first value is the score; llama-embedding prints the rest of the row
        // from memory it did not write (possibly nan), so the scores are read off the text.
        let reference = output.components(separatedBy: "\"embedding\": [").dropFirst().map {
            Double($0.prefix { $0 != "," && $0 != "]" })!
        }
        #expect(reference.count == Self.documents.count)

        let loaded = try LoadedModel(path: path)
        #expect(EmbeddingPooling(file: loaded.file) == .rank)
        let generator = try Generator(model: loaded, configuration: .init(contextLength: 512, parallel: 3, threads: 2))
        defer { generator.shutdownAndWait() }
        let scores = try generator.embed(Self.documents.map { loaded.rerankPrompt(query: Self.query, document: $0) }, pooling: .rank)
        #expect(scores.allSatisfy { $0.count == 1 })
        print("[rerank] llama.cpp \(reference), Swiftlet \(scores.map(\.[0]))")
        for (r, s) in zip(reference, scores) { #expect(abs(r - Double(s[0])) < 1e-3 * max(1, abs(r))) }
        // a model without a classification head cannot rank
        let plain = try LoadedModel(path: try BERTModel.write())
        let other = try Generator(model: plain, configuration: .init(contextLength: 512, parallel: 1, threads: 2))
        defer { other.shutdownAndWait() }
        #expect(throws: EngineError.generationFailed(EngineError.noClassifier.description)) {
            try other.embed([plain.rerankPrompt(query: "q", document: "d")], pooling: .rank)
        }
    }

    /// llama.cpp's request and response shape: results best first, `top_n`, documents back
    /// on request; the reranker refuses /v1/embeddings and a plain model refuses /v1/rerank.
    @Test(.enabled(if: BERTModel.available, BERTModel.reason))
    func rerankEndpoint() async throws {
        let reranker = try BERTModel.write(classifier: true), plain = try BERTModel.write()
        let port = Int.random(in: 20000..<60000)
        let server = Process()
        server.executableURL = CommandLine.binary
        server.arguments = ["serve", reranker, plain, "--port", String(port), "--ctx", "512"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { server.terminate(); server.waitUntilExit() }
        func post(_ path: String, _ body: [String: Any]) async throws -> (Int, [String: Any]) {
            var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
            request.httpMethod = "POST"
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = try JSONSerialization.data(withJSONObject: body)
            let (data, response) = try await URLSession.shared.data(for: request)
            return ((response as! HTTPURLResponse).statusCode, try JSONSerialization.jsonObject(with: data) as! [String: Any])
        }
        var ready = false
        for _ in 0..<300 where !ready {
            if let (status, _) = try? await post("/v1/rerank", ["query": "q", "documents": ["d"]]), status == 200 { ready = true }
            else { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(ready, "the server did not answer /v1/rerank")
        let (status, body) = try await post("/v1/rerank", [
            "model": "bert-reranker", "query": Self.query, "documents": Self.documents, "top_n": 2, "return_documents": true,
        ])
        #expect(status == 200)
        let results = body["results"] as? [[String: Any]] ?? []
        #expect(results.count == 2)
        let scores = results.map { ($0["relevance_score"] as! NSNumber).doubleValue }
        #expect(scores == scores.sorted(by: >))
        let loaded = try LoadedModel(path: reranker)
        let generator = try Generator(model: loaded, configuration: .init(contextLength: 512, parallel: 3, threads: 2))
        defer { generator.shutdownAndWait() }
        let direct = try generator.embed(Self.documents.map { loaded.rerankPrompt(query: Self.query, document: $0) }, pooling: .rank)
            .map { Double($0[0]) }
        let best = direct.indices.max { direct[$0] < direct[$1] }!
        #expect(results.first?["index"] as? Int == best)
        #expect((results.first?["document"] as? [String: Any])?["text"] as? String == Self.documents[best])
        #expect(abs(scores[0] - direct[best]) < 1e-4)

        let (s1, b1) = try await post("/v1/embeddings", ["model": "bert-reranker", "input": "hello"])
        #expect(s1 == 400 && "\(b1)".contains("/v1/rerank"))
        let (s2, b2) = try await post("/v1/rerank", ["model": "bert-p2", "query": "q", "documents": ["d"]])
        #expect(s2 == 400 && "\(b2)".contains("not a reranker"))
        let (s3, _) = try await post("/v1/rerank", ["model": "bert-reranker", "query": "q", "documents": [String]()])
        #expect(s3 == 400)
    }
}
