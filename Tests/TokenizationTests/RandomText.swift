/// Deterministic pseudo-random numbers (SplitMix64), so property tests are reproducible.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Random strings that stress tokenizers: every kind of whitespace, contractions, digits of
/// several scripts, punctuation, letters of many scripts, combining marks, emoji (with ZWJ),
/// format and private-use characters, unassigned code points and arbitrary scalars.
enum RandomText {
    static let pieces: [[String]] = [
        [" ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", "\r", "\u{A0}", "\u{2009}", "\u{3000}", "\u{85}", "\u{0B}", "\u{0C}", "\u{2028}"],
        ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'", "’s", "'x"],
        ["0", "1", "42", "123", "2024", "12345", "٣", "０", "²", "Ⅻ", "3.14"],
        [".", ",", "!", "?", ":", ";", "-", "_", "(", ")", "[", "]", "{", "}", "<", ">", "=", "+", "$", "^", "~", "|", "`", "\"", "#", "@", "&", "*", "/", "\\", "%", "…", "—", "“", "”", "«", "»", "。", "、", "！", "€", "©"],
        ["the", "The", "hello", "world", "a", "I", "tokenizer", "café", "naïve", "Straße", "ÆØÅ", "λόγος", "Привет", "日本語", "中文", "한국어", "カタカナ", "ひらがな", "עברית", "العربية", "हिन्दी", "ไทย"],
        ["\u{301}", "e\u{301}", "\u{308}", "\u{200B}", "\u{200D}", "\u{FEFF}", "\u{E000}", "\u{378}", "\u{E0080}", "\u{10FFFD}", "\u{1}", "\u{1F}", "\u{7F}"],
        ["😀", "🚀", "👩‍💻", "🇫🇷", "🧠", "👍🏽", "❤️", "𝔘", "𠀀", "🀄"],
    ]

    static func scalar<G: RandomNumberGenerator>(_ g: inout G) -> Character {
        while true {
            let v = UInt32.random(in: 1...0x10FFFF, using: &g)
            if let s = Unicode.Scalar(v) { return Character(s) }
        }
    }

    static func make<G: RandomNumberGenerator>(_ g: inout G, maxPieces: Int = 24) -> String {
        var s = ""
        for _ in 0..<Int.random(in: 0...maxPieces, using: &g) {
            if Int.random(in: 0..<10, using: &g) == 0 {
                s.unicodeScalars.append(contentsOf: String(scalar(&g)).unicodeScalars)
            } else {
                let group = pieces[Int.random(in: 0..<pieces.count, using: &g)]
                s.unicodeScalars.append(contentsOf: group[Int.random(in: 0..<group.count, using: &g)].unicodeScalars)
            }
        }
        return s
    }
}
