/// A limit on how long a model thinks (`--reasoning-budget`): once it has generated `tokens`
/// tokens inside its thinking block, the engine writes the closing marker for it and the
/// answer follows. 0 ends thinking as soon as it starts. Thinking is a `<think>` block, or
/// gpt-oss's analysis channel (`harmony`).
public struct ReasoningBudget: Sendable, Equatable {
    public var tokens: Int
    public var opening = "<think>"
    public var closing = "</think>"
    /// The prompt already opened the thinking block (templates that end the generation prompt
    /// with `<think>`), so the reply starts inside it.
    public var startsInside = false

    /// What the engine writes to end thinking early.
    public var forcedClosing = "\n</think>\n\n"

    public init(tokens: Int, startsInside: Bool = false) {
        self.tokens = max(0, tokens)
        self.startsInside = startsInside
    }

    /// The start of gpt-oss's analysis message.
    public static let analysisOpening = "<|channel|>analysis<|message|>"

    /// gpt-oss (OpenAI harmony): thinking is the analysis channel's message. The engine ends it
    /// as the model does — it closes the message and opens one on the final channel — so the
    /// reply goes on with the answer. `startsInside`: the prompt ends with `analysisOpening`.
    public static func harmony(tokens: Int, startsInside: Bool = false) -> ReasoningBudget {
        var budget = ReasoningBudget(tokens: tokens, startsInside: startsInside)
        budget.opening = analysisOpening
        budget.closing = "<|end|>"
        budget.forcedClosing = "<|end|><|start|>assistant<|channel|>final<|message|>"
        return budget
    }
}

/// Follows one sequence's output text in and out of thinking blocks and counts the tokens
/// spent inside. Markers may arrive split across pieces: the tail that could begin one is
/// kept for the next piece.
struct ThinkingTracker {
    let budget: ReasoningBudget
    private(set) var inside: Bool
    private(set) var spent = 0
    private var tail = ""

    init(budget: ReasoningBudget) {
        self.budget = budget
        inside = budget.startsInside
    }

    /// The budget is used up while thinking: the next token must be the closing marker.
    var exhausted: Bool { inside && spent >= budget.tokens }

    /// A token was generated (its text, possibly empty while held back, comes to `observe`).
    mutating func countToken() { if inside { spent += 1 } }

    mutating func observe(_ text: String) {
        let window = tail + text
        var position = window.startIndex
        while true {
            let marker = inside ? budget.closing : budget.opening
            guard let range = window.range(of: marker, range: position..<window.endIndex) else { break }
            inside.toggle()
            position = range.upperBound
        }
        let keep = max(budget.opening.count, budget.closing.count) - 1
        tail = String(window[position...].suffix(keep))
    }
}
