import Tokenization

/// Prompt-lookup drafting (speculative decoding without a second model): when the last few
/// tokens of a sequence occurred before — in its prompt or in what it generated — the tokens
/// that followed them then are proposed as the next ones. The model checks all of them in one
/// forward pass, which costs about as much as one decode while decoding is bound by reading the
/// weights, and every proposed token it agrees with is a decode step saved. Edits, code
/// refactors and quoting answers repeat long stretches of their prompt, and gain the most.
public struct PromptLookup: Sendable, Equatable {
    /// Most tokens proposed at once.
    public var maxDraft: Int
    /// The longest and shortest suffix looked up; the longest match found wins.
    public var ngramMax: Int
    public var ngramMin: Int

    /// The most `maxDraft` a request or flag may ask for: beyond it a wrong guess costs more
    /// than a right one saves.
    public static let longestDraft = 64

    /// `maxDraft` ≥ 1; n-gram lengths `ngramMin...ngramMax`, at least 1.
    public init(maxDraft: Int, ngramMax: Int = 4, ngramMin: Int = 2) {
        precondition(maxDraft >= 1 && ngramMin >= 1 && ngramMax >= ngramMin)
        self.maxDraft = maxDraft
        self.ngramMax = ngramMax
        self.ngramMin = ngramMin
    }

    /// Drafting up to `maxDraft` tokens, or nil for 0 (the flags' and requests' "off").
    public static func drafting(upTo maxDraft: Int) -> PromptLookup? {
        maxDraft > 0 ? PromptLookup(maxDraft: min(maxDraft, longestDraft)) : nil
    }

    /// The tokens that followed the most recent earlier occurrence of the longest suffix of
    /// `tokens` (`ngramMax` down to `ngramMin` long), at most `limit` of them; empty when no
    /// suffix occurred before.
    public func draft(after tokens: [TokenID], limit: Int) -> [TokenID] {
        let limit = min(limit, maxDraft)
        guard limit > 0 else { return [] }
        let count = tokens.count
        for n in stride(from: min(ngramMax, count - 1), through: ngramMin, by: -1) {
            let suffix = tokens[(count - n)...]
            // the most recent occurrence that ends before the suffix starts repeating itself
            var start = count - n - 1
            while start >= 0 {
                if tokens[start] == suffix.first!, tokens[start..<start + n].elementsEqual(suffix) {
                    let follow = start + n
                    return Array(tokens[follow..<min(count, follow + limit)])
                }
                start -= 1
            }
        }
        return []
    }
}
