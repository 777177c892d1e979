import Tokenization

/// The token-to-text tail of one sequence: end-of-generation tokens, the grammar, UTF-8
/// assembly and stop strings, in that order. It decides when a sequence stops for what it
/// produced; length limits belong to the caller.
struct SequenceOutput {
    enum Verdict: Equatable {
        /// Keep generating.
        case more
        /// A stop string, the end of the grammar, or an end-of-generation token.
        case stop
    }

    private let endOfGeneration: Set<TokenID>
    private var decoder: StreamingDecoder
    private var stopMatcher: StopStringMatcher
    let constraint: GrammarConstraint?

    init(tokenizer: any Tokenizer, stop: [String], constraint: GrammarConstraint?) {
        endOfGeneration = tokenizer.endOfGenerationTokens
        decoder = StreamingDecoder(tokenizer: tokenizer)
        stopMatcher = StopStringMatcher(stopStrings: stop)
        self.constraint = constraint
    }

    /// Whether `token` ends the sequence without being part of it.
    func isEndOfGeneration(_ token: TokenID) -> Bool { endOfGeneration.contains(token) }

    /// A sampled token that is part of the output (not end-of-generation): the text that is
    /// now safe to show, and whether generation stops here.
    mutating func accept(_ token: TokenID) -> (text: String, verdict: Verdict) {
        _ = constraint?.accept(token: token)
        let out = stopMatcher.feed(decoder.push(token))
        let stop = out.stop != nil || constraint?.isTerminal == true
        return (out.text, stop ? .stop : .more)
    }

    /// At the end of a sequence that was not cancelled: the text held back for a stop string
    /// or an unfinished character, and whether it completed a stop string.
    mutating func finish() -> (text: String, hitStopString: Bool) {
        guard !stopMatcher.isStopped else { return ("", false) }
        let tail = stopMatcher.feed(decoder.finish())
        if tail.stop != nil { return (tail.text, true) }
        return (tail.text + stopMatcher.flush(), false)
    }
}
