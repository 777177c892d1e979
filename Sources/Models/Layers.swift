import Foundation
import GGUF
import Kernels

/// Activations for a batch: `rows` tokens × `columns` features, row-major, owned.
public final class Matrix: @unchecked Sendable {
    public let rows: Int
    public let columns: Int
    public let data: UnsafeMutablePointer<Float>

    public convenience init(rows: Int, columns: Int) {
        self.init(rows: rows, columns: columns, zeroed: true)
    }

    /// `zeroed: false` leaves the contents undefined, for results that overwrite every element.
    public init(rows: Int, columns: Int, zeroed: Bool) {
        self.rows = rows
        self.columns = columns
        data = .allocate(capacity: max(1, rows * columns))
        if zeroed { data.initialize(repeating: 0, count: rows * columns) }
    }

    deinit { data.deallocate() }

    public subscript(row: Int) -> UnsafeMutablePointer<Float> { data + row * columns }

    public func rowArray(_ row: Int) -> [Float] { Array(UnsafeBufferPointer(start: self[row], count: columns)) }

    /// self += other, element-wise (the residual connection).
    public static func += (lhs: Matrix, rhs: Matrix) {
        addInPlace(lhs.data, rhs.data, count: lhs.rows * lhs.columns)
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
        weight = WeightMatrix(file: file, tensor: info).repackedForCPU { file.advise(.dontNeed, bytes: $0) }
        self.name = name
        if let biasName, file.tensor(named: biasName) != nil {
            bias = try Vector(file: file, name: biasName, count: outputs)
        } else {
            bias = nil
        }
    }

    public var outputs: Int { weight.rows }

    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool, gemmRows: Int = 0) -> Matrix {
        let y = Matrix(rows: x.rows, columns: weight.rows, zeroed: false)
        matmul(weight, input: x.data, tokens: x.rows, output: y.data, pool: pool, gemmRows: gemmRows)
        addBias(to: y)
        return y
    }

    func addBias(to y: Matrix) {
        guard let bias else { return }
        bias.values.withUnsafeBufferPointer { b in
            for t in 0..<y.rows { addInPlace(y[t], b.baseAddress!, count: y.columns) }
        }
    }
}

/// Several projections of the same input (Q/K/V, gate/up) in one matmul call: the input is
/// quantized once and the pool is handed one job; the results equal separate calls.
func project(_ x: Matrix, _ linears: [Linear], _ pool: ThreadPool) -> [Matrix] {
    let ys = linears.map { Matrix(rows: x.rows, columns: $0.outputs, zeroed: false) }
    matmul(linears.map(\.weight), input: x.data, tokens: x.rows, outputs: ys.map(\.data), pool: pool)
    for (linear, y) in zip(linears, ys) { linear.addBias(to: y) }
    return ys
}

/// Token embedding table: one quantized row per vocabulary entry.
public struct Embedding: Sendable {
    public let table: WeightMatrix

    /// `head`: the model's output head; when it is this same table (tied embeddings), lookups
    /// read the head's copy, which may be repacked, so the file's pages are not resident twice.
    public init(file: GGUFFile, name: String, dimension: Int, head: OutputHead? = nil) throws {
        guard let info = file.tensor(named: name) else { throw ModelError.missingTensor(name) }
        guard info.rowLength == dimension else {
            throw ModelError.badTensorShape(name: name, expected: [dimension, info.rowCount], found: info.shape)
        }
        if let head, head.projection.name == name {
            table = head.projection.weight
        } else {
            table = WeightMatrix(file: file, tensor: info)
        }
    }

    public func callAsFunction(_ tokens: [Int32]) -> Matrix {
        let x = Matrix(rows: tokens.count, columns: table.columns, zeroed: false)
        for (i, t) in tokens.enumerated() {
            let id = Int(t)
            precondition(id >= 0 && id < table.rows, "token id \(id) outside the vocabulary")
            table.dequantize(row: id, into: x[i])
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

    public func callAsFunction(_ x: Matrix, pool: ThreadPool? = nil) -> Matrix {
        let y = Matrix(rows: x.rows, columns: x.columns, zeroed: false)
        normalize(x, into: y, pool: pool)
        return y
    }

    /// `y` may be `x` (in place). With a pool, a large batch's rows are split across it.
    public func normalize(_ x: Matrix, into y: Matrix, pool: ThreadPool? = nil) {
        let length = weight.values.count
        guard x.columns % length == 0, y.columns == x.columns, y.rows == x.rows else {
            fatalError("RMSNorm: \(x.rows)×\(x.columns) into \(y.rows)×\(y.columns) with weight length \(length)")
        }
        let slices = x.rows * x.columns / length
        nonisolated(unsafe) let (src, dst) = (UnsafePointer(x.data), y.data)
        let (w, epsilon) = (weight.values, self.epsilon)
        let run: @Sendable (Range<Int>) -> Void = { range in
            w.withUnsafeBufferPointer { w in
                rmsNormalizeSlices(src, w.baseAddress!, length: length, slices: range, epsilon: epsilon, into: dst)
            }
        }
        if let pool, slices * length >= 1 << 14 {
            pool.parallelChunks(slices, granularity: 8, run)
        } else {
            run(0..<slices)
        }
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
        var angles = [Float](repeating: 0, count: dimensions)
        angles.withUnsafeMutableBufferPointer { a in
            rotations(position: position, into: a.baseAddress!)
            apply(v, heads: heads, headDimension: headDimension, rotations: a.baseAddress!)
        }
    }

    /// (cos θᵢ, sin θᵢ) for i < dimensions/2 at `position`: `dimensions` floats. As ggml's rope
    /// cache: θ₀ = position, θᵢ₊₁ = θᵢ · base^(-2/dimensions) by repeated multiplication, and
    /// linear scaling multiplies each θᵢ by 1/scale (not the position first).
    public func rotations(position: Int, into cs: UnsafeMutablePointer<Float>) {
        let thetaScale = powf(base, -2 / Float(dimensions))
        let frequencyScale = 1 / positionScale
        var theta = Float(position)
        for i in 0..<dimensions / 2 {
            cs[2 * i] = cosf(frequencyScale * theta)
            cs[2 * i + 1] = sinf(frequencyScale * theta)
            theta *= thetaScale
        }
    }

    /// Rotates every head of one token's q or k vector by precomputed `rotations(position:into:)`.
    /// As ggml (compiled with FMA contraction): x0·c − x1·s and x0·s + x1·c each fuse the
    /// first product and round the second.
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

/// One sequence's share of a batch: its new tokens and the cache they extend.
public struct BatchSequence {
    public var tokens: [Int32]
    public var cache: any SequenceState
    /// Return logits for every token (perplexity) or only the last (generation).
    public var allLogits: Bool
    /// False for a piece of a longer sequence whose logits nobody asked for (see `forward`).
    var logitsNeeded = true
    /// Tokens of this sequence that llama.cpp would put in the same micro-batch (of at most
    /// `llamaMicroBatch`) as this piece: its attention kernel, and so its rounding, depends on it.
    var llamaBatchTokens: Int
    /// Where this piece starts within that micro-batch.
    var llamaBatchOffset = 0

    public init(tokens: [Int32], cache: any SequenceState, allLogits: Bool = false) {
        self.tokens = tokens
        self.cache = cache
        self.allLogits = allLogits
        llamaBatchTokens = min(tokens.count, llamaMicroBatch)
    }
}

/// The leading rows of a pass that llama.cpp's repacked gemm kernel would multiply: the rows
/// of its micro-batch in whole groups of 4 (the rest, and single tokens, go through its gemv
/// kernel, which rounds Q4_K differently). Only a pass of one sequence maps onto one llama.cpp
/// micro-batch; other passes take the gemv form throughout.
func llamaGemmRows(_ batch: [BatchSequence]) -> Int {
    guard batch.count == 1, let piece = batch.first else { return 0 }
    let grouped = piece.llamaBatchTokens - piece.llamaBatchTokens % 4
    return max(0, min(piece.tokens.count, grouped - piece.llamaBatchOffset))
}

/// In the last layer llama.cpp keeps only the rows whose logits are wanted before the
/// feed-forward, so when only the last token's are, that row goes through the gemv kernel.
func llamaLastLayerGemmRows(_ batch: [BatchSequence]) -> Int {
    batch.allSatisfy(\.allLogits) ? llamaGemmRows(batch) : 0
}

/// llama.cpp's default micro-batch (n_ubatch).
let llamaMicroBatch = 512

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
    /// Multiplies q after RoPE (and `scale` is then 1), as llama.cpp's gemma3 graph does; not
    /// the same floats as scaling the scores, since q is rounded to half in the attention kernel.
    public var queryScale: Float?

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
        let qkv = project(x, [query, key, value], pool)
        let (q, k, v) = (qkv[0], qkv[1], qkv[2])
        if let queryNorm { queryNorm.normalize(q, into: q, pool: pool) }
        if let keyNorm { keyNorm.normalize(k, into: k, pool: pool) }

        var row = 0
        var sequences: [AttentionSequence] = []
        for seq in batch {
            let cache = seq.cache as! any KVStore
            // llama.cpp's cache view: the used cells rounded up to 256 (at least 256), at most
            // the context; one token over 512 or more of them takes its split-KV kernel.
            let used = seq.cache.count + seq.tokens.count
            let cells = min(seq.cache.capacity, max(256, (used + 255) / 256 * 256))
            sequences.append(AttentionSequence(cache: cache, layer: layer, firstRow: row, firstPosition: seq.cache.count,
                                               tokens: seq.tokens.count, tiled: seq.llamaBatchTokens >= attentionTile,
                                               splitCells: seq.llamaBatchTokens == 1 && cells >= 512 ? cells : nil))
            row += seq.tokens.count
        }
        defer { for s in sequences { s.deallocate() } }
        rotateAndStore(q: q, k: k, v: v, sequences, pool: pool)

        let out = Matrix(rows: x.rows, columns: heads * (v.columns / kvHeads), zeroed: false)
        attend(q, sequences, into: out, pool: pool)
        return output(out, pool, gemmRows: llamaGemmRows(batch))
    }

    /// Rotates q and k and stores the batch's keys and values in each sequence's cache; every
    /// token is independent, so a long batch is split across the pool.
    func rotateAndStore(q: Matrix, k: Matrix, v: Matrix, _ sequences: [AttentionSequence], pool: ThreadPool) {
        let (rope, heads, kvHeads, headDimension, queryScale) = (rope, heads, kvHeads, headDimension, queryScale)
        let run: @Sendable (Range<Int>) -> Void = { rows in
            let angles = UnsafeMutablePointer<Float>.allocate(capacity: rope.dimensions)
            defer { angles.deallocate() }
            for seq in sequences {
                let lo = max(rows.lowerBound, seq.firstRow), hi = min(rows.upperBound, seq.firstRow + seq.tokens)
                for r in lo..<max(lo, hi) {
                    let position = seq.firstPosition + r - seq.firstRow
                    rope.rotations(position: position, into: angles)
                    rope.apply(q[r], heads: heads, headDimension: headDimension, rotations: angles)
                    if let queryScale { for j in 0..<q.columns { q[r][j] *= queryScale } }
                    rope.apply(k[r], heads: kvHeads, headDimension: headDimension, rotations: angles)
                    storeHalf(k[r], UnsafeMutablePointer(mutating: seq.keys[position]), count: k.columns)
                    storeHalf(v[r], UnsafeMutablePointer(mutating: seq.values[position]), count: v.columns)
                }
            }
        }
        if q.rows >= 16 {
            pool.parallelChunks(q.rows, run)
        } else {
            run(0..<q.rows)
        }
    }

    /// Every query head of every token attends over its sequence's cached positions up to its
    /// own (causal), restricted to the window if any. Jobs are (rows, heads) pairs dealt out
    /// round-robin to a few pool items, which balances the causal triangle's uneven rows.
    func attend(_ q: Matrix, _ sequences: [AttentionSequence], into out: Matrix, pool: ThreadPool) {
        let (heads, group, headDimension) = (self.heads, self.heads / kvHeads, self.headDimension)
        let valueDimension = out.columns / heads
        let (scale, window) = (self.scale, self.window)
        // Heads per row-kernel job: as many as the kernel takes, while every thread still gets
        // a job (a lone decoding sequence has only `heads` of them). Uneven is fine: SmolLM2's
        // 3 grouped jobs on 2 threads decode faster than its 9 one-head jobs (tg64 @ d2048 on a
        // Zen 2: 62–64 vs 57 t/s), the grouped kernel being that much faster per head.
        let rowRuns = sequences.reduce(0) { $0 + ($1.tiled ? 0 : $1.tokens) }
        let threadCount = pool.threadCount  // also llama.cpp's split-KV chunk count: one per thread
        var together = rowKernelHeads(group: group, valueDimension: valueDimension)
        while together > 1 {
            let jobs = rowRuns * heads / together
            if jobs >= threadCount { break }
            together = (1..<together).last { group % $0 == 0 }!
        }
        // Jobs: a run of rows (one row, or a tile of up to 64 for the tiled kernel) of one
        // sequence, and one head (or, for the grouped row kernel, `together` heads of a KV group).
        var jobs: [(sequence: Int, row: Int, rows: Int, head: Int, heads: Int)] = []
        var work = 0, longest = 0
        for (s, seq) in sequences.enumerated() {
            longest = max(longest, seq.firstPosition + seq.tokens)
            let step = seq.tiled ? attentionTile : 1
            let width = seq.tiled ? 1 : together
            for i in stride(from: 0, to: seq.tokens, by: step) {
                let rows = min(step, seq.tokens - i)
                for h in stride(from: 0, to: heads, by: width) { jobs.append((s, seq.firstRow + i, rows, h, width)) }
                work += (seq.firstPosition + i + 1) * rows * heads * (headDimension + valueDimension)
            }
        }
        let jobCount = jobs.count
        let items = work < 1 << 15 ? 1 : min(jobCount, threadCount * 8)
        let (qm, om, seqs, runs, longestRun, headsPerJob) = (q, out, sequences, jobs, longest, together)
        pool.parallelFor(items) { item in
            let scratch = HeadScratch(headDimension: headDimension, positions: longestRun, valueDimension: valueDimension,
                                      heads: headsPerJob)
            let tile = TileScratch(headDimension: headDimension, valueDimension: valueDimension)
            defer { scratch.deallocate(); tile.deallocate() }
            for job in stride(from: item, to: jobCount, by: items) {
                let (s, r, rows, h, width) = runs[job]
                let seq = seqs[s]
                let position = seq.firstPosition + (r - seq.firstRow)
                let first = window.map { max(0, position - $0 + 1) } ?? 0
                let (keyOffset, valueOffset) = ((h / group) * headDimension, (h / group) * valueDimension)
                if seq.tiled {
                    attendHeadTile(query: qm[r] + h * headDimension, queryStride: qm.columns, rows: rows,
                                   firstPosition: position, window: window,
                                   keys: seq.keys, keyOffset: keyOffset, values: seq.values, valueOffset: valueOffset,
                                   headDimension: headDimension, valueDimension: valueDimension, scale: scale,
                                   scratch: tile, into: om[r] + h * valueDimension, outStride: om.columns)
                } else if let cells = seq.splitCells {
                    attendHeadsRowSplit(query: qm[r] + h * headDimension, heads: width,
                                        keys: seq.keys, keyOffset: keyOffset, values: seq.values, valueOffset: valueOffset,
                                        positions: first..<position + 1, cells: cells,
                                        chunkSize: (cells + threadCount - 1) / threadCount, headDimension: headDimension,
                                        valueDimension: valueDimension, scale: scale, scratch: scratch,
                                        into: om[r] + h * valueDimension)
                } else {
                    attendHeadsRow(query: qm[r] + h * headDimension, heads: width,
                                   keys: seq.keys, keyOffset: keyOffset, values: seq.values, valueOffset: valueOffset,
                                   positions: first..<position + 1, headDimension: headDimension,
                                   valueDimension: valueDimension, scale: scale, scratch: scratch,
                                   into: om[r] + h * valueDimension)
                }
            }
        }
    }
}

/// One sequence's rows in the batch and its cache rows for one layer, looked up once per
/// layer (the store is per position, so that it may be paged).
struct AttentionSequence: @unchecked Sendable {
    let firstRow: Int
    let firstPosition: Int
    let tokens: Int
    /// As llama.cpp: the tiled kernel for micro-batches of at least 64 tokens, else row by row.
    let tiled: Bool
    /// llama.cpp's cache cells when it would run its split-KV kernel (one token, 512+ cells).
    let splitCells: Int?
    let keys: UnsafeMutablePointer<UnsafePointer<Float16>>
    let values: UnsafeMutablePointer<UnsafePointer<Float16>>

    init(cache: any KVStore, layer: Int, firstRow: Int, firstPosition: Int, tokens: Int, tiled: Bool, splitCells: Int?) {
        self.tiled = tiled
        self.splitCells = splitCells
        self.firstRow = firstRow
        self.firstPosition = firstPosition
        self.tokens = tokens
        let count = firstPosition + tokens
        keys = .allocate(capacity: count)
        values = .allocate(capacity: count)
        for p in 0..<count {
            keys[p] = UnsafePointer(cache.key(layer: layer, position: p))
            values[p] = UnsafePointer(cache.value(layer: layer, position: p))
        }
    }

    func deallocate() {
        keys.deallocate()
        values.deallocate()
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

    /// Tokens per pass: every token is independent here, so a long batch goes through in
    /// slices and the hidden-width activations stay small (peak memory of prompt prefill).
    static let slice = 64

    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool, gemmRows: Int = 0) -> Matrix {
        let y = Matrix(rows: x.rows, columns: down.outputs, zeroed: false)
        let rows = min(x.rows, Self.slice)
        let g = Matrix(rows: rows, columns: gate.outputs, zeroed: false)
        let u = Matrix(rows: rows, columns: up.outputs, zeroed: false)
        for start in stride(from: 0, to: x.rows, by: rows) {
            let n = min(rows, x.rows - start)
            matmul([gate.weight, up.weight], input: x[start], tokens: n, outputs: [g.data, u.data], pool: pool)
            // Element-wise, so split across the pool (8-element aligned pieces; each element's
            // arithmetic depends only on its value and its column, so the split changes nothing).
            let count = n * g.columns, columns = g.columns, silu = activation == .silu
            let run: @Sendable (Range<Int>) -> Void = { range in
                if silu {
                    swiglu(g.data, u.data, elements: range, columns: columns)
                } else {
                    geglu(g.data + range.lowerBound, u.data + range.lowerBound, count: range.count)
                }
            }
            if count >= 4096 {
                pool.parallelChunks(count, granularity: 8, run)
            } else {
                run(0..<count)
            }
            matmul(down.weight, input: g.data, tokens: n, output: y[start], pool: pool,
                   gemmRows: max(0, min(n, gemmRows - start)))
        }
        return y
    }
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
        for seq in batch where seq.logitsNeeded {
            if seq.allLogits { picked += Array(row..<row + seq.tokens.count) } else { picked.append(row + seq.tokens.count - 1) }
            row += seq.tokens.count
        }
        let selected = Matrix(rows: picked.count, columns: x.columns, zeroed: false)
        for (i, r) in picked.enumerated() { selected[i].update(from: x[r], count: x.columns) }
        norm.normalize(selected, into: selected, pool: pool)
        let logits = projection(selected, pool)
        return (0..<logits.rows).map { logits.rowArray($0) }
    }
}
