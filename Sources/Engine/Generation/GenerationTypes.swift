import Foundation
import Models
import Tokenization

/// One completion to generate: a prompt and, for `n` > 1, its own seed.
public struct SequenceSpec: Sendable {
    public var prompt: [TokenID]
    public var seed: UInt64?

    public init(prompt: [TokenID], seed: UInt64? = nil) {
        self.prompt = prompt
        self.seed = seed
    }
}

/// Settings shared by the sequences of one request.
public struct GenerationOptions: Sendable {
    public var maxTokens: Int
    public var sampling: SamplingParameters
    public var stop: [String]
    /// Output constrained to this JSON grammar (`response_format`).
    public var grammar: JSONGrammar?
    /// When not empty, `grammar` applies only once one of these has fired (a tool call
    /// starts), up to the end of one document; then it waits for a trigger again.
    public var grammarTriggers: [GrammarTrigger] = []
    /// With `grammarTriggers`: the output ends with the triggered document instead of going on
    /// unconstrained (a gpt-oss call ends the model's turn).
    public var triggeredDocumentEnds = false
    /// Control tokens (`<|channel|>`, `[TOOL_CALLS]`) are part of the text, for replies whose
    /// structure they mark.
    public var decodesSpecialTokens = false
    /// nil: no logprobs; k: the sampled token's logprob and the k most likely alternatives.
    public var logprobs: Int?
    /// Set: the prompts are embedded, not continued. Each prompt's final hidden states are
    /// pooled into one L2-normalized vector (an `.embedding` event before `.finished`) and
    /// nothing is generated.
    public var embedding: EmbeddingPooling?
    /// Set: thinking (`<think>`…`</think>`, or gpt-oss's analysis channel) is ended by the
    /// engine after this many tokens.
    public var reasoningBudget: ReasoningBudget?
    /// Set: while decoding, tokens are drafted (by prompt lookup or a draft model) and
    /// verified in one forward pass (speculative decoding). The output is the same as without
    /// it, token for token.
    public var speculation: Speculation?
    /// Each LoRA adapter's scale (by id, the model's `adapters`; missing ones 0); nil: the
    /// generator's `adapterScales` when the request is submitted.
    public var loraScales: [Float]?

    public init(maxTokens: Int, sampling: SamplingParameters = .greedy, stop: [String] = [],
                grammar: JSONGrammar? = nil, grammarTriggers: [GrammarTrigger] = [], logprobs: Int? = nil) {
        self.grammarTriggers = grammarTriggers
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stop = stop
        self.grammar = grammar
        self.logprobs = logprobs
    }
}

/// What switches a lazy grammar on (tool calls under `tool_choice: auto`).
public enum GrammarTrigger: Sendable, Equatable {
    /// The output contains this text (Hermes' `<tool_call>`); the document follows it.
    case text(String)
    /// This token was generated (a control token such as Mistral's `[TOOL_CALLS]`); the
    /// document follows it.
    case token(TokenID)
    /// The output starts, after whitespace, with this text, which is the document's own
    /// beginning (a Llama 3 call is a bare `{"name": ...}`).
    case outputStart(String)
}

public enum FinishReason: String, Sendable, Codable {
    /// End-of-generation token, a stop string, or the grammar's end.
    case stop
    /// `maxTokens` reached or the context is full.
    case length
    /// The caller asked to stop (Ctrl-C, client gone, shutdown) or the sequence failed.
    case cancelled
}

public struct TokenLogprobInfo: Sendable {
    public var token: TokenID
    public var logprob: Float
    public var top: [TokenLogprob]
}

public enum GenerationEvent: Sendable {
    /// New text of sequence `index` (possibly empty when a stop string or an unfinished
    /// character holds it back), the tokens sampled since the last event, and their logprobs
    /// when they were asked for.
    case text(index: Int, text: String, tokens: [TokenID], logprobs: [TokenLogprobInfo])
    case finished(index: Int, reason: FinishReason, usage: SequenceUsage)
    /// The pooled, L2-normalized embedding of sequence `index` (embedding requests only).
    case embedding(index: Int, vector: [Float])
    case failed(index: Int, message: String)
}

public struct SequenceUsage: Sendable {
    public var promptTokens: Int
    public var completionTokens: Int
    /// Prompt tokens found in the prefix cache (not computed again).
    public var cachedTokens: Int
    public var timings: GenerationTimings
}

/// Where the time of one sequence went.
public struct GenerationTimings: Sendable, Codable {
    /// Prompt tokens computed (the cached prefix excluded).
    public var promptTokens = 0
    /// From admission to the first generated token.
    public var promptSeconds = 0.0
    public var generatedTokens = 0
    /// From the first generated token to the last.
    public var generationSeconds = 0.0
    /// From submission to the first generated token (queueing included).
    public var timeToFirstToken = 0.0
    /// Speculative decoding: tokens drafted and how many of them the model accepted.
    public var draftTokens = 0
    public var acceptedDraftTokens = 0

    public init() {}

    public var promptTokensPerSecond: Double { promptSeconds > 0 ? Double(promptTokens) / promptSeconds : 0 }
    /// The first token comes out of the prompt pass, so rate the ones after it.
    public var generationTokensPerSecond: Double {
        generationSeconds > 0 ? Double(max(generatedTokens - 1, 0)) / generationSeconds : 0
    }

    /// Accepted over drafted tokens; 0 without speculative decoding.
    public var draftAcceptanceRate: Double { draftTokens > 0 ? Double(acceptedDraftTokens) / Double(draftTokens) : 0 }

    public var summary: String {
        var text = String(format: "prompt: %d tokens, %.2f t/s | generation: %d tokens, %.2f t/s | time to first token: %.0f ms",
                          promptTokens, promptTokensPerSecond, generatedTokens, generationTokensPerSecond, timeToFirstToken * 1000)
        if draftTokens > 0 {
            text += String(format: " | draft: %d/%d accepted (%.0f%%)", acceptedDraftTokens, draftTokens, draftAcceptanceRate * 100)
        }
        return text
    }
}

/// A whole completion, as `Generator.generate` returns it.
public struct GenerationResult: Sendable {
    public var text: String
    public var tokens: [TokenID]
    public var finishReason: FinishReason
    public var usage: SequenceUsage

    public var timings: GenerationTimings { usage.timings }
}

public enum SubmitError: Error, Sendable, CustomStringConvertible {
    case queueFull(retryAfter: Int)
    case stopped
    /// LoRA scales for more adapters than the model has (`count`), or not finite.
    case badLoRAScales(adapters: Int)

    public var description: String {
        switch self {
        case .queueFull: "the server is busy: too many requests are queued"
        case .stopped: "the server is shutting down"
        case .badLoRAScales(let n): "LoRA scales must be finite numbers for adapter ids 0..<\(n) (the model has \(n) adapters)"
        }
    }
}

/// A submitted request: its events, and a way to cancel it.
public struct RequestHandle: Sendable {
    public let id: Int
    public let events: AsyncStream<GenerationEvent>
    let generator: Generator

    /// Stops every sequence of the request; their blocks are freed at the next step.
    public func cancel() { generator.cancel(id) }
}

/// What the generator tells the world about a finished sequence (logs, metrics).
public struct SequenceReport: Sendable {
    public var requestID: Int
    public var index: Int
    public var reason: FinishReason
    public var usage: SequenceUsage
    /// Times the sequence lost its blocks to make room and was computed again.
    public var preemptions: Int
    /// From submission to the end.
    public var duration: Duration
}

/// Hooks for observability; called on the generator's thread, so they must be quick.
/// Every method has an empty default.
public protocol GeneratorObserver: Sendable {
    func firstToken(after waiting: Duration)
    func nextToken(after interval: Duration)
    func sequenceFinished(_ report: SequenceReport)
    func forwardPassFailed(_ error: any Error, sequences: Int)
    func stepFinished(_ snapshot: Generator.Snapshot)
}

extension GeneratorObserver {
    public func firstToken(after waiting: Duration) {}
    public func nextToken(after interval: Duration) {}
    public func sequenceFinished(_ report: SequenceReport) {}
    public func forwardPassFailed(_ error: any Error, sequences: Int) {}
    public func stepFinished(_ snapshot: Generator.Snapshot) {}
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }
}
