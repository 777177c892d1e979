import Foundation
import GGUF
import Kernels

/// DeepSeek-V2/V3 and the models llama.cpp runs on the same graph (Kimi K2, GLM-4.7-Flash, …):
/// multi-head latent attention and, after the first `leading_dense_block_count` dense layers, a
/// mixture of experts with a shared expert.
///
/// Latent attention caches one compressed vector per token (the latent, `kv_lora_rank` wide)
/// plus one rotary key part shared by all heads. Each head's non-rotary query is mapped into
/// the latent space (`attn_k_b`), so attention runs as one KV head of width latent + rotary,
/// with the latent itself as the value; each head's result is mapped back out (`attn_v_b`).
public final class DeepSeek2: AttentionModel {
    public let config: ModelConfig
    let embedding: Embedding
    let layers: [DecoderLayer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength, eps = config.normEpsilon
        func required(_ key: String) throws -> Int {
            guard let value = file.arch(key)?.int else { throw ModelError.missingMetadata("\(config.architecture).\(key)") }
            return value
        }
        guard file.tensor(named: "blk.0.attn_kv_b.weight") == nil else {
            throw ModelError.unsupportedArchitecture(
                "\(config.architecture) with an unsplit attn_kv_b (converted before llama.cpp's MLA cache; re-convert the model)")
        }
        let rotary = config.ropeDimensionCount
        let latent = try required("attention.kv_lora_rank")
        let keyWidth = try required("attention.key_length_mla"), valueWidth = try required("attention.value_length_mla")
        // The cache holds one latent + rotary key and the latent as value per token: one KV head.
        guard config.headCountKV == 1, config.keyLength == latent + rotary, config.valueLength == latent,
              keyWidth > rotary, rotary % 2 == 0, valueWidth > 0 else {
            throw ModelError.inconsistentMetadata(
                "\(config.architecture): head_count_kv \(config.headCountKV), key_length \(config.keyLength), value_length "
                    + "\(config.valueLength), kv_lora_rank \(latent), rope.dimension_count \(rotary), key_length_mla "
                    + "\(keyWidth): latent attention needs one KV head of kv_lora_rank + rotary keys and kv_lora_rank values")
        }
        let head = try OutputHead(file: file, config: config)
        self.head = head
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)

        let denseLayers = file.arch("leading_dense_block_count")?.int ?? 0
        let expertWidth = file.arch("expert_feed_forward_length")?.int ?? 0
        let sharedExperts = file.arch("expert_shared_count")?.int ?? 0
        let gatingValue = file.arch("expert_gating_func")?.int ?? 0
        var gating: ExpertRouting.Gating
        if gatingValue == 0 {
            // files without the key: GLM-4.7-Flash's shape routes by sigmoid, the rest by softmax
            let vocabulary = config.vocabularySize
            gating = (config.blockCount == 47 || config.blockCount == 48) && vocabulary == 154_880 ? .sigmoid : .softmax
        } else if let known = ExpertRouting.Gating(metadataValue: gatingValue) {
            gating = known
        } else {
            throw ModelError.inconsistentMetadata("\(config.architecture).expert_gating_func is \(gatingValue)")
        }
        let groupCount = file.arch("expert_group_count")?.int ?? 0
        let routing = ExpertRouting(
            gating: gating, normalizesWeights: file.arch("expert_weights_norm")?.bool ?? false,
            weightScale: file.arch("expert_weights_scale")?.float ?? 0,
            groups: groupCount > 1 ? (groupCount, file.arch("expert_group_used_count")?.int ?? 0) : nil)

        var temperature: AttentionTemperature?
        if let scale = file.arch("attention.temperature_scale")?.float, scale != 0 {
            let length = file.arch("attention.temperature_length")?.int ?? 0
            guard length > 0 else {
                throw ModelError.inconsistentMetadata("\(config.architecture).attention.temperature_length is \(length)")
            }
            temperature = AttentionTemperature(scale: scale, floorScale: length)
        }
        // llama.cpp's YaRN set-up for this graph: the file's multiplier is stored ÷ 10
        // (mscale_all_dim), the rotation magnitude comes out near the attention factor, and the
        // scores carry the magnitude correction instead, squared (kq_scale = mscale² / √d).
        let frequencyScale = 1 / config.ropeLinearScale, factor = 1 / frequencyScale
        let allDimensions = config.ropeYaRNLogMultiplier / 0.1
        var yarnAttention: Float = config.ropeAttentionFactor
        if config.ropeYaRN != nil {
            func magnitude(_ m: Float) -> Float { factor <= 1 ? 1 : 0.1 * m * logf(factor) + 1 }
            yarnAttention = allDimensions != 0
                ? magnitude(allDimensions != 1 ? allDimensions : 1) / magnitude(allDimensions) : magnitude(1)
            yarnAttention *= 1 / (1 + 0.1 * logf(factor))
            yarnAttention *= config.ropeAttentionFactor
        }
        let rope = RoPE(style: .interleaved, dimensions: rotary, base: config.ropeFreqBase,
                        positionScale: config.ropeLinearScale, yarn: config.ropeYaRN,
                        attentionFactor: config.ropeAttentionFactor, yarnAttentionFactor: yarnAttention)
        let originalAttention = yarnAttention * (1 + 0.1 * logf(1 / frequencyScale))
        let scoreMagnitude = originalAttention * (1 + 0.1 * allDimensions * logf(1 / frequencyScale))
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            var attention = try LatentAttention(file: file, prefix: p, config: config, rope: rope, latent: latent,
                                                keyWidth: keyWidth, valueWidth: valueWidth, scoreMagnitude: scoreMagnitude)
            attention.temperature = temperature
            let feedForward: any FeedForward
            if i < denseLayers {
                feedForward = try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                                   activation: .silu, biases: false, scales: false)
            } else {
                guard expertWidth > 0, sharedExperts >= 0 else {
                    throw ModelError.inconsistentMetadata(
                        "\(config.architecture).expert_feed_forward_length \(expertWidth), expert_shared_count \(sharedExperts)")
                }
                feedForward = try MixtureOfExperts(
                    file: file, prefix: p, dimension: d, hidden: expertWidth, experts: config.expertCount,
                    used: config.expertUsedCount, routing: routing, selectionBias: true, expertScales: false,
                    sharedHidden: sharedExperts > 0 ? expertWidth * sharedExperts : nil)
            }
            return DecoderLayer(
                attentionNorm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: eps),
                attention: attention,
                feedForwardNorm: try RMSNorm(file: file, name: p + "ffn_norm.weight", count: d, epsilon: eps),
                feedForward: feedForward)
        }
    }

    /// llama.cpp rotates latent-attention caches its own way before quantizing them; Swiftlet
    /// keeps them in F16 rather than run a quantized cache llama.cpp would compute differently.
    public var quantizedCacheRefusal: String? {
        "\(config.architecture)'s latent attention cache is kept in F16 (its quantized form is not implemented)"
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = embedding(batch.flatMap(\.tokens))
        runDecoderLayers(layers, x, batch: batch, pool: pool)
        return head(x, batch: batch, pool: pool)
    }
}

/// Multi-head latent attention (see `DeepSeek2`).
struct LatentAttention: TokenMixer {
    /// q = queryUp(norm(queryDown·x)), or query·x directly (the "lite" models without q_lora).
    let queryDown: Linear?
    let queryDownNorm: RMSNorm?
    let query: Linear
    /// x → latent ‖ rotary key.
    let latentAndRotaryKey: Linear
    let latentNorm: RMSNorm
    /// Per head: latent ← the head's non-rotary query (`attn_k_b`, latent × nope).
    let queryToLatent: [WeightMatrix]
    /// Per head: head output ← attended latent (`attn_v_b`, value width × latent).
    let latentToValue: [WeightMatrix]
    let output: Linear
    let rope: RoPE
    let heads: Int
    let latent: Int
    let keyWidth: Int
    let valueWidth: Int
    let scale: Float
    var temperature: AttentionTemperature?

    /// `scoreMagnitude`: YaRN's correction of the scores' scale (1 without scaling).
    init(file: GGUFFile, prefix p: String, config: ModelConfig, rope: RoPE, latent: Int, keyWidth: Int,
         valueWidth: Int, scoreMagnitude: Float) throws {
        let d = config.embeddingLength, eps = config.normEpsilon
        heads = config.headCount
        self.latent = latent
        self.keyWidth = keyWidth
        self.valueWidth = valueWidth
        self.rope = rope
        let rotary = rope.dimensions, nope = keyWidth - rotary
        // plain matrix products in llama.cpp's graph: no biases or scales on these
        func plain(_ name: String, _ inputs: Int, _ outputs: Int) throws -> Linear {
            try Linear(file: file, name: p + name, inputs: inputs, outputs: outputs, bias: false, scale: false)
        }
        if let down = file.tensor(named: p + "attn_q_a.weight") {
            let rank = down.rowCount
            queryDown = try plain("attn_q_a.weight", d, rank)
            queryDownNorm = try RMSNorm(file: file, name: p + "attn_q_a_norm.weight", count: rank, epsilon: eps)
            query = try plain("attn_q_b.weight", rank, heads * keyWidth)
        } else {
            queryDown = nil
            queryDownNorm = nil
            query = try plain("attn_q.weight", d, heads * keyWidth)
        }
        latentAndRotaryKey = try plain("attn_kv_a_mqa.weight", d, latent + rotary)
        latentNorm = try RMSNorm(file: file, name: p + "attn_kv_a_norm.weight", count: latent, epsilon: eps)
        queryToLatent = try matrixStack(file: file, name: p + "attn_k_b.weight", inputs: nope, outputs: latent, count: heads)
        latentToValue = try matrixStack(file: file, name: p + "attn_v_b.weight", inputs: latent, outputs: valueWidth, count: heads)
        output = try Linear(file: file, name: p + "attn_output.weight", inputs: heads * valueWidth, outputs: d, bias: false)
        // scores are scaled by the full (non-latent) query width, as the model was trained
        scale = 1 * scoreMagnitude * scoreMagnitude / Float(keyWidth).squareRoot()
    }

    func callAsFunction(_ x: Matrix, layer: Int, batch: [BatchSequence], pool: ThreadPool) -> Matrix {
        let n = x.rows, rotary = rope.dimensions, nope = keyWidth - rotary
        let cacheWidth = latent + rotary
        let q: Matrix
        if let queryDown, let queryDownNorm {
            let compressed = queryDown(x, pool)
            queryDownNorm.normalize(compressed, into: compressed, pool: pool)
            q = query(compressed, pool)
        } else {
            q = query(x, pool)
        }
        let latentAndKey = latentAndRotaryKey(x, pool)
        let latents = Matrix(rows: n, columns: latent, zeroed: false)
        for r in 0..<n { latents[r].update(from: latentAndKey[r], count: latent) }
        latentNorm.normalize(latents, into: latents, pool: pool)

        // Queries in cache space: per head, the latent image of its non-rotary part, then its rotary part.
        let queries = Matrix(rows: n, columns: heads * cacheWidth, zeroed: false)
        let headQuery = Matrix(rows: n, columns: nope, zeroed: false)
        let absorbed = Matrix(rows: n, columns: latent, zeroed: false)
        for h in 0..<heads {
            for r in 0..<n { headQuery[r].update(from: q[r] + h * keyWidth, count: nope) }
            matmul(queryToLatent[h], input: headQuery.data, tokens: n, output: absorbed.data, pool: pool)
            for r in 0..<n {
                (queries[r] + h * cacheWidth).update(from: absorbed[r], count: latent)
                (queries[r] + h * cacheWidth + latent).update(from: q[r] + h * keyWidth + nope, count: rotary)
            }
        }

        let sequences = attentionSequences(batch, layer: layer)
        defer { for s in sequences { s.deallocate() } }
        let key = UnsafeMutablePointer<Float>.allocate(capacity: cacheWidth)
        let angles = UnsafeMutablePointer<Float>.allocate(capacity: rotary)
        defer { key.deallocate(); angles.deallocate() }
        for seq in sequences {
            for r in seq.firstRow..<seq.firstRow + seq.tokens {
                let position = seq.firstPosition + r - seq.firstRow
                rope.rotations(position: position, into: angles)
                rope.apply(queries[r] + latent, heads: heads, headDimension: cacheWidth, rotations: angles)
                if let temperature {
                    let factor = temperature.factor(position: position)
                    for j in 0..<queries.columns { queries[r][j] *= factor }
                }
                key.update(from: latents[r], count: latent)
                (key + latent).update(from: latentAndKey[r] + latent, count: rotary)
                rope.apply(key + latent, heads: 1, headDimension: cacheWidth, rotations: angles)
                storeCacheRow(key, count: cacheWidth, type: seq.cacheTypes.key,
                              into: UnsafeMutableRawPointer(mutating: seq.keys[position]))
                storeCacheRow(latents[r], count: latent, type: seq.cacheTypes.value,
                              into: UnsafeMutableRawPointer(mutating: seq.values[position]))
            }
        }
        let attended = Matrix(rows: n, columns: heads * latent, zeroed: false)
        attend(queries: queries.data, sequences, heads: heads, kvHeads: 1, headDimension: cacheWidth,
               valueDimension: latent, scale: scale, window: nil, into: attended.data, pool: pool)

        // Back out of the latent space, head by head.
        let merged = Matrix(rows: n, columns: heads * valueWidth, zeroed: false)
        let headLatent = Matrix(rows: n, columns: latent, zeroed: false)
        let headValue = Matrix(rows: n, columns: valueWidth, zeroed: false)
        for h in 0..<heads {
            for r in 0..<n { headLatent[r].update(from: attended[r] + h * latent, count: latent) }
            matmul(latentToValue[h], input: headLatent.data, tokens: n, output: headValue.data, pool: pool)
            for r in 0..<n { (merged[r] + h * valueWidth).update(from: headValue[r], count: valueWidth) }
        }
        return output(merged, pool, batching: referenceBatching(batch))
    }
}
