import GGUF
import Kernels

/// Maps `general.architecture` to the code that builds that model from a GGUF file.
public enum ModelRegistry {
    public typealias Builder = @Sendable (GGUFFile, ModelConfig) throws -> any LanguageModel

    static let builders: [String: Builder] = [
        "llama": { try Llama(file: $0, config: $1) },
        "qwen2": { try Llama(file: $0, config: $1, biases: true, ropeStyle: .halves) },
        "gemma3": { try Gemma3(file: $0, config: $1) },
        "mamba": { try Mamba(file: $0, config: $1) },
    ]

    public static var supported: [String] { builders.keys.sorted() }

    public static func load(_ file: GGUFFile) throws -> any LanguageModel {
        let config = try ModelConfig(file: file)
        guard let build = builders[config.architecture] else {
            throw ModelError.unsupportedArchitecture(config.architecture)
        }
        return try build(file, config)
    }
}

/// A model turns a batch of token sequences into next-token logits.
public protocol LanguageModel: AnyObject, Sendable {
    var config: ModelConfig { get }
    /// Runs the new tokens of every sequence through the network, writing their keys and
    /// values into the sequences' caches at positions `cache.count...`. Returns one logits row
    /// per requested position (see `BatchSequence.allLogits`), in batch order.
    func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]]
    /// Fresh per-sequence state (KV cache or recurrent state) for up to `capacity` tokens.
    func makeCache(capacity: Int) -> any SequenceState
}

/// Attention models keep a KV cache.
public protocol AttentionModel: LanguageModel {}

extension AttentionModel {
    public func makeCache(capacity: Int) -> any SequenceState { KVCache(config: config, capacity: capacity) }
}

extension LanguageModel {
    /// The forward pass: checks the caches have room, computes, then advances them.
    public func forward(_ batch: [BatchSequence], pool: ThreadPool) throws -> [[Float]] {
        for seq in batch { try seq.cache.reserve(seq.tokens.count) }
        let logits = computeLogits(batch, pool: pool)
        for seq in batch { seq.cache.advance(by: seq.tokens.count) }
        return logits
    }

}
