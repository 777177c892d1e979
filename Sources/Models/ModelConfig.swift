import GGUF
import Kernels

/// Hyper-parameters of a transformer, read from `ARCH.*` GGUF metadata.
public struct ModelConfig: Sendable {
    public var architecture: String
    public var embeddingLength: Int
    /// Decoder blocks of the forward pass (`block_count` less the prediction layers).
    public var blockCount: Int
    /// Multi-token-prediction blocks after them, which Swiftlet does not run (nor load).
    public var predictionLayerCount: Int
    public var feedForwardLength: Int
    /// Layer 0's head counts (llama.cpp's `n_head()`), which the head size defaults from.
    public var headCount: Int
    public var headCountKV: Int
    /// Per layer: `attention.head_count(_kv)` may be one number for every layer or an array with
    /// one per layer (hybrid models mark their non-attention layers with 0).
    public var layerHeadCounts: [Int]
    public var layerHeadCountsKV: [Int]
    public var keyLength: Int
    public var valueLength: Int
    public var contextLength: Int
    public var normEpsilon: Float
    public var ropeFreqBase: Float
    public var ropeDimensionCount: Int
    public var vocabularySize: Int
    public var slidingWindow: Int?
    public var expertCount: Int
    public var expertUsedCount: Int
    /// Linear RoPE scaling: positions are divided by this factor (YaRN interpolates with it).
    public var ropeLinearScale: Float
    /// YaRN's blend of interpolated and extrapolated frequencies (`rope.scaling.type` yarn).
    public var ropeYaRN: YaRNScaling?
    /// Multiplies the rotations' magnitude (`rope.scaling.attn_factor`, 1 by default).
    public var ropeAttentionFactor: Float
    /// `rope.scaling.yarn_log_multiplier` (0 without it): only DeepSeek-V2/V3's graph reads it.
    public var ropeYaRNLogMultiplier: Float
    /// `rope.scaling.type` as the file states it (nil: absent, which llama.cpp reads as linear).
    public var ropeScalingType: String?
    /// The context the model was trained for before any RoPE extension
    /// (`rope.scaling.original_context_length`, else `context_length`).
    public var ropeOriginalContextLength: Int

    public init(file: GGUFFile) throws(ModelError) {
        guard let arch = file.architecture else { throw ModelError.missingMetadata("general.architecture") }
        architecture = arch
        // Every count and width below sizes an allocation or an index before any tensor shape
        // is compared with it, so each is bounded first: a block count of 2³²−1 would otherwise
        // ask for tens of gigabytes, and products of two such values overflow.
        func bounded(_ key: String, _ value: Int, _ range: ClosedRange<Int>) throws(ModelError) -> Int {
            guard range.contains(value) else {
                throw ModelError.inconsistentMetadata("\(arch).\(key) is \(value) (expected \(range.lowerBound)…\(range.upperBound))")
            }
            return value
        }
        func required(_ key: String, _ range: ClosedRange<Int>) throws(ModelError) -> Int {
            guard let v = file.arch(key)?.int else { throw ModelError.missingMetadata("\(arch).\(key)") }
            return try bounded(key, v, range)
        }
        func optional(_ key: String, _ range: ClosedRange<Int>) throws(ModelError) -> Int? {
            guard let v = file.arch(key)?.int else { return nil }
            return try bounded(key, v, range)
        }
        let width = 1...(1 << 20)
        embeddingLength = try required("embedding_length", width)
        // the last `nextn_predict_layers` blocks predict further tokens for speculative decoding
        // (DeepSeek-V3, GLM-4.5, EXAONE 4); the model's own forward pass ends before them
        // llama.cpp allows at most 512 layers; the largest models have 126
        let allBlocks = try required("block_count", 1...4096)
        predictionLayerCount = file.arch("nextn_predict_layers")?.int ?? 0
        guard predictionLayerCount >= 0, predictionLayerCount < allBlocks else {
            throw ModelError.inconsistentMetadata("\(arch).nextn_predict_layers (\(predictionLayerCount)) with block_count \(allBlocks)")
        }
        blockCount = allBlocks - predictionLayerCount
        feedForwardLength = try optional("feed_forward_length", 0...(1 << 24)) ?? 0
        // per-layer arrays cover the prediction blocks too
        layerHeadCounts = try Self.perLayer(file, arch, "attention.head_count", layers: allBlocks)?.prefix(blockCount).map { $0 }
            ?? Array(repeating: 0, count: blockCount)
        layerHeadCountsKV = try Self.perLayer(file, arch, "attention.head_count_kv", layers: allBlocks)?.prefix(blockCount).map { $0 }
            ?? layerHeadCounts
        headCount = layerHeadCounts.first ?? 0
        headCountKV = layerHeadCountsKV.first ?? 0
        let defaultHead = headCount > 0 ? embeddingLength / headCount : 0
        keyLength = try optional("attention.key_length", 0...(1 << 16)) ?? defaultHead
        valueLength = try optional("attention.value_length", 0...(1 << 16)) ?? defaultHead
        contextLength = try optional("context_length", 1...(1 << 30)) ?? 2048
        normEpsilon = file.arch("attention.layer_norm_rms_epsilon")?.float ?? 1e-5
        ropeFreqBase = file.arch("rope.freq_base")?.float ?? 10000
        // NaN spreads into every logit; an infinite or negative epsilon or base silently zeroes
        // activations or rotation angles, so such files are refused here
        guard normEpsilon.isFinite, normEpsilon >= 0 else {
            throw ModelError.inconsistentMetadata("\(arch).attention.layer_norm_rms_epsilon is \(normEpsilon)")
        }
        guard ropeFreqBase.isFinite, ropeFreqBase > 0 else {
            throw ModelError.inconsistentMetadata("\(arch).rope.freq_base is \(ropeFreqBase)")
        }
        ropeDimensionCount = try optional("rope.dimension_count", 0...(1 << 16)) ?? keyLength
        vocabularySize = try optional("vocab_size", 0...(1 << 24)) ?? file["tokenizer.ggml.tokens"]?.array?.count ?? 0
        slidingWindow = try optional("attention.sliding_window", 0...(1 << 30))
        expertCount = try optional("expert_count", 0...(1 << 16)) ?? 0
        expertUsedCount = try optional("expert_used_count", 0...max(0, expertCount)) ?? 0
        // As llama.cpp reads them: the scaling type defaults to linear, a factor of 0 means
        // none, and "none" ignores the factor.
        ropeScalingType = file.arch("rope.scaling.type")?.string
        ropeOriginalContextLength = file.arch("rope.scaling.original_context_length")?.int ?? contextLength
        let scalingType = ropeScalingType ?? "linear"
        guard ["none", "linear", "yarn", "longrope"].contains(scalingType) else {
            throw ModelError.unsupportedArchitecture("\(arch) with rope.scaling.type '\(scalingType)'")
        }
        let factor = file.arch("rope.scaling.factor")?.float ?? file.arch("rope.scale_linear")?.float ?? 0
        guard factor.isFinite, factor >= 0 else {
            throw ModelError.inconsistentMetadata("\(arch).rope.scaling.factor is \(factor)")
        }
        ropeLinearScale = scalingType != "none" && factor != 0 ? factor : 1
        ropeAttentionFactor = file.arch("rope.scaling.attn_factor")?.float ?? 1
        ropeYaRNLogMultiplier = file.arch("rope.scaling.yarn_log_multiplier")?.float ?? 0
        guard ropeYaRNLogMultiplier.isFinite else {
            throw ModelError.inconsistentMetadata("\(arch).rope.scaling.yarn_log_multiplier is \(ropeYaRNLogMultiplier)")
        }
        guard ropeAttentionFactor.isFinite, ropeAttentionFactor > 0 else {
            throw ModelError.inconsistentMetadata("\(arch).rope.scaling.attn_factor is \(ropeAttentionFactor)")
        }
        if scalingType == "yarn" {
            let originalContext = file.arch("rope.scaling.original_context_length")?.int ?? contextLength
            guard originalContext > 0 else {
                throw ModelError.inconsistentMetadata("\(arch).rope.scaling.original_context_length is \(originalContext)")
            }
            ropeYaRN = YaRNScaling(originalContext: originalContext,
                                   betaFast: file.arch("rope.scaling.yarn_beta_fast")?.float ?? 32,
                                   betaSlow: file.arch("rope.scaling.yarn_beta_slow")?.float ?? 1)
        } else {
            ropeYaRN = nil
        }
    }
}

public struct UnsupportedTensorType: Sendable, Equatable {
    public let type: TensorType
    public let count: Int
    public let example: String

    public init(type: TensorType, count: Int, example: String) {
        self.type = type
        self.count = count
        self.example = example
    }
}

extension ModelConfig {
    /// `ARCH.key` as one value for every layer or an array of one per layer (llama.cpp's
    /// get_key_or_arr); nil when absent.
    static func perLayer(_ file: GGUFFile, _ arch: String, _ key: String, layers: Int) throws(ModelError) -> [Int]? {
        guard let value = file.arch(key) else { return nil }
        if let v = value.int {
            guard (0...(1 << 16)).contains(v) else {
                throw ModelError.inconsistentMetadata("\(arch).\(key) is \(v) (expected 0…65536)")
            }
            return Array(repeating: v, count: layers)
        }
        guard let values = value.array?.compactMap(\.int), values.count == layers, value.array?.count == layers else {
            throw ModelError.inconsistentMetadata("\(arch).\(key) is neither a number nor one per layer (\(layers))")
        }
        // head counts: bounded as the other sizes (see `init`)
        if let bad = values.first(where: { !(0...(1 << 16)).contains($0) }) {
            throw ModelError.inconsistentMetadata("\(arch).\(key) holds \(bad) (expected 0…65536)")
        }
        return values
    }
}

public enum ModelError: Error, CustomStringConvertible, Equatable {
    case missingMetadata(String)
    case missingTensor(String)
    case badTensorShape(name: String, expected: [Int], found: [Int])
    case unsupportedArchitecture(String)
    case contextTooLong(requested: Int, maximum: Int)
    /// Metadata values that contradict each other or the tensors (e.g. heads not a multiple of KV heads).
    case inconsistentMetadata(String)
    /// A metadata value that selects computation Swiftlet does not implement (e.g. YaRN RoPE scaling).
    case unsupportedMetadata(String)
    /// Tensors in the file that the architecture's graph does not use (llama.cpp refuses such a
    /// file too: silently skipping a weight would be a wrong answer).
    case unusedTensors(architecture: String, names: [String])
    /// Tensors of a type without kernels: the type, how many tensors have it, one of them.
    case unsupportedTensorTypes([UnsupportedTensorType])

    public var description: String {
        switch self {
        case .missingMetadata(let k): "model metadata '\(k)' is missing"
        case .missingTensor(let n): "model tensor '\(n)' is missing"
        case .badTensorShape(let n, let e, let f): "tensor '\(n)' has shape \(f), expected \(e)"
        case .unsupportedArchitecture(let a): "unsupported architecture '\(a)' (supported: \(ModelRegistry.supported.joined(separator: ", ")))"
        case .contextTooLong(let r, let m): "context length \(r) is longer than the model allows (\(m))"
        case .inconsistentMetadata(let m): "model metadata is inconsistent: \(m)"
        case .unsupportedMetadata(let m): "model metadata is not supported: \(m)"
        case .unsupportedTensorTypes(let types):
            types.map { "tensor type \($0.type) (\($0.count) tensors, e.g. '\($0.example)')" }.joined(separator: ", ")
                + " has no kernels in Swiftlet (supported: "
                + TensorType.allCases.filter(\.hasWeightKernels).map(\.description).joined(separator: ", ") + ")"
        case .unusedTensors(let arch, let names):
            "tensor '\(names[0])'\(names.count > 1 ? " (and \(names.count - 1) more: \(names.dropFirst().prefix(4).joined(separator: ", "))\(names.count > 5 ? ", …" : ""))" : "") is not used by Swiftlet's \(arch) graph"
        }
    }
}
