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

    /// The given rows of `source`, in that order.
    public convenience init(copying rows: [Int], of source: Matrix) {
        self.init(rows: rows.count, columns: source.columns, zeroed: false)
        for (i, r) in rows.enumerated() { self[i].update(from: source[r], count: columns) }
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

    /// Adds `bias` (`columns` floats) to every row.
    public func addToEachRow(_ bias: [Float]) {
        for r in 0..<rows {
            let row = self[r]
            for j in 0..<columns { row[j] += bias[j] }
        }
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

    /// Values computed at load (e.g. several biases concatenated).
    public init(values: [Float]) { self.values = values }

    /// A tensor whose layout matters beyond its length (a conv kernel per channel, a weight per
    /// group): its shape must be `shape` (ne0 first; trailing 1s aside, as ggml compares them).
    public init(file: GGUFFile, name: String, shape: [Int]) throws {
        guard let info = file.tensor(named: name) else { throw ModelError.missingTensor(name) }
        func trimmed(_ s: [Int]) -> [Int] { Array(s.reversed().drop { $0 == 1 }.reversed()) }
        guard trimmed(info.shape) == trimmed(shape) else {
            throw ModelError.badTensorShape(name: name, expected: shape, found: info.shape)
        }
        try self.init(file: file, name: name, count: shape.reduce(1, *))
    }
}

/// A weight matrix applied to every token of a batch: y = s·(W·x) + b, with the optional bias
/// `NAME.bias` and per-tensor scale `NAME.scale` that llama.cpp reads beside `NAME.weight`.
/// (`NAME.input_scale` only matters to llama.cpp for NVFP4 weights, which Swiftlet refuses,
/// so it is read by no one.)
public struct Linear: Sendable {
    /// Where the scale goes relative to the bias, as llama.cpp's graphs put it.
    public enum ScaleOrder: Sendable {
        /// s·(W·x) + b: projections built with `build_lora_mm` (attention, SSM).
        case beforeBias
        /// s·(W·x + b): the feed-forward's up, gate and down (`build_ffn`).
        case afterBias
    }

    public let weight: WeightMatrix
    public var bias: Vector?
    public var scale: Float?
    public let scaleOrder: ScaleOrder
    public let name: String

    /// `bias`/`scale`: false for a projection whose architecture's graph (in llama.cpp) ignores
    /// that tensor when the file carries it.
    public init(file: GGUFFile, name: String, inputs: Int, outputs: Int, scaleOrder: ScaleOrder = .beforeBias,
                bias useBias: Bool = true, scale useScale: Bool = true) throws {
        guard let info = file.tensor(named: name) else { throw ModelError.missingTensor(name) }
        guard info.shape.count <= 2, info.rowLength == inputs, info.rowCount == outputs else {
            throw ModelError.badTensorShape(name: name, expected: [inputs, outputs], found: info.shape)
        }
        weight = WeightMatrix(file: file, tensor: info).repackedForCPU { file.advise(.dontNeed, bytes: $0) }
        self.name = name
        ProjectionRecorder.current?.record(name)
        let stem = name.hasSuffix(".weight") ? String(name.dropLast(".weight".count)) : name
        let hasBias = useBias && file.tensor(named: stem + ".bias") != nil
        let hasScale = useScale && file.tensor(named: stem + ".scale") != nil
        bias = hasBias ? try Vector(file: file, name: stem + ".bias", count: outputs) : nil
        scale = hasScale ? try Vector(file: file, name: stem + ".scale", count: 1).values[0] : nil
        self.scaleOrder = scaleOrder
    }

    public var outputs: Int { weight.rows }

    /// `batching`: see `matmul`.
    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool, batching: ReferenceBatching = .ungrouped) -> Matrix {
        let y = Matrix(rows: x.rows, columns: weight.rows, zeroed: false)
        matmul(weight, input: x.data, tokens: x.rows, output: y.data, pool: pool, batching: batching)
        finish(y.data, rows: y.rows, input: x.data, pool: pool)
        return y
    }

    /// Completes `rows` rows of W·x at `y`, whose inputs `x` are rows `firstRow…` of the pass:
    /// the scale, the active LoRA adapters' terms (`LoRAPass`) and the bias, in llama.cpp's
    /// order (s·W·x + lora + b, or (W·x + lora + b)·s).
    func finish(_ y: UnsafeMutablePointer<Float>, rows: Int, input x: UnsafePointer<Float>, firstRow: Int = 0,
                pool: ThreadPool) {
        let lora = LoRAPass.current
        guard bias != nil || scale != nil || lora != nil else { return }
        let columns = weight.rows
        if scaleOrder == .beforeBias, let scale { for i in 0..<rows * columns { y[i] *= scale } }
        lora?.apply(name: name, x: x, rows: rows, firstRow: firstRow, y: y, outputs: columns, pool: pool)
        if let bias {
            bias.values.withUnsafeBufferPointer { b in
                for t in 0..<rows { addInPlace(y + t * columns, b.baseAddress!, count: columns) }
            }
        }
        if scaleOrder == .afterBias, let scale { for i in 0..<rows * columns { y[i] *= scale } }
    }
}

/// Several projections of the same input (Q/K/V, gate/up) in one matmul call: the input is
/// quantized once and the pool is handed one job; the results equal separate calls.
func project(_ x: Matrix, _ linears: [Linear], _ pool: ThreadPool) -> [Matrix] {
    let ys = linears.map { Matrix(rows: x.rows, columns: $0.outputs, zeroed: false) }
    matmul(linears.map(\.weight), input: x.data, tokens: x.rows, outputs: ys.map(\.data), pool: pool)
    for (linear, y) in zip(linears, ys) { linear.finish(y.data, rows: y.rows, input: x.data, pool: pool) }
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

/// A normalization of each row with learned weights: RMSNorm or LayerNorm.
public protocol RowNormalization: Sendable {
    /// `y` may be `x` (in place). With a pool, a large batch's rows are split across it.
    func normalize(_ x: Matrix, into y: Matrix, pool: ThreadPool?)
}

extension RowNormalization {
    public func callAsFunction(_ x: Matrix, pool: ThreadPool? = nil) -> Matrix {
        let y = Matrix(rows: x.rows, columns: x.columns, zeroed: false)
        normalize(x, into: y, pool: pool)
        return y
    }
}

/// RMSNorm over each row (or over each `groupSize` slice of a row, for per-head q/k norms).
public struct RMSNorm: RowNormalization {
    public let weight: Vector
    public let epsilon: Float

    public init(file: GGUFFile, name: String, count: Int, epsilon: Float) throws {
        weight = try Vector(file: file, name: name, count: count)
        self.epsilon = epsilon
    }

    public init(weight: Vector, epsilon: Float) {
        self.weight = weight
        self.epsilon = epsilon
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

extension RMSNorm {
    /// RMSNorm of each `length`-float group of every row, group g scaled by its own piece
    /// `weight[g·length..<(g + 1)·length]` of a weight as long as the row (Mamba-2's norm by
    /// groups before its output projection). `y` may be `x`.
    public func normalize(_ x: Matrix, groupsOf length: Int, into y: Matrix) {
        let columns = weight.values.count
        guard length > 0, columns % length == 0, x.columns == columns, y.columns == columns, y.rows == x.rows else {
            fatalError("RMSNorm by groups of \(length): \(x.rows)×\(x.columns) into \(y.rows)×\(y.columns) with weight length \(columns)")
        }
        weight.values.withUnsafeBufferPointer { w in
            rmsNormalizeGroups(x.data, w.baseAddress!, length: length, groups: columns / length, rows: x.rows,
                               epsilon: epsilon, into: y.data)
        }
    }
}

/// A causal depthwise convolution over each sequence's tokens (Mamba's conv1d, LFM2's short
/// convolution): a `kernel`-tap filter per channel, and an optional bias added after the sum
/// (as llama.cpp's graphs add it). Each sequence's last `kernel − 1` inputs are kept in its
/// state between passes (`RecurrentState.convWindow`), so the convolution continues across them.
public struct CausalConv1d: Sendable {
    /// `channels × kernel`, the taps of one channel together (GGUF shape [kernel, channels]).
    public let weight: Vector
    public let bias: Vector?
    public let channels: Int
    public let kernel: Int

    /// Floats of one sequence's window.
    public var windowCount: Int { (kernel - 1) * channels }

    /// `name` without its `.weight`; `bias`: whether the architecture has `NAME.bias`.
    public init(file: GGUFFile, name: String, channels: Int, kernel: Int, bias hasBias: Bool) throws {
        // the kernel reads `kernel` taps per channel and keeps kernel − 1 inputs
        guard kernel >= 1, channels >= 1 else {
            throw ModelError.badTensorShape(name: name + ".weight", expected: [kernel, channels],
                                            found: file.tensor(named: name + ".weight")?.shape ?? [])
        }
        weight = try Vector(file: file, name: name + ".weight", shape: [kernel, channels])
        bias = hasBias ? try Vector(file: file, name: name + ".bias", count: channels) : nil
        self.channels = channels
        self.kernel = kernel
    }

    /// Convolves `channels` columns of `input` from `firstColumn` on; a batch's sequences lie
    /// back to back in its rows, `windows[s]` is sequence s's window (updated). Returns
    /// rows × channels.
    public func callAsFunction(_ input: Matrix, firstColumn: Int = 0, batch: [BatchSequence],
                               windows: [UnsafeMutablePointer<Float>]) -> Matrix {
        precondition(firstColumn + channels <= input.columns && windows.count == batch.count)
        let out = Matrix(rows: input.rows, columns: channels, zeroed: false)
        var row = 0
        weight.values.withUnsafeBufferPointer { w in
            for (s, seq) in batch.enumerated() {
                causalConv1d(inputs: input[row] + firstColumn, inputStride: input.columns, tokens: seq.tokens.count,
                             channels: channels, weights: w.baseAddress!, kernel: kernel, window: windows[s],
                             outputs: out[row], outputStride: channels)
                row += seq.tokens.count
            }
        }
        if let bias {
            bias.values.withUnsafeBufferPointer { b in
                for r in 0..<out.rows { addInPlace(out[r], b.baseAddress!, count: channels) }
            }
        }
        return out
    }
}

/// The selective scan of a batch (Mamba's, Mamba-2's; see `Kernels.selectiveScan`): each
/// sequence's tokens in order through its state `states[s]`, its heads split across the pool
/// (they are independent). x is `shape.channels` columns of `x` from `xColumn`; B and C are
/// `groups·stateSize` columns of `bc` from `bColumn` and `cColumn`; dt has one column per head.
/// Returns y, rows × channels.
func selectiveScan(_ shape: ScanShape, batch: [BatchSequence], states: [UnsafeMutablePointer<Float>],
                   x: Matrix, xColumn: Int = 0, bc: Matrix, bColumn: Int, cColumn: Int, dt: Matrix, a: Vector,
                   pool: ThreadPool) -> Matrix {
    let groupColumns = shape.groups * shape.stateSize
    precondition(xColumn + shape.channels <= x.columns && bColumn + groupColumns <= bc.columns
                 && cColumn + groupColumns <= bc.columns && dt.columns == shape.heads && states.count == batch.count)
    let y = Matrix(rows: x.rows, columns: shape.channels, zeroed: false)
    var row = 0
    for (s, seq) in batch.enumerated() {
        let first = row, tokens = seq.tokens.count
        nonisolated(unsafe) let state = states[s]
        pool.parallelChunks(shape.heads) { heads in
            a.values.withUnsafeBufferPointer { a in
                Kernels.selectiveScan(shape, heads: heads, tokens: tokens, state: state,
                                      x: x[first] + xColumn, xStride: x.columns,
                                      b: bc[first] + bColumn, c: bc[first] + cColumn, bcStride: bc.columns,
                                      dt: dt[first], dtStride: dt.columns, a: a.baseAddress!,
                                      y: y[first], yStride: y.columns)
            }
        }
        row += tokens
    }
    return y
}

/// LayerNorm over each row: centered, divided by the standard deviation, times `NAME.weight`,
/// plus `NAME.bias` where the architecture has one (starcoder2; cohere2 has none).
public struct LayerNorm: RowNormalization {
    public let weight: Vector
    public let bias: Vector?
    public let epsilon: Float

    /// `name`: the tensors' stem (`blk.0.attn_norm`); `bias`: whether `NAME.bias` is required
    /// (true) or not part of the architecture (false).
    public init(file: GGUFFile, name: String, count: Int, epsilon: Float, bias: Bool) throws {
        weight = try Vector(file: file, name: name + ".weight", count: count)
        self.bias = bias ? try Vector(file: file, name: name + ".bias", count: count) : nil
        self.epsilon = epsilon
    }

    public func normalize(_ x: Matrix, into y: Matrix, pool: ThreadPool? = nil) {
        let length = weight.values.count
        guard x.columns == length, y.columns == x.columns, y.rows == x.rows else {
            fatalError("LayerNorm: \(x.rows)×\(x.columns) into \(y.rows)×\(y.columns) with weight length \(length)")
        }
        nonisolated(unsafe) let (src, dst) = (UnsafePointer(x.data), y.data)
        let (w, b, epsilon) = (weight.values, bias?.values, self.epsilon)
        let run: @Sendable (Range<Int>) -> Void = { rows in
            w.withUnsafeBufferPointer { w in
                func normalizeRows(_ b: UnsafePointer<Float>?) {
                    for r in rows {
                        layerNormalize(src + r * length, w.baseAddress!, b, count: length, epsilon: epsilon,
                                       into: dst + r * length)
                    }
                }
                if let b { b.withUnsafeBufferPointer { normalizeRows($0.baseAddress!) } } else { normalizeRows(nil) }
            }
        }
        if let pool, x.rows * length >= 1 << 14 {
            pool.parallelChunks(x.rows, run)
        } else {
            run(0..<x.rows)
        }
    }
}

/// One sequence's share of a batch: its new tokens and the cache they extend.
public struct BatchSequence {
    public var tokens: [Int32]
    public var cache: any SequenceState
    /// Return logits for every token (perplexity) or only the last (generation).
    public var allLogits: Bool
    /// Return the final-normalized hidden state of every token instead of logits (embeddings:
    /// the rows llama.cpp pools). Implies every position, as `allLogits`.
    public var hiddenStates = false
    /// False for a piece of a longer sequence whose logits nobody asked for (see `forward`).
    var logitsNeeded = true
    /// Where these tokens sit in the micro-batch llama.cpp would run them in: the kernels pick
    /// their rounding by it.
    var batching: ReferenceBatching
    /// This sequence's scale for each LoRA adapter passed to `forward` (missing ones: 0).
    public var loraScales: [Float] = []
    /// The rows stand for tokens decoded one at a time (see `init`).
    var asDecodes = false

    /// `asDecodes`: the rows stand for tokens decoded one at a time (a draft being verified),
    /// so they take the rounding of single-token passes and their logits are the ones those
    /// passes would give.
    public init(tokens: [Int32], cache: any SequenceState, allLogits: Bool = false, hiddenStates: Bool = false,
                asDecodes: Bool = false) {
        self.tokens = tokens
        self.cache = cache
        self.allLogits = allLogits || hiddenStates
        self.hiddenStates = hiddenStates
        self.asDecodes = asDecodes
        batching = asDecodes ? .ungrouped : ReferenceBatching(from: 0, of: tokens.count)
    }
}

/// How the rows of a pass map onto llama.cpp's micro-batches for its matrix products: a pass of
/// one sequence is (a piece of) one micro-batch; the rows of a pass of several sequences map
/// onto none and take the single-token rounding throughout.
func referenceBatching(_ batch: [BatchSequence]) -> ReferenceBatching {
    batch.count == 1 ? batch[0].batching : .ungrouped
}

/// In the last layer llama.cpp keeps only the rows whose logits are wanted before the
/// feed-forward, so when only the last token's are, that row takes the single-token rounding.
func lastLayerReferenceBatching(_ batch: [BatchSequence]) -> ReferenceBatching {
    batch.allSatisfy(\.allLogits) ? referenceBatching(batch) : .ungrouped
}

/// Multi-head attention with grouped KV heads over each sequence's cache.
public struct Attention: Sendable {
    /// q, k and v from the normalized input: three matrices, or one fused `attn_qkv` whose
    /// output rows are q's, then k's, then v's (as llama.cpp loads either for any architecture).
    public enum Projection: Sendable {
        case separate(query: Linear, key: Linear, value: Linear)
        case fused(Linear)
    }

    /// RoPE for sequences whose context is longer than the model's original one (phi3's
    /// `rope_factors_long`; `rope` then holds the short factors). llama.cpp picks the factors
    /// by its per-sequence context, rounded up to a multiple of 256; here the sequence's cache
    /// capacity, rounded the same way.
    public struct LongContextRoPE: Sendable {
        public var rope: RoPE
        /// Sequences whose rounded capacity exceeds this take `rope`.
        public var originalContextLength: Int

        func applies(toCapacity capacity: Int) -> Bool { (capacity + 255) / 256 * 256 > originalContextLength }
    }

    public let projection: Projection
    public var output: Linear
    public let heads: Int
    public let kvHeads: Int
    public let headDimension: Int
    /// Per-head RMSNorm of q and k before RoPE (gemma3, qwen3).
    public var queryNorm: RMSNorm?
    public var keyNorm: RMSNorm?
    public var rope: RoPE
    public var longContextRoPE: LongContextRoPE?
    /// False in layers without positional rotation (smollm3's NoPE layers).
    public var appliesRoPE = true
    /// Keys further back than this are masked (sliding-window layers).
    public var window: Int?
    public var scale: Float
    /// Multiplies q after RoPE (and `scale` is then 1), as llama.cpp's gemma3 graph does; not
    /// the same floats as scaling the scores, since q is rounded to half in the attention kernel.
    public var queryScale: Float?
    /// Scores become c·tanh(score / c) (gemma2's `attn_logit_softcapping`; nil: none).
    public var softCap: Float?
    /// Multiplies q after RoPE by a factor that grows with the position (Llama 4, Mistral 3).
    public var queryTemperature: AttentionTemperature?
    /// A learned logit per query head that joins the softmax without a value (gpt-oss).
    public var sinks: [Float]?
    /// False in encoders (BERT): every token attends to the whole sequence, which the
    /// scheduler therefore runs in one pass (`LanguageModel.isEncoder`).
    public var causal = true

    /// `outputBias`: whether the architecture adds `attn_output.bias` (its scale always applies).
    public init(file: GGUFFile, layer: Int, config: ModelConfig, rope: RoPE, outputBias: Bool = true) throws {
        let p = "blk.\(layer)."
        let d = config.embeddingLength
        heads = config.headCount
        kvHeads = config.headCountKV
        headDimension = config.keyLength
        // The kernels index by these without bounds checks: query head h reads KV head
        // h / (heads / kvHeads), and RoPE rotates the first `rope.dimensions` floats of a head.
        guard heads > 0, kvHeads > 0, heads % kvHeads == 0 else {
            throw ModelError.inconsistentMetadata(
                "\(config.architecture).attention.head_count (\(heads)) is not a multiple of head_count_kv (\(kvHeads))")
        }
        guard rope.dimensions <= headDimension else {
            throw ModelError.inconsistentMetadata(
                "\(config.architecture).rope.dimension_count (\(rope.dimensions)) exceeds the head size (\(headDimension))")
        }
        // RoPE rotates pairs (ggml asserts the same)
        guard rope.dimensions % 2 == 0 else {
            throw ModelError.inconsistentMetadata("\(config.architecture).rope.dimension_count (\(rope.dimensions)) is odd")
        }
        let widths = [heads * headDimension, kvHeads * headDimension, kvHeads * config.valueLength]
        if file.tensor(named: p + "attn_qkv.weight") != nil {
            var fused = try Linear(file: file, name: p + "attn_qkv.weight", inputs: d, outputs: widths.reduce(0, +))
            // Older conversions pair the fused weight with separate biases: llama.cpp adds them
            // when all three are there.
            let biases = ["attn_q.bias", "attn_k.bias", "attn_v.bias"].map { p + $0 }
            if fused.bias == nil, biases.allSatisfy({ file.tensor(named: $0) != nil }) {
                fused.bias = Vector(values: try zip(biases, widths).flatMap {
                    try Vector(file: file, name: $0, count: $1).values
                })
            }
            projection = .fused(fused)
        } else {
            projection = .separate(
                query: try Linear(file: file, name: p + "attn_q.weight", inputs: d, outputs: widths[0]),
                key: try Linear(file: file, name: p + "attn_k.weight", inputs: d, outputs: widths[1]),
                value: try Linear(file: file, name: p + "attn_v.weight", inputs: d, outputs: widths[2]))
        }
        output = try Linear(file: file, name: p + "attn_output.weight", inputs: heads * config.valueLength, outputs: d)
        if !outputBias { output.bias = nil }
        self.rope = rope
        scale = 1 / Float(headDimension).squareRoot()
    }

    /// q, k and v for every row of `x`: a fused projection's columns are copied apart.
    func projectQueryKeyValue(_ x: Matrix, pool: ThreadPool) -> (q: Matrix, k: Matrix, v: Matrix) {
        switch projection {
        case .separate(let query, let key, let value):
            let qkv = project(x, [query, key, value], pool)
            return (qkv[0], qkv[1], qkv[2])
        case .fused(let linear):
            let qkv = project(x, [linear], pool)[0]
            let valueWidth = qkv.columns - (heads + kvHeads) * headDimension
            let parts = [heads * headDimension, kvHeads * headDimension, valueWidth].map {
                Matrix(rows: x.rows, columns: $0, zeroed: false)
            }
            for r in 0..<x.rows {
                var column = 0
                for part in parts {
                    part[r].update(from: qkv[r] + column, count: part.columns)
                    column += part.columns
                }
            }
            return (parts[0], parts[1], parts[2])
        }
    }

    /// `x` holds the batch's normalized hidden states, sequences back to back.
    public func callAsFunction(_ x: Matrix, layer: Int, batch: [BatchSequence], pool: ThreadPool) -> Matrix {
        let (q, k, v) = projectQueryKeyValue(x, pool: pool)
        if let queryNorm { queryNorm.normalize(q, into: q, pool: pool) }
        if let keyNorm { keyNorm.normalize(k, into: k, pool: pool) }

        let sequences = attentionSequences(batch, layer: layer)
        // one per attention sequence: a sequence of decode-like rows is one per row
        let ropes = batch.flatMap { seq -> [RoPE] in
            let capacity = (seq.cache as! any KVStore).capacity
            let rope = longContextRoPE.flatMap { $0.applies(toCapacity: capacity) ? $0.rope : nil } ?? rope
            return Array(repeating: rope, count: attentionSequenceCount(seq))
        }
        defer { for s in sequences { s.deallocate() } }
        rotateAndStore(q: q, k: k, v: v, sequences, ropes: ropes, pool: pool)

        let valueDimension = v.columns / kvHeads
        let out = Matrix(rows: x.rows, columns: heads * valueDimension, zeroed: false)
        attend(queries: q.data, sequences, heads: heads, kvHeads: kvHeads, headDimension: headDimension,
               valueDimension: valueDimension, scale: scale, softCap: softCap, window: window, causal: causal,
               into: out.data, pool: pool)
        if let sinks {
            applyAttentionSinks(sinks, queries: q.data, sequences, heads: heads, kvHeads: kvHeads,
                                headDimension: headDimension, valueDimension: valueDimension, scale: scale,
                                window: window, output: out.data, pool: pool)
        }
        // values stored rotated (a quantized value cache): rotating the output back undoes it;
        // every row is independent, so a long batch is split across the pool
        if sequences.contains(where: { $0.cacheTypes.valueRotation(valueDimension: valueDimension) != nil }) {
            let unrotate: @Sendable (Range<Int>) -> Void = { rows in
                for seq in sequences {
                    guard let size = seq.cacheTypes.valueRotation(valueDimension: valueDimension) else { continue }
                    for r in (seq.firstRow..<seq.firstRow + seq.tokens).clamped(to: rows) {
                        walshHadamardRotate(out[r], count: out.columns, size: size)
                    }
                }
            }
            if out.rows >= 16 { pool.parallelChunks(out.rows, unrotate) } else { unrotate(0..<out.rows) }
        }
        return output(out, pool, batching: referenceBatching(batch))
    }

    /// Rotates q and k (sequence i by `ropes[i]`) and stores the batch's keys and values in each
    /// sequence's cache; every token is independent, so a long batch is split across the pool.
    func rotateAndStore(q: Matrix, k: Matrix, v: Matrix, _ sequences: [AttentionSequence], ropes: [RoPE],
                        pool: ThreadPool) {
        let (heads, kvHeads, headDimension, queryScale) = (heads, kvHeads, headDimension, queryScale)
        let queryTemperature = queryTemperature
        let appliesRoPE = appliesRoPE
        let run: @Sendable (Range<Int>) -> Void = { rows in
            let angles = UnsafeMutablePointer<Float>.allocate(capacity: ropes.map(\.dimensions).max() ?? 0)
            defer { angles.deallocate() }
            for (seq, rope) in zip(sequences, ropes) {
                for r in (seq.firstRow..<seq.firstRow + seq.tokens).clamped(to: rows) {
                    let position = seq.firstPosition + r - seq.firstRow
                    if appliesRoPE {
                        rope.rotations(position: position, into: angles)
                        rope.apply(q[r], heads: heads, headDimension: headDimension, rotations: angles)
                    }
                    if let queryScale { for j in 0..<q.columns { q[r][j] *= queryScale } }
                    if let queryTemperature {
                        let factor = queryTemperature.factor(position: position)
                        for j in 0..<q.columns { q[r][j] *= factor }
                    }
                    if appliesRoPE { rope.apply(k[r], heads: kvHeads, headDimension: headDimension, rotations: angles) }
                    // a quantized cache stores rotated keys (and values), as llama.cpp does: q·k is unchanged
                    if let size = seq.cacheTypes.keyRotation(headDimension: headDimension) {
                        walshHadamardRotate(q[r], count: q.columns, size: size)
                        walshHadamardRotate(k[r], count: k.columns, size: size)
                    }
                    if let size = seq.cacheTypes.valueRotation(valueDimension: v.columns / kvHeads) {
                        walshHadamardRotate(v[r], count: v.columns, size: size)
                    }
                    storeCacheRow(k[r], count: k.columns, type: seq.cacheTypes.key,
                                  into: UnsafeMutableRawPointer(mutating: seq.keys[position]))
                    storeCacheRow(v[r], count: v.columns, type: seq.cacheTypes.value,
                                  into: UnsafeMutableRawPointer(mutating: seq.values[position]))
                }
            }
        }
        if q.rows >= 16 {
            pool.parallelChunks(q.rows, run)
        } else {
            run(0..<q.rows)
        }
    }
}

/// The `count` matrices of a 3-D tensor (`[inputs, outputs, count]`: one per expert or per head).
func matrixStack(file: GGUFFile, name: String, inputs: Int, outputs: Int, count: Int) throws -> [WeightMatrix] {
    guard let info = file.tensor(named: name) else { throw ModelError.missingTensor(name) }
    // a trailing dimension of 1 is not written to the file
    guard info.shape == [inputs, outputs, count] || (count == 1 && info.shape == [inputs, outputs]) else {
        throw ModelError.badTensorShape(name: name, expected: [inputs, outputs, count], found: info.shape)
    }
    let base = file.data(for: info), bytesPerMatrix = outputs * info.rowBytes
    return (0..<count).map {
        WeightMatrix(type: info.type, data: base + $0 * bytesPerMatrix, rows: outputs, columns: inputs, owner: file)
    }
}

/// What mixes information across a sequence's tokens in a decoder layer: attention, or
/// latent attention, over each sequence's cache.
protocol TokenMixer: Sendable {
    func callAsFunction(_ x: Matrix, layer: Int, batch: [BatchSequence], pool: ThreadPool) -> Matrix
}

extension Attention: TokenMixer {}

/// A decoder layer's two residual steps, x += post(attention(pre(x))) and then
/// x += post(feedForward(pre(x))), each norm present or not: pre-norm (Llama-style), post-norm
/// (OLMo 2) or both ("sandwich": Gemma, GLM-4).
struct DecoderLayer: Sendable {
    let attentionNorm: (any RowNormalization)?
    let attention: any TokenMixer
    let postAttentionNorm: (any RowNormalization)?
    let feedForwardNorm: (any RowNormalization)?
    let feedForward: any FeedForward
    let postFeedForwardNorm: (any RowNormalization)?

    init(attentionNorm: (any RowNormalization)?, attention: any TokenMixer, postAttentionNorm: (any RowNormalization)? = nil,
         feedForwardNorm: (any RowNormalization)?, feedForward: any FeedForward,
         postFeedForwardNorm: (any RowNormalization)? = nil) {
        self.attentionNorm = attentionNorm
        self.attention = attention
        self.postAttentionNorm = postAttentionNorm
        self.feedForwardNorm = feedForwardNorm
        self.feedForward = feedForward
        self.postFeedForwardNorm = postFeedForwardNorm
    }
}

/// Runs `layers` over the batch's hidden states `x` in place; the last layer's feed-forward
/// takes llama.cpp's last-layer batching (see `lastLayerReferenceBatching`).
func runDecoderLayers(_ layers: [DecoderLayer], _ x: Matrix, batch: [BatchSequence], pool: ThreadPool) {
    let batching = referenceBatching(batch), lastBatching = lastLayerReferenceBatching(batch)
    for (i, layer) in layers.enumerated() {
        let attended = layer.attention(layer.attentionNorm.map { $0(x, pool: pool) } ?? x, layer: i, batch: batch, pool: pool)
        layer.postAttentionNorm?.normalize(attended, into: attended, pool: pool)
        x += attended
        let fed = layer.feedForward(layer.feedForwardNorm.map { $0(x, pool: pool) } ?? x, pool,
                                    batching: i == layers.count - 1 ? lastBatching : batching)
        layer.postFeedForwardNorm?.normalize(fed, into: fed, pool: pool)
        x += fed
    }
}

/// How many `AttentionSequence`s `attentionSequences` makes of `seq`: one per row for rows
/// that stand for decodes, else one.
func attentionSequenceCount(_ seq: BatchSequence) -> Int { seq.asDecodes ? seq.tokens.count : 1 }

/// Each sequence's rows in the batch and its cache rows of `layer` (deallocate them after use).
func attentionSequences(_ batch: [BatchSequence], layer: Int) -> [AttentionSequence] {
    var row = 0
    var sequences: [AttentionSequence] = []
    for seq in batch {
        let cache = seq.cache as! any KVStore
        // rows standing for single-token decodes each attend as one: the kernel (row or
        // split-KV) and its rounding follow from their own position, as in a decode step
        let pieces = attentionSequenceCount(seq) > 1 ? (0..<seq.tokens.count).map { ($0, 1) } : [(0, seq.tokens.count)]
        for (offset, tokens) in pieces {
            sequences.append(AttentionSequence(
                firstRow: row + offset, firstPosition: cache.count + offset, tokens: tokens, cacheCapacity: cache.capacity,
                batching: seq.asDecodes ? ReferenceBatching(from: 0, of: 1) : seq.batching, cacheTypes: cache.cacheTypes,
                // raw rows handed to the kernels typed as halves; quantized ones are read as bytes
                key: { UnsafePointer(cache.key(layer: layer, position: $0).assumingMemoryBound(to: Float16.self)) },
                value: { UnsafePointer(cache.value(layer: layer, position: $0).assumingMemoryBound(to: Float16.self)) }))
        }
        row += seq.tokens.count
    }
    return sequences
}

/// Llama 4's attention temperature tuning: q × (1 + scale · ln(⌊(position + offset) / floor⌋ + 1)),
/// so far-away tokens keep sharp attention in long contexts.
public struct AttentionTemperature: Sendable {
    public let scale: Float
    /// Positions per step of the logarithm (the original context length); > 0.
    public let floorScale: Int
    public var offset: Float = 0

    public init(scale: Float, floorScale: Int) {
        self.scale = scale
        self.floorScale = floorScale
    }

    func factor(position: Int) -> Float {
        let steps = ((Float(position) + offset) / Float(floorScale)).rounded(.down)
        return Float(log(Double(steps) + 1) * Double(scale) + 1)
    }
}

/// Gated feed-forward: down(act(gate·x) ⊙ up·x) — SwiGLU with SiLU, GeGLU with GELU. The gate
/// may be fused into `ffn_up` (phi3): its first half of outputs is the gate, the second the up.
public struct GatedFeedForward: Sendable {
    public enum Activation: Sendable { case silu, gelu }
    /// nil when fused into `up`.
    public let gate: Linear?
    public let up: Linear
    public let down: Linear
    public let activation: Activation
    /// Width of the gated hidden layer.
    public let hidden: Int

    /// `biases`, `scales`: whether the architecture applies the projections' optional biases
    /// and scales (llama both, qwen3 scales only, qwen2 and gemma3 neither).
    /// `suffix`: of the tensor names' stems (`ffn_gate_shexp` for a shared expert). `fusedGate`:
    /// no `ffn_gate`, `ffn_up` holds gate and up (2 × `hidden` outputs).
    public init(file: GGUFFile, prefix: String, suffix: String = "", dimension: Int, hidden: Int, activation: Activation,
                biases: Bool = true, scales: Bool = true, fusedGate: Bool = false) throws {
        func linear(_ stem: String, _ inputs: Int, _ outputs: Int) throws -> Linear {
            try Linear(file: file, name: prefix + stem + suffix + ".weight", inputs: inputs, outputs: outputs,
                       scaleOrder: .afterBias, bias: biases, scale: scales)
        }
        gate = fusedGate ? nil : try linear("ffn_gate", dimension, hidden)
        up = try linear("ffn_up", dimension, fusedGate ? 2 * hidden : hidden)
        down = try linear("ffn_down", hidden, dimension)
        self.activation = activation
        self.hidden = hidden
    }

    /// Tokens per pass: every token is independent here, so a long batch goes through in
    /// slices and the hidden-width activations stay small (peak memory of prompt prefill).
    static let slice = 64

    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool, batching: ReferenceBatching = .ungrouped) -> Matrix {
        let y = Matrix(rows: x.rows, columns: down.outputs, zeroed: false)
        let rows = min(x.rows, Self.slice)
        let g = Matrix(rows: rows, columns: hidden, zeroed: false)
        let u = Matrix(rows: rows, columns: hidden, zeroed: false)
        let fused = gate == nil ? Matrix(rows: rows, columns: up.outputs, zeroed: false) : nil
        for start in stride(from: 0, to: x.rows, by: rows) {
            let n = min(rows, x.rows - start)
            if let gate {
                matmul([gate.weight, up.weight], input: x[start], tokens: n, outputs: [g.data, u.data], pool: pool)
                gate.finish(g.data, rows: n, input: x[start], firstRow: start, pool: pool)
                up.finish(u.data, rows: n, input: x[start], firstRow: start, pool: pool)
            } else if let fused {
                matmul(up.weight, input: x[start], tokens: n, output: fused.data, pool: pool)
                up.finish(fused.data, rows: n, input: x[start], firstRow: start, pool: pool)
                for r in 0..<n {
                    g[r].update(from: fused[r], count: hidden)
                    u[r].update(from: fused[r] + hidden, count: hidden)
                }
            }
            // Element-wise, so split across the pool (8-element aligned pieces; each element's
            // arithmetic depends only on its value and its column, so the split changes nothing).
            let count = n * hidden, columns = hidden, silu = activation == .silu
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
            matmul(down.weight, input: g.data, tokens: n, output: y[start], pool: pool, batching: batching.dropping(start))
            down.finish(y[start], rows: n, input: g.data, firstRow: start, pool: pool)
        }
        return y
    }
}

/// Feed-forward without a gate: down(gelu(up·x + b) ) + b (starcoder2), each bias required.
/// (llama.cpp's graph applies no scales here.)
public struct UngatedFeedForward: FeedForward {
    public let up: Linear
    public let down: Linear

    public init(file: GGUFFile, prefix: String, dimension: Int, hidden: Int) throws {
        up = try Linear(file: file, name: prefix + "ffn_up.weight", inputs: dimension, outputs: hidden,
                        scaleOrder: .afterBias, scale: false)
        down = try Linear(file: file, name: prefix + "ffn_down.weight", inputs: hidden, outputs: dimension,
                          scaleOrder: .afterBias, scale: false)
        for (linear, stem) in [(up, "ffn_up"), (down, "ffn_down")] where linear.bias == nil {
            throw ModelError.missingTensor(prefix + stem + ".bias")
        }
    }

    public func callAsFunction(_ x: Matrix, _ pool: ThreadPool, batching: ReferenceBatching = .ungrouped) -> Matrix {
        let y = Matrix(rows: x.rows, columns: down.outputs, zeroed: false)
        let rows = min(x.rows, GatedFeedForward.slice)
        let h = Matrix(rows: rows, columns: up.outputs, zeroed: false)
        for start in stride(from: 0, to: x.rows, by: rows) {
            let n = min(rows, x.rows - start)
            matmul(up.weight, input: x[start], tokens: n, output: h.data, pool: pool)
            up.finish(h.data, rows: n, input: x[start], firstRow: start, pool: pool)
            // element-wise: split across the pool, as in GatedFeedForward
            let count = n * h.columns
            let run: @Sendable (Range<Int>) -> Void = { range in gelu(h.data + range.lowerBound, count: range.count) }
            if count >= 4096 {
                pool.parallelChunks(count, granularity: 8, run)
            } else {
                run(0..<count)
            }
            matmul(down.weight, input: h.data, tokens: n, output: y[start], pool: pool, batching: batching.dropping(start))
            down.finish(y[start], rows: n, input: h.data, firstRow: start, pool: pool)
        }
        return y
    }
}

/// Final norm and projection to vocabulary logits, for the rows that need them.
public struct OutputHead: Sendable {
    public let norm: any RowNormalization
    public let projection: Linear
    /// Logits become c·tanh(logit / c) (`final_logit_softcapping`; nil or 0: none).
    public var softCap: Float?
    /// Logits are multiplied by this (granite: 1 / `logit_scale`, cohere2: `logit_scale`).
    public var logitScale: Float?

    /// `norm`: the final norm, if not RMSNorm of `output_norm.weight`. `tiedEmbeddings`: the
    /// architecture always projects with the embedding table (gemma2, cohere2), never `output.weight`.
    public init(file: GGUFFile, config: ModelConfig, norm: (any RowNormalization)? = nil,
                tiedEmbeddings: Bool = false) throws {
        let d = config.embeddingLength
        self.norm = try norm ?? RMSNorm(file: file, name: "output_norm.weight", count: d, epsilon: config.normEpsilon)
        // Tied embeddings: no output.weight means the embedding table doubles as the head.
        let name = !tiedEmbeddings && file.tensor(named: "output.weight") != nil ? "output.weight" : "token_embd.weight"
        let vocab = file.tensor(named: name)?.rowCount ?? config.vocabularySize
        projection = try Linear(file: file, name: name, inputs: d, outputs: vocab)
    }

    /// Logits for the requested rows of `x`, one row each, in batch order; for sequences that
    /// ask for hidden states, the normalized rows themselves (not projected).
    public func callAsFunction(_ x: Matrix, batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        var picked: [(row: Int, hidden: Bool)] = []
        var row = 0
        for seq in batch {
            defer { row += seq.tokens.count }
            guard seq.logitsNeeded else { continue }
            let rows = seq.allLogits ? Array(row..<row + seq.tokens.count) : [row + seq.tokens.count - 1]
            picked += rows.map { ($0, seq.hiddenStates) }
        }
        let selected = Matrix(copying: picked.map(\.row), of: x)
        norm.normalize(selected, into: selected, pool: pool)
        if picked.contains(where: \.hidden) {
            let projectedRows = picked.filter { !$0.hidden }.map(\.row)
            let projected = projectedRows.isEmpty ? [] : LoRAPass.selecting(rows: projectedRows) {
                logits(of: Matrix(copying: picked.indices.filter { !picked[$0].hidden }, of: selected), pool: pool)
            }
            var next = 0
            return picked.indices.map { i in
                if picked[i].hidden { return selected.rowArray(i) }
                defer { next += 1 }
                return projected[next]
            }
        }
        return LoRAPass.selecting(rows: picked.map(\.row)) { logits(of: selected, pool: pool) }
    }

    /// The projection to the vocabulary, scaled and soft-capped, of already normalized rows.
    func logits(of selected: Matrix, pool: ThreadPool) -> [[Float]] {
        let logits = projection(selected, pool)
        if let logitScale { logits.scale(by: logitScale) }
        if let softCap, softCap != 0 {
            // as ggml: × (1/c), tanh, × c
            let inverse = 1 / softCap
            for i in 0..<logits.rows * logits.columns { logits.data[i] = tanhf(logits.data[i] * inverse) * softCap }
        }
        return (0..<logits.rows).map { logits.rowArray($0) }
    }
}

/// Which layers see a window, as llama.cpp reads it: none without a positive
/// `sliding_window`; else per layer from an array `sliding_window_pattern` (1 = window), or
/// from a period n (every n-th layer global; 0: all windowed; `defaultPattern` without the key).
func slidingWindowLayers(file: GGUFFile, config: ModelConfig, defaultPattern: Int) throws -> [Bool] {
    guard let window = config.slidingWindow, window > 0 else { return Array(repeating: false, count: config.blockCount) }
    let key = "\(config.architecture).attention.sliding_window_pattern"
    if let values = file.arch("attention.sliding_window_pattern")?.array {
        // the prediction layers (nextn), when the file has them, may have entries too
        guard values.count == config.blockCount || values.count == config.blockCount + config.predictionLayerCount else {
            throw ModelError.inconsistentMetadata("\(key) has \(values.count) entries for \(config.blockCount) layers")
        }
        return values.prefix(config.blockCount).map { ($0.int ?? 0) != 0 }
    }
    let n = file.arch("attention.sliding_window_pattern")?.int ?? defaultPattern
    return (0..<config.blockCount).map { n == 0 || $0 % n < n - 1 }
}

/// A float hyper-parameter llama.cpp requires for the architecture (e.g. `attention.layer_norm_epsilon`).
func requiredFloat(_ file: GGUFFile, _ config: ModelConfig, _ key: String) throws -> Float {
    guard let value = file.arch(key)?.float else { throw ModelError.missingMetadata("\(config.architecture).\(key)") }
    return value
}

/// A RoPE scaling type llama.cpp does not know (it asserts on one) is refused by name. (longrope
/// scales like linear there.)
func checkRoPEScaling(_ config: ModelConfig) throws {
    if let type = config.ropeScalingType, !["none", "linear", "yarn", "longrope"].contains(type) {
        throw ModelError.unsupportedMetadata("\(config.architecture).rope.scaling.type '\(type)'")
    }
}
