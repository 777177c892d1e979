import Foundation

/// How rotary position embedding pairs up the dimensions of a head.
public enum RoPEStyle: Sendable {
    /// (x[2i], x[2i+1]) — llama.cpp's "normal" mode, used by llama-family GGUFs.
    case interleaved
    /// (x[i], x[i + d/2]) — GPT-NeoX mode, used by gemma, qwen2.
    case halves
}

/// YaRN ("Yet another RoPE extension"): high frequencies keep their trained angles, low ones
/// are interpolated by the linear scale, with a linear ramp between the correction dimensions
/// that `betaFast`/`betaSlow` rotations over the original context length give; rotations grow
/// by 1 + 0.1·ln(scale).
public struct YaRNScaling: Sendable, Equatable {
    public var originalContext: Int
    public var betaFast: Float
    public var betaSlow: Float

    public init(originalContext: Int, betaFast: Float, betaSlow: Float) {
        self.originalContext = originalContext
        self.betaFast = betaFast
        self.betaSlow = betaSlow
    }

    /// ggml's correction dimensions (`ggml_rope_yarn_corr_dims`) for one RoPE.
    func correctionDimensions(dimensions: Int, base: Float) -> (low: Float, high: Float) {
        func dimension(_ rotations: Float) -> Float {
            Float(dimensions) * logf(Float(originalContext) / (rotations * 2 * Float.pi)) / (2 * logf(base))
        }
        return (max(0, dimension(betaFast).rounded(.down)), min(Float(dimensions - 1), dimension(betaSlow).rounded(.up)))
    }
}

/// Rotary position embedding: rotates pairs of a head's first `dimensions` dimensions by
/// angles that grow with the token's position, at `dimensions / 2` frequencies from `base`.
public struct RoPE: Sendable {
    public let style: RoPEStyle
    public let dimensions: Int
    public let base: Float
    /// Positions are divided by this (linear RoPE scaling).
    public let positionScale: Float
    /// Per-frequency divisors of the angles (`rope_freqs.weight`, Llama 3.1+; phi3's
    /// `rope_factors_long`/`_short`), `dimensions / 2` of them.
    public let frequencyFactors: [Float]?
    /// YaRN's correction dimensions, when it blends (see `YaRNScaling`).
    let yarnCorrection: (low: Float, high: Float)?
    /// Multiplies cos and sin (the attention factor, and YaRN's magnitude correction).
    let magnitude: Float

    /// `attentionFactor`: `rope.scaling.attn_factor`; with `yarn`, as llama.cpp sets it up.
    /// `yarnAttentionFactor`: llama.cpp's `yarn_attn_factor` when the architecture sets it up
    /// differently (DeepSeek-V2/V3); by default derived from `attentionFactor` as llama.cpp does.
    public init(style: RoPEStyle, dimensions: Int, base: Float, positionScale: Float = 1, frequencyFactors: [Float]? = nil,
                yarn: YaRNScaling? = nil, attentionFactor: Float = 1, yarnAttentionFactor: Float? = nil) {
        precondition(frequencyFactors == nil || frequencyFactors!.count == dimensions / 2)
        self.style = style
        self.dimensions = dimensions
        self.base = base
        self.positionScale = positionScale
        self.frequencyFactors = frequencyFactors
        if let yarn, positionScale != 1 {
            yarnCorrection = yarn.correctionDimensions(dimensions: dimensions, base: base)
            // llama.cpp cancels its own attention-factor correction (get_mscale / (1 + 0.1·ln s))
            // and ggml's rope then multiplies by 1 + 0.1·ln(1 / freq_scale)
            let frequencyScale = 1 / positionScale, factor = 1 / frequencyScale
            let attention = yarnAttentionFactor ?? (0.1 * logf(factor) + 1) * (1 / (1 + 0.1 * logf(factor))) * attentionFactor
            magnitude = attention * (1 + 0.1 * logf(1 / frequencyScale))
        } else {
            yarnCorrection = nil
            magnitude = attentionFactor
        }
    }

    /// Rotates every head of one token's q or k vector in place.
    public func apply(_ v: UnsafeMutablePointer<Float>, heads: Int, headDimension: Int, position: Int) {
        var angles = [Float](repeating: 0, count: dimensions)
        angles.withUnsafeMutableBufferPointer { a in
            rotations(position: position, into: a.baseAddress!)
            apply(v, heads: heads, headDimension: headDimension, rotations: a.baseAddress!)
        }
    }

    /// (cos θᵢ, sin θᵢ) for i < dimensions/2 at `position`: `dimensions` floats. As ggml's rope
    /// cache: θ₀ = position, θᵢ₊₁ = θᵢ · base^(-2/dimensions) by repeated multiplication, and
    /// frequency factors divide θᵢ and linear scaling multiplies it by 1/scale (not the position first);
    /// cos and sin are then multiplied by the attention factor.
    public func rotations(position: Int, into cs: UnsafeMutablePointer<Float>) {
        let thetaScale = powf(base, -2 / Float(dimensions))
        let frequencyScale = 1 / positionScale
        var theta = Float(position)
        for i in 0..<dimensions / 2 {
            let extrapolated = frequencyFactors.map { theta / $0[i] } ?? theta
            var angle = frequencyScale * extrapolated
            if let (low, high) = yarnCorrection {
                // ggml's rope_yarn_ramp, then the blend (ext_factor 1)
                let y = (Float(i) - low) / max(0.001, high - low)
                let mix = 1 - min(1, max(0, y))
                angle = angle * (1 - mix) + extrapolated * mix
            }
            cs[2 * i] = cosf(angle) * magnitude
            cs[2 * i + 1] = sinf(angle) * magnitude
            theta *= thetaScale
        }
    }

    /// Rotates every head of one token's q or k vector by precomputed `rotations(position:into:)`.
    /// As ggml (compiled with FMA contraction): x0·c − x1·s and x0·s + x1·c each fuse the
    /// first product and round the second.
    // Unchecked: dimensions ≤ headDimension (Models' Attention.init checks rope.dimension_count at load).
    public func apply(_ v: UnsafeMutablePointer<Float>, heads: Int, headDimension: Int, rotations cs: UnsafePointer<Float>) {
        let half = dimensions / 2
        for h in 0..<heads {
            let head = v + h * headDimension
            for i in 0..<half {
                let c = cs[2 * i], s = cs[2 * i + 1]
                let (a, b) = style == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                let x0 = head[a], x1 = head[b]
                head[a] = (-(x1 * s)).addingProduct(x0, c)
                head[b] = (x1 * c).addingProduct(x0, s)
            }
        }
    }
}
