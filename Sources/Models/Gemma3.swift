import GGUF
import Kernels

/// Gemma 3: scaled embeddings, q/k RMSNorm, norms after attention and feed-forward as well
/// as before, a GELU-gated feed-forward, and sliding-window layers (with their own RoPE base)
/// interleaved with global ones.
public final class Gemma3: AttentionModel {
    struct Layer: Sendable {
        let attentionNorm: RMSNorm
        let attention: Attention
        let postAttentionNorm: RMSNorm
        let feedForwardNorm: RMSNorm
        let feedForward: GatedFeedForward
        let postFeedForwardNorm: RMSNorm
    }

    /// Every `slidingWindowPattern`-th layer attends globally; the others see a window.
    static let slidingWindowPattern = 6
    /// RoPE base of the sliding-window layers (the metadata's freq_base is the global layers').
    static let localRoPEBase: Float = 10_000

    public let config: ModelConfig
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon, headDim = config.keyLength
        // the attention kernels build position ranges from the window unchecked
        if let window = config.slidingWindow, window < 1 {
            throw ModelError.inconsistentMetadata("gemma3.attention.sliding_window is \(window)")
        }
        head = try OutputHead(file: file, config: config)
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            let isLocal = (i + 1) % Gemma3.slidingWindowPattern != 0
            let rope = RoPE(style: .halves, dimensions: config.ropeDimensionCount,
                            base: isLocal ? Gemma3.localRoPEBase : config.ropeFreqBase,
                            positionScale: isLocal ? 1 : config.ropeLinearScale)
            var attention = try Attention(file: file, layer: i, config: config, rope: rope)
            attention.queryNorm = try RMSNorm(file: file, name: p + "attn_q_norm.weight", count: headDim, epsilon: eps)
            attention.keyNorm = try RMSNorm(file: file, name: p + "attn_k_norm.weight", count: headDim, epsilon: eps)
            attention.window = isLocal ? config.slidingWindow : nil
            // as llama.cpp: q · 1/√head_dim after RoPE, scores unscaled
            attention.queryScale = attention.scale
            attention.scale = 1
            return Layer(
                attentionNorm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: eps),
                attention: attention,
                postAttentionNorm: try RMSNorm(file: file, name: p + "post_attention_norm.weight", count: d, epsilon: eps),
                feedForwardNorm: try RMSNorm(file: file, name: p + "ffn_norm.weight", count: d, epsilon: eps),
                feedForward: try GatedFeedForward(file: file, prefix: p, dimension: d,
                                                  hidden: config.feedForwardLength, activation: .gelu),
                postFeedForwardNorm: try RMSNorm(file: file, name: p + "post_ffw_norm.weight", count: d, epsilon: eps))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        x.scale(by: Float(config.embeddingLength).squareRoot())
        let batching = referenceBatching(batch), lastBatching = lastLayerReferenceBatching(batch)
        for (i, layer) in layers.enumerated() {
            let attended = layer.attention(layer.attentionNorm(x, pool: pool), layer: i, batch: batch, pool: pool)
            layer.postAttentionNorm.normalize(attended, into: attended, pool: pool)
            x += attended
            let fed = layer.feedForward(layer.feedForwardNorm(x, pool: pool), pool,
                                        batching: i == layers.count - 1 ? lastBatching : batching)
            layer.postFeedForwardNorm.normalize(fed, into: fed, pool: pool)
            x += fed
        }
        return head(x, batch: batch, pool: pool)
    }
}
