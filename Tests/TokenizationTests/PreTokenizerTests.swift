import Foundation
import Testing
@testable import Tokenization

/// The pre-tokenizers against words llama.cpp's own splitter produced (Fixtures/README.md).
@Suite("Pre-tokenizers")
struct PreTokenizerTests {
    /// Inputs as UTF-8 bytes (kept in hex so no JSON layer can alter them) and, per
    /// pre-tokenizer, the byte length of each word llama.cpp made of each input.
    struct Fixture {
        let inputs: [[UInt8]]
        let splits: [String: [[Int]]]
    }

    static func fixture() throws -> Fixture {
        let url = try #require(Bundle.module.url(forResource: "pretokenizer_splits", withExtension: "json", subdirectory: "Fixtures"))
        let json = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
        let hex = try #require(json["inputs"] as? [String])
        let inputs = hex.map { h in
            let digits = Array(h.utf8)
            return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<$0 + 2], as: UTF8.self), radix: 16)! }
        }
        return Fixture(inputs: inputs, splits: try #require(json["splits"] as? [String: [[Int]]]))
    }

    static func words(_ text: String, _ pre: PreTokenizer) -> [String] {
        let cps = text.unicodeScalars.map(\.value)
        var start = 0
        return pre.split(cps).map { end in
            defer { start = end }
            return String(String.UnicodeScalarView(cps[start..<end].map { Unicode.Scalar($0)! }))
        }
    }

    @Test("matches llama.cpp's splitter", arguments: ["default", "gpt2", "smollm", "llama3", "qwen2", "qwen35", "falcon", "deepseek-llm", "deepseek-coder", "gemma4"])
    func matchesLlamaCpp(pre: String) throws {
        let fixture = try Self.fixture()
        let expected = try #require(fixture.splits[pre])
        #expect(expected.count == fixture.inputs.count)
        let tokenizer = try PreTokenizer.config(for: pre).preTokenizer
        var mismatches = 0
        for (bytes, lengths) in zip(fixture.inputs, expected) {
            let text = String(decoding: bytes, as: UTF8.self)
            let got = Self.words(text, tokenizer)
            if got.map({ $0.utf8.count }) != lengths {
                mismatches += 1
                if mismatches == 1 {
                    var start = 0
                    let want = lengths.map { n in
                        defer { start += n }
                        return String(decoding: bytes[start..<start + n], as: UTF8.self)
                    }
                    Issue.record("pre '\(pre)' splits \(String(reflecting: text))\n  as       \(got.map { String(reflecting: $0) })\n  expected \(want.map { String(reflecting: $0) })")
                }
            }
        }
        #expect(mismatches == 0, "\(mismatches) of \(fixture.inputs.count) inputs split differently")
    }

    @Test func llama3Pattern() throws {
        let pre = try PreTokenizer.config(for: "llama-bpe").preTokenizer
        let words = Self.words("Hello world's 12345 test!!\n\n  x", pre)
        #expect(words == ["Hello", " world", "'s", " ", "123", "45", " test", "!!\n\n", " ", " x"])
    }

    @Test func unknownPreTokenizerIsAnError() {
        #expect(throws: TokenizerError.unknownPreTokenizer("no-such-pre")) {
            _ = try PreTokenizer.config(for: "no-such-pre")
        }
    }

    @Test func unicodeFlagsFollowLlamaCppsUnicodeVersion() {
        #expect(CodepointFlags.of(0x41).isLetter)
        #expect(CodepointFlags.of(0x0661).isNumber)         // ARABIC-INDIC DIGIT ONE
        #expect(CodepointFlags.of(0x3000).isWhitespace)
        #expect(CodepointFlags.of(0x85).isWhitespace)
        #expect(!CodepointFlags.of(0x200B).isWhitespace)    // ZERO WIDTH SPACE is a format character
        #expect(CodepointFlags.of(0x2EBF0).isLetter)        // assigned in Unicode 15.1
        #expect(CodepointFlags.of(0x1CCF6) == .undefined)   // assigned in Unicode 16.0: not in llama.cpp's tables
    }
}
