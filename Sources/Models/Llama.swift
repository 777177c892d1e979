import GGUF
import Kernels

/// Llama 2/3, Mistral, SmolLM: pre-norm decoder with RMSNorm, RoPE, grouped-query attention
/// and a SwiGLU feed-forward — or, when the file declares experts (Mixtral), a sparse mixture
/// of SwiGLU experts. Qwen2 is the same network with GPT-NeoX RoPE (its q/k/v biases, like any
/// projection's optional bias and scale, are read by `Linear`); Qwen3 adds per-head q/k RMSNorm;
/// SmolLM3 leaves RoPE out of every 4th layer.
public final class Llama: AttentionModel {
    struct Layer: Sendable {
        let attentionNorm: RMSNorm
        let attention: Attention
        let feedForwardNorm: RMSNorm
        let feedForward: any FeedForward
    }

    public let config: ModelConfig
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead

    /// The variants llama.cpp builds on this graph.
    public struct Variant: Sendable {
        /// GPT-NeoX RoPE (qwen2, qwen3) instead of llama's interleaved pairs.
        public var ropeStyle: RoPEStyle = .interleaved
        /// Whether the dense feed-forward applies its projections' optional biases and scales.
        public var feedForwardBiases = true
        public var feedForwardScales = true
        /// Per-head RMSNorm of q and k before RoPE (qwen3).
        public var queryKeyNorm = false
        /// Every n-th layer has no RoPE (smollm3: 4).
        public var noRoPELayerStep: Int?

        public static let llama = Variant()
        public static let qwen2 = Variant(ropeStyle: .halves, feedForwardBiases: false, feedForwardScales: false)
        public static let qwen3 = Variant(ropeStyle: .halves, feedForwardBiases: false, queryKeyNorm: true)
        public static let smollm3 = Variant(feedForwardScales: false, noRoPELayerStep: 4)
    }

    public init(file: GGUFFile, config: ModelConfig, variant: Variant = .llama) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon
        // Llama 3.1+ files carry per-frequency divisors of the RoPE angles (rope_freqs.weight)
        let frequencyFactors = file.tensor(named: "rope_freqs.weight") != nil
            ? try Vector(file: file, name: "rope_freqs.weight", count: config.ropeDimensionCount / 2).values : nil
        let rope = RoPE(style: variant.ropeStyle, dimensions: config.ropeDimensionCount, base: config.ropeFreqBase,
                        positionScale: config.ropeLinearScale, frequencyFactors: frequencyFactors)
        head = try OutputHead(file: file, config: config)
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            var attention = try Attention(file: file, layer: i, config: config, rope: rope)
            if let step = variant.noRoPELayerStep, (i + 1) % step == 0 { attention.appliesRoPE = false }
            if variant.queryKeyNorm {
                attention.queryNorm = try RMSNorm(file: file, name: p + "attn_q_norm.weight", count: config.keyLength, epsilon: eps)
                attention.keyNorm = try RMSNorm(file: file, name: p + "attn_k_norm.weight", count: config.keyLength, epsilon: eps)
            }
            return Layer(
                attentionNorm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: eps),
                attention: attention,
                feedForwardNorm: try RMSNorm(file: file, name: p + "ffn_norm.weight", count: d, epsilon: eps),
                feedForward: config.expertCount > 0
                    ? try MixtureOfExperts(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                           experts: config.expertCount, used: config.expertUsedCount)
                    : try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                           activation: .silu, biases: variant.feedForwardBiases,
                                           scales: variant.feedForwardScales))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        let batching = referenceBatching(batch), lastBatching = lastLayerReferenceBatching(batch)
        for (i, layer) in layers.enumerated() {
            x += layer.attention(layer.attentionNorm(x, pool: pool), layer: i, batch: batch, pool: pool)
            x += layer.feedForward(layer.feedForwardNorm(x, pool: pool), pool,
                                   batching: i == layers.count - 1 ? lastBatching : batching)
        }
        return head(x, batch: batch, pool: pool)
    }
}
