import GGUF
import Testing
@testable import Tokenization

/// WordPiece on a small vocabulary spelled as llama.cpp's converter writes BERT's: word starts
/// with "▁", continuations ("##aff" in BERT's vocab.txt) bare.
@Suite("WordPiece")
struct WordPieceTests {
    static let tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "▁hello", "▁world", "▁un", "aff", "able",
                         "▁,", "▁!", "▁$", "▁cafe", "▁中", "▁a"]

    static func tokenizer(_ extra: [(String, MetadataValue)] = []) throws -> any Tokenizer {
        try loadTokenizer(from: SyntheticGGUF.open([
            ("tokenizer.ggml.model", .string("bert")),
            ("tokenizer.ggml.tokens", .array(.string, tokens.map { .string($0) })),
            ("tokenizer.ggml.token_type", .array(.int32, tokens.map { .int32($0.hasPrefix("[") ? 3 : 1) })),
            ("tokenizer.ggml.unknown_token_id", .uint32(1)),
            ("tokenizer.ggml.bos_token_id", .uint32(2)),
            ("tokenizer.ggml.seperator_token_id", .uint32(3)),
        ] + extra))
    }

    static func ids(_ texts: String...) -> [TokenID] { texts.map { TokenID(tokens.firstIndex(of: $0)!) } }

    static func encode(_ t: any Tokenizer, _ text: String) -> [TokenID] {
        t.encode(text, addSpecial: false, parseSpecial: false)
    }

    @Test func normalizesAndSplitsWords() throws {
        let t = try Self.tokenizer()
        #expect(t is WordPieceTokenizer)
        // Lowercased; punctuation and ASCII symbols are words of their own.
        #expect(Self.encode(t, "Hello, World!") == Self.ids("▁hello", "▁,", "▁world", "▁!"))
        #expect(Self.encode(t, "$hello") == Self.ids("▁$", "▁hello"))
        // The longest piece at each position, continuations after the first.
        #expect(Self.encode(t, "UNAFFABLE") == Self.ids("▁un", "aff", "able"))
        // Accents are stripped; any whitespace separates words; CJK ideographs stand alone.
        #expect(Self.encode(t, "Café\u{3000}a\t中a") == Self.ids("▁cafe", "▁a", "▁中", "▁a"))
        // Control characters are dropped.
        #expect(Self.encode(t, "hel\u{7}lo") == Self.ids("▁hello"))
    }

    @Test func wordsWithoutCoverAreUnknown() throws {
        let t = try Self.tokenizer()
        // A word that cannot be covered to its end is one [UNK], even when it starts well.
        #expect(Self.encode(t, "hello unaffablex world") == Self.ids("▁hello", "[UNK]", "▁world"))
        #expect(Self.encode(t, "文") == Self.ids("[UNK]"))
    }

    @Test func specialTokensAndDecoding() throws {
        let t = try Self.tokenizer()
        #expect(t.addsBOS)
        #expect(t.encode("hello", addSpecial: true, parseSpecial: false) == Self.ids("[CLS]", "▁hello", "[SEP]"))
        #expect(t.encode("[SEP]hello", addSpecial: false, parseSpecial: true) == Self.ids("[SEP]", "▁hello"))
        #expect(t.decode(Self.ids("[CLS]", "▁un", "aff", "able", "▁!", "[SEP]")) == " unaffable !")
        #expect(t.decode(Self.ids("[CLS]", "▁hello"), special: true) == "[CLS] hello")
    }

    @Test func normalizerFollowsMetadata() throws {
        let cased = try Self.tokenizer([("tokenizer.ggml.normalizer.lowercase", .bool(false))])
        #expect(Self.encode(cased, "Hello hello") == Self.ids("[UNK]", "▁hello"))
        // Without lowercasing, accents are kept unless asked for.
        #expect(Self.encode(cased, "café") == Self.ids("[UNK]"))
        let stripped = try Self.tokenizer([("tokenizer.ggml.normalizer.lowercase", .bool(false)),
                                           ("tokenizer.ggml.normalizer.strip_accents", .bool(true))])
        #expect(Self.encode(stripped, "café") == Self.ids("▁cafe"))
    }
}
