import GGUF
import Kernels

/// Maps `general.architecture` to the code that builds that model from a GGUF file.
public enum ModelRegistry {
    public typealias Builder = @Sendable (GGUFFile, ModelConfig) throws -> any LanguageModel

    static let builders: [String: Builder] = [
        "llama": { try Llama(file: $0, config: $1) },
        "qwen2": { try Llama(file: $0, config: $1, variant: .qwen2) },
        "qwen3": { try Llama(file: $0, config: $1, variant: .qwen3) },
        "qwen3moe": { try Llama(file: $0, config: $1, variant: .qwen3moe) },
        "mistral3": { try Llama(file: $0, config: $1, variant: .mistral3) },
        "smollm3": { try Llama(file: $0, config: $1, variant: .smollm3) },
        "granite": { try Llama(file: $0, config: $1, variant: .granite) },
        "granitemoe": { try Llama(file: $0, config: $1, variant: .granitemoe) },
        "deepseek2": { try DeepSeek2(file: $0, config: $1) },
        "glm4": { try GLM4(file: $0, config: $1) },
        "gpt-oss": { try GptOss(file: $0, config: $1) },
        "gemma2": { try Gemma(file: $0, config: $1, variant: .gemma2) },
        "gemma3": { try Gemma(file: $0, config: $1, variant: .gemma3) },
        "olmo2": { try Olmo2(file: $0, config: $1) },
        "exaone4": { try Olmo2(file: $0, config: $1, variant: .exaone4) },
        "phi3": { try Phi3(file: $0, config: $1) },
        "starcoder2": { try StarCoder2(file: $0, config: $1) },
        "bert": { try BERT(file: $0, config: $1) },
        "cohere2": { try Cohere2(file: $0, config: $1) },
        "mamba": { try Mamba(file: $0, config: $1) },
        "mamba2": { try Mamba2(file: $0, config: $1) },
        "lfm2": { try LFM2(file: $0, config: $1) },
    ]

    public static var supported: [String] { builders.keys.sorted() }

    /// The architectures whose graphs read `rope.scaling.yarn_log_multiplier`; for the others a
    /// file that sets it is refused rather than run without it.
    static let readsYaRNLogMultiplier: Set<String> = ["deepseek2"]

    /// `repackWeights`: whether matrices may leave the file's mapping for a layout the CPU's
    /// kernels read faster (`WeightRepacking`); false keeps every weight in the mapping, as
    /// `MemoryBudget` needs.
    public static func load(_ file: GGUFFile, repackWeights: Bool = WeightRepacking.enabled) throws -> any LanguageModel {
        let config = try ModelConfig(file: file)
        guard let build = builders[config.architecture] else {
            throw ModelError.unsupportedArchitecture(config.architecture)
        }
        if config.ropeYaRN != nil, config.ropeYaRNLogMultiplier != 0, !readsYaRNLogMultiplier.contains(config.architecture) {
            throw ModelError.unsupportedArchitecture(
                "\(config.architecture) with rope.scaling.yarn_log_multiplier \(config.ropeYaRNLogMultiplier)")
        }
        // llama.cpp's rule: the embedding table (and the output head) have one row per
        // vocabulary entry, `vocab_size` or else the tokenizer's token count
        for name in ["token_embd.weight", "output.weight"] {
            if let table = file.tensor(named: name), config.vocabularySize > 0, table.rowCount != config.vocabularySize {
                throw ModelError.badTensorShape(name: name, expected: [config.embeddingLength, config.vocabularySize],
                                                found: table.shape)
            }
        }
        let unsupported = unsupportedTensorTypes(file)
        guard unsupported.isEmpty else { throw ModelError.unsupportedTensorTypes(unsupported) }
        // Repacked tensors drop their file pages once copied; a large page-cache folio mapped whole
        // (ext4 since Linux 6.16) when a neighbouring tensor used in place is read would count
        // their bytes again (Gemma 3: +41 MiB resident), so the mapping takes small pages only.
        if repackWeights { file.advise(.noHugePages) }
        let model = try WeightRepacking.$enabled.withValue(repackWeights) { try build(file, config) }
        let predictionLayers = Set((config.blockCount..<config.blockCount + config.predictionLayerCount).map { "blk.\($0)." })
        let unused = file.unreadTensors.filter { tensor in
            // llama.cpp loads every projection's optional `.scale` and `.input_scale` for every
            // architecture and applies them only where its graph does (input scales only for
            // NVFP4 weights, which are refused above); the graphs here apply the same ones.
            // A classifier head (`cls.*`) only scores in llama.cpp's reranking mode.
            !predictionLayers.contains { tensor.name.hasPrefix($0) } && !tensor.name.hasPrefix("cls.")
                && !tensor.name.hasSuffix(".scale") && !tensor.name.hasSuffix(".input_scale")
        }
        guard unused.isEmpty else {
            throw ModelError.unusedTensors(architecture: config.architecture, names: unused.map(\.name))
        }
        return model
    }
}

/// The weight types in `file` that Swiftlet has no kernels for, in file order of first use.
public func unsupportedTensorTypes(_ file: GGUFFile) -> [UnsupportedTensorType] {
    var found: [(type: TensorType, count: Int, example: String)] = []
    for tensor in file.tensors where !tensor.type.hasWeightKernels {
        if let i = found.firstIndex(where: { $0.type == tensor.type }) {
            found[i].count += 1
        } else {
            found.append((tensor.type, 1, tensor.name))
        }
    }
    return found.map { UnsupportedTensorType(type: $0.type, count: $0.count, example: $0.example) }
}

/// A model turns a batch of token sequences into next-token logits.
public protocol LanguageModel: AnyObject, Sendable {
    var config: ModelConfig { get }
    /// Runs the new tokens of every sequence through the network, writing their keys and
    /// values into the sequences' caches at positions `cache.count...`. Returns one logits row
    /// per requested position (see `BatchSequence.allLogits`), in batch order.
    func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]]
    /// Fresh per-sequence state (KV cache or recurrent state) for up to `capacity` tokens; a KV
    /// cache's rows of `types` (checked with `ModelConfig.checkCacheTypes`; recurrent state is
    /// float whatever they say, as in llama.cpp).
    func makeCache(capacity: Int, types: KVCacheTypes) -> any SequenceState
    /// An encoder (BERT): attention sees the whole sequence both ways, so a sequence must go
    /// through in one pass, and its output is hidden states (embeddings), never logits.
    var isEncoder: Bool { get }
    /// A reranker's classification head (BERT's `cls.*`), nil for other models.
    var classifier: SequenceClassifier? { get }
    /// Why the KV cache must stay F16 for this model, or nil when Q8_0/Q4_0 rows are fine.
    var quantizedCacheRefusal: String? { get }
}

extension LanguageModel {
    public func makeCache(capacity: Int) -> any SequenceState { makeCache(capacity: capacity, types: .f16) }
    public var isEncoder: Bool { false }
    public var classifier: SequenceClassifier? { nil }
    public var quantizedCacheRefusal: String? { nil }
}

/// Attention models keep a KV cache.
public protocol AttentionModel: LanguageModel {}

extension AttentionModel {
    public func makeCache(capacity: Int, types: KVCacheTypes) -> any SequenceState {
        KVCache(config: config, capacity: capacity, types: types)
    }
}

extension LanguageModel {
    /// The forward pass: checks the caches have room, computes, then advances them.
    /// A batch of more than `activationMemoryPassTokens` tokens runs as several passes of at
    /// most that many (a sequence's later tokens in later passes, seeing the earlier ones
    /// through its cache), so activation memory stays bounded; the logits are the same floats.
    /// `adapters`: the LoRA adapters the sequences' `loraScales` refer to.
    public func forward(_ batch: [BatchSequence], pool: ThreadPool, adapters: [LoRAAdapter] = []) throws -> [[Float]] {
        for seq in batch { try seq.cache.reserve(seq.tokens.count) }
        var logits: [[Float]] = []
        // an encoder's tokens must all see each other: one pass, whatever its length
        for pass in isEncoder ? [batch] : microBatches(batch) {
            let rows = LoRAPass.$current.withValue(LoRAPass(adapters: adapters, batch: pass)) {
                computeLogits(pass, pool: pool)
            }
            var next = 0
            for piece in pass {
                let count = !piece.logitsNeeded ? 0 : piece.allLogits ? piece.tokens.count : 1
                logits += rows[next..<next + count]
                next += count
                piece.cache.advance(by: piece.tokens.count)
            }
        }
        return logits
    }
}

/// Most tokens one `computeLogits` pass processes: a bound on activation memory (each layer
/// holds a few pass-rows × layer-width matrices). Not a numerical choice: the kernels round
/// by llama.cpp's micro-batches (`ReferenceBatching`), whatever the pass size.
public let activationMemoryPassTokens = 128

/// Splits a batch into passes of at most `activationMemoryPassTokens` tokens, in order; only a
/// sequence's final piece computes logits unless all positions' logits are asked for.
func microBatches(_ batch: [BatchSequence]) -> [[BatchSequence]] {
    var passes: [[BatchSequence]] = [[]]
    var count = 0
    for seq in batch {
        var start = 0
        repeat {
            if count == activationMemoryPassTokens {
                passes.append([])
                count = 0
            }
            let n = min(seq.tokens.count - start, activationMemoryPassTokens - count)
            var piece = BatchSequence(tokens: Array(seq.tokens[start..<start + n]), cache: seq.cache, allLogits: seq.allLogits,
                                      hiddenStates: seq.hiddenStates)
            piece.logitsNeeded = seq.allLogits || start + n == seq.tokens.count
            piece.asDecodes = seq.asDecodes
            piece.batching = seq.asDecodes ? .ungrouped : ReferenceBatching(from: start, of: seq.tokens.count)
            piece.loraScales = seq.loraScales
            passes[passes.count - 1].append(piece)
            count += n
            start += n
        } while start < seq.tokens.count
    }
    return passes

}
