import Foundation
import Kernels
import Models
import Tokenization

public enum FinishReason: String, Sendable, Codable {
    /// End-of-generation token or a stop string.
    case stop
    /// `maxTokens` reached or the context is full.
    case length
    /// The caller asked to stop (Ctrl-C, client gone).
    case cancelled
}

public struct GenerationTimings: Sendable, Codable {
    public var promptTokens = 0
    public var promptSeconds = 0.0
    public var generatedTokens = 0
    public var generationSeconds = 0.0
    /// From the start of the request to the first generated token.
    public var timeToFirstToken = 0.0

    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(promptTokens) / promptSeconds : 0 }
    /// The first token comes out of the prompt pass, so rate the ones after it.
    public var generationTokensPerSecond: Double {
        generationSeconds > 0 ? Double(max(generatedTokens - 1, 0)) / generationSeconds : 0
    }

    public var summary: String {
        String(format: "prompt: %d tokens, %.2f t/s | generation: %d tokens, %.2f t/s | time to first token: %.0f ms",
               promptTokens, promptTokensPerSecond, generatedTokens, generationTokensPerSecond, timeToFirstToken * 1000)
    }
}

public struct GenerationResult: Sendable {
    public var text: String
    public var tokens: [TokenID]
    public var finishReason: FinishReason
    public var timings: GenerationTimings
}

/// One conversation's state: a KV cache and the tokens it holds. A new prompt that starts
/// with the cached tokens only evaluates its new suffix (chat turns, shared prefixes).
public final class GenerationSession: @unchecked Sendable {
    public let model: LoadedModel
    public let cache: any SequenceState
    public private(set) var cachedTokens: [TokenID] = []
    public let pool: ThreadPool
    /// Prompt tokens per forward pass; bounds activation memory for long prompts.
    public var prefillBatch = 256
    /// Prompt tokens the last `evaluate` actually ran (the rest came from the cache).
    public private(set) var lastEvaluatedCount = 0

    public init(model: LoadedModel, contextLength: Int, pool: ThreadPool) throws {
        try model.validateContext(contextLength)
        self.model = model
        self.pool = pool
        cache = model.model.makeCache(capacity: contextLength)
    }

    public var contextLength: Int { cache.capacity }

    public func reset() {
        cache.truncate(to: 0)
        cachedTokens = []
    }

    /// Brings the cache to exactly `tokens` and returns the logits after the last one.
    public func evaluate(_ tokens: [TokenID]) throws -> [Float] {
        guard !tokens.isEmpty else { throw EngineError.emptyPrompt }
        guard tokens.count <= cache.capacity else {
            throw EngineError.promptTooLong(tokens: tokens.count, context: cache.capacity)
        }
        var reuse = zip(cachedTokens, tokens).prefix { $0 == $1 }.count
        // The last prompt token must run again to produce logits.
        if reuse == tokens.count { reuse -= 1 }
        cache.truncate(to: reuse)
        reuse = cache.count  // a recurrent state may have had to start over
        cachedTokens = Array(tokens[..<reuse])
        var logits: [Float] = []
        var start = reuse
        lastEvaluatedCount = tokens.count - reuse
        while start < tokens.count {
            let chunk = Array(tokens[start..<min(start + prefillBatch, tokens.count)])
            logits = try model.model.forward([BatchSequence(tokens: chunk, cache: cache)], pool: pool)[0]
            cachedTokens += chunk
            start += chunk.count
        }
        return logits
    }

    /// Generates a continuation of `prompt`. `onText` receives each piece of text as soon as it
    /// is complete UTF-8 and clear of stop strings; returning false cancels.
    public func generate(prompt: [TokenID], maxTokens: Int, sampling: SamplingParameters,
                         stop: [String] = [], onText: (String) -> Bool = { _ in true }) throws -> GenerationResult {
        let tokenizer = model.tokenizer
        var timings = GenerationTimings()
        let start = Date()
        var logits = try evaluate(prompt)
        timings.promptTokens = lastEvaluatedCount
        timings.promptSeconds = Date().timeIntervalSince(start)

        var sampler = Sampler(parameters: sampling)
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var stopMatcher = StopStringMatcher(stopStrings: stop)
        var history = prompt
        var generated: [TokenID] = []
        var text = ""
        var finish = FinishReason.length
        let generationStart = Date()

        func emit(_ piece: String) -> Bool {
            text += piece
            return piece.isEmpty || onText(piece)
        }

        while generated.count < maxTokens {
            let token = sampler.sample(logits: logits, history: history)
            if generated.isEmpty { timings.timeToFirstToken = Date().timeIntervalSince(start) }
            if tokenizer.endOfGenerationTokens.contains(token) {
                finish = .stop
                break
            }
            generated.append(token)
            history.append(token)
            let result = stopMatcher.feed(decoder.push(token))
            if !emit(result.text) { finish = .cancelled; break }
            if result.stop != nil { finish = .stop; break }
            guard generated.count < maxTokens else { break }
            guard cachedTokens.count < cache.capacity else { finish = .length; break }
            logits = try model.model.forward([BatchSequence(tokens: [token], cache: cache)], pool: pool)[0]
            cachedTokens.append(token)
        }
        if !stopMatcher.isStopped && finish != .cancelled {
            // Release text held back for a stop string or an unfinished character.
            let tail = stopMatcher.feed(decoder.finish())
            _ = emit(tail.text)
            if tail.stop != nil { finish = .stop } else { _ = emit(stopMatcher.flush()) }
        }
        timings.generatedTokens = generated.count
        timings.generationSeconds = Date().timeIntervalSince(generationStart)
        return GenerationResult(text: text, tokens: generated, finishReason: finish, timings: timings)
    }
}
