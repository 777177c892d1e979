import GGUF
import Kernels

/// Llama 2/3, Mistral, SmolLM: pre-norm decoder with RMSNorm, RoPE, grouped-query attention
/// and a SwiGLU feed-forward — or, when the file declares experts (Mixtral), a sparse mixture
/// of SwiGLU experts. Qwen2 is the same network with GPT-NeoX RoPE (its q/k/v biases, like any
/// projection's optional bias and scale, are read by `Linear`); Qwen3 (and Qwen3-MoE) adds
/// per-head q/k RMSNorm; SmolLM3 leaves RoPE out of every 4th layer; Granite (and
/// GraniteMoE, with an optional shared expert) multiplies embeddings, residual branches,
/// scores and logits by metadata constants.
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
    /// Multipliers of the embeddings and of each sub-layer's output (granite; nil: none).
    let embeddingScale: Float?
    let residualScale: Float?

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
        /// Granite's multipliers from the metadata: embeddings × `embedding_scale`, each
        /// sub-layer's output × `residual_scale` before the residual add, logits ÷ `logit_scale`,
        /// attention scores × `attention.scale`, RoPE only when `rope.scaling.finetuned`.
        public var graniteMultipliers = false
        /// The experts' width is `expert_feed_forward_length`, else n_ff / n_expert_used (qwen3moe);
        /// otherwise it is n_ff.
        public var expertWidthKey = false
        /// A shared expert of width `expert_shared_feed_forward_length` when that is > 0 (granitemoe).
        public var sharedExpert = false
        /// RoPE only when `rope.scaling.finetuned` (default true) says so: granite's switch,
        /// which granitemoe does not read.
        public var ropeSwitchedByFinetuned = false
        /// Whether the experts' optional per-expert scales apply (granite's MoE call passes none).
        public var expertScales = true
        /// Llama 4's attention temperature tuning when `attention.temperature_scale` ≠ 0 (mistral3).
        public var attentionTemperature = false

        public static let llama = Variant()
        public static let qwen2 = Variant(ropeStyle: .halves, feedForwardBiases: false, feedForwardScales: false)
        public static let qwen3 = Variant(ropeStyle: .halves, feedForwardBiases: false, queryKeyNorm: true)
        public static let smollm3 = Variant(feedForwardScales: false, noRoPELayerStep: 4)
        public static let qwen3moe = Variant(ropeStyle: .halves, queryKeyNorm: true, expertWidthKey: true)
        public static let granite = Variant(feedForwardScales: false, graniteMultipliers: true, sharedExpert: true,
                                           ropeSwitchedByFinetuned: true, expertScales: false)
        public static let granitemoe = Variant(feedForwardScales: false, graniteMultipliers: true, sharedExpert: true,
                                              expertScales: false)
        public static let mistral3 = Variant(attentionTemperature: true)
    }

    public init(file: GGUFFile, config: ModelConfig, variant: Variant = .llama) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon
        // Llama 3.1+ files carry per-frequency divisors of the RoPE angles (rope_freqs.weight)
        guard config.headCount > 0 else {
            throw ModelError.inconsistentMetadata("\(config.architecture).attention.head_count is 0")
        }
        // llama.cpp's check for llama: the whole head rotates
        // (a count above the head size is refused by Attention)
        if config.architecture == "llama", config.ropeDimensionCount < config.keyLength {
            throw ModelError.inconsistentMetadata(
                "llama.rope.dimension_count (\(config.ropeDimensionCount)) is smaller than the head size (\(config.keyLength))")
        }
        let frequencyFactors = file.tensor(named: "rope_freqs.weight") != nil
            ? try Vector(file: file, name: "rope_freqs.weight", count: config.ropeDimensionCount / 2).values : nil
        let rope = RoPE(style: variant.ropeStyle, dimensions: config.ropeDimensionCount, base: config.ropeFreqBase,
                        positionScale: config.ropeLinearScale, frequencyFactors: frequencyFactors,
                        yarn: config.ropeYaRN, attentionFactor: config.ropeAttentionFactor)
        var head = try OutputHead(file: file, config: config)
        var attentionScale: Float?, appliesRoPE = true
        if variant.graniteMultipliers {
            func multiplier(_ key: String) -> Float? { file.arch(key)?.float.flatMap { $0 == 0 ? nil : $0 } }
            embeddingScale = multiplier("embedding_scale")
            residualScale = multiplier("residual_scale")
            attentionScale = multiplier("attention.scale")
            head.logitScale = multiplier("logit_scale").map { 1 / $0 }
            if variant.ropeSwitchedByFinetuned { appliesRoPE = file.arch("rope.scaling.finetuned")?.bool ?? true }
        } else {
            embeddingScale = nil
            residualScale = nil
        }
        self.head = head
        if variant.expertWidthKey && config.expertCount == 0 {
            throw ModelError.inconsistentMetadata("\(config.architecture).expert_count is 0: this architecture is a mixture of experts")
        }
        let expertWidth = variant.expertWidthKey
            ? file.arch("expert_feed_forward_length")?.int ?? config.feedForwardLength / max(1, config.expertUsedCount)
            : config.feedForwardLength
        let sharedExpertWidth = variant.sharedExpert ? file.arch("expert_shared_feed_forward_length")?.int.flatMap { $0 > 0 ? $0 : nil } : nil
        var temperature: AttentionTemperature?
        if variant.attentionTemperature, let scale = file.arch("attention.temperature_scale")?.float, scale != 0 {
            let originalContext = file.arch("rope.scaling.original_context_length")?.int ?? config.contextLength
            guard originalContext > 0 else {
                throw ModelError.inconsistentMetadata("\(config.architecture).rope.scaling.original_context_length is \(originalContext): attention temperature scaling divides by it")
            }
            temperature = AttentionTemperature(scale: scale, floorScale: originalContext)
        }
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            var attention = try Attention(file: file, layer: i, config: config, rope: rope)
            attention.appliesRoPE = appliesRoPE
            attention.queryTemperature = temperature
            if let attentionScale { attention.scale = attentionScale }
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
                    ? try MixtureOfExperts(file: file, prefix: p, dimension: d, hidden: expertWidth,
                                           experts: config.expertCount, used: config.expertUsedCount,
                                           expertScales: variant.expertScales, sharedHidden: sharedExpertWidth)
                    : try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                           activation: .silu, biases: variant.feedForwardBiases,
                                           scales: variant.feedForwardScales))
        }
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        if let embeddingScale { x.scale(by: embeddingScale) }
        let batching = referenceBatching(batch), lastBatching = lastLayerReferenceBatching(batch)
        for (i, layer) in layers.enumerated() {
            let attended = layer.attention(layer.attentionNorm(x, pool: pool), layer: i, batch: batch, pool: pool)
            if let residualScale { attended.scale(by: residualScale) }
            x += attended
            let fed = layer.feedForward(layer.feedForwardNorm(x, pool: pool), pool,
                                        batching: i == layers.count - 1 ? lastBatching : batching)
            if let residualScale { fed.scale(by: residualScale) }
            x += fed
        }
        return head(x, batch: batch, pool: pool)
    }
}
