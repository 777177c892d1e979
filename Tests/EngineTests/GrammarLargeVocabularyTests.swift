import Foundation
import Testing
import Tokenization
@testable import Engine

/// A synthetic 262144-token vocabulary shaped roughly like a real one: words with and
/// without a leading space, punctuation runs, digits, JSON fragments, multi-byte UTF-8.
struct SyntheticTokenizer: Tokenizer {
    let pieces: [[UInt8]]

    init(size: Int = 262_144, seed: UInt64 = 1) {
        var rng = Xoshiro256StarStar(seed: seed)
        var p: [[UInt8]] = [Array("<eos>".utf8), []]
        for b in 0...255 { p.append([UInt8(b)]) }  // byte fallback
        let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        let punctuation = Array("{}[]\":,.-_/\\!?()'<>=+*#@ ".utf8)
        let digits = Array("0123456789".utf8)
        let multibyte = ["é", "ü", "日", "本", "€", "😀", "ñ", "я", "中"].map { Array($0.utf8) }
        var seen = Set(p)
        while p.count < size {
            var t: [UInt8] = []
            let kind = rng.next() % 10
            let length = 1 + Int(rng.next() % 9)
            if kind < 6 {
                if rng.next() % 2 == 0 { t.append(0x20) }
                for _ in 0..<length { t.append(letters[Int(rng.next() % UInt64(letters.count))]) }
            } else if kind < 8 {
                for _ in 0..<min(length, 4) { t.append(punctuation[Int(rng.next() % UInt64(punctuation.count))]) }
            } else if kind < 9 {
                for _ in 0..<min(length, 4) { t.append(digits[Int(rng.next() % 10)]) }
            } else {
                for _ in 0..<min(length, 3) { t += multibyte[Int(rng.next() % UInt64(multibyte.count))] }
            }
            if seen.insert(t).inserted { p.append(t) }
        }
        pieces = p
    }

    var vocabularySize: Int { pieces.count }
    var bosToken: TokenID? { nil }
    var eosToken: TokenID? { 0 }
    var endOfGenerationTokens: Set<TokenID> { [0] }
    var addsBOS: Bool { false }
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID] {
        text.utf8.map { TokenID(Int($0) + 2) }
    }
    func pieceBytes(_ token: TokenID) -> [UInt8] { pieces[Int(token)] }
    func tokenText(_ token: TokenID) -> String { String(decoding: pieces[Int(token)], as: UTF8.self) }
}

@Suite struct GrammarLargeVocabularyTests {
    @Test func masksOverA262kVocabulary() throws {
        let tokenizer = SyntheticTokenizer()
        let clock = ContinuousClock()
        var vocab: TokenVocabulary!
        let buildTime = clock.measure { vocab = TokenVocabulary(tokenizer: tokenizer) }
        let schema = try JSONGrammar(schemaText: personSchema)
        let prefixes: [(JSONGrammar, String)] = [
            (.jsonObject, ""), (.jsonObject, "{\""), (.jsonObject, "{\"a\": "), (.jsonObject, "{\"a\": \"some text"),
            (.jsonObject, "{\"a\": 12"), (schema, "{\""), (schema, "{\"name\": \"Bo"), (schema, "{\"name\": \"Bob\", "),
        ]
        var report = "vocabulary build \(buildTime), \(vocab.trieNodeCount) trie nodes"
        for (grammar, prefix) in prefixes {
            let c = GrammarConstraint(grammar: grammar, vocabulary: vocab)
            #expect(c.accept(bytes: Array(prefix.utf8)))
            var mask: TokenMask!
            let t = clock.measure { mask = c.allowedTokenMask() }
            let cached = clock.measure { _ = c.allowedTokenMask() }
            report += "\n  \(prefix.debugDescription): \(mask.count) allowed, \(t) (cached \(cached))"
            // Spot-check against per-token checks.
            var rng = Xoshiro256StarStar(seed: 5)
            for _ in 0..<2000 {
                let id = TokenID(rng.next() % UInt64(tokenizer.vocabularySize))
                let piece = tokenizer.pieceBytes(id)
                let expected = id == 0 ? c.isComplete : (!piece.isEmpty && c.allows(bytes: piece))
                #expect(mask.contains(id) == expected)
            }
        }
        print(report)
    }
}
