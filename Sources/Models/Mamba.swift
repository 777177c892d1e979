import Foundation
import GGUF
import Kernels

/// Mamba (selective state-space model). Each layer: input projection to (x, z), causal
/// depthwise conv1d over x, data-dependent Δ, B, C, the selective scan
/// hₜ = exp(Δ·A)⊙hₜ₋₁ + Δ·B·xₜ, yₜ = C·hₜ + D⊙xₜ, gated by SiLU(z), output projection.
/// A sequence's memory is a fixed-size recurrent state instead of a KV cache.
public final class Mamba: LanguageModel {
    struct Config {
        let convKernel: Int
        let innerSize: Int
        let stateSize: Int
        let timeStepRank: Int

        init(file: GGUFFile) throws {
            func required(_ key: String) throws -> Int {
                guard let v = file.arch(key)?.int, v > 0 else { throw ModelError.missingMetadata("mamba.\(key)") }
                return v
            }
            convKernel = try required("ssm.conv_kernel")
            innerSize = try required("ssm.inner_size")
            stateSize = try required("ssm.state_size")
            timeStepRank = try required("ssm.time_step_rank")
        }
    }

    struct Layer: Sendable {
        let norm: RMSNorm
        let inProjection: Linear
        /// `innerSize × convKernel`, row-major per channel.
        let convWeight: Vector
        let convBias: Vector
        let xProjection: Linear
        let dtProjection: Linear
        /// `innerSize × stateSize`, already −exp(A_log).
        let a: Vector
        let d: Vector
        let outProjection: Linear
    }

    public let config: ModelConfig
    let ssm: Config
    let embedding: Embedding
    let layers: [Layer]
    let head: OutputHead

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let ssm = try Config(file: file)
        self.ssm = ssm
        let d = config.embeddingLength, inner = ssm.innerSize, state = ssm.stateSize, rank = ssm.timeStepRank
        head = try OutputHead(file: file, config: config)
        embedding = try Embedding(file: file, name: "token_embd.weight", dimension: d, head: head)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            return Layer(
                norm: try RMSNorm(file: file, name: p + "attn_norm.weight", count: d, epsilon: config.normEpsilon),
                inProjection: try Linear(file: file, name: p + "ssm_in.weight", inputs: d, outputs: 2 * inner),
                convWeight: try Vector(file: file, name: p + "ssm_conv1d.weight", count: inner * ssm.convKernel),
                convBias: try Vector(file: file, name: p + "ssm_conv1d.bias", count: inner),
                xProjection: try Linear(file: file, name: p + "ssm_x.weight", inputs: inner, outputs: rank + 2 * state),
                dtProjection: try Linear(file: file, name: p + "ssm_dt.weight", inputs: rank, outputs: inner),
                a: try Vector(file: file, name: p + "ssm_a", count: inner * state),
                d: try Vector(file: file, name: p + "ssm_d", count: inner),
                outProjection: try Linear(file: file, name: p + "ssm_out.weight", inputs: inner, outputs: d))
        }
    }

    public func makeCache(capacity: Int) -> any SequenceState {
        MambaState(layers: config.blockCount, innerSize: ssm.innerSize, convKernel: ssm.convKernel,
                   stateSize: ssm.stateSize, capacity: capacity)
    }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let states = batch.map { $0.cache as! MambaState }
        let inner = ssm.innerSize, rank = ssm.timeStepRank, n = ssm.stateSize, kernel = ssm.convKernel
        let x = embedding(batch.flatMap(\.tokens))
        for (l, layer) in layers.enumerated() {
            let xz = layer.inProjection(layer.norm(x, pool: pool), pool)

            // Causal depthwise conv over each sequence's x half, continuing from its saved window.
            let u = Matrix(rows: x.rows, columns: inner)
            var row = 0
            layer.convWeight.values.withUnsafeBufferPointer { weights in
                for (s, seq) in batch.enumerated() {
                    let window = states[s].convWindow(layer: l)
                    for _ in seq.tokens {
                        let input = xz[row]
                        for c in 0..<inner {
                            let w = weights.baseAddress! + c * kernel
                            var sum = layer.convBias.values[c]
                            for k in 0..<kernel - 1 { sum += w[k] * window[k * inner + c] }
                            sum += w[kernel - 1] * input[c]
                            u[row][c] = sum / (1 + expf(-sum))  // SiLU
                        }
                        // Slide the window: drop the oldest input, append this one.
                        if kernel > 1 {
                            for i in 0..<(kernel - 2) * inner { window[i] = window[i + inner] }
                            (window + (kernel - 2) * inner).update(from: input, count: inner)
                        }
                        row += 1
                    }
                }
            }

            // Δ, B, C from the conv output; Δ through its own projection and softplus.
            let projected = layer.xProjection(u, pool)
            let dtInput = Matrix(rows: x.rows, columns: rank)
            for r in 0..<x.rows { dtInput[r].update(from: projected[r], count: rank) }
            let dt = layer.dtProjection(dtInput, pool)

            // Selective scan, token by token per sequence; y gated by SiLU(z).
            let y = Matrix(rows: x.rows, columns: inner)
            row = 0
            for (s, seq) in batch.enumerated() {
                let h = states[s].ssmState(layer: l)
                for _ in seq.tokens {
                    let b = projected[row] + rank, c = projected[row] + rank + n
                    let z = xz[row] + inner
                    for i in 0..<inner {
                        let raw = dt[row][i]
                        let delta = raw > 20 ? raw : log1pf(expf(raw))
                        let deltaU = delta * u[row][i]
                        var out: Float = 0
                        for j in 0..<n {
                            let idx = i * n + j
                            h[idx] = h[idx] * expf(delta * layer.a.values[idx]) + deltaU * b[j]
                            out += h[idx] * c[j]
                        }
                        out += layer.d.values[i] * u[row][i]
                        let gate = z[i]
                        y[row][i] = out * gate / (1 + expf(-gate))
                    }
                    row += 1
                }
            }
            x += layer.outProjection(y, pool)
        }
        return head(x, batch: batch, pool: pool)
    }
}

/// Mamba's per-sequence memory: the last `convKernel − 1` conv inputs and the SSM state of
/// every layer. Its size does not depend on the sequence length.
public final class MambaState: SequenceState, @unchecked Sendable {
    public let capacity: Int
    public private(set) var count = 0
    private let layers: Int
    private let convSize: Int
    private let ssmSize: Int
    private let conv: UnsafeMutablePointer<Float>
    private let ssm: UnsafeMutablePointer<Float>

    init(layers: Int, innerSize: Int, convKernel: Int, stateSize: Int, capacity: Int) {
        self.layers = layers
        self.capacity = capacity
        convSize = max(convKernel - 1, 0) * innerSize
        ssmSize = innerSize * stateSize
        conv = .allocate(capacity: max(1, layers * convSize))
        ssm = .allocate(capacity: layers * ssmSize)
        reset()
    }

    deinit {
        conv.deallocate()
        ssm.deallocate()
    }

    private func reset() {
        conv.initialize(repeating: 0, count: max(1, layers * convSize))
        ssm.initialize(repeating: 0, count: layers * ssmSize)
        count = 0
    }

    func convWindow(layer: Int) -> UnsafeMutablePointer<Float> { conv + layer * convSize }
    func ssmState(layer: Int) -> UnsafeMutablePointer<Float> { ssm + layer * ssmSize }

    public func reserve(_ tokens: Int) throws {
        guard count + tokens <= capacity else { throw ContextFullError(needed: count + tokens, capacity: capacity) }
    }

    public func advance(by tokens: Int) { count += tokens }

    /// A recurrent state cannot forget its last tokens: anything short of keeping all of it
    /// starts over.
    public func truncate(to position: Int) {
        if position < count { reset() }
    }
}
