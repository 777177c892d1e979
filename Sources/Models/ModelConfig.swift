import GGUF

/// Hyper-parameters of a transformer, read from `ARCH.*` GGUF metadata.
public struct ModelConfig: Sendable {
    public var architecture: String
    public var embeddingLength: Int
    public var blockCount: Int
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
    /// Linear RoPE scaling: positions are divided by this factor.
    public var ropeLinearScale: Float

    public init(file: GGUFFile) throws(ModelError) {
        guard let arch = file.architecture else { throw ModelError.missingMetadata("general.architecture") }
        architecture = arch
        func required(_ key: String) throws(ModelError) -> Int {
            guard let v = file.arch(key)?.int else { throw ModelError.missingMetadata("\(arch).\(key)") }
            return v
        }
        embeddingLength = try required("embedding_length")
        blockCount = try required("block_count")
        feedForwardLength = file.arch("feed_forward_length")?.int ?? 0
        layerHeadCounts = try Self.perLayer(file, arch, "attention.head_count", layers: blockCount)
            ?? Array(repeating: 0, count: blockCount)
        layerHeadCountsKV = try Self.perLayer(file, arch, "attention.head_count_kv", layers: blockCount) ?? layerHeadCounts
        headCount = layerHeadCounts.first ?? 0
        headCountKV = layerHeadCountsKV.first ?? 0
        let defaultHead = headCount > 0 ? embeddingLength / headCount : 0
        keyLength = file.arch("attention.key_length")?.int ?? defaultHead
        valueLength = file.arch("attention.value_length")?.int ?? defaultHead
        contextLength = file.arch("context_length")?.int ?? 2048
        normEpsilon = file.arch("attention.layer_norm_rms_epsilon")?.float ?? 1e-5
        ropeFreqBase = file.arch("rope.freq_base")?.float ?? 10000
        ropeDimensionCount = file.arch("rope.dimension_count")?.int ?? keyLength
        vocabularySize = file.arch("vocab_size")?.int ?? file["tokenizer.ggml.tokens"]?.array?.count ?? 0
        slidingWindow = file.arch("attention.sliding_window")?.int
        expertCount = file.arch("expert_count")?.int ?? 0
        expertUsedCount = file.arch("expert_used_count")?.int ?? 0
        let scalingType = file.arch("rope.scaling.type")?.string
        // a factor of 0 means none, as llama.cpp reads it
        let factor = file.arch("rope.scaling.factor")?.float ?? 0
        ropeLinearScale = scalingType == "linear" && factor != 0 ? factor : 1
    }
}

extension ModelConfig {
    /// `ARCH.key` as one value for every layer or an array of one per layer (llama.cpp's
    /// get_key_or_arr); nil when absent.
    static func perLayer(_ file: GGUFFile, _ arch: String, _ key: String, layers: Int) throws(ModelError) -> [Int]? {
        guard let value = file.arch(key) else { return nil }
        if let v = value.int { return Array(repeating: v, count: layers) }
        guard let values = value.array?.compactMap(\.int), values.count == layers, value.array?.count == layers else {
            throw ModelError.inconsistentMetadata("\(arch).\(key) is neither a number nor one per layer (\(layers))")
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

    public var description: String {
        switch self {
        case .missingMetadata(let k): "model metadata '\(k)' is missing"
        case .missingTensor(let n): "model tensor '\(n)' is missing"
        case .badTensorShape(let n, let e, let f): "tensor '\(n)' has shape \(f), expected \(e)"
        case .unsupportedArchitecture(let a): "unsupported architecture '\(a)' (supported: \(ModelRegistry.supported.joined(separator: ", ")))"
        case .contextTooLong(let r, let m): "context length \(r) is longer than the model allows (\(m))"
        case .inconsistentMetadata(let m): "model metadata is inconsistent: \(m)"
        }
    }
}
