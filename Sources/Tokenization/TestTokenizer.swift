import GGUF

/// llama.cpp's `test` vocabulary (`tokenizer.ggml.model` = "test"), which its generated
/// per-architecture test models carry: text is cut into 5-byte pieces, each hashed
/// (h = 31·h + byte, 64-bit) modulo the vocabulary size; a token detokenizes to its id in
/// hexadecimal. No special tokens, no BOS.
public struct TestTokenizer: Tokenizer {
    public let vocabularySize: Int
    private let texts: [String]

    init(file: GGUFFile) throws(TokenizerError) {
        guard let tokens = file["tokenizer.ggml.tokens"]?.array, !tokens.isEmpty else {
            throw TokenizerError.missingKey("tokenizer.ggml.tokens")
        }
        vocabularySize = tokens.count
        texts = tokens.map { $0.string ?? "" }
    }

    public var bosToken: TokenID? { nil }
    public var eosToken: TokenID? { nil }
    public var endOfGenerationTokens: Set<TokenID> { [] }
    public var addsBOS: Bool { false }

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID] {
        let bytes = Array(text.utf8)
        return stride(from: 0, to: bytes.count, by: 5).map { start in
            var hash: UInt64 = 0
            for b in bytes[start..<min(start + 5, bytes.count)] { hash = hash &* 31 &+ UInt64(b) }
            return TokenID(hash % UInt64(vocabularySize))
        }
    }

    public func pieceBytes(_ token: TokenID) -> [UInt8] { Array(String(token, radix: 16).utf8) }

    public func tokenText(_ token: TokenID) -> String {
        texts.indices.contains(Int(token)) ? texts[Int(token)] : ""
    }
}
