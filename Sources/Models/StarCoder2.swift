import GGUF
import Kernels

/// StarCoder 2: a pre-norm decoder with LayerNorm (weight and bias), biases on the projections
/// (optional on q/k/v, required on the output and the MLP), GPT-NeoX RoPE, and a GELU MLP
/// without a gate.
public final class StarCoder2: AttentionModel {
    public let config: ModelConfig
    let embedding: Embedding
    let layers: [DecoderLayer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength
        let eps = try requiredFloat(file, config, "attention.layer_norm_epsilon")
        try checkRoPEScaling(config)
        // llama.cpp's graph asserts both: one head size, rotated whole
        guard config.keyLength == config.valueLength, config.ropeDimensionCount == config.keyLength else {
            throw ModelError.inconsistentMetadata(
                "starcoder2 needs key_length (\(config.keyLength)) = value_length (\(config.valueLength)) = rope.dimension_count (\(config.ropeDimensionCount))")
        }
        head = try OutputHead(file: file, config: config,
                              norm: LayerNorm(file: file, name: "output_norm", count: d, epsilon: eps, bias: true))
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        let rope = RoPE(style: .halves, dimensions: config.ropeDimensionCount, base: config.ropeFreqBase,
                        positionScale: config.ropeLinearScale, yarn: config.ropeYaRN,
                        attentionFactor: config.ropeAttentionFactor)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            let attention = try Attention(file: file, layer: i, config: config, rope: rope)
            guard attention.output.bias != nil else { throw ModelError.missingTensor(p + "attn_output.bias") }
            return DecoderLayer(
                attentionNorm: try LayerNorm(file: file, name: p + "attn_norm", count: d, epsilon: eps, bias: true),
                attention: attention,
                feedForwardNorm: try LayerNorm(file: file, name: p + "ffn_norm", count: d, epsilon: eps, bias: true),
                feedForward: try UngatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        runDecoderLayers(layers, x, batch: batch, pool: pool)
        return head(x, batch: batch, pool: pool)
    }
}
