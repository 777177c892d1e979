import Foundation
import GGUF
import JSON
import Kernels
import Models
import Tokenization

/// Everything needed to run one GGUF model: the mapped file, the network, the vocabulary
/// and the chat template.
public final class LoadedModel: Sendable {
    public let path: String
    public let file: GGUFFile
    public let model: any LanguageModel
    public let tokenizer: any Tokenizer
    public let chatTemplate: ChatTemplate?
    /// Set when the model runs under `--mem-budget`.
    public let memoryBudget: MemoryBudget?
    /// LoRA adapters loaded with the model (`--lora`), in order: their index is their id.
    public let adapters: [LoRAAdapter]
    /// Each adapter's scale when a request does not choose (`--lora-scaled`; 1 for `--lora`).
    public let adapterScales: [Float]
    /// Element types of the KV caches made for this model (`--cache-type-k/v`).
    public let cacheTypes: KVCacheTypes

    /// `memoryBudget`: bytes of weights allowed to stay resident (see `MemoryBudget`); nil = no limit.
    /// `chatTemplate`: used instead of the file's own template (`--chat-template-file`).
    /// `adapters`: LoRA adapter files and their scales, each checked against the model.
    public init(path: String, memoryBudget budgetBytes: Int? = nil, chatTemplate templateOverride: ChatTemplate? = nil,
                adapters adapterFiles: [LoRAFile] = [], cacheTypes: KVCacheTypes = .f16) throws {
        self.path = path
        self.cacheTypes = cacheTypes
        let file = try GGUFFile(path: path)
        self.file = file
        // the budget pages weights of the mapping on demand: keep them there
        let (network, projections) = try ProjectionRecorder.recording {
            try ModelRegistry.load(file, repackWeights: WeightRepacking.enabled && budgetBytes == nil)
        }
        try network.config.checkCacheTypes(cacheTypes)
        if !cacheTypes.isF16, let why = network.quantizedCacheRefusal {
            throw CacheTypeError(description: "--cache-type-k/v \(cacheTypes.key.rawValue)/\(cacheTypes.value.rawValue): \(why); use f16")
        }
        adapters = try adapterFiles.map {
            try LoRAAdapter(path: $0.path, base: file, architecture: network.config.architecture, projections: projections)
        }
        adapterScales = adapterFiles.map(\.scale)
        if let budgetBytes {
            let budget = MemoryBudget(file: file, budget: budgetBytes)
            memoryBudget = budget
            model = BudgetedModel(network, budget: budget)
        } else {
            memoryBudget = nil
            model = network
        }
        tokenizer = try loadTokenizer(from: file)
        if let templateOverride {
            chatTemplate = templateOverride
        } else if let source = file["tokenizer.chat_template"]?.string {
            chatTemplate = try ChatTemplate(source: source)
        } else {
            chatTemplate = ChatTemplate.fallback(forArchitecture: model.config.architecture)
        }
    }

    public var config: ModelConfig { model.config }
    /// Whether the file carries its own chat template (`chatTemplate` may be a built-in stand-in).
    public var hasChatTemplate: Bool { file["tokenizer.chat_template"]?.string != nil }
    public var name: String { URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent }

    /// Checks a requested context length against what the model was trained for.
    public func validateContext(_ length: Int) throws {
        guard length > 0, length <= config.contextLength else {
            throw ModelError.contextTooLong(requested: length, maximum: config.contextLength)
        }
    }

    /// Renders a conversation with the model's chat template (or its family's built-in one).
    public func renderChat(_ messages: [ChatMessage], addGenerationPrompt: Bool = true,
                           tools: [JSONValue]? = nil) throws -> String {
        guard let chatTemplate else { throw EngineError.noChatTemplate(architecture: config.architecture) }
        let bos = tokenizer.bosToken.map { tokenizer.tokenText($0) } ?? ""
        let eos = tokenizer.eosToken.map { tokenizer.tokenText($0) } ?? ""
        return try chatTemplate.render(messages: messages, addGenerationPrompt: addGenerationPrompt,
                                       bosToken: bos, eosToken: eos, tools: tools)
    }
}

/// A LoRA adapter to load with a model and its default scale (`--lora FILE`, `--lora-scaled FILE SCALE`).
public struct LoRAFile: Sendable, Equatable {
    public var path: String
    public var scale: Float

    public init(path: String, scale: Float = 1) {
        self.path = path
        self.scale = scale
    }
}

public enum EngineError: Error, CustomStringConvertible, Equatable {
    case noChatTemplate(architecture: String)
    case promptTooLong(tokens: Int, context: Int)
    case emptyPrompt
    case tokenOutOfRange(token: Int, vocabularySize: Int)
    /// The forward pass failed while the sequence was running.
    case generationFailed(String)
    /// The model's output at this position holds NaN or infinity.
    case nonFiniteLogits(position: Int)
    /// The pooled hidden states hold NaN or infinity.
    case nonFiniteEmbedding
    /// Rank pooling asked of a model without a classification head.
    case noClassifier
    /// Text generation asked of an encoder (an embedding model).
    case encoderCannotGenerate(architecture: String)
    /// The draft model cannot draft for this model (the reason).
    case draftModelIncompatible(String)
    /// A request asked to draft with a model the generator does not have.
    case noDraftModel

    public var description: String {
        switch self {
        case .noChatTemplate(let a): "the model has no chat template and there is no built-in one for '\(a)'"
        case .promptTooLong(let n, let ctx): "the prompt is \(n) tokens long, but the context holds \(ctx) (use a larger --ctx or a shorter prompt)"
        case .emptyPrompt: "the prompt is empty"
        case .tokenOutOfRange(let t, let n): "token id \(t) is outside the vocabulary (\(n) tokens)"
        case .generationFailed(let message): "generation failed: \(message)"
        case .nonFiniteLogits(let position): "the model produced non-finite logits (NaN or infinity) at position \(position)"
        case .nonFiniteEmbedding: "the model produced a non-finite embedding (NaN or infinity)"
        case .noClassifier: "the model has no classification head (cls.* tensors), so it cannot rerank"
        case .encoderCannotGenerate(let a): "this is an embedding model ('\(a)', an encoder): it computes embeddings (swiftlet embed, /v1/embeddings) but cannot generate text"
        case .draftModelIncompatible(let why): "the draft model cannot draft for this model: \(why)"
        case .noDraftModel: "no draft model is loaded (start with --draft MODEL)"
        }
    }
}

extension LoadedModel {
    /// A fresh KV cache (or recurrent state) of this model's cache types.
    public func makeCache(capacity: Int) -> any SequenceState { model.makeCache(capacity: capacity, types: cacheTypes) }

    /// The forward pass with every sequence at the adapters' default scales (perplexity, benchmarks).
    public func forward(_ batch: [BatchSequence], pool: ThreadPool) throws -> [[Float]] {
        let scales = adapterScales
        return try model.forward(batch.map { var seq = $0; seq.loraScales = scales; return seq }, pool: pool, adapters: adapters)
    }

    /// Tokens for a rendered chat prompt: special tokens parsed, BOS added once even when the
    /// template already wrote it.
    public func promptTokens(for rendered: String) -> [TokenID] {
        var tokens = tokenizer.encode(rendered, addSpecial: true, parseSpecial: true)
        if let bos = tokenizer.bosToken, tokens.count >= 2, tokens[0] == bos, tokens[1] == bos {
            tokens.removeFirst()
        }
        return tokens
    }
}
