import Models
import Tokenization

/// A smaller model with the target's vocabulary that proposes the next tokens for the target to
/// verify in one pass (speculative decoding with a draft model). It drafts greedily, while it is
/// confident enough; the target's sampling decides what stands, so the output does not depend
/// on the draft model, only the speed does.
public final class DraftModel: @unchecked Sendable {
    public let model: LoadedModel

    /// Checks that `model` can draft for `target`: an attention model (rejected drafts are cut
    /// from its cache; a recurrent state cannot take tokens back) whose tokenizer has the same
    /// tokens, so a token id means the same text to both.
    public init(_ model: LoadedModel, for target: LoadedModel) throws(EngineError) {
        guard model.model is any AttentionModel, !model.model.isEncoder else {
            throw .draftModelIncompatible("'\(model.config.architecture)' is not a decoder with a KV cache")
        }
        let draft = model.tokenizer, main = target.tokenizer
        guard draft.vocabularySize == main.vocabularySize, model.config.vocabularySize == target.config.vocabularySize else {
            throw .draftModelIncompatible("its vocabulary has \(draft.vocabularySize) tokens, the model's \(main.vocabularySize)")
        }
        if let token = (0..<TokenID(main.vocabularySize)).first(where: { draft.tokenText($0) != main.tokenText($0) }) {
            throw .draftModelIncompatible("token \(token) is '\(draft.tokenText(token))' to it and '\(main.tokenText(token))' to the model")
        }
        self.model = model
    }
}

/// How a request drafts with the generator's draft model (llama.cpp's `--draft-max`,
/// `--draft-min`, `--draft-p-min`).
public struct DraftModelSettings: Sendable, Equatable {
    /// Most tokens drafted per step.
    public var maxDraft: Int
    /// Fewer drafted tokens than this are not worth a verification: the step decodes plainly.
    public var minDraft: Int
    /// Drafting stops at a token the draft model gives less probability than this.
    public var minProbability: Float

    public init(maxDraft: Int = 16, minDraft: Int = 0, minProbability: Float = 0.75) {
        self.maxDraft = maxDraft
        self.minDraft = minDraft
        self.minProbability = minProbability
    }
}

/// Where a request's drafted tokens come from.
public enum Speculation: Sendable, Equatable {
    /// From the sequence's own earlier text (no second model).
    case lookup(PromptLookup)
    /// From the generator's draft model.
    case draftModel(DraftModelSettings)
}

/// A sequence's state in the draft model: its KV cache and the tokens whose positions it holds.
final class DraftState {
    let cache: any SequenceState
    var tokens: [TokenID] = []

    init(cache: any SequenceState) { self.cache = cache }

    /// Forgets the positions past the longest prefix shared with `sequence` (rejected drafts)
    /// and returns the tokens of `sequence` the cache does not hold yet.
    func catchUp(to sequence: [TokenID]) -> [TokenID] {
        var shared = 0
        let limit = min(tokens.count, sequence.count)
        while shared < limit && tokens[shared] == sequence[shared] { shared += 1 }
        if shared < tokens.count {
            cache.truncate(to: shared)
            tokens.removeLast(tokens.count - shared)
        }
        return Array(sequence[shared...])
    }
}
