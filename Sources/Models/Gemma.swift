import GGUF
import Kernels

/// Gemma 2 and 3: scaled embeddings, norms after attention and feed-forward as well as before,
/// a GELU-gated feed-forward, q scaled after RoPE instead of the scores, and sliding-window
/// layers interleaved with global ones. Gemma 3 adds per-head q/k RMSNorm; Gemma 2 caps the
/// attention scores with tanh instead.
public final class Gemma: AttentionModel {
    /// What llama.cpp does differently for each generation.
    public struct Variant: Sendable {
        /// Without `attention.sliding_window_pattern`, every n-th layer attends globally.
        var defaultSlidingWindowPattern: Int
        /// The window without `attention.sliding_window` (nil: no sliding-window layers).
        var defaultSlidingWindow: Int?
        /// Per-head RMSNorm of q and k before RoPE.
        var queryKeyNorm: Bool
        /// Attention scores capped by `attn_logit_softcapping` (this default without the key).
        var defaultAttentionSoftCap: Float?
        /// Logits capped by `final_logit_softcapping`, this default without the key (nil: none).
        var defaultFinalSoftCap: Float?
        /// Sliding-window layers rotate with `rope.freq_base_swa`, else this base (nil: the
        /// global base), and with the file's RoPE scaling or without it.
        var slidingWindowRoPEBase: Float?
        var slidingWindowRoPEScaled: Bool
        /// The embedding table is always the output projection (no `output.weight`).
        var tiedEmbeddings: Bool
        /// The layer count by which llama.cpp tells the 27B model, whose q is scaled by
        /// 1/√(embedding / heads) instead of 1/√head_dim.
        var layerCountOf27B: Int

        public static let gemma2 = Variant(
            defaultSlidingWindowPattern: 2, defaultSlidingWindow: 4096, queryKeyNorm: false,
            defaultAttentionSoftCap: 50, defaultFinalSoftCap: 30, slidingWindowRoPEBase: nil,
            slidingWindowRoPEScaled: true, tiedEmbeddings: true, layerCountOf27B: 46)
        public static let gemma3 = Variant(
            defaultSlidingWindowPattern: 6, defaultSlidingWindow: nil, queryKeyNorm: true,
            defaultAttentionSoftCap: nil, defaultFinalSoftCap: nil, slidingWindowRoPEBase: 10_000,
            slidingWindowRoPEScaled: false, tiedEmbeddings: false, layerCountOf27B: 62)
    }

    public let config: ModelConfig
    let embedding: Embedding
    let layers: [DecoderLayer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig, variant: Variant) throws {
        var config = config
        config.slidingWindow = config.slidingWindow ?? variant.defaultSlidingWindow
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon, headDim = config.keyLength
        try checkRoPEScaling(config)
        // the attention kernels build position ranges from the window unchecked; gemma2 windows
        // every layer the pattern names, so it needs a positive one (gemma3: 0 means none)
        if let window = config.slidingWindow, window < 0 || (window == 0 && variant.defaultSlidingWindow != nil) {
            throw ModelError.inconsistentMetadata("\(config.architecture).attention.sliding_window is \(window)")
        }
        var head = try OutputHead(file: file, config: config, tiedEmbeddings: variant.tiedEmbeddings)
        head.softCap = file.arch("final_logit_softcapping")?.float ?? variant.defaultFinalSoftCap
        self.head = head
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        let isSlidingWindow = try slidingWindowLayers(file: file, config: config,
                                                      defaultPattern: variant.defaultSlidingWindowPattern)
        let localBase = file.arch("rope.freq_base_swa")?.float ?? variant.slidingWindowRoPEBase ?? config.ropeFreqBase
        let attentionSoftCap = variant.defaultAttentionSoftCap.map { file.arch("attn_logit_softcapping")?.float ?? $0 }
        // q · this after RoPE, scores unscaled (as llama.cpp)
        let queryScale = 1 / Float(config.blockCount == variant.layerCountOf27B ? d / config.headCount : headDim).squareRoot()
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            let isLocal = isSlidingWindow[i]
            let rope = RoPE(style: .halves, dimensions: config.ropeDimensionCount,
                            base: isLocal ? localBase : config.ropeFreqBase,
                            positionScale: isLocal && !variant.slidingWindowRoPEScaled ? 1 : config.ropeLinearScale,
                            yarn: config.ropeYaRN, attentionFactor: config.ropeAttentionFactor)
            var attention = try Attention(file: file, layer: i, config: config, rope: rope, outputBias: false)
            if variant.queryKeyNorm {
                attention.queryNorm = try RMSNorm(file: file, name: p + "attn_q_norm.weight", count: headDim, epsilon: eps)
                attention.keyNorm = try RMSNorm(file: file, name: p + "attn_k_norm.weight", count: headDim, epsilon: eps)
            }
            attention.window = isLocal ? config.slidingWindow : nil
            attention.softCap = attentionSoftCap
            attention.queryScale = queryScale
            attention.scale = 1
            return DecoderLayer(
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
        runDecoderLayers(layers, x, batch: batch, pool: pool)
        return head(x, batch: batch, pool: pool)
    }
}
