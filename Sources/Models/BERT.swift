import Foundation
import GGUF
import Kernels

/// BERT-family encoders (`bert`: BGE, MiniLM, E5…): token + position (+ token type 0)
/// embeddings, LayerNorm, then post-norm layers — x = norm(x + attention(x)), x = norm(x +
/// GELU MLP(x)) — with bidirectional attention and no RoPE. The output is the final hidden
/// states, which the engine pools into embeddings; a reranker's `cls` head scores them.
public final class BERT: AttentionModel {
    struct Layer: Sendable {
        let attention: Attention
        let attentionOutputNorm: LayerNorm
        let feedForward: UngatedFeedForward
        let outputNorm: LayerNorm
    }

    public let config: ModelConfig
    let tokenEmbedding: Embedding
    let positionEmbedding: Embedding
    /// Row 0 of `token_types` (every token is of the first type), when the file has the table.
    let tokenType: [Float]?
    let embeddingNorm: LayerNorm
    let layers: [Layer]
    /// The reranking head (`cls`, then `cls.output`), when the file has one.
    public let classifier: SequenceClassifier?

    public var isEncoder: Bool { true }

    public init(file: GGUFFile, config: ModelConfig) throws {
        self.config = config
        let d = config.embeddingLength
        let eps = try requiredFloat(file, config, "attention.layer_norm_epsilon")
        // one head size for keys and values (llama.cpp's graph asserts it)
        guard config.keyLength == config.valueLength else {
            throw ModelError.inconsistentMetadata("bert needs key_length (\(config.keyLength)) = value_length (\(config.valueLength))")
        }
        tokenEmbedding = try Embedding(file: file, name: "token_embd.weight", dimension: d)
        positionEmbedding = try Embedding(file: file, name: "position_embd.weight", dimension: d)
        // Unchecked: positions index `position_embd` rows; a sequence's positions stay below its
        // capacity, which the engine bounds by context_length (validateContext), so the table
        // must have that many rows.
        guard positionEmbedding.table.rows >= config.contextLength else {
            throw ModelError.inconsistentMetadata(
                "bert.context_length (\(config.contextLength)) exceeds the \(positionEmbedding.table.rows) rows of position_embd.weight")
        }
        if file.tensor(named: "token_types.weight") != nil {
            let types = try Embedding(file: file, name: "token_types.weight", dimension: d)
            tokenType = types([0]).rowArray(0)
        } else {
            tokenType = nil
        }
        embeddingNorm = try LayerNorm(file: file, name: "token_embd_norm", count: d, epsilon: eps, bias: true)
        let noRotation = RoPE(style: .halves, dimensions: 0, base: 10_000)
        layers = try (0..<config.blockCount).map { i in
            let p = "blk.\(i)."
            var attention = try Attention(file: file, layer: i, config: config, rope: noRotation)
            attention.appliesRoPE = false
            attention.causal = false
            return Layer(
                attention: attention,
                attentionOutputNorm: try LayerNorm(file: file, name: p + "attn_output_norm", count: d, epsilon: eps, bias: true),
                feedForward: try UngatedFeedForward(file: file, prefix: p, dimension: d, hidden: config.feedForwardLength),
                outputNorm: try LayerNorm(file: file, name: p + "layer_output_norm", count: d, epsilon: eps, bias: true))
        }
        classifier = try SequenceClassifier(file: file, dimension: d)
    }

    /// Hidden states of every token (the `hiddenStates` rows); an encoder has no logits.
    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        let x = tokenEmbedding(batch.flatMap(\.tokens))
        let positions = batch.flatMap { seq in (0..<seq.tokens.count).map { Int32(seq.cache.count + $0) } }
        x += positionEmbedding(positions)
        if let tokenType { x.addToEachRow(tokenType) }
        embeddingNorm.normalize(x, into: x, pool: pool)
        let batching = referenceBatching(batch)
        for (i, layer) in layers.enumerated() {
            x += layer.attention(x, layer: i, batch: batch, pool: pool)
            layer.attentionOutputNorm.normalize(x, into: x, pool: pool)
            x += layer.feedForward(x, pool, batching: batching)
            layer.outputNorm.normalize(x, into: x, pool: pool)
        }
        // as `OutputHead` picks rows: every position's, or only the last one's
        var rows: [[Float]] = []
        var row = 0
        for seq in batch {
            defer { row += seq.tokens.count }
            guard seq.logitsNeeded else { continue }
            let picked = seq.allLogits ? Array(row..<row + seq.tokens.count) : [row + seq.tokens.count - 1]
            rows += picked.map { x.rowArray($0) }
        }
        return rows
    }
}

/// A reranker's head over a pooled hidden state: `cls` (dense + tanh), then `cls.output`,
/// giving one score per label (llama.cpp's rank pooling for BERT-family models).
public struct SequenceClassifier: Sendable {
    let dense: Linear?
    let output: Linear?

    /// nil when the file has neither tensor.
    init?(file: GGUFFile, dimension: Int) throws {
        dense = file.tensor(named: "cls.weight") == nil ? nil
            : try Linear(file: file, name: "cls.weight", inputs: dimension, outputs: dimension)
        if let info = file.tensor(named: "cls.output.weight") {
            output = try Linear(file: file, name: "cls.output.weight", inputs: dimension, outputs: info.rowCount)
        } else {
            output = nil
        }
        if dense == nil && output == nil { return nil }
    }

    /// The scores of one pooled (not normalized) hidden state.
    public func scores(_ pooled: [Float], pool: ThreadPool) -> [Float] {
        var x = Matrix(rows: 1, columns: pooled.count, zeroed: false)
        x[0].update(from: pooled, count: pooled.count)
        if let dense {
            x = dense(x, pool)
            for i in 0..<x.columns { x.data[i] = tanhf(x.data[i]) }
        }
        if let output { x = output(x, pool) }
        return x.rowArray(0)
    }
}
