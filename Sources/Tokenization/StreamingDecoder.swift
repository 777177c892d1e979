/// Turns tokens into text one at a time during generation, emitting only complete UTF-8:
/// bytes of a character split across tokens are held back until the character is complete.
/// The concatenation of everything `push` and `finish` return equals `decode` of all tokens.
public struct StreamingDecoder: Sendable {
    public let tokenizer: any Tokenizer
    /// Render control tokens as their text.
    public var special: Bool
    private var pending: [UInt8] = []

    public init(tokenizer: any Tokenizer, special: Bool = false) {
        self.tokenizer = tokenizer
        self.special = special
    }

    /// Adds one token; returns the text that is now complete (possibly empty).
    public mutating func push(_ token: TokenID) -> String {
        pending += tokenizer.pieceBytes(token, special: special)
        return push()
    }

    /// Adds raw bytes; returns the text that is now complete (possibly empty).
    public mutating func push(bytes: [UInt8]) -> String {
        pending += bytes
        return push()
    }

    private mutating func push() -> String {
        let cut = StreamingDecoder.completePrefixLength(pending)
        guard cut > 0 else { return "" }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is still held back (an unfinished character becomes U+FFFD); resets the decoder.
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return String(decoding: pending, as: UTF8.self)
    }

    /// Bytes waiting for the rest of a character.
    public var pendingByteCount: Int { pending.count }

    /// Length of the longest prefix that does not end inside an unfinished character. The cut
    /// is always made before a non-continuation byte, where a UTF-8 decoder starts afresh, so
    /// decoding the parts separately gives the same text as decoding them together.
    public static func completePrefixLength(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        var i = n - 1
        // Find the last non-continuation byte within the last 4 bytes.
        while i >= 0 && i >= n - 4 && bytes[i] & 0xC0 == 0x80 { i -= 1 }
        guard i >= 0 && i >= n - 4 else { return n }
        let lead = bytes[i]
        let needed: Int
        switch lead {
        case 0xC2...0xDF: needed = 2
        case 0xE0...0xEF: needed = 3
        case 0xF0...0xF4: needed = 4
        default: return n  // ASCII or a byte that never starts a character
        }
        return n - i < needed ? i : n
    }
}
