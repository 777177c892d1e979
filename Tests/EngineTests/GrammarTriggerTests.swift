@testable import Engine
import Testing
import Tokenization

/// A grammar with a trigger (tool calls under `tool_choice: auto`) constrains only the text
/// after the trigger, up to the end of one document.
@Suite struct GrammarTriggerTests {
    let tokenizer = FakeTokenizer(extraPieces: ["<tool_call>", "<tool"])

    func output() -> SequenceOutput {
        let constraint = GrammarConstraint(grammar: .jsonObject, vocabulary: TokenVocabulary(tokenizer: tokenizer))
        return SequenceOutput(tokenizer: tokenizer, stop: [], constraint: constraint, trigger: "<tool_call>")
    }

    func feed(_ out: inout SequenceOutput, _ text: String, byteByByte: Bool = false) -> SequenceOutput.Verdict {
        let tokens = byteByByte ? text.utf8.flatMap { tokenizer.encode(String(UnicodeScalar($0)), addSpecial: false, parseSpecial: false) }
            : tokenizer.encode(text, addSpecial: false, parseSpecial: false)
        var verdict = SequenceOutput.Verdict.more
        for t in tokens { verdict = out.accept(t).verdict }
        return verdict
    }

    func allows(_ out: SequenceOutput, _ text: String) -> Bool {
        guard let c = out.activeConstraint else { return true }
        let mask = c.allowedTokenMask()
        return tokenizer.encode(text, addSpecial: false, parseSpecial: false).allSatisfy { mask.contains($0) }
    }

    @Test func constrainsFromTheTriggerToTheEndOfTheDocument() {
        var out = output()
        #expect(out.activeConstraint == nil)
        #expect(feed(&out, "Let me look { that up.") == .more)
        #expect(out.activeConstraint == nil, "text before the trigger is free")
        #expect(feed(&out, "<tool_call>") == .more)
        #expect(out.activeConstraint != nil)
        #expect(!allows(out, "x"))
        #expect(allows(out, "{"))
        #expect(feed(&out, "\n{\"a\": 1}") == .more, "a triggered grammar does not end the output")
        #expect(out.activeConstraint == nil, "off again after the document")
        #expect(feed(&out, " done") == .more)
    }

    @Test func aTriggerSplitAcrossTokensIsFound() {
        var out = output()
        #expect(feed(&out, "ok <tool") == .more)
        #expect(out.activeConstraint == nil)
        #expect(feed(&out, "_call>", byteByByte: true) == .more)
        #expect(out.activeConstraint != nil)
        #expect(!allows(out, "_"))
    }
}
