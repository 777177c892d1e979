import Foundation
import GGUF
import Testing
@testable import Tokenization

/// Writes a GGUF file holding only metadata and opens it.
enum SyntheticGGUF {
    static func open(_ metadata: [(String, MetadataValue)]) throws -> GGUFFile {
        var writer = GGUFWriter()
        for (k, v) in metadata { writer.set(k, v) }
        let path = FileManager.default.temporaryDirectory
            .appendingPathComponent("swiftlet-tok-\(UUID().uuidString).gguf").path
        try writer.write(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        return try GGUFFile(path: path)
    }

    /// A SentencePiece vocabulary: the given tokens, then the 256 `<0xXX>` byte tokens.
    static func spm(_ tokens: [(text: String, type: Int32, score: Float)], extra: [(String, MetadataValue)] = []) throws -> GGUFFile {
        var all = tokens
        for b in 0..<256 { all.append((String(format: "<0x%02X>", b), 6, 0)) }
        return try open([
            ("tokenizer.ggml.model", .string("llama")),
            ("tokenizer.ggml.tokens", .array(.string, all.map { .string($0.text) })),
            ("tokenizer.ggml.token_type", .array(.int32, all.map { .int32($0.type) })),
            ("tokenizer.ggml.scores", .array(.float32, all.map { .float32($0.score) })),
        ] + extra)
    }
}

@Suite("Special tokens and metadata")
struct SpecialTokenTests {
    @Test func smolLM2Metadata() throws {
        let t = try TestModels.smolLM2()
        #expect(t.vocabularySize == 49152)
        #expect(t.addsBOS == false)  // tokenizer.ggml.add_bos_token = false
        #expect(t.bosToken == 1)
        #expect(t.eosToken == 2)
        // <|im_end|> (EOS), <|endoftext|> and <reponame> (found as the FIM repo token), as llama.cpp.
        #expect(t.endOfGenerationTokens == [0, 2, 4])
    }

    @Test func gemma3Metadata() throws {
        let t = try TestModels.gemma3()
        #expect(t.vocabularySize == 262144)
        #expect(t.addsBOS)
        #expect(t.bosToken == 2)
        #expect(t.eosToken == 1)
        // <eos>, <end_of_turn> and </s>: llama.cpp lists "</s>" among end-of-generation texts.
        #expect(t.endOfGenerationTokens == [1, 106, 212])
        #expect(t.encode("", addSpecial: true, parseSpecial: false) == [2])
    }

    @Test func parseSpecial() throws {
        let smol = try TestModels.smolLM2()
        #expect(smol.encode("<|im_start|>user", addSpecial: false, parseSpecial: true) == [1, 4093])
        #expect(!smol.encode("<|im_start|>user", addSpecial: false, parseSpecial: false).contains(1))
        let gemma = try TestModels.gemma3()
        #expect(gemma.encode("<start_of_turn>model\n", addSpecial: false, parseSpecial: true) == [105, 4368, 107])
        // User-defined tokens (here runs of newlines) are split out even without parseSpecial.
        #expect(gemma.encode("\n\n\n", addSpecial: false, parseSpecial: false) == [109])
    }

    /// llama.cpp claims special tokens longest first over the whole text, so a longer token
    /// wins over a shorter one that starts earlier and overlaps it.
    @Test func longestSpecialTokenWins() throws {
        let file = try SyntheticGGUF.spm([
            ("<unk>", 2, 0), ("<s>", 3, 0), ("</s>", 3, 0), ("ab", 3, 0), ("bcd", 3, 0),
            ("a", 1, -1), ("b", 1, -1), ("c", 1, -1), ("d", 1, -1), ("x", 1, -1),
        ], extra: [("tokenizer.ggml.add_space_prefix", .bool(false))])
        let t = try loadTokenizer(from: file)
        #expect(t.encode("abcd", addSpecial: false, parseSpecial: true) == [5, 4])
        #expect(t.encode("xabcdab", addSpecial: false, parseSpecial: true) == [9, 5, 4, 3])
        // Defaults for a SentencePiece vocabulary without add_bos_token: BOS 1, added.
        #expect(t.addsBOS)
        #expect(t.encode("x", addSpecial: true, parseSpecial: false) == [1, 9])
        // A character with no token falls back to its UTF-8 bytes.
        let e = t.encode("é", addSpecial: false, parseSpecial: false)
        #expect(e.map { t.tokenText($0) } == ["<0xC3>", "<0xA9>"])
        #expect(t.decode(e) == "é")
    }

    @Test func spacePrefix() throws {
        let file = try SyntheticGGUF.spm([
            ("<unk>", 2, 0), ("<s>", 3, 0), ("</s>", 3, 0), ("▁", 1, -1), ("a", 1, -1), ("▁a", 1, -0.5),
        ])
        let t = try loadTokenizer(from: file)
        #expect((t as? SPMTokenizer)?.addsSpacePrefix == true)  // the SentencePiece default
        #expect(t.encode("a a", addSpecial: false, parseSpecial: false) == [5, 5])
        #expect(t.encode("</s>a", addSpecial: false, parseSpecial: true) == [2, 5])  // after a special token too
        #expect(t.decode([5, 5]) == " a a")
    }

    @Test func loadErrors() throws {
        #expect(throws: TokenizerError.missingKey("tokenizer.ggml.model")) {
            _ = try loadTokenizer(from: SyntheticGGUF.open([("general.name", .string("x"))]))
        }
        #expect(throws: TokenizerError.unknownModel("t5")) {
            _ = try loadTokenizer(from: SyntheticGGUF.open([("tokenizer.ggml.model", .string("t5"))]))
        }
        let tokens: [(String, MetadataValue)] = [("tokenizer.ggml.tokens", .array(.string, [.string("a"), .string("b")]))]
        #expect(throws: TokenizerError.missingKey("tokenizer.ggml.merges")) {
            _ = try loadTokenizer(from: SyntheticGGUF.open([("tokenizer.ggml.model", .string("gpt2"))] + tokens))
        }
        #expect(throws: TokenizerError.unknownPreTokenizer("nope")) {
            _ = try loadTokenizer(from: SyntheticGGUF.open([
                ("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("nope")),
                ("tokenizer.ggml.merges", .array(.string, [])),
            ] + tokens))
        }
        #expect(throws: TokenizerError.missingKey("tokenizer.ggml.tokens")) {
            _ = try loadTokenizer(from: SyntheticGGUF.open([("tokenizer.ggml.model", .string("llama"))]))
        }
        let message = "\(TokenizerError.unknownModel("t5"))"
        #expect(message.contains("t5") && message.contains("gpt2"))
    }

    /// A tiny byte-level BPE vocabulary: merges apply lowest rank first.
    @Test func byteLevelMerges() throws {
        let byteChars = (0..<256).map { b in String(Character(Unicode.Scalar(ByteLevel.byteToCodepoint[b])!)) }
        let words = ["he", "ll", "hell", "hello", "Ġw", "Ġwo", "Ġworld", "or", "ld", "<|end|>"]
        let tokens = byteChars + words
        let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "l d", "Ġw or", "Ġwor ld"]
        let file = try SyntheticGGUF.open([
            ("tokenizer.ggml.model", .string("gpt2")), ("tokenizer.ggml.pre", .string("gpt-2")),
            ("tokenizer.ggml.tokens", .array(.string, tokens.map { .string($0) })),
            ("tokenizer.ggml.token_type", .array(.int32, tokens.map { .int32($0 == "<|end|>" ? 3 : 1) })),
            ("tokenizer.ggml.merges", .array(.string, merges.map { .string($0) })),
        ])
        let t = try loadTokenizer(from: file)
        func id(_ s: String) -> TokenID { TokenID(tokens.firstIndex(of: s)!) }
        #expect(t.addsBOS == false)
        #expect(t.encode("hello", addSpecial: true, parseSpecial: false) == [id("hello")])
        // "Ġwor" is not a token, but "Ġworld" is: intermediates need not be tokens.
        #expect(t.encode("hello world", addSpecial: false, parseSpecial: false) == [id("hello"), id("Ġworld")])
        #expect(t.encode("hello<|end|>", addSpecial: false, parseSpecial: true) == [id("hello"), id("<|end|>")])
        #expect(t.endOfGenerationTokens.contains(id("<|end|>")))
        #expect(t.decode(t.encode("héllo wörld\n", addSpecial: false, parseSpecial: false)) == "héllo wörld\n")
    }
}

@Suite("Special-token splitting at scale")
struct SpecialSplittingScaleTests {
    /// Gemma has user-defined tokens for runs of up to 31 spaces, tabs and newlines: long
    /// whitespace runs must still be split quickly and exactly.
    @Test func longWhitespaceRuns() throws {
        let gemma = try TestModels.gemma3()
        let text = String(repeating: " ", count: 60_000) + "x" + String(repeating: "\t\n", count: 20_000)
        let start = DispatchTime.now().uptimeNanoseconds
        let tokens = gemma.encode(text, addSpecial: false, parseSpecial: true)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        #expect(gemma.decode(tokens) == text)
        // 60000 = 1935 × 31 + 15: the 31-space token first, then one 15-space token.
        #expect(tokens.prefix(1935).allSatisfy { $0 == tokens[0] } && gemma.tokenText(tokens[0]) == String(repeating: " ", count: 31))
        #expect(gemma.tokenText(tokens[1935]) == String(repeating: " ", count: 15))
        #expect(seconds < 10)
    }
}

@Suite("Word cache")
struct WordCacheTests {
    /// Words are cached by their bytes: canonically equivalent spellings (equal as Swift strings)
    /// are different text to the vocabulary.
    @Test func canonicallyEquivalentWordsKeepTheirTokens() throws {
        let oxia = "\u{1F71}", tonos = "\u{03AC}"  // "ά" twice, as two different code points
        #expect(oxia == tonos)
        let file = try SyntheticGGUF.spm([("<unk>", 2, 0), ("<s>", 3, 0), ("</s>", 3, 0), (oxia, 1, -1), (tonos, 1, -1)],
                                         extra: [("tokenizer.ggml.add_space_prefix", .bool(false))])
        let t = try loadTokenizer(from: file)
        #expect(t.encode(oxia, addSpecial: false, parseSpecial: false) == [3])
        #expect(t.encode(tonos, addSpecial: false, parseSpecial: false) == [4])
    }
}
