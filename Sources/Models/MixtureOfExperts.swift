import Foundation
import GGUF
import Kernels

/// The feed-forward half of a decoder layer: dense (one gated MLP) or sparse (experts).
public protocol FeedForward: Sendable {
    /// `batching`: see `matmul` (which rows llama.cpp multiplies with its gemm kernel).
    func callAsFunction(_ x: Matrix, _ pool: ThreadPool, batching: ReferenceBatching) -> Matrix
}

extension GatedFeedForward: FeedForward {}

/// How a mixture of experts turns router scores into the chosen experts and their weights
/// (llama.cpp's `build_moe_ffn` arguments).
public struct ExpertRouting: Sendable {
    public enum Gating: Sendable {
        /// Probabilities are the softmax of the scores over all experts (Mixtral, Qwen3-MoE).
        case softmax
        /// Each score through a sigmoid, independently (DeepSeek-V3, GLM-4.5).
        case sigmoid
        /// The chosen experts' raw scores, softmaxed among themselves (gpt-oss).
        case softmaxOverChosen
        /// √softplus of each score (DeepSeek-V4).
        case squareRootSoftplus

        /// llama.cpp's `expert_gating_func` values (1–4).
        public init?(metadataValue: Int) {
            switch metadataValue {
            case 1: self = .softmax
            case 2: self = .sigmoid
            case 3: self = .softmaxOverChosen
            case 4: self = .squareRootSoftplus
            default: return nil
            }
        }
    }
    public var gating: Gating = .softmax
    /// The chosen weights are divided by their sum (`norm_w`).
    public var normalizesWeights = true
    /// Then multiplied by this (`expert_weights_scale`; 0 and 1 mean none).
    public var weightScale: Float = 1
    /// Experts come in `count` equal groups and only the `used` groups whose two best experts
    /// score highest are eligible (DeepSeek-V3's `expert_group_count`/`_used_count`).
    public var groups: (count: Int, used: Int)?

    public init(gating: Gating = .softmax, normalizesWeights: Bool = true, weightScale: Float = 1,
                groups: (count: Int, used: Int)? = nil) {
        self.gating = gating
        self.normalizesWeights = normalizesWeights
        self.weightScale = weightScale
        self.groups = groups
    }

    /// The `used` best experts of one token's router scores, with their weights. `selectionBias`
    /// (DeepSeek-V3's `exp_probs_b`) shifts which experts are chosen but not their weights.
    func choose(_ scores: [Float], used: Int, selectionBias: [Float]? = nil) -> [(expert: Int, weight: Float)] {
        var probabilities: [Float]
        switch gating {
        case .softmax:
            let maxScore = scores.max() ?? 0
            probabilities = scores.map { expf($0 - maxScore) }
            // ggml's soft_max: a double sum, then one reciprocal
            let inverse = Float(1 / probabilities.reduce(Double(0)) { $0 + Double($1) })
            probabilities = probabilities.map { $0 * inverse }
        case .sigmoid:
            probabilities = scores.map { 1 / (1 + expf(-$0)) }
        case .softmaxOverChosen:
            probabilities = scores
        case .squareRootSoftplus:
            probabilities = scores.map { ($0 > 20 ? $0 : logf(1 + expf($0))).squareRoot() }
        }
        var selection = selectionBias.map { zip(probabilities, $0).map { $0 + $1 } } ?? probabilities
        if let groups, groups.count > 1 {
            // a group's score is the sum of its two best; experts outside the best groups drop out
            let size = selection.count / groups.count
            let groupScores = (0..<groups.count).map { g in
                selection[g * size..<(g + 1) * size].sorted(by: >).prefix(2).reduce(0, +)
            }
            let kept = Set(groupScores.indices.sorted { groupScores[$0] > groupScores[$1] }.prefix(groups.used))
            for e in selection.indices where !kept.contains(e / size) { selection[e] = -.infinity }
        }
        let chosen = Array(selection.indices.sorted { selection[$0] > selection[$1] }.prefix(used))
        var weights = chosen.map { probabilities[$0] }
        if gating == .softmaxOverChosen {
            let maxWeight = weights.max() ?? 0
            weights = weights.map { expf($0 - maxWeight) }
            let inverse = Float(1 / weights.reduce(Double(0)) { $0 + Double($1) })
            weights = weights.map { $0 * inverse }
        }
        if normalizesWeights {
            // clamped as llama.cpp does, to the smallest normal half-precision value
            let total = max(weights.reduce(0, +), 6.103515625e-5)
            weights = weights.map { $0 / total }
        }
        if weightScale != 0 && weightScale != 1 { weights = weights.map { $0 * weightScale } }
        return zip(chosen, weights).map { ($0, $1) }
    }
}

/// What each expert computes between its gate/up and down projections.
public enum ExpertActivation: Sendable {
    /// silu(gate) · up
    case swiGLU
    /// gpt-oss's SwiGLU with clamped inputs (`clampedSwiGLU`).
    case clampedSwiGLU(alpha: Float, limit: Float)
}

/// A sparse mixture of SwiGLU experts: a router scores every expert per token, the `used`
/// best run, and their outputs are summed with the routing weights; a shared expert, when
/// the file has one (`ffn_*_shexp`), sees every token and is added on top.
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
    public let routing: ExpertRouting
    public let activation: ExpertActivation
    /// Per-expert biases of each projection's output (gpt-oss), added after its scale.
    public let gateBiases: [[Float]]?
    public let upBiases: [[Float]]?
    public let downBiases: [[Float]]?
    /// `exp_probs_b.bias`, when the file has it.
    public let selectionBias: [Float]?
    public let shared: GatedFeedForward?

    /// `hidden`: each expert's width; `sharedHidden`: the shared expert's (nil: none);
    /// `routerBias`: whether the router's optional `ffn_gate_inp.bias` is added to its scores;
    /// `selectionBias`: whether the optional `exp_probs_b.bias` steers the choice;
    /// `expertScales`: whether the optional `ffn_*_exps.scale` apply; `expertBiases`: whether
    /// `ffn_*_exps.bias` are required and added.
    public init(file: GGUFFile, prefix: String, dimension: Int, hidden: Int, experts: Int, used: Int,
                routing: ExpertRouting = ExpertRouting(), routerBias: Bool = false, selectionBias usesSelectionBias: Bool = false,
                expertScales: Bool = true, expertBiases: Bool = false, activation: ExpertActivation = .swiGLU,
                sharedHidden: Int? = nil) throws {
        guard experts > 0, used > 0, used <= experts else {
            throw ModelError.inconsistentMetadata("expert_used_count \(used) with expert_count \(experts)")
        }
        router = try Linear(file: file, name: prefix + "ffn_gate_inp.weight", inputs: dimension, outputs: experts,
                            bias: routerBias, scale: false)
        func experts3D(_ name: String, inputs: Int, outputs: Int) throws -> [WeightMatrix] {
            try matrixStack(file: file, name: prefix + name, inputs: inputs, outputs: outputs, count: experts)
        }
        if file.tensor(named: prefix + "ffn_gate_up_exps.weight") != nil {
            // gate and up fused: each expert's first `hidden` rows are its gate, the next its up
            let fused = try experts3D("ffn_gate_up_exps.weight", inputs: dimension, outputs: 2 * hidden)
            gates = fused.map { WeightMatrix(type: $0.type, data: $0.row(0), rows: hidden, columns: dimension, owner: file) }
            ups = fused.map { WeightMatrix(type: $0.type, data: $0.row(hidden), rows: hidden, columns: dimension, owner: file) }
        } else {
            gates = try experts3D("ffn_gate_exps.weight", inputs: dimension, outputs: hidden)
            ups = try experts3D("ffn_up_exps.weight", inputs: dimension, outputs: hidden)
        }
        downs = try experts3D("ffn_down_exps.weight", inputs: hidden, outputs: dimension)
        func scales(_ name: String) throws -> [Float]? {
            expertScales && file.tensor(named: prefix + name) != nil ? try Vector(file: file, name: prefix + name, count: experts).values : nil
        }
        gateScales = try scales("ffn_gate_exps.scale")
        upScales = try scales("ffn_up_exps.scale")
        downScales = try scales("ffn_down_exps.scale")
        self.used = used
        self.routing = routing
        self.activation = activation
        // a bias tensor is [width, experts]: one bias row per expert
        func biasRows(_ name: String, width: Int) throws -> [[Float]]? {
            guard expertBiases else { return nil }
            guard let info = file.tensor(named: prefix + name) else { throw ModelError.missingTensor(prefix + name) }
            guard info.shape == [width, experts] else {
                throw ModelError.badTensorShape(name: prefix + name, expected: [width, experts], found: info.shape)
            }
            let all = try Vector(file: file, name: prefix + name, count: width * experts).values
            return (0..<experts).map { Array(all[$0 * width..<($0 + 1) * width]) }
        }
        gateBiases = try biasRows("ffn_gate_exps.bias", width: hidden)
        upBiases = try biasRows("ffn_up_exps.bias", width: hidden)
        downBiases = try biasRows("ffn_down_exps.bias", width: dimension)
        if let groups = routing.groups, groups.count > 1 {
            // `choose` slices the experts into equal groups and keeps `used` of them
            guard experts % groups.count == 0, groups.used >= 1, groups.used <= groups.count else {
                throw ModelError.inconsistentMetadata(
                    "expert_group_count \(groups.count) / expert_group_used_count \(groups.used) with \(experts) experts")
            }
        }
        let biasName = prefix + "exp_probs_b.bias"
        selectionBias = usesSelectionBias && file.tensor(named: biasName) != nil ? try Vector(file: file, name: biasName, count: experts).values : nil
        shared = try sharedHidden.map {
            try GatedFeedForward(file: file, prefix: prefix, suffix: "_shexp", dimension: dimension, hidden: $0,
                                 activation: .silu, biases: false, scales: false)
        }
    }

    /// Which experts each token uses and with what weight.
    public func route(_ x: Matrix, _ pool: ThreadPool) -> [[(expert: Int, weight: Float)]] {
        let scores = router(x, pool)
        return (0..<x.rows).map { routing.choose(scores.rowArray($0), used: used, selectionBias: selectionBias) }
    }

    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool, batching: ReferenceBatching = .ungrouped) -> Matrix {
        let routes = route(x, pool)
        var tokensOf = [[(token: Int, weight: Float)]](repeating: [], count: ups.count)
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
            if let gateBiases { g.addToEachRow(gateBiases[e]) }
            if let upBiases { u.addToEachRow(upBiases[e]) }
            switch activation {
            case .swiGLU: swiglu(g.data, u.data, elements: 0..<g.rows * g.columns, columns: g.columns)
            case .clampedSwiGLU(let alpha, let limit):
                clampedSwiGLU(g.data, u.data, count: g.rows * g.columns, alpha: alpha, limit: limit)
            }
            let y = Matrix(rows: assigned.count, columns: x.columns)
            matmul(downs[e], input: g.data, tokens: assigned.count, output: y.data, pool: pool)
            if let downScales { y.scale(by: downScales[e]) }
            if let downBiases { y.addToEachRow(downBiases[e]) }
            for (i, a) in assigned.enumerated() {
                for j in 0..<x.columns { out[a.token][j] += a.weight * y[i][j] }
            }
        }
        if let shared { out += shared(x, pool, batching: batching) }
        return out
    }
}
