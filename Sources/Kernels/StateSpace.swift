import Foundation

// Kernels of the recurrent (state-space and short-convolution) layers, with ggml's arithmetic:
// the causal depthwise convolution of its ssm_conv op and the selective scan of its ssm_scan op.

/// Causal depthwise convolution over `tokens` consecutive rows of one sequence, continuing from
/// the sequence's saved window, as ggml's ssm_conv: channel c of a token's output is
/// Σₖ w[c·kernel + k]·inputₖ[c] over the last `kernel` inputs (the oldest first), summed in
/// float from k = 0 in the order of its compiler's code: products of 16 and then 8 taps added
/// one by one, the last fewer than 8 taps as fused multiply-adds (so every tap of the usual
/// 3- and 4-tap kernels). The window holds the last `kernel − 1` inputs, oldest first
/// (`window[k·channels + c]`), and slides by one input per token.
/// Needs: `inputs` and `outputs` hold `tokens` rows of at least `channels` floats `inputStride`
/// / `outputStride` apart, `weights` holds `channels·kernel` floats, `window` holds
/// `(kernel − 1)·channels` floats, kernel ≥ 1 (the model checks the shapes at load).
public func causalConv1d(inputs: UnsafePointer<Float>, inputStride: Int, tokens: Int, channels: Int,
                         weights: UnsafePointer<Float>, kernel: Int, window: UnsafeMutablePointer<Float>,
                         outputs: UnsafeMutablePointer<Float>, outputStride: Int) {
    let history = kernel - 1
    let unfused = kernel / 16 * 16 + (kernel % 16 >= 8 ? 8 : 0)
    for t in 0..<tokens {
        let input = inputs + t * inputStride, output = outputs + t * outputStride
        for c in 0..<channels {
            let w = weights + c * kernel
            @inline(__always) func tap(_ k: Int) -> Float { k < history ? window[k * channels + c] : input[c] }
            var sum: Float = 0
            for k in 0..<unfused { sum += tap(k) * w[k] }
            for k in unfused..<kernel { sum = sum.addingProduct(tap(k), w[k]) }
            output[c] = sum
        }
        if history > 0 {
            window.update(from: window + channels, count: (history - 1) * channels)
            (window + (history - 1) * channels).update(from: input, count: channels)
        }
    }
}

/// How the state decays in a selective scan.
public enum ScanDecay: Sendable {
    /// Mamba-1: one decay rate per state element, `a[h·stateSize + j]`.
    case perState
    /// Mamba-2: one scalar decay rate per head, `a[h]`.
    case perHead
}

/// Sizes of a selective scan: `heads` heads of `headDimension` channels, each channel with
/// `stateSize` state floats; the heads share B and C by `groups` (consecutive heads, as
/// repeat_interleave).
public struct ScanShape: Sendable {
    public let heads: Int
    public let headDimension: Int
    public let groups: Int
    public let stateSize: Int
    public let decay: ScanDecay

    public init(heads: Int, headDimension: Int, groups: Int, stateSize: Int, decay: ScanDecay) {
        self.heads = heads
        self.headDimension = headDimension
        self.groups = groups
        self.stateSize = stateSize
        self.decay = decay
    }

    public var channels: Int { heads * headDimension }
    /// Floats of one sequence's state: `stateSize` per channel, channel-major.
    public var stateCount: Int { channels * stateSize }
}

/// The selective scan of ggml's ssm_scan over `tokens` consecutive tokens of one sequence, for
/// the heads `heads` (heads are independent, so a caller may split them across threads). Per
/// token and head h, with Δ = softplus(dt[h]) (ggml's: x > 20 ? x : log(1 + eˣ)), group
/// g = h / (heads / groups), and each channel i of the head:
///   s[i][j] = s[i][j]·exp(Δ·A) + B[g][j]·(x[i]·Δ),   y[i] = Σⱼ s[i][j]·C[g][j]
/// with A = a[h] (Mamba-2) or a[h·stateSize + j] (Mamba-1), in the floats of ggml's AVX-512
/// build: s·exp(Δ·A) fused into the add of B·(x·Δ), each s·C fused into the sum; Mamba-2 sums
/// 64 states per step in four 16-lane accumulators, combined (0+2) + (1+3) and reduced as
/// _mm512_reduce_add_ps, the last `stateSize % 64` added one by one.
/// Token t's x (channels floats) starts at `x + t·xStride`, its B and C (`groups·stateSize`
/// each) at `b + t·bcStride` and `c + t·bcStride`, its dt (heads) at `dt + t·dtStride`, its y
/// (channels) at `y + t·yStride`.
/// Needs: `heads` within 0..<shape.heads, heads a multiple of groups, `state` holding
/// `shape.stateCount` floats, `a` heads (perHead) or `stateCount` (perState) floats.
public func selectiveScan(_ shape: ScanShape, heads: Range<Int>, tokens: Int, state: UnsafeMutablePointer<Float>,
                          x: UnsafePointer<Float>, xStride: Int, b: UnsafePointer<Float>, c: UnsafePointer<Float>,
                          bcStride: Int,
                          dt: UnsafePointer<Float>, dtStride: Int, a: UnsafePointer<Float>,
                          y: UnsafeMutablePointer<Float>, yStride: Int) {
    let n = shape.stateSize, headDimension = shape.headDimension
    let headsPerGroup = shape.heads / shape.groups
    for t in 0..<tokens {
        let xt = x + t * xStride, bt = b + t * bcStride, ct = c + t * bcStride
        let dtt = dt + t * dtStride, yt = y + t * yStride
        for h in heads {
            let raw = dtt[h]
            let delta = raw > 20 ? raw : logf(1 + expf(raw))
            let g = h / headsPerGroup
            let bg = bt + g * n, cg = ct + g * n
            for i in h * headDimension..<(h + 1) * headDimension {
                let s = state + i * n
                let xDelta = xt[i] * delta
                switch shape.decay {
                case .perHead:
                    yt[i] = scalarDecayStep(s, n: n, decay: expf(delta * a[h]), bg, cg, xDelta: xDelta)
                case .perState:
                    let ah = a + h * n
                    var sum: Float = 0
                    for j in 0..<n {
                        let next = (bg[j] * xDelta).addingProduct(s[j], expf(delta * ah[j]))
                        sum = sum.addingProduct(next, cg[j])
                        s[j] = next
                    }
                    yt[i] = sum
                }
            }
        }
    }
}

/// One channel's Mamba-2 state update and output (see `selectiveScan`).
@inline(__always)
private func scalarDecayStep(_ s: UnsafeMutablePointer<Float>, n: Int, decay: Float, _ b: UnsafePointer<Float>,
                             _ c: UnsafePointer<Float>, xDelta: Float) -> Float {
    var j = 0
    var sum: Float = 0
    if n >= 64 {
        let decay8 = SIMD8<Float>(repeating: decay), xDelta8 = SIMD8<Float>(repeating: xDelta)
        // acc[2k], acc[2k+1]: the low and high halves of ggml's 16-lane accumulator k
        var acc = (SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(),
                   SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>(), SIMD8<Float>())
        @inline(__always) func update(_ offset: Int, _ sum: inout SIMD8<Float>) {
            let next = (load8(b + offset) * xDelta8).addingProduct(load8(s + offset), decay8)
            sum = sum.addingProduct(next, load8(c + offset))
            store8(next, s + offset)
        }
        while j + 64 <= n {
            update(j, &acc.0); update(j + 8, &acc.1)
            update(j + 16, &acc.2); update(j + 24, &acc.3)
            update(j + 32, &acc.4); update(j + 40, &acc.5)
            update(j + 48, &acc.6); update(j + 56, &acc.7)
            j += 64
        }
        sum = reduceAdd16((acc.0 + acc.4) + (acc.2 + acc.6), (acc.1 + acc.5) + (acc.3 + acc.7))
    }
    while j < n {
        let next = (b[j] * xDelta).addingProduct(s[j], decay)
        sum = sum.addingProduct(next, c[j])
        s[j] = next
        j += 1
    }
    return sum
}
