import Engine
import Foundation
import Hummingbird
import JSON
import Tokenization

/// What `/v1/embeddings` asks for, validated field by field.
struct EmbeddingRequest {
    enum Encoding: String { case float, base64 }

    var model: String
    var inputs: [CompletionRequest.PromptInput]
    var encoding = Encoding.float
    var dimensions: Int?

    /// OpenAI's limit on inputs per request.
    static let maxInputs = 2048

    init(body: [UInt8]) throws {
        let f = Fields(try requestObject(body))
        guard let model = try f.string("model") else { throw APIError.invalid("model", "missing required field 'model'") }
        self.model = model
        guard let input = f.value("input") else { throw APIError.invalid("input", "missing required field 'input'") }
        inputs = try CompletionRequest.parsePrompt(input, param: "input", limit: Self.maxInputs)
        if let e = try f.string("encoding_format") {
            guard let encoding = Encoding(rawValue: e) else {
                throw APIError.invalid("encoding_format", "'encoding_format' must be 'float' or 'base64', got '\(e)'")
            }
            self.encoding = encoding
        }
        dimensions = try f.int("dimensions", in: 1...Int(Int32.max))
    }
}

extension OpenAIServer {
    /// The pooling this server embeds with: `--pooling`, else the file's `pooling_type`, else mean.
    func embeddingPooling(_ engine: Generator) -> EmbeddingPooling {
        configuration.pooling ?? EmbeddingPooling(file: engine.model.file) ?? .fallback
    }

    /// `POST /v1/embeddings`: each input's final hidden states, pooled and L2-normalized. The
    /// inputs run through the same engine loop as completions, a running set's worth at a time.
    func embeddings(_ request: Request, context: ServerRequestContext) async throws -> Response {
        _ = try loadedEngine()
        let parsed = try EmbeddingRequest(body: try await readBody(request))
        let engine = try await engine(for: parsed.model)
        let width = engine.model.config.embeddingLength
        if let d = parsed.dimensions, d != width {
            throw APIError.invalid("dimensions", "'dimensions' cannot change the size of this model's embeddings: they have \(width) dimensions (omit 'dimensions' or pass \(width))")
        }
        let pooling = embeddingPooling(engine)
        guard pooling != .rank else {
            throw APIError.invalid("model", "'\(engine.model.name)' is a reranker (rank pooling): it scores query-document pairs through /v1/rerank, not embeddings")
        }
        let prompts = try embeddingPrompts(parsed.inputs, engine: engine)
        var vectors: [[Float]] = []
        vectors.reserveCapacity(prompts.count)
        // A running set's worth at a time: a long list of inputs never fills the queue that
        // other clients' requests wait in.
        let wave = max(1, engine.configuration.parallel)
        for start in stride(from: 0, to: prompts.count, by: wave) {
            vectors += try await embed(Array(prompts[start..<min(start + wave, prompts.count)]), pooling: pooling,
                                       engine: engine, context: context)
        }
        let data: [JSONValue] = vectors.enumerated().map { i, v in
            .object([
                "object": .string("embedding"), "index": .number(JSONNumber(i)),
                "embedding": parsed.encoding == .base64 ? .string(base64LittleEndian(v)) : .array(v.map { number($0) }),
            ])
        }
        let tokens = prompts.reduce(0) { $0 + $1.count }
        return json(.object([
            "object": .string("list"), "data": .array(data), "model": .string(engine.model.name),
            "usage": .object(["prompt_tokens": .number(JSONNumber(tokens)), "total_tokens": .number(JSONNumber(tokens))]),
        ]))
    }

    /// Tokenized inputs (special tokens added and parsed, as `llama-embedding`), each checked
    /// against the vocabulary and the context.
    func embeddingPrompts(_ inputs: [CompletionRequest.PromptInput], engine: Generator) throws -> [[TokenID]] {
        let tokenizer = engine.model.tokenizer
        let ctx = engine.configuration.contextLength
        return try inputs.enumerated().map { i, input in
            let param = inputs.count == 1 ? "input" : "input[\(i)]"
            let tokens: [TokenID]
            switch input {
            case .text(let s): tokens = tokenizer.encode(s, addSpecial: true, parseSpecial: true)
            case .tokens(let t):
                if let bad = t.first(where: { Int($0) >= tokenizer.vocabularySize }) {
                    throw APIError.invalid(param, "token id \(bad) is outside the vocabulary (\(tokenizer.vocabularySize) tokens)")
                }
                tokens = t
            }
            guard !tokens.isEmpty else { throw APIError.invalid(param, "'\(param)' is empty") }
            guard tokens.count <= ctx else {
                throw APIError(status: 400,
                               message: "'\(param)' is \(tokens.count) tokens long, but the context holds \(ctx) tokens; shorten it or start the server with a larger --ctx",
                               param: param, code: "context_length_exceeded")
            }
            return tokens
        }
    }

    /// Submits one batch of prompts as one request and collects its vectors, in order. The
    /// request is cancelled if the client goes away.
    func embed(_ prompts: [[TokenID]], pooling: EmbeddingPooling, engine: Generator,
               context: ServerRequestContext) async throws -> [[Float]] {
        var options = GenerationOptions(maxTokens: 0)
        options.embedding = pooling
        let handle = try submit(prompts.map { SequenceSpec(prompt: $0) }, options: options, to: engine, param: "input")
        context.channel?.closeFuture.whenComplete { _ in handle.cancel() }
        var vectors = [[Float]?](repeating: nil, count: prompts.count)
        for await event in handle.events {
            switch event {
            case .embedding(let i, let vector): vectors[i] = vector
            case .failed(_, let message): throw APIError(status: 500, message: message, type: "server_error")
            case .text, .finished: break
            }
        }
        guard vectors.allSatisfy({ $0 != nil }) else {
            throw APIError(status: 503, message: "the request was cancelled before its embeddings were computed", type: "server_error")
        }
        return vectors.map { $0! }
    }
}

/// What `/v1/rerank` asks for (llama.cpp's shape): a query and the documents to score against it.
struct RerankRequest {
    var model: String
    var query: String
    var documents: [String]
    var topN: Int?
    var returnDocuments = false

    init(body: [UInt8]) throws {
        let f = Fields(try requestObject(body))
        model = try f.string("model") ?? ""
        guard let query = try f.string("query") else { throw APIError.invalid("query", "missing required field 'query'") }
        self.query = query
        guard case .array(let items)? = f.value("documents") ?? f.value("texts") else {
            throw APIError.invalid("documents", "missing required field 'documents' (an array of strings)")
        }
        guard !items.isEmpty, items.count <= EmbeddingRequest.maxInputs else {
            throw APIError.invalid("documents", "'documents' must hold 1 to \(EmbeddingRequest.maxInputs) strings")
        }
        documents = try items.enumerated().map { i, item in
            // Cohere/Jina clients may send {"text": ...} objects
            guard let text = item.stringValue ?? item["text"]?.stringValue else {
                throw APIError.invalid("documents[\(i)]", "'documents[\(i)]' must be a string")
            }
            return text
        }
        topN = try f.int("top_n", in: 1...Int(Int32.max))
        returnDocuments = try f.bool("return_documents") ?? f.bool("return_text") ?? false
    }
}

extension OpenAIServer {
    /// `POST /v1/rerank` (also `/rerank`, `/v1/reranking`): each document's relevance to the
    /// query, from a reranker's classification head over `query` and `document` in one prompt
    /// (the GGUF's `rerank` chat template, else BOS query EOS [SEP] document EOS, as llama.cpp
    /// builds it); results best first, cut to `top_n`.
    func rerank(_ request: Request, context: ServerRequestContext) async throws -> Response {
        _ = try loadedEngine()
        let parsed = try RerankRequest(body: try await readBody(request))
        let engine = try await engine(for: parsed.model.isEmpty ? (try loadedEngine()).model.name : parsed.model)
        guard embeddingPooling(engine) == .rank, engine.model.model.classifier != nil else {
            throw APIError.invalid("model", "'\(engine.model.name)' is not a reranker (its GGUF has no rank pooling and classification head)")
        }
        let prompts = try parsed.documents.enumerated().map { i, document -> [TokenID] in
            let tokens = engine.model.rerankPrompt(query: parsed.query, document: document)
            guard tokens.count <= engine.configuration.contextLength else {
                throw APIError(status: 400, message: "query and 'documents[\(i)]' are \(tokens.count) tokens long, but the context holds \(engine.configuration.contextLength)",
                               param: "documents[\(i)]", code: "context_length_exceeded")
            }
            return tokens
        }
        var scores: [Float] = []
        let wave = max(1, engine.configuration.parallel)
        for start in stride(from: 0, to: prompts.count, by: wave) {
            scores += try await embed(Array(prompts[start..<min(start + wave, prompts.count)]), pooling: .rank,
                                      engine: engine, context: context).map { $0.first ?? 0 }
        }
        let ranked = scores.enumerated().sorted { $0.element > $1.element }.prefix(parsed.topN ?? scores.count)
        let results: [JSONValue] = ranked.map { i, score in
            var entry: JSONObject = ["index": .number(JSONNumber(i)), "relevance_score": number(score)]
            if parsed.returnDocuments { entry["document"] = .object(["text": .string(parsed.documents[i])]) }
            return .object(entry)
        }
        let tokens = prompts.reduce(0) { $0 + $1.count }
        return json(.object([
            "model": .string(engine.model.name), "object": .string("list"),
            "usage": .object(["prompt_tokens": .number(JSONNumber(tokens)), "total_tokens": .number(JSONNumber(tokens))]),
            "results": .array(results),
        ]))
    }
}

/// The vector's float32 values, little-endian, in base64 (OpenAI's `encoding_format: base64`).
func base64LittleEndian(_ v: [Float]) -> String {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(v.count * 4)
    for x in v { withUnsafeBytes(of: x.bitPattern.littleEndian) { bytes += $0 } }
    return Data(bytes).base64EncodedString()
}
