import GGUF
import Kernels

/// OLMo 2 (and OLMo 3's sliding-window layers): no norms before attention and feed-forward,
/// RMSNorm after them instead, and q/k RMSNorm over the whole projection (not per head),
/// GPT-NeoX RoPE, a SwiGLU feed-forward. EXAONE 4 is a variant (Exaone4.swift).
public final class Olmo2: AttentionModel {
    /// What the architectures built on this graph change.
    public struct Variant: Sendable {
        /// q/k RMSNorm per head (exaone4) instead of over the whole projection.
        var queryKeyNormPerHead = false
        /// Each layer's sliding window (nil: the layer attends globally).
        var slidingWindows: @Sendable (GGUFFile, ModelConfig) throws -> [Int?] = { file, config in
            try slidingWindowLayers(file: file, config: config, defaultPattern: Olmo2.defaultSlidingWindowPattern)
                .map { $0 ? config.slidingWindow : nil }
        }
        /// With sliding-window layers present, only they rotate q and k (exaone4).
        var ropeOnlyInWindowLayers = false
        /// Llama 3-style per-frequency RoPE divisors (`rope_freqs.weight`), when the file has them.
        var ropeFrequencyFactors = false
        /// The file must have its own `output.weight` (OLMo 2, as llama.cpp loads it); without
        /// it, the token embeddings double as the output projection (exaone4).
        var outputProjectionRequired = true

        public static let olmo2 = Variant()
    }

    /// Without `attention.sliding_window_pattern`, every 4th layer attends globally.
    static let defaultSlidingWindowPattern = 4

    public let config: ModelConfig
    let embedding: Embedding
    let layers: [DecoderLayer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig, variant: Variant = .olmo2) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon
        guard !variant.outputProjectionRequired || file.tensor(named: "output.weight") != nil else {
            throw ModelError.missingTensor("output.weight")
        }
        head = try OutputHead(file: file, config: config)
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        let windows = try variant.slidingWindows(file, config)
        let hasWindows = windows.contains { $0 != nil }
        let frequencyFactors = variant.ropeFrequencyFactors && file.tensor(named: "rope_freqs.weight") != nil
            ? try Vector(file: file, name: "rope_freqs.weight", count: config.ropeDimensionCount / 2).values : nil
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            // sliding-window layers rotate without the file's RoPE scaling, as llama.cpp
            let rope = RoPE(style: .halves, dimensions: config.ropeDimensionCount, base: config.ropeFreqBase,
                            positionScale: windows[i] != nil ? 1 : config.ropeLinearScale,
                            frequencyFactors: frequencyFactors, yarn: windows[i] != nil ? nil : config.ropeYaRN,
                            attentionFactor: config.ropeAttentionFactor)
            var attention = try Attention(file: file, layer: i, config: config, rope: rope, outputBias: false)
            let (queryNormWidth, keyNormWidth) = variant.queryKeyNormPerHead
                ? (config.keyLength, config.keyLength)
                : (config.headCount * config.keyLength, config.headCountKV * config.keyLength)
            attention.queryNorm = try RMSNorm(file: file, name: p + "attn_q_norm.weight", count: queryNormWidth, epsilon: eps)
            attention.keyNorm = try RMSNorm(file: file, name: p + "attn_k_norm.weight", count: keyNormWidth, epsilon: eps)
            attention.window = windows[i]
            if variant.ropeOnlyInWindowLayers && hasWindows { attention.appliesRoPE = windows[i] != nil }
            return DecoderLayer(
                attentionNorm: nil,
                attention: attention,
                postAttentionNorm: try RMSNorm(file: file, name: p + "post_attention_norm.weight", count: d, epsilon: eps),
                feedForwardNorm: nil,
                feedForward: try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                                  activation: .silu, biases: false, scales: false),
                postFeedForwardNorm: try RMSNorm(file: file, name: p + "post_ffw_norm.weight", count: d, epsilon: eps))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        runDecoderLayers(layers, x, batch: batch, pool: pool)
        return head(x, batch: batch, pool: pool)
    }
}
