@testable import Engine
import Testing
import Tokenization

/// A grammar with a trigger (tool calls under `tool_choice: auto`) constrains only the text
/// after the trigger, up to the end of one document.
@Suite struct GrammarTriggerTests {
    let tokenizer = FakeTokenizer(extraPieces: ["<tool_call>", "<tool"])

    func output(_ triggers: [GrammarTrigger] = [.text("<tool_call>")], grammar: JSONGrammar = .jsonObject,
                documentEnds: Bool = false) -> SequenceOutput {
        let constraint = GrammarConstraint(grammar: grammar, vocabulary: TokenVocabulary(tokenizer: tokenizer))
        return SequenceOutput(tokenizer: tokenizer, stop: [], constraint: constraint, triggers: triggers,
                              triggeredDocumentEnds: documentEnds)
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

    /// Token 1 is a control token without bytes, as Mistral's `[TOOL_CALLS]` is to plain decoding.
    @Test func aControlTokenTriggersByItsID() {
        var out = output([.token(1)])
        #expect(feed(&out, "[1] then") == .more)
        #expect(out.activeConstraint == nil)
        _ = out.accept(1)
        #expect(out.activeConstraint != nil)
        #expect(!allows(out, "x") && allows(out, "{"))
        #expect(feed(&out, "{}") == .more && out.activeConstraint == nil, "off again after the document")
        _ = out.accept(1)
        #expect(out.activeConstraint != nil, "and on again at the next trigger token")
    }

    /// A bare JSON call (Llama 3): the output's first bytes are the document's own.
    @Test func anOutputStartTriggerConstrainsFromItsOwnBytes() throws {
        var out = output([.outputStart(#"{""#)])
        #expect(feed(&out, "  ", byteByByte: true) == .more && out.activeConstraint == nil)
        #expect(feed(&out, "{", byteByByte: true) == .more && out.activeConstraint == nil, "maybe the start")
        #expect(feed(&out, "\"", byteByByte: true) == .more)
        let c = try #require(out.activeConstraint)
        #expect(c.text == #"{""#, "the trigger's bytes are the document's first")
        #expect(!allows(out, "\n"), "inside the first key now")
        #expect(feed(&out, #"a": 1}"#) == .more && out.activeConstraint == nil)

        var prose = output([.outputStart("{")])
        #expect(feed(&prose, "Sure: {") == .more)
        #expect(prose.activeConstraint == nil, "only at the start of the output")
    }

    /// A gpt-oss call: the recipient triggers a grammar that names the function in plain text
    /// before its arguments, and the call ends the output.
    @Test func aTriggeredNamedDocumentEndsTheOutput() throws {
        var out = output([.text(" to=functions")], grammar: try namedGrammar(), documentEnds: true)
        #expect(feed(&out, "<|channel|>commentary to=func") == .more && out.activeConstraint == nil)
        #expect(feed(&out, "tions", byteByByte: true) == .more)
        let c = try #require(out.activeConstraint)
        #expect(!c.allows(bytes: " .a".utf8) && !c.allows(bytes: ".c".utf8) && c.allows(bytes: ".a".utf8))
        #expect(feed(&out, ".ab <|m|>") == .more)
        #expect(!c.allows(bytes: #"{"city""#.utf8) && c.allows(bytes: #"{"zip""#.utf8), "the arguments of the function named")
        #expect(feed(&out, #"{"zip": 7}"#) == .stop, "nothing follows the call")
    }
}
