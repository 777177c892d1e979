import Foundation
import Kernels
import Models
import Tokenization

public struct PerplexityResult: Sendable, Codable {
    public var ppl: Double
    /// Standard error of the PPL estimate (delta method on the mean negative log-likelihood).
    public var stderr: Double
    public var chunks: Int
    public var context: Int
    public var scoredTokens: Int
    public var seconds: Double
}

/// Perplexity as llama.cpp's `llama-perplexity` measures it: the text is split into chunks of
/// `context` tokens, each evaluated from an empty cache (its first token replaced by BOS when
/// the model adds one), and only the second half of each chunk is scored, so every scored
/// token has at least `context/2` tokens of history.
///
/// `saveBase`: also writes the scored positions' log-probabilities to that path in
/// llama.cpp's `--kl-divergence-base` format (`klDivergence` reads it back, as does
/// `llama-perplexity --kl-divergence`).
public func perplexity(model: LoadedModel, text: String, context: Int, maxChunks: Int?, pool: ThreadPool,
                       saveBase: String? = nil,
                       progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> PerplexityResult {
    try model.validateContext(context)
    let tokens = model.tokenizer.encode(text, addSpecial: true, parseSpecial: false)
    let available = tokens.count / context
    guard available > 0 else {
        throw PerplexityError.textTooShort(tokens: tokens.count, needed: context)
    }
    let chunks = min(maxChunks ?? available, available)
    let evaluated = Array(tokens[..<(chunks * context)])
    let writer = try saveBase.map {
        try BaseLogProbsWriter(path: $0, context: context, vocabularySize: model.config.vocabularySize, tokens: evaluated)
    }
    var nll = 0.0, nll2 = 0.0
    var count = 0
    let start = Date()
    try evaluateChunks(model: model, tokens: evaluated, context: context, pool: pool) { chunk, logits, scored in
        for (row, target) in zip(logits, scored) {
            let v = -Double(logSoftmax(row, at: Int(target)))
            nll += v
            nll2 += v * v
            try writer?.append(logits: row)
        }
        count += scored.count
        progress(chunk + 1, chunks, exp(nll / Double(count)))
    }
    try writer?.close()
    let mean = nll / Double(count)
    let ppl = exp(mean)
    let variance = nll2 / Double(count) - mean * mean
    let stderr = variance > 0 ? (variance / Double(count - 1)).squareRoot() * ppl : 0
    return PerplexityResult(ppl: ppl, stderr: stderr, chunks: chunks, context: context, scoredTokens: count,
                            seconds: Date().timeIntervalSince(start))
}

/// Runs `tokens` (a whole number of `context`-token chunks) through the model chunk by chunk
/// as llama-perplexity does and hands `body` each chunk's logits at the scored positions
/// (`context/2` ..< `context - 1`) with the tokens they predict. Non-finite logits are an
/// error naming the chunk and position.
func evaluateChunks(model: LoadedModel, tokens: [TokenID], context: Int, pool: ThreadPool,
                    body: (_ chunk: Int, _ logits: [[Float]], _ targets: ArraySlice<TokenID>) throws -> Void) throws {
    precondition(tokens.count % context == 0)
    let first = context / 2
    let bos = model.tokenizer.addsBOS ? model.tokenizer.bosToken : nil
    let cache = model.makeCache(capacity: context)
    for chunk in 0..<(tokens.count / context) {
        let target = tokens[chunk * context..<(chunk + 1) * context]
        var window = Array(target)
        if let bos { window[0] = bos }
        cache.truncate(to: 0)
        // Prefix without logits, then the scored half with all logits.
        _ = try model.forward([BatchSequence(tokens: Array(window[..<first]), cache: cache)], pool: pool)
        let logits = try model.forward(
            [BatchSequence(tokens: Array(window[first...]), cache: cache, allLogits: true)], pool: pool)
        let scored = Array(logits.prefix(context - 1 - first))
        for (i, row) in scored.enumerated() where !row.allSatisfy(\.isFinite) {
            throw PerplexityError.nonFiniteLogits(chunk: chunk, position: first + i)
        }
        try body(chunk, scored, target[(target.startIndex + first + 1)...])
    }
}

/// log softmax(logits)[index], computed stably in double precision.
func logSoftmax(_ logits: [Float], at index: Int) -> Double {
    let maxLogit = Double(logits.max() ?? 0)
    var sum = 0.0
    for l in logits { sum += exp(Double(l) - maxLogit) }
    return Double(logits[index]) - maxLogit - log(sum)
}

public enum PerplexityError: Error, CustomStringConvertible, Equatable {
    case textTooShort(tokens: Int, needed: Int)
    /// The forward pass produced NaN or infinity.
    case nonFiniteLogits(chunk: Int, position: Int)
    public var description: String {
        switch self {
        case .textTooShort(let n, let needed): "the text is only \(n) tokens; perplexity needs at least one chunk of \(needed)"
        case .nonFiniteLogits(let chunk, let position):
            "the model produced non-finite logits (NaN or infinity) in chunk \(chunk + 1) at position \(position)"
        }
    }
}
