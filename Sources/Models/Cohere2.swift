import GGUF
import Kernels

/// Command R7B (cohere2): each layer's attention and SwiGLU feed-forward read the same
/// LayerNorm output (no bias) and both add to the residual; sliding-window layers rotate q and
/// k with RoPE (interleaved pairs), global layers not at all; the embedding table is the output
/// projection and the logits are multiplied by `logit_scale`.
public final class Cohere2: AttentionModel {
    struct Layer: Sendable {
        let norm: LayerNorm
        let attention: Attention
        let feedForward: GatedFeedForward
    }

    /// Without `attention.sliding_window_pattern`, every 4th layer attends globally.
    static let defaultSlidingWindowPattern = 4

    public let config: ModelConfig
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength
        let eps = try requiredFloat(file, config, "attention.layer_norm_epsilon")
        try checkRoPEScaling(config)
        guard config.keyLength == config.valueLength else {
            throw ModelError.inconsistentMetadata(
                "cohere2.attention.key_length (\(config.keyLength)) differs from value_length (\(config.valueLength))")
        }
        // llama.cpp requires the window; with 0 its sliding-window layers would see nothing
        guard let window = config.slidingWindow else { throw ModelError.missingMetadata("cohere2.attention.sliding_window") }
        guard window > 0 else { throw ModelError.inconsistentMetadata("cohere2.attention.sliding_window is \(window)") }
        var head = try OutputHead(file: file, config: config,
                                  norm: LayerNorm(file: file, name: "output_norm", count: d, epsilon: eps, bias: false),
                                  tiedEmbeddings: true)
        let logitScale = try requiredFloat(file, config, "logit_scale")
        head.logitScale = logitScale == 0 ? nil : logitScale
        self.head = head
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        let isSlidingWindow = try slidingWindowLayers(file: file, config: config,
                                                      defaultPattern: Cohere2.defaultSlidingWindowPattern)
        let rope = RoPE(style: .interleaved, dimensions: config.ropeDimensionCount, base: config.ropeFreqBase,
                        positionScale: config.ropeLinearScale, yarn: config.ropeYaRN,
                        attentionFactor: config.ropeAttentionFactor)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            var attention = try Attention(file: file, layer: i, config: config, rope: rope, outputBias: false)
            attention.appliesRoPE = isSlidingWindow[i]
            attention.window = isSlidingWindow[i] ? window : nil
            return Layer(
                norm: try LayerNorm(file: file, name: p + "attn_norm", count: d, epsilon: eps, bias: false),
                attention: attention,
                feedForward: try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                                  activation: .silu, biases: false, scales: true))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        let batching = referenceBatching(batch), lastBatching = lastLayerReferenceBatching(batch)
        for (i, layer) in layers.enumerated() {
            let normalized = layer.norm(x, pool: pool)
            let attended = layer.attention(normalized, layer: i, batch: batch, pool: pool)
            let fed = layer.feedForward(normalized, pool, batching: i == layers.count - 1 ? lastBatching : batching)
            // as llama.cpp: (x + feed-forward) + attention
            x += fed
            x += attended
        }
        return head(x, batch: batch, pool: pool)
    }
}
