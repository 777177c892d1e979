import GGUF
import Kernels

/// Phi-3 and Phi-4: Llama's pre-norm decoder with fused projections (`attn_qkv`, or separate
/// q/k/v, and `ffn_up` holding the SwiGLU gate and up), GPT-NeoX RoPE whose frequencies are
/// divided by per-frequency factors for short or long contexts, and q scaled after RoPE. The
/// sliding window a file may declare is ignored, as llama.cpp does.
public final class Phi3: AttentionModel {
    public let config: ModelConfig
    let embedding: Embedding
    let layers: [DecoderLayer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon
        try checkRoPEScaling(config)
        guard config.keyLength == config.valueLength else {
            throw ModelError.inconsistentMetadata(
                "phi3.attention.key_length (\(config.keyLength)) differs from value_length (\(config.valueLength))")
        }
        head = try OutputHead(file: file, config: config)
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        // 128k-context files carry factors for contexts up to and beyond the original one
        func factors(_ name: String) throws -> [Float]? {
            guard file.tensor(named: name) != nil else { return nil }
            return try Vector(file: file, name: name, count: config.ropeDimensionCount / 2).values
        }
        let short = try factors("rope_factors_short.weight"), long = try factors("rope_factors_long.weight")
        func rope(_ frequencyFactors: [Float]?) -> RoPE {
            RoPE(style: .halves, dimensions: config.ropeDimensionCount, base: config.ropeFreqBase,
                 positionScale: config.ropeLinearScale, frequencyFactors: frequencyFactors, yarn: config.ropeYaRN,
                 attentionFactor: config.ropeAttentionFactor)
        }
        let longContextRoPE = short == nil && long == nil ? nil
            : Attention.LongContextRoPE(rope: rope(long), originalContextLength: config.ropeOriginalContextLength)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            var attention = try Attention(file: file, layer: i, config: config, rope: rope(short), outputBias: false)
            attention.longContextRoPE = longContextRoPE
            // as llama.cpp: q · 1/√head_dim after RoPE, scores unscaled
            attention.queryScale = attention.scale
            attention.scale = 1
            return DecoderLayer(
                attentionNorm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: eps),
                attention: attention,
                feedForwardNorm: try RMSNorm(file: file, name: p + "ffn_norm.weight", count: d, epsilon: eps),
                feedForward: try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                                  activation: .silu, biases: false, scales: false, fusedGate: true))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        runDecoderLayers(layers, x, batch: batch, pool: pool)
        return head(x, batch: batch, pool: pool)
    }
}
