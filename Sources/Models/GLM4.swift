import GGUF
import Kernels

/// GLM-4 (0414): RMSNorm before and after both attention and feed-forward (as Gemma), q/k/v
/// biases without an output bias, partial rotary embedding, and a SwiGLU whose gate and up
/// are one fused `ffn_up`.
///
/// Files with `rope.dimension_sections` (the vision-language conversions) rotate by M-RoPE;
/// for text every section but the last sees the token's position and the last sees position
/// 0, so it is GPT-NeoX RoPE with the last section's pairs left unrotated.
public final class GLM4: AttentionModel {
    public let config: ModelConfig
    let embedding: Embedding
    let layers: [DecoderLayer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon
        let head = try OutputHead(file: file, config: config)
        self.head = head
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        let rope = try GLM4.rope(file: file, config: config)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            func norm(_ name: String) throws -> RMSNorm {
                try RMSNorm(file: file, name: p + name + ".weight", count: d, epsilon: eps)
            }
            return DecoderLayer(
                attentionNorm: try norm("attn_norm"),
                attention: try Attention(file: file, layer: i, config: config, rope: rope, outputBias: false),
                postAttentionNorm: try norm("post_attention_norm"),
                feedForwardNorm: try norm("ffn_norm"),
                feedForward: try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                                  activation: .silu, biases: false, scales: false, fusedGate: true),
                postFeedForwardNorm: try norm("post_ffw_norm"))
        }
    }

    /// llama.cpp's choice for glm4: M-RoPE when the first two sections are set, else
    /// interleaved pairs.
    static func rope(file: GGUFFile, config: ModelConfig) throws -> RoPE {
        let dimensions = config.ropeDimensionCount
        let sections = file.arch("rope.dimension_sections")?.array?.map { $0.int ?? 0 } ?? []
        let usesMRoPE = sections.count >= 2 && sections[0] > 0 && sections[1] > 0
        guard usesMRoPE else {
            return RoPE(style: .interleaved, dimensions: dimensions, base: config.ropeFreqBase,
                        positionScale: config.ropeLinearScale, yarn: config.ropeYaRN,
                        attentionFactor: config.ropeAttentionFactor)
        }
        let padded = Array((sections + [0, 0, 0, 0]).prefix(4))
        let sectionPairs = padded.reduce(0, +)
        guard padded.allSatisfy({ $0 >= 0 }), sectionPairs <= dimensions else {
            throw ModelError.inconsistentMetadata(
                "\(config.architecture).rope.dimension_sections \(sections) with rope.dimension_count \(dimensions)")
        }
        // pair i belongs to section (i mod the sections' total); the last section's position
        // is 0 for text, so its angle is 0: an infinite divisor of the angle says exactly that
        let positioned = padded[0] + padded[1] + padded[2]
        let divisors = (0..<dimensions / 2).map { $0 % sectionPairs < positioned ? Float(1) : .infinity }
        return RoPE(style: .halves, dimensions: dimensions, base: config.ropeFreqBase, positionScale: config.ropeLinearScale,
                    frequencyFactors: divisors.allSatisfy { $0 == 1 } ? nil : divisors, yarn: config.ropeYaRN,
                    attentionFactor: config.ropeAttentionFactor)
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        runDecoderLayers(layers, x, batch: batch, pool: pool)
        return head(x, batch: batch, pool: pool)
    }
}
