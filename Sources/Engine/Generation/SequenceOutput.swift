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
    /// What switches a lazy constraint on (none: the constraint always applies).
    private let textTriggers: [[UInt8]]
    private let tokenTriggers: Set<TokenID>
    private let startTriggers: [[UInt8]]
    private var isLazy: Bool { !textTriggers.isEmpty || !tokenTriggers.isEmpty || !startTriggers.isEmpty }
    /// The latest output bytes, as many as could hold the start of a text trigger.
    private var triggerWindow: [UInt8] = []
    /// The output so far has been only whitespace (for `outputStart` triggers).
    private var atOutputStart = true
    private var constraintIsOn: Bool
    /// A triggered document ends the output (otherwise the output goes on unconstrained).
    private let triggeredDocumentEnds: Bool

    init(tokenizer: any Tokenizer, stop: [String], constraint: GrammarConstraint?, triggers: [GrammarTrigger] = [],
         triggeredDocumentEnds: Bool = false, decodesSpecialTokens: Bool = false) {
        self.triggeredDocumentEnds = triggeredDocumentEnds
        endOfGeneration = tokenizer.endOfGenerationTokens
        decoder = StreamingDecoder(tokenizer: tokenizer, special: decodesSpecialTokens)
        stopMatcher = StopStringMatcher(stopStrings: stop)
        self.constraint = constraint
        self.tokenizer = tokenizer
        var text: [[UInt8]] = [], tokens = Set<TokenID>(), start: [[UInt8]] = []
        for trigger in triggers {
            switch trigger {
            case .text(let t) where !t.isEmpty: text.append(Array(t.utf8))
            case .token(let t): tokens.insert(t)
            case .outputStart(let t) where !t.isEmpty: start.append(Array(t.utf8))
            default: break
            }
        }
        textTriggers = text
        tokenTriggers = tokens
        startTriggers = start
        constraintIsOn = text.isEmpty && tokens.isEmpty && start.isEmpty
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
        } else if isLazy {
            watchForTriggers(token)
        }
        if grammarEnded && isLazy && !triggeredDocumentEnds {
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

    /// Switches the constraint on once a trigger fires; bytes of the same token after a text
    /// trigger are the constraint's first bytes, an output-start trigger's own bytes too.
    private mutating func watchForTriggers(_ token: TokenID) {
        guard let constraint else { return }
        if tokenTriggers.contains(token) {
            constraint.reset()
            constraintIsOn = true
            triggerWindow = []
            return
        }
        let piece = tokenizer.pieceBytes(token)
        if atOutputStart {
            let text = (triggerWindow + piece).drop { JSONRecognizer.isWhitespace($0) }
            if startTriggers.contains(where: { text.starts(with: $0) }) {
                atOutputStart = false
                constraint.reset()
                constraintIsOn = constraint.accept(bytes: text)
                triggerWindow = []
                return
            }
            // still whitespace, or perhaps the beginning of a trigger
            atOutputStart = startTriggers.contains { $0.starts(with: text) }
        }
        triggerWindow += piece
        let longest = textTriggers.map(\.count).max() ?? 0
        if let end = textTriggers.compactMap({ Self.endOfFirstMatch(of: $0, in: triggerWindow) }).min() {
            constraint.reset()
            constraintIsOn = constraint.accept(bytes: triggerWindow[end...])
            triggerWindow = []
        } else if !atOutputStart, triggerWindow.count >= longest {
            triggerWindow.removeFirst(triggerWindow.count - max(longest - 1, 0))
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
