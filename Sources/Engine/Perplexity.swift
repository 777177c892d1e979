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
public func perplexity(model: LoadedModel, text: String, context: Int, maxChunks: Int?, pool: ThreadPool,
                       progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> PerplexityResult {
    try model.validateContext(context)
    let tokens = model.tokenizer.encode(text, addSpecial: true, parseSpecial: false)
    let available = tokens.count / context
    guard available > 0 else {
        throw PerplexityError.textTooShort(tokens: tokens.count, needed: context)
    }
    let chunks = min(maxChunks ?? available, available)
    let first = context / 2
    let bos = model.tokenizer.addsBOS ? model.tokenizer.bosToken : nil
    var nll = 0.0, nll2 = 0.0
    var count = 0
    let cache = model.model.makeCache(capacity: context)
    let start = Date()
    for chunk in 0..<chunks {
        var window = Array(tokens[chunk * context..<(chunk + 1) * context])
        let target = window
        if let bos { window[0] = bos }
        cache.truncate(to: 0)
        // Prefix without logits, then the scored half with all logits.
        _ = try model.model.forward([BatchSequence(tokens: Array(window[..<first]), cache: cache)], pool: pool)
        let logits = try model.model.forward(
            [BatchSequence(tokens: Array(window[first...]), cache: cache, allLogits: true)], pool: pool)
        for i in 0..<(context - 1 - first) {
            let v = -Double(logSoftmax(logits[i], at: Int(target[first + i + 1])))
            nll += v
            nll2 += v * v
        }
        count += context - 1 - first
        progress(chunk + 1, chunks, exp(nll / Double(count)))
    }
    let mean = nll / Double(count)
    let ppl = exp(mean)
    let variance = nll2 / Double(count) - mean * mean
    let stderr = variance > 0 ? (variance / Double(count - 1)).squareRoot() * ppl : 0
    return PerplexityResult(ppl: ppl, stderr: stderr, chunks: chunks, context: context, scoredTokens: count,
                            seconds: Date().timeIntervalSince(start))
}

/// log softmax(logits)[index], computed stably in double precision.
func logSoftmax(_ logits: [Float], at index: Int) -> Double {
    let maxLogit = Double(logits.max() ?? 0)
    var sum = 0.0
    for l in logits { sum += exp(Double(l) - maxLogit) }
    return Double(logits[index]) - maxLogit - log(sum)
}

public enum PerplexityError: Error, CustomStringConvertible {
    case textTooShort(tokens: Int, needed: Int)
    public var description: String {
        switch self {
        case .textTooShort(let n, let needed): "the text is only \(n) tokens; perplexity needs at least one chunk of \(needed)"
        }
    }
}
