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
    private let tokenizer: any Tokenizer
    /// The bytes that switch a lazy constraint on (nil: the constraint always applies).
    private let trigger: [UInt8]?
    /// The latest output bytes, as many as could hold the start of the trigger.
    private var triggerWindow: [UInt8] = []
    private var constraintIsOn: Bool

    init(tokenizer: any Tokenizer, stop: [String], constraint: GrammarConstraint?, trigger: String? = nil) {
        endOfGeneration = tokenizer.endOfGenerationTokens
        decoder = StreamingDecoder(tokenizer: tokenizer)
        stopMatcher = StopStringMatcher(stopStrings: stop)
        self.constraint = constraint
        self.tokenizer = tokenizer
        self.trigger = trigger.flatMap { $0.isEmpty ? nil : Array($0.utf8) }
        constraintIsOn = self.trigger == nil
    }

    /// The constraint that masks the next token, if any applies now.
    var activeConstraint: GrammarConstraint? { constraintIsOn ? constraint : nil }

    /// Whether `token` ends the sequence without being part of it.
    func isEndOfGeneration(_ token: TokenID) -> Bool { endOfGeneration.contains(token) }

    /// A sampled token that is part of the output (not end-of-generation): the text that is
    /// now safe to show, and whether generation stops here.
    mutating func accept(_ token: TokenID) -> (text: String, verdict: Verdict) {
        var grammarEnded = false
        if let constraint, constraintIsOn {
            _ = constraint.accept(token: token)
            grammarEnded = constraint.isTerminal
        } else if trigger != nil {
            watchForTrigger(tokenizer.pieceBytes(token))
        }
        if grammarEnded && trigger != nil {
            // a lazy constraint ends with its document; the output goes on unconstrained
            constraint?.reset()
            constraintIsOn = false
            triggerWindow = []
            grammarEnded = false
        }
        let out = stopMatcher.feed(decoder.push(token))
        let stop = out.stop != nil || grammarEnded
        return (out.text, stop ? .stop : .more)
    }

    /// Switches the constraint on once the output contains the trigger; bytes of the same token
    /// after the trigger are the constraint's first bytes.
    private mutating func watchForTrigger(_ piece: [UInt8]) {
        guard let trigger, let constraint else { return }
        triggerWindow += piece
        if let end = Self.endOfFirstMatch(of: trigger, in: triggerWindow) {
            constraint.reset()
            constraintIsOn = constraint.accept(bytes: triggerWindow[end...])
            triggerWindow = []
        } else if triggerWindow.count >= trigger.count {
            triggerWindow.removeFirst(triggerWindow.count - trigger.count + 1)
        }
    }

    private static func endOfFirstMatch(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where haystack[start..<(start + needle.count)].elementsEqual(needle) {
            return start + needle.count
        }
        return nil
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
