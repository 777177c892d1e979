import Foundation

/// How rotary position embedding pairs up the dimensions of a head.
public enum RoPEStyle: Sendable {
    /// (x[2i], x[2i+1]) — llama.cpp's "normal" mode, used by llama-family GGUFs.
    case interleaved
    /// (x[i], x[i + d/2]) — GPT-NeoX mode, used by gemma, qwen2.
    case halves
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
    /// Multiplies every cos and sin (`rope.scaling.attn_factor`, phi3's long-context models),
    /// so rotated q and k both grow by it.
    public let attentionFactor: Float

    public init(style: RoPEStyle, dimensions: Int, base: Float, positionScale: Float = 1, frequencyFactors: [Float]? = nil,
                attentionFactor: Float = 1) {
        precondition(frequencyFactors == nil || frequencyFactors!.count == dimensions / 2)
        self.style = style
        self.dimensions = dimensions
        self.base = base
        self.positionScale = positionScale
        self.frequencyFactors = frequencyFactors
        self.attentionFactor = attentionFactor
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
            let angle = frequencyScale * (frequencyFactors.map { theta / $0[i] } ?? theta)
            cs[2 * i] = cosf(angle) * attentionFactor
            cs[2 * i + 1] = sinf(angle) * attentionFactor
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
