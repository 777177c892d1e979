/// Token ids are Int32, as in llama.cpp.
public typealias TokenID = Int32

/// Text ↔ token ids for one model vocabulary.
public protocol Tokenizer: Sendable {
    var vocabularySize: Int { get }
    var bosToken: TokenID? { get }
    var eosToken: TokenID? { get }
    /// Tokens that end a generation (EOS, EOT, <|im_end|>, <end_of_turn>, ...).
    var endOfGenerationTokens: Set<TokenID> { get }
    /// Whether `encode(_:addSpecial:)` prepends BOS (from `tokenizer.ggml.add_bos_token`).
    var addsBOS: Bool { get }

    /// Encodes text. `addSpecial` adds BOS/EOS as the model's metadata asks; `parseSpecial`
    /// turns special-token text such as `<|im_start|>` into its single id.
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID]

    /// The raw bytes a token stands for (may be part of a UTF-8 character).
    func pieceBytes(_ token: TokenID) -> [UInt8]

    /// The token's text as stored in the vocabulary (for display).
    func tokenText(_ token: TokenID) -> String
}

extension Tokenizer {
    /// Full decode; invalid UTF-8 is replaced with U+FFFD.
    public func decode(_ tokens: [TokenID]) -> String {
        var bytes: [UInt8] = []
        for t in tokens { bytes += pieceBytes(t) }
        return String(decoding: bytes, as: UTF8.self)
    }
}
