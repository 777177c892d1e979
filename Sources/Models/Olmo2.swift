import GGUF
import Kernels

/// OLMo 2 (and OLMo 3's sliding-window layers): no norms before attention and feed-forward,
/// RMSNorm after them instead, and q/k RMSNorm over the whole projection (not per head),
/// GPT-NeoX RoPE, a SwiGLU feed-forward.
public final class Olmo2: AttentionModel {
    struct Layer: Sendable {
        let attention: Attention
        let postAttentionNorm: RMSNorm
        let feedForward: GatedFeedForward
        let postFeedForwardNorm: RMSNorm
    }

    /// Without `attention.sliding_window_pattern`, every 4th layer attends globally.
    static let defaultSlidingWindowPattern = 4

    public let config: ModelConfig
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon
        head = try OutputHead(file: file, config: config)
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        let isSlidingWindow = try slidingWindowLayers(file: file, config: config, defaultPattern: Olmo2.defaultSlidingWindowPattern)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            // sliding-window layers rotate without the file's RoPE scaling, as llama.cpp
            let rope = RoPE(style: .halves, dimensions: config.ropeDimensionCount, base: config.ropeFreqBase,
                            positionScale: isSlidingWindow[i] ? 1 : config.ropeLinearScale,
                            attentionFactor: config.ropeAttentionFactor)
            var attention = try Attention(file: file, layer: i, config: config, rope: rope, outputBias: false)
            attention.queryNorm = try RMSNorm(file: file, name: p + "attn_q_norm.weight",
                                              count: config.headCount * config.keyLength, epsilon: eps)
            attention.keyNorm = try RMSNorm(file: file, name: p + "attn_k_norm.weight",
                                            count: config.headCountKV * config.keyLength, epsilon: eps)
            attention.window = isSlidingWindow[i] ? config.slidingWindow : nil
            return Layer(
                attention: attention,
                postAttentionNorm: try RMSNorm(file: file, name: p + "post_attention_norm.weight", count: d, epsilon: eps),
                feedForward: try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                                  activation: .silu, biases: false, scales: false),
                postFeedForwardNorm: try RMSNorm(file: file, name: p + "post_ffw_norm.weight", count: d, epsilon: eps))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        let batching = referenceBatching(batch), lastBatching = lastLayerReferenceBatching(batch)
        for (i, layer) in layers.enumerated() {
            let attended = layer.attention(x, layer: i, batch: batch, pool: pool)
            layer.postAttentionNorm.normalize(attended, into: attended, pool: pool)
            x += attended
            let fed = layer.feedForward(x, pool, batching: i == layers.count - 1 ? lastBatching : batching)
            layer.postFeedForwardNorm.normalize(fed, into: fed, pool: pool)
            x += fed
        }
        return head(x, batch: batch, pool: pool)
    }
}
