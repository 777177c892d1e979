import GGUF
import Kernels

/// gpt-oss: a pre-norm decoder whose layers alternate between a sliding window and global
/// attention (`attention.sliding_window_pattern`, default every other layer, the first
/// windowed; window layers may have their own RoPE base), with a learned sink logit per head
/// (`attn_sinks`), biases on every projection, and a mixture of experts routed by a softmax
/// over the chosen experts' scores, each expert a clamped SwiGLU with biases.
public final class GptOss: AttentionModel {
    public let config: ModelConfig
    let embedding: Embedding
    let layers: [DecoderLayer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon
        guard config.keyLength == config.ropeDimensionCount, config.valueLength == config.keyLength else {
            throw ModelError.inconsistentMetadata(
                "\(config.architecture): heads are rope.dimension_count (\(config.ropeDimensionCount)) wide, but key_length is "
                    + "\(config.keyLength) and value_length \(config.valueLength)")
        }
        guard file.tensor(named: "output.weight") != nil else { throw ModelError.missingTensor("output.weight") }
        let head = try OutputHead(file: file, config: config)
        self.head = head
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        let isSlidingWindow = try slidingWindowLayers(file: file, config: config, defaultPattern: 2)
        guard isSlidingWindow.contains(true) || config.slidingWindow != nil else {
            throw ModelError.missingMetadata("\(config.architecture).attention.sliding_window")
        }
        let windowBase = file.arch("rope.freq_base_swa")?.float ?? config.ropeFreqBase
        let expertWidth = file.arch("expert_feed_forward_length")?.int ?? 0
        guard expertWidth > 0 else {
            throw ModelError.missingMetadata("\(config.architecture).expert_feed_forward_length")
        }
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            // llama.cpp's openai-moe graph requires these biases; Linear treats them as optional.
            for bias in ["attn_output.bias", "ffn_gate_inp.bias"] where file.tensor(named: p + bias) == nil {
                throw ModelError.missingTensor(p + bias)
            }
            let rope = RoPE(style: .halves, dimensions: config.ropeDimensionCount,
                            base: isSlidingWindow[i] ? windowBase : config.ropeFreqBase,
                            positionScale: config.ropeLinearScale, yarn: config.ropeYaRN,
                            attentionFactor: config.ropeAttentionFactor)
            var attention = try Attention(file: file, layer: i, config: config, rope: rope)
            attention.window = isSlidingWindow[i] ? config.slidingWindow : nil
            attention.sinks = try Vector(file: file, name: p + "attn_sinks.weight", count: config.headCount).values
            return DecoderLayer(
                attentionNorm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: eps),
                attention: attention,
                feedForwardNorm: try RMSNorm(file: file, name: p + "post_attention_norm.weight", count: d, epsilon: eps),
                feedForward: try MixtureOfExperts(
                    file: file, prefix: p, dimension: d, hidden: expertWidth, experts: config.expertCount,
                    used: config.expertUsedCount,
                    routing: ExpertRouting(gating: .softmaxOverChosen, normalizesWeights: false, weightScale: 0),
                    routerBias: true, expertScales: false, expertBiases: true, activation: .clampedSwiGLU(alpha: 1.702, limit: 7)))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        runDecoderLayers(layers, x, batch: batch, pool: pool)
        return head(x, batch: batch, pool: pool)
    }
}
