import Testing
@testable import Tokenization

/// decode(encode(s)) == s, byte for byte, on seeded random Unicode strings.
@Suite("Round trip")
struct RoundTripTests {
    /// `representable` says which UTF-8 bytes the vocabulary can encode; other characters are
    /// removed from the random strings first.
    static func check(_ tokenizer: any Tokenizer, seed: UInt64, count: Int, representable: (UInt8) -> Bool = { _ in true }) {
        var g = SplitMix64(seed: seed)
        var failures = 0
        var removed = 0
        for i in 0..<count {
            var s = RandomText.make(&g, maxPieces: 40)
            let kept = s.unicodeScalars.filter { String($0).utf8.allSatisfy(representable) }
            removed += s.unicodeScalars.count - kept.count
            s = String(String.UnicodeScalarView(kept))
            // BOS (a control token) decodes to nothing, so adding specials must not matter.
            for addSpecial in [false, true] {
                let tokens = tokenizer.encode(s, addSpecial: addSpecial, parseSpecial: false)
                let back = tokenizer.decode(tokens)
                if Array(back.utf8) != Array(s.utf8) {
                    failures += 1
                    if failures == 1 {
                        Issue.record("string #\(i) \(String(reflecting: s)) (addSpecial \(addSpecial)) decodes to \(String(reflecting: back)); tokens \(tokens)")
                    }
                }
            }
        }
        #expect(failures == 0)
        print("round trip: \(count) strings, \(removed) unrepresentable characters removed")
    }

    /// SmolLM2's vocabulary has no token for 21 byte values (0x04, 0xF1, 0xF2, 0xF5...0xFF, ...);
    /// llama.cpp drops those bytes, so characters containing them are left out.
    @Test func smolLM2ByteLevelBPE() throws {
        let tokenizer = try TestModels.smolLM2()
        let bpe = try #require(tokenizer as? BPETokenizer)
        #expect(bpe.byteTokens.filter { $0 < 0 }.count == 21)
        Self.check(tokenizer, seed: 1, count: 1500) { bpe.byteTokens[Int($0)] >= 0 }
    }

    /// Gemma's vocabulary has add_space_prefix = false, so no leading space is added and the
    /// round trip is exact; with a space prefix llama.cpp's detokenizer drops the first space.
    @Test func gemma3SentencePiece() throws {
        let tokenizer = try TestModels.gemma3()
        #expect((tokenizer as? SPMTokenizer)?.addsSpacePrefix == false)
        Self.check(tokenizer, seed: 2, count: 1500)
    }

    @Test func controlTokensRenderOnlyWhenAsked() throws {
        let smol = try TestModels.smolLM2()
        let tokens = smol.encode("<|im_start|>user\nHi<|im_end|>", addSpecial: false, parseSpecial: true)
        #expect(tokens.first == 1)
        #expect(smol.decode(tokens) == "user\nHi")
        #expect(smol.decode(tokens, special: true) == "<|im_start|>user\nHi<|im_end|>")
    }
}

/// SentencePiece input is cut into words (before "▁" where no token can join across) and
/// each word is merged and cached separately; that must equal llama.cpp's one pass per fragment.
@Suite("SentencePiece word splitting")
struct SPMWordSplittingTests {
    @Test func sameTokensAsOnePass() throws {
        let spm = try #require(try TestModels.gemma3() as? SPMTokenizer)
        var g = SplitMix64(seed: 11)
        var texts = (0..<800).map { _ in RandomText.make(&g, maxPieces: 40) }
        texts += ["a>  </b> <p>x</p>", "<b> </b>>  </", "x > </y", "   spaces   everywhere   ", "\u{2581}already\u{2581}escaped",
                  PerformanceTests.englishText(bytes: 20_000, seed: 5)]
        for text in texts {
            for parseSpecial in [false, true] {
                let split = spm.encode(text, addSpecial: true, parseSpecial: parseSpecial, splitWords: true)
                let whole = spm.encode(text, addSpecial: true, parseSpecial: parseSpecial, splitWords: false)
                #expect(split == whole, "\(String(reflecting: text))")
            }
        }
    }
}
