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

    /// Without `attention.sliding_window_pattern`, every 6th layer attends globally and the
    /// others see a window.
    static let defaultSlidingWindowPattern = 6

    public let config: ModelConfig
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon, headDim = config.keyLength
        // the attention kernels build position ranges from the window unchecked (0: no window)
        if let window = config.slidingWindow, window < 0 {
            throw ModelError.inconsistentMetadata("gemma3.attention.sliding_window is \(window)")
        }
        var head = try OutputHead(file: file, config: config)
        head.softCap = file.arch("final_logit_softcapping")?.float
        self.head = head
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        let isSlidingWindow = try slidingWindowLayers(file: file, config: config, defaultPattern: Gemma3.defaultSlidingWindowPattern)
        // the metadata's freq_base is the global layers'; sliding-window layers have their own
        let localBase = file.arch("rope.freq_base_swa")?.float ?? 10_000
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            let isLocal = isSlidingWindow[i]
            let rope = RoPE(style: .halves, dimensions: config.ropeDimensionCount,
                            base: isLocal ? localBase : config.ropeFreqBase,
                            positionScale: isLocal ? 1 : config.ropeLinearScale)
            var attention = try Attention(file: file, layer: i, config: config, rope: rope, outputBias: false)
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
                                                  hidden: config.feedForwardLength, activation: .gelu,
                                                  biases: false, scales: false),
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
