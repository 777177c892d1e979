import GGUF
import Kernels

/// Mamba-2: Mamba's layer (see `Mamba`) with the state-space-duality simplifications. One input
/// projection gives z, the conv input xBC and Δ (one per head); the causal conv runs over x, B
/// and C together; A is a scalar per head and B, C are shared by groups of heads:
///   hₜ = exp(Δₜ·A)·hₜ₋₁ + Δₜ·Bₜ·xₜ,  yₜ = Cₜ·hₜ + D·xₜ
/// (per head, Δ = softplus(Δ + dt bias)). y is gated by SiLU(z) and RMS-normalized by groups
/// before the output projection.
public final class Mamba2: LanguageModel {
    struct Layer: Sendable {
        let norm: RMSNorm
        /// → z (inner), xBC (inner + 2·groups·stateSize), Δ (heads).
        let inProjection: Linear
        let conv: CausalConv1d
        let dtBias: Vector
        /// One per head, already −exp(A_log).
        let a: Vector
        let d: Vector
        /// Weight as long as y; each group of `innerSize / groups` is normalized on its own.
        let groupNorm: RMSNorm
        let outProjection: Linear
    }

    public let config: ModelConfig
    let ssm: StateSpaceConfig
    let scan: ScanShape
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let arch = config.architecture
        let ssm = try StateSpaceConfig(file: file, architecture: arch, grouped: true)
        let d = config.embeddingLength, inner = ssm.innerSize, n = ssm.stateSize
        let heads = ssm.timeStepRank, groups = ssm.groupCount
        // Heads split y evenly, and consecutive heads share a group's B and C.
        guard inner % heads == 0 else {
            throw ModelError.inconsistentMetadata("\(arch).ssm.inner_size (\(inner)) is not a multiple of ssm.time_step_rank (\(heads) heads)")
        }
        guard heads % groups == 0 else {
            throw ModelError.inconsistentMetadata("\(arch).ssm.time_step_rank (\(heads) heads) is not a multiple of ssm.group_count (\(groups))")
        }
        self.ssm = ssm
        scan = ScanShape(heads: heads, headDimension: inner / heads, groups: groups, stateSize: n, decay: .perHead)
        let convChannels = inner + 2 * groups * n
        head = try OutputHead(file: file, config: config)
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            return Layer(
                norm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: config.normEpsilon),
                inProjection: try Linear(file: file, name: p + "ssm_in.weight", inputs: d, outputs: inner + convChannels + heads),
                conv: try CausalConv1d(file: file, name: p + "ssm_conv1d", channels: convChannels, kernel: ssm.convKernel, bias: true),
                dtBias: try Vector(file: file, name: p + "ssm_dt.bias", count: heads),
                a: try Vector(file: file, name: p + "ssm_a", shape: [1, heads]),
                d: try Vector(file: file, name: p + "ssm_d", shape: [1, heads]),
                groupNorm: try RMSNorm(weight: Vector(file: file, name: p + "ssm_norm.weight", shape: [inner / groups, groups]),
                                       epsilon: config.normEpsilon),
                outProjection: try Linear(file: file, name: p + "ssm_out.weight", inputs: inner, outputs: d))
        }
    }

    public func makeCache(capacity: Int, types: KVCacheTypes) -> any SequenceState {
        RecurrentState(layers: config.blockCount, convCount: layers.first?.conv.windowCount ?? 0,
                       ssmCount: scan.stateCount, capacity: capacity)
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let states = batch.map { $0.cache as! RecurrentState }
        let inner = ssm.innerSize, heads = scan.heads, headDimension = scan.headDimension
        let groupColumns = scan.groups * scan.stateSize
        let dtColumn = 2 * inner + 2 * groupColumns
        let x = embedding(batch.flatMap(\.tokens))
        for (l, layer) in layers.enumerated() {
            let zxbcdt = layer.inProjection(layer.norm(x, pool: pool), pool)

            // Causal conv over x, B and C, continuing each sequence's window; bias, SiLU.
            let xbc = layer.conv(zxbcdt, firstColumn: inner, batch: batch, windows: states.map { $0.convWindow(layer: l) })
            silu(xbc.data, elements: 0..<xbc.rows * xbc.columns, columns: xbc.columns)

            let dt = Matrix(rows: x.rows, columns: heads, zeroed: false)
            for r in 0..<x.rows {
                for h in 0..<heads { dt[r][h] = zxbcdt[r][dtColumn + h] + layer.dtBias.values[h] }
            }
            let y = selectiveScan(scan, batch: batch, states: states.map { $0.ssmState(layer: l) }, x: xbc,
                                  bc: xbc, bColumn: inner, cColumn: inner + groupColumns, dt: dt, a: layer.a, pool: pool)

            // y + D·x, gated by SiLU(z), then normalized by groups.
            let gated = Matrix(rows: x.rows, columns: inner, zeroed: false)
            for r in 0..<x.rows {
                for i in 0..<inner { y[r][i] += xbc[r][i] * layer.d.values[i / headDimension] }
                gated[r].update(from: zxbcdt[r], count: inner)
            }
            swiglu(gated.data, y.data, elements: 0..<x.rows * inner, columns: headDimension)
            layer.groupNorm.normalize(gated, groupsOf: inner / scan.groups, into: gated)
            x += layer.outProjection(gated, pool)
        }
        return head(x, batch: batch, pool: pool)
    }
}
