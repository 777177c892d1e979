import Foundation
import GGUF
import Kernels

/// The feed-forward half of a decoder layer: dense (one gated MLP) or sparse (experts).
public protocol FeedForward: Sendable {
    /// `batching`: see `matmul` (which rows llama.cpp multiplies with its gemm kernel).
    func callAsFunction(_ x: Matrix, _ pool: ThreadPool, batching: ReferenceBatching) -> Matrix
}

extension GatedFeedForward: FeedForward {}

/// Mixtral-style sparse mixture of SwiGLU experts: a router scores every expert per token,
/// the `used` best run, and their outputs are summed with the router's softmax weights
/// (renormalized over the chosen experts).
public struct MixtureOfExperts: FeedForward {
    public let router: Linear
    public let gates: [WeightMatrix]
    public let ups: [WeightMatrix]
    public let downs: [WeightMatrix]
    /// Optional per-expert scales of each projection's output (`ffn_*_exps.scale`).
    public let gateScales: [Float]?
    public let upScales: [Float]?
    public let downScales: [Float]?
    public let used: Int

    public init(file: GGUFFile, prefix: String, dimension: Int, hidden: Int, experts: Int, used: Int) throws {
        router = try Linear(file: file, name: prefix + "ffn_gate_inp.weight", inputs: dimension, outputs: experts)
        func experts3D(_ name: String, inputs: Int, outputs: Int) throws -> [WeightMatrix] {
            guard let info = file.tensor(named: prefix + name) else { throw ModelError.missingTensor(prefix + name) }
            guard info.shape == [inputs, outputs, experts] else {
                throw ModelError.badTensorShape(name: prefix + name, expected: [inputs, outputs, experts], found: info.shape)
            }
            let base = file.data(for: info), bytesPerExpert = outputs * info.rowBytes
            return (0..<experts).map { WeightMatrix(type: info.type, data: base + $0 * bytesPerExpert, rows: outputs, columns: inputs,
                                                  owner: file) }
        }
        gates = try experts3D("ffn_gate_exps.weight", inputs: dimension, outputs: hidden)
        ups = try experts3D("ffn_up_exps.weight", inputs: dimension, outputs: hidden)
        downs = try experts3D("ffn_down_exps.weight", inputs: hidden, outputs: dimension)
        func scales(_ name: String) throws -> [Float]? {
            file.tensor(named: prefix + name) != nil ? try Vector(file: file, name: prefix + name, count: experts).values : nil
        }
        gateScales = try scales("ffn_gate_exps.scale")
        upScales = try scales("ffn_up_exps.scale")
        downScales = try scales("ffn_down_exps.scale")
        self.used = min(used, experts)
    }

    /// Which experts each token uses and with what weight.
    public func route(_ x: Matrix, _ pool: ThreadPool) -> [[(expert: Int, weight: Float)]] {
        let scores = router(x, pool)
        return (0..<x.rows).map { t in
            let row = scores.rowArray(t)
            let maxScore = row.max() ?? 0
            let probabilities = row.map { expf($0 - maxScore) }
            let chosen = probabilities.indices.sorted { probabilities[$0] > probabilities[$1] }.prefix(used)
            let total = chosen.reduce(Float(0)) { $0 + probabilities[$1] }
            return chosen.map { ($0, probabilities[$0] / total) }
        }
    }

    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool, batching: ReferenceBatching = .ungrouped) -> Matrix {
        let routes = route(x, pool)
        var tokensOf = [[(token: Int, weight: Float)]](repeating: [], count: gates.count)
        for (t, choices) in routes.enumerated() {
            for c in choices { tokensOf[c.expert].append((t, c.weight)) }
        }
        let out = Matrix(rows: x.rows, columns: x.columns)
        // Each expert runs once over all the tokens routed to it.
        for (e, assigned) in tokensOf.enumerated() where !assigned.isEmpty {
            let input = Matrix(rows: assigned.count, columns: x.columns)
            for (i, a) in assigned.enumerated() { input[i].update(from: x[a.token], count: x.columns) }
            let g = Matrix(rows: assigned.count, columns: gates[e].rows)
            let u = Matrix(rows: assigned.count, columns: ups[e].rows)
            matmul(gates[e], input: input.data, tokens: assigned.count, output: g.data, pool: pool)
            matmul(ups[e], input: input.data, tokens: assigned.count, output: u.data, pool: pool)
            if let gateScales { g.scale(by: gateScales[e]) }
            if let upScales { u.scale(by: upScales[e]) }
            swiglu(g.data, u.data, elements: 0..<g.rows * g.columns, columns: g.columns)
            let y = Matrix(rows: assigned.count, columns: x.columns)
            matmul(downs[e], input: g.data, tokens: assigned.count, output: y.data, pool: pool)
            if let downScales { y.scale(by: downScales[e]) }
            for (i, a) in assigned.enumerated() {
                for j in 0..<x.columns { out[a.token][j] += a.weight * y[i][j] }
            }
        }
        return out
    }
}
