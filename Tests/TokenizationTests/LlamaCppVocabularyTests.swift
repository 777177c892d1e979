import Foundation
import GGUF
import TestSupport
import Testing
@testable import Tokenization

/// llama.cpp's own tokenizer suite: the `models/ggml-vocab-*.gguf` vocabularies of its source,
/// each with inputs (`.inp`) and the token ids llama.cpp must produce for them (`.out`), which its
/// `tests/test-tokenizer-0` checks. The source comes from the cache (`scripts/llama_cpp.py`).
@Suite("llama.cpp vocabulary suite")
struct LlamaCppVocabularyTests {
    static let vocabularies = TestSupport.llamaCppVocabularyNames()
    static let sourceAvailable = !vocabularies.isEmpty
    static let skipReason: Comment = "llama.cpp's source is not in the cache (python3 scripts/llama_cpp.py fetches it)"

    /// One input and the token ids llama.cpp produces for it.
    struct Case {
        let text: String
        let tokens: [TokenID]
    }

    /// The cases of `ggml-vocab-NAME.gguf`, read as test-tokenizer-0 reads them: inputs are the
    /// `.inp` file cut at every "\n__ggml_vocab_test__\n", outputs are the `.out` file's lines
    /// (trimmed, ids separated by spaces). Like its map from input to ids, a repeated input
    /// counts once, with the ids of its last occurrence.
    static func cases(_ name: String) throws -> [Case] {
        let vocabulary = TestSupport.llamaCppVocabulary(name)
        let input = try Data(contentsOf: URL(fileURLWithPath: vocabulary.path + ".inp"))
        let output = try String(contentsOfFile: vocabulary.path + ".out", encoding: .utf8)

        let separator = Data("\n__ggml_vocab_test__\n".utf8)
        var texts: [String] = []
        var position = input.startIndex
        while position < input.endIndex {
            let end = input.range(of: separator, in: position..<input.endIndex)
            let piece = input[position..<(end?.lowerBound ?? input.endIndex)]
            let text = String(decoding: piece, as: UTF8.self)
            try #require(Array(text.utf8) == Array(piece), "\(name).inp: input #\(texts.count) is not valid UTF-8")
            texts.append(text)
            position = end?.upperBound ?? input.endIndex
        }

        var lines = output.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }  // getline sees no line after the final newline
        try #require(texts.count == lines.count, "\(name): \(texts.count) inputs but \(lines.count) output lines")

        var cases: [Case] = []
        var index: [String: Int] = [:]
        for (text, line) in zip(texts, lines) {
            let tokens = try line.split(separator: " ").map { field in
                try #require(TokenID(field.trimmingCharacters(in: .whitespaces)), "\(name).out: '\(field)' is not a token id")
            }
            if let i = index[text] {
                cases[i] = Case(text: text, tokens: tokens)
            } else {
                index[text] = cases.count
                cases.append(Case(text: text, tokens: tokens))
            }
        }
        return cases
    }

    static func load(_ name: String) throws -> any Tokenizer {
        try loadTokenizer(from: GGUFFile(path: TestSupport.llamaCppVocabulary(name).path))
    }

    /// Token ids and their pieces, as test-tokenizer-0 lists them when a case fails.
    static func describe(_ tokens: [TokenID], _ tokenizer: any Tokenizer) -> String {
        if tokens.isEmpty { return "(none)" }
        return tokens.map { "\($0) \(String(reflecting: String(decoding: tokenizer.pieceBytes($0, special: true), as: UTF8.self)))" }
            .joined(separator: ", ")
    }

    /// Every input tokenizes (no BOS/EOS, special-token text left as text) to exactly the ids
    /// llama.cpp's suite expects. test-tokenizer-0 compares ids only: it prints the
    /// detokenized text but asserts nothing about it, so neither does this test (its failure
    /// messages show both detokenizations, as llama.cpp's do).
    @Test("token ids match llama.cpp's test-tokenizer-0", .enabled(if: sourceAvailable, skipReason), arguments: vocabularies)
    func tokenIDs(vocabulary: String) throws {
        let cases = try Self.cases(vocabulary)
        #expect(!cases.isEmpty)
        let tokenizer = try Self.load(vocabulary)
        var failures = 0
        for c in cases {
            let got = tokenizer.encode(c.text, addSpecial: false, parseSpecial: false)
            guard got != c.tokens else { continue }
            failures += 1
            if failures <= 5 {
                Issue.record("""
                    \(vocabulary): \(String(reflecting: c.text))
                      detokenized to \(String(reflecting: tokenizer.decode(got, special: true))) \
                    instead of \(String(reflecting: tokenizer.decode(c.tokens, special: true)))
                      expected \(Self.describe(c.tokens, tokenizer))
                      got      \(Self.describe(got, tokenizer))
                    """)
            }
        }
        #expect(failures == 0, "\(vocabulary): \(failures) of \(cases.count) cases differ from llama.cpp")
        print("\(vocabulary): \(cases.count - failures)/\(cases.count) cases match llama.cpp")
    }

    /// The vocabularies whose round trip llama.cpp checks: its tests/CMakeLists.txt runs
    /// test-tokenizer-1-spm on llama-spm (the BPE round-trip test is registered for none).
    static let roundTripVocabularies = ["llama-spm"].filter(vocabularies.contains)

    /// llama.cpp's `common_detokenize` (special tokens as text) for a SentencePiece vocabulary:
    /// the pieces, minus the space that encoding puts before the text.
    static func detokenize(_ tokens: [TokenID], _ tokenizer: SPMTokenizer) -> [UInt8] {
        var bytes = tokens.flatMap { tokenizer.pieceBytes($0, special: true) }
        if tokenizer.addsSpacePrefix, let first = tokens.first, tokenizer.pieceBytes(first, special: true).first == 0x20 {
            bytes.removeFirst()
        }
        return bytes
    }

    /// test-tokenizer-1-spm: every token's text and every code point's UTF-8 must come back
    /// unchanged from tokenizing (special-token text parsed) and detokenizing. Swift strings are
    /// valid UTF-8, so the token texts that are not (the lone bytes 0x80...0xFF) are left out.
    @Test("round trip as llama.cpp's test-tokenizer-1-spm", .enabled(if: sourceAvailable, skipReason),
          arguments: roundTripVocabularies)
    func roundTrip(vocabulary: String) throws {
        let tokenizer = try #require(try Self.load(vocabulary) as? SPMTokenizer)
        var failures: [String] = []
        var skipped = 0
        for token in 0..<TokenID(tokenizer.vocabularySize) {
            let bytes = Self.detokenize([token], tokenizer)
            let text = String(decoding: bytes, as: UTF8.self)
            guard Array(text.utf8) == bytes else { skipped += 1; continue }
            let back = Self.detokenize(tokenizer.encode(text, addSpecial: false, parseSpecial: true), tokenizer)
            if back != bytes {
                failures.append("token \(token) \(String(reflecting: text)) comes back as \(String(reflecting: String(decoding: back, as: UTF8.self)))")
            }
        }
        var codePoints = 0
        for cp in UInt32(0)..<0x110000 {
            // llama.cpp leaves out the surrogates and most of the unassigned planes, and
            // U+2581 (it is SentencePiece's space)
            if (0xD800...0xDFFF).contains(cp) || (0x40000...0xE0000).contains(cp) || cp == 0x2581 { continue }
            let text = String(Character(Unicode.Scalar(cp)!))
            let back = Self.detokenize(tokenizer.encode(text, addSpecial: false, parseSpecial: true), tokenizer)
            codePoints += 1
            if back != Array(text.utf8) {
                failures.append("U+\(String(cp, radix: 16, uppercase: true)) comes back as \(String(reflecting: String(decoding: back, as: UTF8.self)))")
            }
        }
        #expect(failures.count == 0, "\(vocabulary): \(failures.count) round trips differ, first: \(failures.prefix(5))")
        print("\(vocabulary): \(tokenizer.vocabularySize - skipped) tokens (\(skipped) lone bytes left out) and \(codePoints) code points round-trip")
    }
}
