import Tokenization

/// Settings for `Sampler`. Defaults follow llama.cpp's `common_params_sampling`.
///
/// Codable with camelCase keys; every key is optional when decoding (missing keys keep the
/// default). `logitBias` is encoded as an object keyed by the token id in decimal, as in
/// OpenAI's `logit_bias`.
public struct SamplingParameters: Sendable, Codable, Equatable {
    /// 0 (or below) selects greedy decoding: the argmax after logit bias and penalties.
    public var temperature: Float
    /// Keep the `topK` most likely tokens; 0 or below (or ≥ vocabulary size) disables.
    public var topK: Int
    /// Nucleus sampling: keep the smallest prefix whose probability reaches `topP`; ≥ 1 disables.
    public var topP: Float
    /// Drop tokens whose probability is below `minP` × the top token's probability; ≤ 0 disables.
    public var minP: Float
    /// llama.cpp repeat penalty: positive logits of recent tokens are divided by it, negative
    /// ones multiplied. 1 disables.
    public var repeatPenalty: Float
    /// How many of the most recent history tokens the penalties look at. 0 disables the
    /// penalties, -1 means the whole history.
    public var repeatLastN: Int
    /// OpenAI frequency penalty: subtract `count × frequencyPenalty` from the logit.
    public var frequencyPenalty: Float
    /// OpenAI presence penalty: subtract `presencePenalty` once from any token that occurred.
    public var presencePenalty: Float
    /// Added to the logits before anything else (-inf or a large negative value bans a token).
    public var logitBias: [TokenID: Float]
    /// RNG seed; nil draws one from the system generator (see `Sampler.seed`).
    public var seed: UInt64?

    public init(
        temperature: Float = 0.8,
        topK: Int = 40,
        topP: Float = 0.95,
        minP: Float = 0.05,
        repeatPenalty: Float = 1.0,
        repeatLastN: Int = 64,
        frequencyPenalty: Float = 0,
        presencePenalty: Float = 0,
        logitBias: [TokenID: Float] = [:],
        seed: UInt64? = nil
    ) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repeatPenalty = repeatPenalty
        self.repeatLastN = repeatLastN
        self.frequencyPenalty = frequencyPenalty
        self.presencePenalty = presencePenalty
        self.logitBias = logitBias
        self.seed = seed
    }

    /// Greedy decoding (temperature 0), everything else at its default.
    public static var greedy: SamplingParameters { SamplingParameters(temperature: 0) }

    /// Whether any of repeat/frequency/presence penalty would change a logit.
    public var hasPenalties: Bool {
        repeatLastN != 0 && (repeatPenalty != 1 || frequencyPenalty != 0 || presencePenalty != 0)
    }

    private enum CodingKeys: String, CodingKey {
        case temperature, topK, topP, minP, repeatPenalty, repeatLastN
        case frequencyPenalty, presencePenalty, logitBias, seed
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = SamplingParameters()
        temperature = try c.decodeIfPresent(Float.self, forKey: .temperature) ?? d.temperature
        topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? d.topK
        topP = try c.decodeIfPresent(Float.self, forKey: .topP) ?? d.topP
        minP = try c.decodeIfPresent(Float.self, forKey: .minP) ?? d.minP
        repeatPenalty = try c.decodeIfPresent(Float.self, forKey: .repeatPenalty) ?? d.repeatPenalty
        repeatLastN = try c.decodeIfPresent(Int.self, forKey: .repeatLastN) ?? d.repeatLastN
        frequencyPenalty = try c.decodeIfPresent(Float.self, forKey: .frequencyPenalty) ?? d.frequencyPenalty
        presencePenalty = try c.decodeIfPresent(Float.self, forKey: .presencePenalty) ?? d.presencePenalty
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed)
        logitBias = [:]
        if let raw = try c.decodeIfPresent([String: Float].self, forKey: .logitBias) {
            for (key, value) in raw {
                guard let id = TokenID(key) else {
                    throw DecodingError.dataCorruptedError(
                        forKey: .logitBias, in: c, debugDescription: "logitBias key \(key) is not a token id")
                }
                logitBias[id] = value
            }
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(temperature, forKey: .temperature)
        try c.encode(topK, forKey: .topK)
        try c.encode(topP, forKey: .topP)
        try c.encode(minP, forKey: .minP)
        try c.encode(repeatPenalty, forKey: .repeatPenalty)
        try c.encode(repeatLastN, forKey: .repeatLastN)
        try c.encode(frequencyPenalty, forKey: .frequencyPenalty)
        try c.encode(presencePenalty, forKey: .presencePenalty)
        if !logitBias.isEmpty {
            var raw: [String: Float] = [:]
            for (k, v) in logitBias { raw[String(k)] = v }
            try c.encode(raw, forKey: .logitBias)
        }
        try c.encodeIfPresent(seed, forKey: .seed)
    }
}
