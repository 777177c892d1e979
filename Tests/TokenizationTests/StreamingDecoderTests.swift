import Testing
@testable import Tokenization

@Suite("Streaming decoder")
struct StreamingDecoderTests {
    /// Feeds tokens one at a time; every chunk must be whole characters and the chunks must
    /// add up to the full decode.
    static func stream(_ tokenizer: any Tokenizer, _ text: String) -> (chunks: [String], held: Int) {
        let tokens = tokenizer.encode(text, addSpecial: true, parseSpecial: false)
        var decoder = StreamingDecoder(tokenizer: tokenizer)
        var chunks: [String] = []
        var held = 0
        for t in tokens {
            let chunk = decoder.push(t)
            if chunk.isEmpty && !tokenizer.pieceBytes(t).isEmpty { held += 1 }
            chunks.append(chunk)
        }
        chunks.append(decoder.finish())
        #expect(chunks.joined() == tokenizer.decode(tokens))
        #expect(chunks.joined() == text)
        for c in chunks { #expect(!c.unicodeScalars.contains("\u{FFFD}"), "chunk \(String(reflecting: c)) has a broken character") }
        return (chunks, held)
    }

    @Test func byteLevelBPESplitsEmojiAcrossTokens() throws {
        let smol = try TestModels.smolLM2()
        // "😀" is two tokens in SmolLM2 (its four bytes split 3 + 1), CJK characters likewise.
        let (_, held) = Self.stream(smol, "Emoji: 😀🚀🧠👩‍💻 and 日本語のテキスト, café")
        #expect(held > 0, "no token ended inside a character; the test does not exercise holding back")
    }

    @Test func sentencePieceByteFallback() throws {
        let gemma = try TestModels.gemma3()
        // Rare characters fall back to <0xXX> byte tokens, one byte per token.
        let text = "\u{1}\u{2} control 𠀀𝔘 \u{E0080} ok"
        let tokens = gemma.encode(text, addSpecial: false, parseSpecial: false)
        #expect(tokens.contains { gemma.tokenText($0).hasPrefix("<0x") })
        let (_, held) = Self.stream(gemma, text)
        #expect(held > 0)
    }

    @Test func holdsBackIncompleteSequences() {
        let smol: any Tokenizer = NoTokenizer()
        var d = StreamingDecoder(tokenizer: smol)
        #expect(d.push(bytes: [0x61, 0xC3]) == "a")
        #expect(d.pendingByteCount == 1)
        #expect(d.push(bytes: [0xA9]) == "é")
        #expect(d.push(bytes: [0xF0, 0x9F]) == "")
        #expect(d.push(bytes: [0x98]) == "")
        #expect(d.push(bytes: [0x80, 0x21]) == "😀!")
        #expect(d.push(bytes: [0xE2, 0x82]) == "")
        #expect(d.finish() == "\u{FFFD}")
    }

    /// Arbitrary bytes (valid or not) cut at arbitrary points decode to the same text as a whole.
    @Test func chunkedDecodingEqualsWholeDecoding() {
        var g = SplitMix64(seed: 3)
        let alphabet: [UInt8] = [0x41, 0x20, 0xC3, 0xA9, 0xE2, 0x82, 0xAC, 0xF0, 0x9F, 0x98, 0x80, 0xFF, 0xC0, 0xED, 0xA0, 0x80, 0xF4, 0x90]
        for _ in 0..<3000 {
            let bytes = (0..<Int.random(in: 0...24, using: &g)).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &g)] }
            var d = StreamingDecoder(tokenizer: NoTokenizer())
            var out = ""
            var i = 0
            while i < bytes.count {
                let n = Int.random(in: 1...4, using: &g)
                out += d.push(bytes: Array(bytes[i..<min(i + n, bytes.count)]))
                i += n
            }
            out += d.finish()
            #expect(Array(out.utf8) == Array(String(decoding: bytes, as: UTF8.self).utf8), "bytes \(bytes)")
        }
    }
}

/// A tokenizer with no tokens, for driving `StreamingDecoder.push(bytes:)` directly.
struct NoTokenizer: Tokenizer {
    var vocabularySize: Int { 0 }
    var bosToken: TokenID? { nil }
    var eosToken: TokenID? { nil }
    var endOfGenerationTokens: Set<TokenID> { [] }
    var addsBOS: Bool { false }
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID] { [] }
    func pieceBytes(_ token: TokenID) -> [UInt8] { [] }
    func tokenText(_ token: TokenID) -> String { "" }
}
