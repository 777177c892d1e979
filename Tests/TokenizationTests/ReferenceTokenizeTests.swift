import Foundation
import TestSupport
import Testing
@testable import Tokenization

/// Every `tokenize` case that llama.cpp produced for the real models must come out identical.
@Suite("llama.cpp reference tokenization")
struct ReferenceTokenizeTests {
    static func check(_ tokenizer: any Tokenizer, reference: String) throws {
        let cases = try ReferenceCase.load(reference)
        #expect(!cases.isEmpty)
        var failures: [String] = []
        for c in cases {
            let got = tokenizer.encode(c.text, addSpecial: c.addBOSDefault, parseSpecial: c.parseSpecial)
            if got != c.tokens {
                let at = Array(zip(got, c.tokens)).firstIndex { $0 != $1 } ?? min(got.count, c.tokens.count)
                failures.append("""
                    \(reference): \(c)
                      expected \(c.tokens)
                      got      \(got)
                      first difference at index \(at): expected \(at < c.tokens.count ? "\(c.tokens[at]) \(String(reflecting: tokenizer.tokenText(c.tokens[at])))" : "end"), \
                    got \(at < got.count ? "\(got[at]) \(String(reflecting: tokenizer.tokenText(got[at])))" : "end")
                    """)
            }
        }
        print("\(reference): \(cases.count - failures.count)/\(cases.count) tokenize cases match llama.cpp")
        if let first = failures.first {
            Issue.record("\(failures.count) of \(cases.count) cases differ; first mismatch:\n\(first)")
        }
    }

    @Test("SmolLM2 (byte-level BPE, pre 'smollm') matches llama.cpp")
    func smolLM2() throws {
        try Self.check(try TestModels.smolLM2(), reference: "smollm2-135m-instruct-q4_1")
    }

    @Test("Gemma 3 (SentencePiece) matches llama.cpp")
    func gemma3() throws {
        try Self.check(try TestModels.gemma3(), reference: "gemma3-270m-q4_k_m")
    }
}
