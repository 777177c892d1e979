import Foundation
import GGUF
import Kernels

/// Activations for a batch: `rows` tokens × `columns` features, row-major, owned.
public final class Matrix: @unchecked Sendable {
    public let rows: Int
    public let columns: Int
    public let data: UnsafeMutablePointer<Float>

    public init(rows: Int, columns: Int) {
        self.rows = rows
        self.columns = columns
        data = .allocate(capacity: max(1, rows * columns))
        data.initialize(repeating: 0, count: rows * columns)
    }

    deinit { data.deallocate() }

    public subscript(row: Int) -> UnsafeMutablePointer<Float> { data + row * columns }

    public func rowArray(_ row: Int) -> [Float] { Array(UnsafeBufferPointer(start: self[row], count: columns)) }

    /// self += other, element-wise (the residual connection).
    public static func += (lhs: Matrix, rhs: Matrix) {
        for i in 0..<lhs.rows * lhs.columns { lhs.data[i] += rhs.data[i] }
    }

    public func scale(by factor: Float) {
        for i in 0..<rows * columns { data[i] *= factor }
    }
}

/// A float vector stored in the model file (norm weights, biases), dequantized once at load.
public struct Vector: Sendable {
    public let values: [Float]

    public init(file: GGUFFile, name: String, count: Int) throws {
        guard let info = file.tensor(named: name) else { throw ModelError.missingTensor(name) }
        guard info.elementCount == count else {
            throw ModelError.badTensorShape(name: name, expected: [count], found: info.shape)
        }
        var values = [Float](repeating: 0, count: count)
        values.withUnsafeMutableBufferPointer { dequantizeRow(info.type, file.data(for: info), into: $0.baseAddress!, count: count) }
        self.values = values
    }
}

/// A weight matrix applied to every token of a batch: y = W·x (+ b).
public struct Linear: Sendable {
    public let weight: WeightMatrix
    public let bias: Vector?
    public let name: String

    public init(file: GGUFFile, name: String, inputs: Int, outputs: Int, bias biasName: String? = nil) throws {
        guard let info = file.tensor(named: name) else { throw ModelError.missingTensor(name) }
        guard info.shape.count <= 2, info.rowLength == inputs, info.rowCount == outputs else {
            throw ModelError.badTensorShape(name: name, expected: [inputs, outputs], found: info.shape)
        }
        weight = WeightMatrix(file: file, tensor: info)
        self.name = name
        if let biasName, file.tensor(named: biasName) != nil {
            bias = try Vector(file: file, name: biasName, count: outputs)
        } else {
            bias = nil
        }
    }

    public var outputs: Int { weight.rows }

    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool) -> Matrix {
        let y = Matrix(rows: x.rows, columns: weight.rows)
        matmul(weight, input: x.data, tokens: x.rows, output: y.data, pool: pool)
        if let bias {
            for t in 0..<y.rows { for i in 0..<y.columns { y[t][i] += bias.values[i] } }
        }
        return y
    }
}

/// Token embedding table: one quantized row per vocabulary entry.
public struct Embedding: Sendable {
    public let table: WeightMatrix

    public init(file: GGUFFile, name: String, dimension: Int) throws {
        guard let info = file.tensor(named: name) else { throw ModelError.missingTensor(name) }
        guard info.rowLength == dimension else {
            throw ModelError.badTensorShape(name: name, expected: [dimension, info.rowCount], found: info.shape)
        }
        table = WeightMatrix(file: file, tensor: info)
    }

    public func callAsFunction(_ tokens: [Int32]) -> Matrix {
        let x = Matrix(rows: tokens.count, columns: table.columns)
        for (i, t) in tokens.enumerated() {
            let id = Int(t)
            precondition(id >= 0 && id < table.rows, "token id \(id) outside the vocabulary")
            dequantizeRow(table.type, table.row(id), into: x[i], count: table.columns)
        }
        return x
    }
}

/// RMSNorm over each row (or over each `groupSize` slice of a row, for per-head q/k norms).
public struct RMSNorm: Sendable {
    public let weight: Vector
    public let epsilon: Float

    public init(file: GGUFFile, name: String, count: Int, epsilon: Float) throws {
        weight = try Vector(file: file, name: name, count: count)
        self.epsilon = epsilon
    }

    public func callAsFunction(_ x: Matrix) -> Matrix {
        let y = Matrix(rows: x.rows, columns: x.columns)
        let group = weight.values.count
        weight.values.withUnsafeBufferPointer { w in
            for r in 0..<x.rows {
                for start in stride(from: 0, to: x.columns, by: group) {
                    let src = x[r] + start, dst = y[r] + start
                    var sumSquares: Double = 0
                    for i in 0..<group { sumSquares += Double(src[i] * src[i]) }
                    let scale = 1 / (Float(sumSquares / Double(group)) + epsilon).squareRoot()
                    for i in 0..<group { dst[i] = src[i] * scale * w[i] }
                }
            }
        }
        return y
    }
}

/// How rotary position embedding pairs up the dimensions of a head.
public enum RoPEStyle: Sendable {
    /// (x[2i], x[2i+1]) — llama.cpp's "normal" mode, used by llama-family GGUFs.
    case interleaved
    /// (x[i], x[i + d/2]) — GPT-NeoX mode, used by gemma, qwen2.
    case halves
}

public struct RoPE: Sendable {
    public let style: RoPEStyle
    public let dimensions: Int
    public let base: Float
    /// Positions are divided by this (linear RoPE scaling).
    public let positionScale: Float

    public init(style: RoPEStyle, dimensions: Int, base: Float, positionScale: Float = 1) {
        self.style = style
        self.dimensions = dimensions
        self.base = base
        self.positionScale = positionScale
    }

    /// Rotates every head of one token's q or k vector in place.
    public func apply(_ v: UnsafeMutablePointer<Float>, heads: Int, headDimension: Int, position: Int) {
        let half = dimensions / 2
        let thetaScale = powf(base, -2 / Float(dimensions))
        var theta = Float(position) / positionScale
        for i in 0..<half {
            let c = cosf(theta), s = sinf(theta)
            for h in 0..<heads {
                let head = v + h * headDimension
                let (a, b) = style == .interleaved ? (2 * i, 2 * i + 1) : (i, i + half)
                let x0 = head[a], x1 = head[b]
                head[a] = x0 * c - x1 * s
                head[b] = x0 * s + x1 * c
            }
            theta *= thetaScale
        }
    }
}

/// One sequence's share of a batch: its new tokens and the cache they extend.
public struct BatchSequence {
    public var tokens: [Int32]
    public var cache: any SequenceState
    /// Return logits for every token (perplexity) or only the last (generation).
    public var allLogits: Bool

    public init(tokens: [Int32], cache: any SequenceState, allLogits: Bool = false) {
        self.tokens = tokens
        self.cache = cache
        self.allLogits = allLogits
    }
}

/// Multi-head attention with grouped KV heads over each sequence's cache.
public struct Attention: Sendable {
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let output: Linear
    public let heads: Int
    public let kvHeads: Int
    public let headDimension: Int
    /// Per-head RMSNorm of q and k before RoPE (gemma3, qwen3).
    public var queryNorm: RMSNorm?
    public var keyNorm: RMSNorm?
    public var rope: RoPE
    /// Keys further back than this are masked (sliding-window layers).
    public var window: Int?
    public var scale: Float

    public init(file: GGUFFile, layer: Int, config: ModelConfig, rope: RoPE, biases: Bool = false) throws {
        let p = "blk.\(layer)."
        let d = config.embeddingLength
        heads = config.headCount
        kvHeads = config.headCountKV
        headDimension = config.keyLength
        query = try Linear(file: file, name: p + "attn_q.weight", inputs: d, outputs: heads * headDimension,
                           bias: biases ? p + "attn_q.bias" : nil)
        key = try Linear(file: file, name: p + "attn_k.weight", inputs: d, outputs: kvHeads * headDimension,
                         bias: biases ? p + "attn_k.bias" : nil)
        value = try Linear(file: file, name: p + "attn_v.weight", inputs: d, outputs: kvHeads * config.valueLength,
                           bias: biases ? p + "attn_v.bias" : nil)
        output = try Linear(file: file, name: p + "attn_output.weight", inputs: heads * config.valueLength, outputs: d)
        self.rope = rope
        scale = 1 / Float(headDimension).squareRoot()
    }

    /// `x` holds the batch's normalized hidden states, sequences back to back.
    public func callAsFunction(_ x: Matrix, layer: Int, batch: [BatchSequence], pool: ThreadPool) -> Matrix {
        var q = query(x, pool)
        var k = key(x, pool)
        let v = value(x, pool)
        if let queryNorm { q = queryNorm(q) }
        if let keyNorm { k = keyNorm(k) }

        // Rotate and store this batch's keys and values in each sequence's cache.
        let caches = batch.map { $0.cache as! any KVStore }
        var row = 0
        var rowInfo: [(sequence: Int, position: Int)] = []
        for (s, seq) in batch.enumerated() {
            for i in 0..<seq.tokens.count {
                let position = seq.cache.count + i
                rope.apply(q[row], heads: heads, headDimension: headDimension, position: position)
                rope.apply(k[row], heads: kvHeads, headDimension: headDimension, position: position)
                let keyOut = caches[s].key(layer: layer, position: position)
                let valueOut = caches[s].value(layer: layer, position: position)
                for j in 0..<k.columns { keyOut[j] = Float16(k[row][j]) }
                for j in 0..<v.columns { valueOut[j] = Float16(v[row][j]) }
                rowInfo.append((s, position))
                row += 1
            }
        }

        let valueDimension = v.columns / kvHeads
        let out = Matrix(rows: x.rows, columns: heads * valueDimension)
        let group = heads / kvHeads
        let (qm, om, info) = (q, out, rowInfo)
        nonisolated(unsafe) let cacheList = caches
        let (scale, window, headDimension, heads) = (self.scale, self.window, self.headDimension, self.heads)
        pool.parallelFor(x.rows * heads) { job in
            let r = job / heads, h = job % heads
            let (s, position) = info[r]
            let first = window.map { max(0, position - $0 + 1) } ?? 0
            let query = qm[r] + h * headDimension
            let result = om[r] + h * valueDimension
            let keys = { (p: Int) in cacheList[s].key(layer: layer, position: p) + (h / group) * headDimension }
            let values = { (p: Int) in cacheList[s].value(layer: layer, position: p) + (h / group) * valueDimension }
            attend(query: query, keys: keys, values: values, positions: first...position,
                   headDimension: headDimension, valueDimension: valueDimension, scale: scale, into: result)
        }
        return output(out, pool)
    }
}

/// softmax(q·Kᵀ·scale)·V for one query head over cached half-precision keys and values.
@inline(__always)
func attend(query: UnsafeMutablePointer<Float>, keys: (Int) -> UnsafeMutablePointer<Float16>,
                           values: (Int) -> UnsafeMutablePointer<Float16>, positions: ClosedRange<Int>,
                           headDimension: Int, valueDimension: Int, scale: Float, into out: UnsafeMutablePointer<Float>) {
    var scores = [Float](repeating: 0, count: positions.count)
    var maxScore = -Float.infinity
    for p in positions {
        let k = keys(p)
        var dot: Float = 0
        for i in 0..<headDimension { dot += query[i] * Float(k[i]) }
        dot *= scale
        scores[p - positions.lowerBound] = dot
        maxScore = max(maxScore, dot)
    }
    var total: Float = 0
    for i in scores.indices {
        scores[i] = expf(scores[i] - maxScore)
        total += scores[i]
    }
    for i in 0..<valueDimension { out[i] = 0 }
    for p in positions {
        let w = scores[p - positions.lowerBound] / total
        let v = values(p)
        for i in 0..<valueDimension { out[i] += w * Float(v[i]) }
    }
}

/// Gated feed-forward: down(act(gate·x) ⊙ up·x) — SwiGLU with SiLU, GeGLU with GELU.
public struct GatedFeedForward: Sendable {
    public enum Activation: Sendable { case silu, gelu }
    public let gate: Linear
    public let up: Linear
    public let down: Linear
    public let activation: Activation

    public init(file: GGUFFile, prefix: String, dimension: Int, hidden: Int, activation: Activation) throws {
        gate = try Linear(file: file, name: prefix + "ffn_gate.weight", inputs: dimension, outputs: hidden)
        up = try Linear(file: file, name: prefix + "ffn_up.weight", inputs: dimension, outputs: hidden)
        down = try Linear(file: file, name: prefix + "ffn_down.weight", inputs: hidden, outputs: dimension)
        self.activation = activation
    }

    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool) -> Matrix {
        let g = gate(x, pool)
        let u = up(x, pool)
        let n = g.rows * g.columns
        switch activation {
        case .silu:
            for i in 0..<n { let a = g.data[i]; g.data[i] = a / (1 + expf(-a)) * u.data[i] }
        case .gelu:
            for i in 0..<n { g.data[i] = gelu(g.data[i]) * u.data[i] }
        }
        return down(g, pool)
    }
}

/// GELU, tanh approximation.
@inlinable public func gelu(_ x: Float) -> Float {
    let sqrt2OverPi: Float = 0.797_884_56
    return 0.5 * x * (1 + tanhf(sqrt2OverPi * x * (1 + 0.044715 * x * x)))
}

/// Final norm and projection to vocabulary logits, for the rows that need them.
public struct OutputHead: Sendable {
    public let norm: RMSNorm
    public let projection: Linear

    public init(file: GGUFFile, config: ModelConfig) throws {
        let d = config.embeddingLength
        norm = try RMSNorm(file: file, name: "output_norm.weight", count: d, epsilon: config.normEpsilon)
        // Tied embeddings: no output.weight means the embedding table doubles as the head.
        let name = file.tensor(named: "output.weight") != nil ? "output.weight" : "token_embd.weight"
        let vocab = file.tensor(named: name)?.rowCount ?? config.vocabularySize
        projection = try Linear(file: file, name: name, inputs: d, outputs: vocab)
    }

    /// Logits for the requested rows of `x`, one row each, in batch order.
    public func callAsFunction(_ x: Matrix, batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        var picked: [Int] = []
        var row = 0
        for seq in batch {
            if seq.allLogits { picked += Array(row..<row + seq.tokens.count) } else { picked.append(row + seq.tokens.count - 1) }
            row += seq.tokens.count
        }
        let selected = Matrix(rows: picked.count, columns: x.columns)
        for (i, r) in picked.enumerated() { selected[i].update(from: x[r], count: x.columns) }
        let logits = projection(norm(selected), pool)
        return (0..<logits.rows).map { logits.rowArray($0) }
    }
}
