@testable import Engine
import GGUF
import Testing
import Tokenization

/// Replies whose structure control tokens mark (Mistral's `[TOOL_CALLS]`, harmony's channels)
/// are decoded with those tokens' text; other replies leave them out.
@Suite struct ControlTokenTextTests {
    @Test func controlTokensReachTheTextOnlyWhenAsked() throws {
        let path = try SyntheticGGUF(vocabulary: 64, controlTokens: ["[TOOL_CALLS]", "<|channel|>"]).write(name: "control-tokens")
        let tokenizer = try loadTokenizer(from: GGUFFile(path: path))
        let marker = tokenizer.encode("[TOOL_CALLS]", addSpecial: false, parseSpecial: true)
        #expect(marker.count == 1, "the marker is one control token")
        let reply = marker + tokenizer.encode("AB", addSpecial: false, parseSpecial: false)
        func text(special: Bool) -> String {
            var out = SequenceOutput(tokenizer: tokenizer, stop: [], constraint: nil, decodesSpecialTokens: special)
            return reply.map { out.accept($0).text }.joined() + out.finish().text
        }
        #expect(text(special: true) == "[TOOL_CALLS]AB")
        #expect(text(special: false) == "AB")
    }
}
