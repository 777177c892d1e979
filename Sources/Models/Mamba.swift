import Foundation
import GGUF
import Kernels

/// Mamba (selective state-space model). Each layer: input projection to (x, z), causal
/// depthwise conv1d over x, data-dependent Δ, B, C, the selective scan
/// hₜ = exp(Δ·A)⊙hₜ₋₁ + Δ·B·xₜ, yₜ = C·hₜ + D⊙xₜ, gated by SiLU(z), output projection.
/// A sequence's memory is a fixed-size recurrent state instead of a KV cache.
public final class Mamba: LanguageModel {
    struct Layer: Sendable {
        let norm: RMSNorm
        let inProjection: Linear
        let conv: CausalConv1d
        let xProjection: Linear
        let dtProjection: Linear
        /// `innerSize × stateSize`, already −exp(A_log).
        let a: Vector
        let d: Vector
        let outProjection: Linear
    }

    public let config: ModelConfig
    let ssm: StateSpaceConfig
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let ssm = try StateSpaceConfig(file: file, architecture: config.architecture)
        self.ssm = ssm
        let d = config.embeddingLength, inner = ssm.innerSize, state = ssm.stateSize, rank = ssm.timeStepRank
        head = try OutputHead(file: file, config: config)
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            return Layer(
                norm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: config.normEpsilon),
                inProjection: try Linear(file: file, name: p + "ssm_in.weight", inputs: d, outputs: 2 * inner),
                conv: try CausalConv1d(file: file, name: p + "ssm_conv1d", channels: inner, kernel: ssm.convKernel, bias: true),
                xProjection: try Linear(file: file, name: p + "ssm_x.weight", inputs: inner, outputs: rank + 2 * state),
                dtProjection: try Linear(file: file, name: p + "ssm_dt.weight", inputs: rank, outputs: inner),
                a: try Vector(file: file, name: p + "ssm_a", shape: [state, inner]),
                d: try Vector(file: file, name: p + "ssm_d", count: inner),
                outProjection: try Linear(file: file, name: p + "ssm_out.weight", inputs: inner, outputs: d))
        }
    }

    public func makeCache(capacity: Int, types: KVCacheTypes) -> any SequenceState {
        RecurrentState(layers: config.blockCount, convCount: (ssm.convKernel - 1) * ssm.innerSize,
                       ssmCount: ssm.innerSize * ssm.stateSize, capacity: capacity)
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let states = batch.map { $0.cache as! RecurrentState }
        let inner = ssm.innerSize, rank = ssm.timeStepRank, n = ssm.stateSize
        // Mamba-1 as a selective scan: one head per channel, one group of B and C for all.
        let shape = ScanShape(heads: inner, headDimension: 1, groups: 1, stateSize: n, decay: .perState)
        let x = embedding(batch.flatMap(\.tokens))
        for (l, layer) in layers.enumerated() {
            let xz = layer.inProjection(layer.norm(x, pool: pool), pool)

            // Causal conv over each sequence's x half, continuing from its saved window; SiLU.
            let u = layer.conv(xz, batch: batch, windows: states.map { $0.convWindow(layer: l) })
            silu(u.data, elements: 0..<u.rows * inner, columns: inner)

            // Δ, B, C from the conv output; Δ through its own projection (and bias).
            let projected = layer.xProjection(u, pool)
            let dtInput = Matrix(rows: x.rows, columns: rank, zeroed: false)
            for r in 0..<x.rows { dtInput[r].update(from: projected[r], count: rank) }
            let dt = layer.dtProjection(dtInput, pool)

            // Selective scan per sequence; y + D⊙u, gated by SiLU(z).
            let y = selectiveScan(shape, batch: batch, states: states.map { $0.ssmState(layer: l) }, x: u,
                                  bc: projected, bColumn: rank, cColumn: rank + n, dt: dt, a: layer.a, pool: pool)
            let gated = Matrix(rows: x.rows, columns: inner, zeroed: false)
            for r in 0..<x.rows {
                for i in 0..<inner { y[r][i] += u[r][i] * layer.d.values[i] }
                gated[r].update(from: xz[r] + inner, count: inner)
            }
            swiglu(gated.data, y.data, elements: 0..<x.rows * inner, columns: inner)
            x += layer.outProjection(gated, pool)
        }
        return head(x, batch: batch, pool: pool)
    }
}

/// The `ARCH.ssm.*` hyper-parameters of Mamba and Mamba-2.
struct StateSpaceConfig {
    let convKernel: Int
    let innerSize: Int
    let stateSize: Int
    /// Mamba: the rank of Δ's projection; Mamba-2: the number of heads.
    let timeStepRank: Int
    /// Groups of heads sharing B and C (Mamba-2's `ssm.group_count`; Mamba: 1).
    let groupCount: Int

    init(file: GGUFFile, architecture: String, grouped: Bool = false) throws {
        func required(_ key: String) throws -> Int {
            guard let v = file.arch(key)?.int else { throw ModelError.missingMetadata("\(architecture).\(key)") }
            // every size here is a loop bound or a divisor of the kernels
            guard v > 0 else { throw ModelError.inconsistentMetadata("\(architecture).\(key) is \(v), not positive") }
            return v
        }
        convKernel = try required("ssm.conv_kernel")
        innerSize = try required("ssm.inner_size")
        stateSize = try required("ssm.state_size")
        timeStepRank = try required("ssm.time_step_rank")
        groupCount = grouped ? try required("ssm.group_count") : 1
    }
}
