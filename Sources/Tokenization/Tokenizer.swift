import GGUF

/// Token ids are Int32, as in llama.cpp.
public typealias TokenID = Int32

/// Text ↔ token ids for one model vocabulary.
public protocol Tokenizer: Sendable {
    var vocabularySize: Int { get }
    var bosToken: TokenID? { get }
    var eosToken: TokenID? { get }
    /// Tokens that end a generation (EOS, EOT, <|im_end|>, <end_of_turn>, ...).
    var endOfGenerationTokens: Set<TokenID> { get }
    /// Whether `encode(_:addSpecial:parseSpecial:)` prepends BOS (from `tokenizer.ggml.add_bos_token`).
    var addsBOS: Bool { get }
    /// Whether `encode(_:addSpecial:parseSpecial:)` appends EOS (`tokenizer.ggml.add_eos_token`).
    var addsEOS: Bool { get }
    /// The separator `encode(_:addSpecial:parseSpecial:)` ends a text with (BERT's [SEP],
    /// llama.cpp's add_sep); nil when it adds none.
    var addedSeparator: TokenID? { get }

    /// Encodes text. `addSpecial` adds BOS/EOS as the model's metadata asks; `parseSpecial`
    /// turns special-token text such as `<|im_start|>` into its single id.
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID]

    /// The raw bytes a token stands for (may be part of a UTF-8 character). Control and unknown
    /// tokens (BOS, `<|im_end|>`, ...) give no bytes, as in llama.cpp's default detokenization.
    func pieceBytes(_ token: TokenID) -> [UInt8]

    /// Like `pieceBytes(_:)`, but with `special: true` control and unknown tokens give their
    /// text (e.g. `<|im_start|>`), for display.
    func pieceBytes(_ token: TokenID, special: Bool) -> [UInt8]

    /// The token's text as stored in the vocabulary (for display).
    func tokenText(_ token: TokenID) -> String
}

extension Tokenizer {
    public var addsEOS: Bool { false }
    public var addedSeparator: TokenID? { nil }

    public func pieceBytes(_ token: TokenID, special: Bool) -> [UInt8] { pieceBytes(token) }

    /// Full decode; invalid UTF-8 is replaced with U+FFFD. With `special: true` control tokens
    /// are rendered as their text.
    public func decode(_ tokens: [TokenID], special: Bool = false) -> String {
        var bytes: [UInt8] = []
        for t in tokens { bytes += pieceBytes(t, special: special) }
        return String(decoding: bytes, as: UTF8.self)
    }

    public func isEndOfGeneration(_ token: TokenID) -> Bool { endOfGenerationTokens.contains(token) }
}

/// Builds the tokenizer a GGUF file describes: byte-level BPE for `tokenizer.ggml.model`
/// "gpt2", SentencePiece-style BPE for "gemma4", SentencePiece for "llama", WordPiece for
/// "bert", and llama.cpp's hashing test vocabulary for "test".
public func loadTokenizer(from file: GGUFFile) throws -> any Tokenizer {
    guard let model = file["tokenizer.ggml.model"]?.string else {
        throw TokenizerError.missingKey("tokenizer.ggml.model")
    }
    switch model {
    case "gpt2": return try BPETokenizer(file: file)
    // Gemma 4's vocabulary implies its pre-tokenizer and has no default special ids.
    case "gemma4": return try BPETokenizer(file: file, pre: "gemma4", defaultSpecialIDs: false)
    case "llama": return try SPMTokenizer(file: file)
    case "bert": return try WordPieceTokenizer(file: file)
    case "test": return try TestTokenizer(file: file)
    default: throw TokenizerError.unknownModel(model)
    }
}
