import GGUF
import Kernels

/// Liquid LFM2: a pre-norm decoder whose layers are either attention (with per-head q/k
/// RMSNorm and GPT-NeoX RoPE) or a gated short convolution, each followed by a SwiGLU
/// feed-forward. A layer attends when its `attention.head_count_kv` is non-zero. The short
/// convolution: in_proj gives B, C and x; y = C ⊙ conv(B ⊙ x) over a window of `shortconv.l_cache`
/// tokens, then out_proj. A sequence's memory is a KV cache for the attention layers and the
/// convolution windows for the others (`HybridState`).
public final class LFM2: LanguageModel {
    struct ShortConv: Sendable {
        /// → B, C, x (each `embeddingLength`).
        let inProjection: Linear
        let conv: CausalConv1d
        let outProjection: Linear
    }

    enum Mixer: Sendable {
        case attention(Attention)
        case shortConv(ShortConv)
    }

    struct Layer: Sendable {
        let operatorNorm: RMSNorm
        let mixer: Mixer
        let feedForwardNorm: RMSNorm
        let feedForward: GatedFeedForward
    }

    public let config: ModelConfig
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead
    let attentionLayers: [Bool]
    let convWindowCount: Int
    let kvDimension: Int

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let arch = config.architecture, d = config.embeddingLength, eps = config.normEpsilon
        // A bidirectional LFM2 (the ColBERT embedding model) pads its convolution on both sides.
        guard file.arch("attention.causal")?.bool ?? true else {
            throw ModelError.unsupportedArchitecture("\(arch) with bidirectional attention (LFM2-ColBERT)")
        }
        guard let cache = file.arch("shortconv.l_cache")?.int else { throw ModelError.missingMetadata("\(arch).shortconv.l_cache") }
        // The window keeps l_cache − 1 inputs, at least one.
        guard cache > 1 else { throw ModelError.inconsistentMetadata("\(arch).shortconv.l_cache is \(cache), not above 1") }
        attentionLayers = config.layerHeadCountsKV.map { $0 > 0 }
        // One K/V row layout for the cache: each attention layer stores kvHeads × keyLength floats.
        guard config.valueLength == config.keyLength, config.keyLength > 0 else {
            throw ModelError.inconsistentMetadata(
                "\(arch).attention.key_length (\(config.keyLength)) and value_length (\(config.valueLength)) must be equal and positive")
        }
        kvDimension = (config.layerHeadCountsKV.max() ?? 0) * config.keyLength
        let window = config.slidingWindow.flatMap { $0 > 0 ? $0 : nil }
        let rope = RoPE(style: .halves, dimensions: config.ropeDimensionCount, base: config.ropeFreqBase,
                        positionScale: config.ropeLinearScale, yarn: config.ropeYaRN,
                        attentionFactor: config.ropeAttentionFactor)
        head = try OutputHead(file: file, config: config, norm: RMSNorm(file: file, name: "token_embd_norm.weight",
                                                                      count: config.embeddingLength, epsilon: config.normEpsilon))
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        var conv: CausalConv1d?
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            let mixer: Mixer
            if config.layerHeadCountsKV[i] > 0 {
                var layerConfig = config
                layerConfig.headCount = config.layerHeadCounts[i]
                layerConfig.headCountKV = config.layerHeadCountsKV[i]
                var attention = try Attention(file: file, layer: i, config: layerConfig, rope: rope, outputBias: false)
                attention.queryNorm = try RMSNorm(file: file, name: p + "attn_q_norm.weight", count: config.keyLength, epsilon: eps)
                attention.keyNorm = try RMSNorm(file: file, name: p + "attn_k_norm.weight", count: config.keyLength, epsilon: eps)
                attention.window = window
                mixer = .attention(attention)
            } else {
                let layerConv = try CausalConv1d(file: file, name: p + "shortconv.conv", channels: d, kernel: cache, bias: false)
                conv = layerConv
                mixer = .shortConv(ShortConv(
                    inProjection: try Linear(file: file, name: p + "shortconv.in_proj.weight", inputs: d, outputs: 3 * d,
                                             bias: false, scale: false),
                    conv: layerConv,
                    outProjection: try Linear(file: file, name: p + "shortconv.out_proj.weight", inputs: d, outputs: d,
                                              bias: false, scale: false)))
            }
            return Layer(
                operatorNorm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: eps),
                mixer: mixer,
                feedForwardNorm: try RMSNorm(file: file, name: p + "ffn_norm.weight", count: d, epsilon: eps),
                feedForward: try GatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength,
                                                  activation: .silu, biases: false, scales: false))
        }
        convWindowCount = conv?.windowCount ?? 0
    }

    public func makeCache(capacity: Int, types: KVCacheTypes) -> any SequenceState {
        HybridState(attentionLayers: attentionLayers, kvDimension: kvDimension, convCount: convWindowCount, capacity: capacity,
                    types: types)
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let states = batch.map { $0.cache as! HybridState }
        let d = config.embeddingLength
        let x = embedding(batch.flatMap(\.tokens))
        let batching = referenceBatching(batch), lastBatching = lastLayerReferenceBatching(batch)
        for (i, layer) in layers.enumerated() {
            let normed = layer.operatorNorm(x, pool: pool)
            switch layer.mixer {
            case .attention(let attention):
                x += attention(normed, layer: i, batch: batch, pool: pool)
            case .shortConv(let block):
                let bcx = block.inProjection(normed, pool)
                let bx = Matrix(rows: x.rows, columns: d, zeroed: false)
                for r in 0..<x.rows {
                    for c in 0..<d { bx[r][c] = bcx[r][c] * bcx[r][2 * d + c] }
                }
                let convolved = block.conv(bx, batch: batch, windows: states.map { $0.recurrent.convWindow(layer: i) })
                for r in 0..<x.rows {
                    for c in 0..<d { convolved[r][c] = bcx[r][d + c] * convolved[r][c] }
                }
                x += block.outProjection(convolved, pool, batching: batching)
            }
            x += layer.feedForward(layer.feedForwardNorm(x, pool: pool), pool,
                                   batching: i == layers.count - 1 ? lastBatching : batching)
        }
        return head(x, batch: batch, pool: pool)
    }
}
