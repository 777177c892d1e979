import Tokenization

/// A set of token ids (a bitset over the vocabulary).
public struct TokenMask: Sendable, Equatable {
    public let vocabularySize: Int
    var words: [UInt64]

    public init(vocabularySize: Int) {
        self.vocabularySize = vocabularySize
        words = [UInt64](repeating: 0, count: (vocabularySize + 63) / 64)
    }

    @inline(__always)
    public func contains(_ token: TokenID) -> Bool {
        let t = Int(token)
        guard t >= 0 && t < vocabularySize else { return false }
        return words[t >> 6] & (UInt64(1) << UInt64(t & 63)) != 0
    }

    @inline(__always)
    public mutating func insert(_ token: TokenID) {
        let t = Int(token)
        words[t >> 6] |= UInt64(1) << UInt64(t & 63)
    }

    /// Number of allowed tokens.
    public var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    public var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    /// The allowed tokens, ascending.
    public var tokens: [TokenID] {
        var out: [TokenID] = []
        for (w, word) in words.enumerated() {
            var m = word
            while m != 0 {
                out.append(TokenID(w * 64 + m.trailingZeroBitCount))
                m &= m - 1
            }
        }
        return out
    }

    /// Sets every logit of a token outside the mask to -inf (including logits past the
    /// vocabulary, as padded output layers have).
    public func apply(to logits: UnsafeMutableBufferPointer<Float>) {
        let n = logits.count
        for (w, word) in words.enumerated() {
            let base = w * 64
            if base >= n { break }
            if word == ~0 { continue }
            let end = min(base + 64, n)
            if word == 0 {
                for i in base..<end { logits[i] = -.infinity }
            } else {
                for i in base..<end where word & (UInt64(1) << UInt64(i - base)) == 0 { logits[i] = -.infinity }
            }
        }
        if n > vocabularySize {
            for i in vocabularySize..<n { logits[i] = -.infinity }
        }
    }
}

/// Constrains generation to a `JSONGrammar`, token by token.
///
///     let vocab = TokenVocabulary(tokenizer: tokenizer)        // once per tokenizer
///     let constraint = GrammarConstraint(grammar: .jsonObject, vocabulary: vocab)
///     while !constraint.isTerminal {
///         var logits = model.forward(...)
///         constraint.apply(to: &logits)                          // disallowed → -inf
///         let token = sampler.sample(logits: logits, history: history)
///         if tokenizer.endOfGenerationTokens.contains(token) { break }
///         constraint.accept(token: token)
///     }
///
/// Each step walks the vocabulary trie alongside the recognizer: a byte the automaton rejects
/// prunes every token below it. Masks are cached by automaton state, so the steps inside a
/// long string (the common case) are answered from the cache. End-of-generation tokens are
/// allowed exactly when the text so far is a complete document (`isComplete`).
///
/// Not thread-safe: one constraint per generation.
public final class GrammarConstraint {
    public let grammar: JSONGrammar
    public private(set) var vocabulary: TokenVocabulary?
    private var recognizer: JSONRecognizer
    private var cache: [JSONRecognizer.State: TokenMask] = [:]
    /// Most masks kept in the cache (each is vocabularySize / 8 bytes).
    public var maxCachedMasks = 128
    /// Bytes accepted so far.
    public private(set) var bytes: [UInt8] = []
    /// An end-of-generation token was accepted.
    public private(set) var isFinished = false

    public init(grammar: JSONGrammar, vocabulary: TokenVocabulary? = nil) {
        self.grammar = grammar
        self.vocabulary = vocabulary
        recognizer = JSONRecognizer(grammar: grammar)
    }

    public convenience init(grammar: JSONGrammar, tokenizer: some Tokenizer) {
        self.init(grammar: grammar, vocabulary: TokenVocabulary(tokenizer: tokenizer))
    }

    /// The text accepted so far.
    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// The text so far is a complete document: generation may end here.
    public var isComplete: Bool { recognizer.canFinish }

    /// Complete, and nothing but end of generation can follow (e.g. the top-level object is
    /// closed): the caller can stop without waiting for an end token.
    public var isTerminal: Bool { isFinished || recognizer.isTerminal }

    /// Back to the empty document (the cache is kept).
    public func reset() {
        recognizer = JSONRecognizer(grammar: grammar)
        bytes.removeAll()
        isFinished = false
    }

    // MARK: Masks

    /// Uses `tokenizer` to build the vocabulary if the constraint has none yet (or one of a
    /// different size). Prefer passing a shared `TokenVocabulary` to `init`.
    @discardableResult
    public func useTokenizer(_ tokenizer: some Tokenizer) -> TokenVocabulary {
        if let v = vocabulary, v.size == tokenizer.vocabularySize { return v }
        let v = TokenVocabulary(tokenizer: tokenizer)
        vocabulary = v
        cache.removeAll()
        return v
    }

    public func allowedTokenMask(tokenizer: some Tokenizer) -> TokenMask {
        allowedTokenMask(vocabulary: useTokenizer(tokenizer))
    }

    /// The tokens allowed next. Requires a vocabulary (from `init` or `useTokenizer`).
    public func allowedTokenMask() -> TokenMask {
        guard let vocabulary else { preconditionFailure("GrammarConstraint has no vocabulary: pass one to init or call useTokenizer") }
        return allowedTokenMask(vocabulary: vocabulary)
    }

    private func allowedTokenMask(vocabulary v: TokenVocabulary) -> TokenMask {
        if isFinished { return TokenMask(vocabularySize: v.size) }
        if let cached = cache[recognizer.state] { return cached }
        var mask: TokenMask
        var walker = recognizer
        if let budget = recognizer.plainStringBudget {
            // Plain string content is accepted as a whole (within the length budget); walk
            // only the other tokens.
            mask = v.plainStringTokens(maxCharacters: budget)
            Self.walk(v.nonPlainTrie, node: 0, recognizer: &walker, mask: &mask)
        } else {
            mask = TokenMask(vocabularySize: v.size)
            Self.walk(v.trie, node: 0, recognizer: &walker, mask: &mask)
        }
        if recognizer.canFinish {
            for t in v.endOfGeneration { mask.insert(t) }
        }
        if cache.count >= maxCachedMasks { cache.removeAll(keepingCapacity: true) }
        cache[recognizer.state] = mask
        return mask
    }

    private static func walk(_ v: TokenTrie, node: Int, recognizer: inout JSONRecognizer, mask: inout TokenMask) {
        let start = Int(v.edgeStart[node])
        let end = start + Int(v.edgeCount[node])
        for e in start..<end {
            let snap = recognizer.snapshot()
            if recognizer.step(v.edgeByte[e]) {
                let child = Int(v.edgeChild[e])
                for i in Int(v.terminalStart[child])..<Int(v.terminalStart[child + 1]) {
                    mask.insert(v.terminalTokens[i])
                }
                if v.edgeCount[child] > 0 {
                    walk(v, node: child, recognizer: &recognizer, mask: &mask)
                }
            }
            recognizer.restore(snap)
        }
    }

    /// Sets the logits of disallowed tokens to -inf.
    public func apply(to logits: UnsafeMutableBufferPointer<Float>) {
        allowedTokenMask().apply(to: logits)
    }

    public func apply(to logits: inout [Float]) {
        let mask = allowedTokenMask()
        logits.withUnsafeMutableBufferPointer { mask.apply(to: $0) }
    }

    public func apply(to logits: inout [Float], tokenizer: some Tokenizer) {
        let mask = allowedTokenMask(tokenizer: tokenizer)
        logits.withUnsafeMutableBufferPointer { mask.apply(to: $0) }
    }

    // MARK: Advancing

    /// Whether `bytes` would be accepted next (the state is unchanged).
    public func allows<S: Sequence>(bytes: S) -> Bool where S.Element == UInt8 {
        var r = recognizer
        for b in bytes where !r.step(b) { return false }
        return true
    }

    /// Appends `bytes` if they continue the document; returns false (changing nothing) if not.
    @discardableResult
    public func accept<S: Sequence>(bytes newBytes: S) -> Bool where S.Element == UInt8 {
        guard !isFinished else { return false }
        var r = recognizer
        var taken: [UInt8] = []
        for b in newBytes {
            guard r.step(b) else { return false }
            taken.append(b)
        }
        recognizer = r
        bytes += taken
        return true
    }

    /// Advances by a sampled token. An end-of-generation token is accepted when the document
    /// is complete (then `isFinished`). Returns false, changing nothing, for a token the
    /// grammar does not allow. Requires a vocabulary.
    @discardableResult
    public func accept(token: TokenID) -> Bool {
        guard let vocabulary else { preconditionFailure("GrammarConstraint has no vocabulary: pass one to init or call useTokenizer") }
        guard token >= 0 && Int(token) < vocabulary.size, !isFinished else { return false }
        if vocabulary.endOfGeneration.contains(token) {
            guard recognizer.canFinish else { return false }
            isFinished = true
            return true
        }
        let piece = vocabulary.piece(token)
        guard !piece.isEmpty else { return false }
        return accept(bytes: piece)
    }

    /// `accept(token:)`, building the vocabulary from `tokenizer` first if needed.
    @discardableResult
    public func accept(token: TokenID, tokenizer: some Tokenizer) -> Bool {
        useTokenizer(tokenizer)
        return accept(token: token)
    }
}

extension Sampler {
    /// Masks `logits` with `constraint` (disallowed tokens → -inf), then samples as usual.
    /// The constraint is not advanced: call `constraint.accept(token:)` with the result.
    /// Masking before the chain (rather than checking the sampled token afterwards) means
    /// top-k, top-p and min-p only ever see allowed tokens.
    public mutating func sample(
        logits: UnsafeMutableBufferPointer<Float>, history: [TokenID], constraint: GrammarConstraint?
    ) -> TokenID {
        constraint?.apply(to: logits)
        return sample(logits: logits, history: history)
    }
}
