import GGUF

/// WordPiece (`tokenizer.ggml.model == "bert"`), as llama.cpp runs it: BERT's normalizer
/// (lowercasing and accent stripping unless the metadata turns them off), a split into words
/// at whitespace and around every punctuation mark, ASCII symbol and CJK ideograph, then each
/// word covered left to right by the longest vocabulary entries that fit.
///
/// GGUF vocabularies spell BERT's pieces the way llama.cpp's converter writes them: a piece that
/// starts a word carries a leading "▁", and a continuation piece ("##ing" in BERT's vocab.txt)
/// is stored bare ("ing"). A word that cannot be covered entirely becomes one [UNK].
public final class WordPieceTokenizer: Tokenizer {
    let vocab: Vocabulary
    /// Appended after the text when special tokens are added ([SEP]).
    let separatorToken: TokenID?
    let lowercases: Bool
    let stripsAccents: Bool
    /// The longest token text in bytes: no match can be longer.
    private let maxTokenLength: Int

    init(file: GGUFFile) throws(TokenizerError) {
        // BERT's ids: [CLS] 101 stands where BOS does, [UNK] 100, [PAD] 0.
        let defaults = Vocabulary.Settings(bos: 101, eos: nil, unk: 100, pad: 0, addBOS: true)
        let vocab = try Vocabulary(file: file, kind: .wordPiece, defaults: defaults)
        self.vocab = vocab
        if let id = file["tokenizer.ggml.seperator_token_id"]?.int, id >= 0, id < vocab.count {
            separatorToken = TokenID(id)
        } else {
            separatorToken = vocab.count > 102 ? 102 : nil
        }
        lowercases = file["tokenizer.ggml.normalizer.lowercase"]?.bool ?? true
        stripsAccents = file["tokenizer.ggml.normalizer.strip_accents"]?.bool ?? lowercases
        maxTokenLength = (0..<vocab.count).map { vocab.textRange(TokenID($0)).count }.max() ?? 0
    }

    // MARK: Tokenizer

    public var vocabularySize: Int { vocab.count }
    public var bosToken: TokenID? { vocab.bos }
    public var eosToken: TokenID? { vocab.eos }
    public var endOfGenerationTokens: Set<TokenID> { vocab.endOfGeneration }
    /// llama.cpp puts [CLS] first whenever special tokens are added, whatever `add_bos_token` says.
    public var addsBOS: Bool { vocab.bos != nil }
    public var addedSeparator: TokenID? { separatorToken }

    public func attributes(_ token: TokenID) -> TokenAttributes {
        vocab.isValid(token) ? vocab.attributes[Int(token)] : []
    }

    /// With `addSpecial`, the tokens are framed as BERT expects: [CLS] … [SEP].
    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID] {
        var output: [TokenID] = []
        if addSpecial, let cls = vocab.bos { output.append(cls) }
        output += vocab.encode(text, addSpecial: false, parseSpecial: parseSpecial) { bytes, range, _, out in
            forEachWord(UnsafeBufferPointer(rebasing: bytes[range])) { appendTokens(ofWord: $0, to: &out) }
        }
        if addSpecial, let separatorToken { output.append(separatorToken) }
        return output
    }

    public func pieceBytes(_ token: TokenID) -> [UInt8] { pieceBytes(token, special: false) }

    public func pieceBytes(_ token: TokenID, special: Bool) -> [UInt8] {
        guard vocab.isValid(token) else { return [] }
        let attr = vocab.attributes[Int(token)]
        let text = vocab.textBytes(of: token)
        if !attr.isDisjoint(with: [.control, .unknown]) { return special ? Array(text) : [] }
        if attr.contains(.userDefined) { return Array(text) }
        if attr.contains(.normal) { return SentencePieceSpaces.unescape(text) }
        return []
    }

    public func tokenText(_ token: TokenID) -> String {
        vocab.isValid(token) ? vocab.text(of: token) : ""
    }

    // MARK: WordPiece

    /// Calls `body` with the UTF-8 of each word of `text` after normalization. A code point is
    /// classified after its accent is stripped but before it is lowercased, as llama.cpp does.
    private func forEachWord(_ text: UnsafeBufferPointer<UInt8>, _ body: ([UInt8]) -> Void) {
        var word: [UInt8] = []
        func finishWord() {
            if !word.isEmpty { body(word) }
            word.removeAll(keepingCapacity: true)
        }
        UTF8Scanner.forEachScalar(text) { scalar in
            let cp = stripsAccents ? CodepointMapping.decompositionBase(scalar) : scalar
            let flags = CodepointFlags.of(cp)
            if flags.isWhitespace {
                finishWord()
                return
            }
            if cp == 0 || cp == 0xFFFD || flags.isControl || (stripsAccents && flags.isMark) { return }
            let mapped = lowercases ? CodepointMapping.lowercase(cp) : cp
            let standsAlone = flags.isPunctuation || (cp < 0x7F && flags.isSymbol) || Self.isCJKIdeograph(cp)
            if standsAlone { finishWord() }
            Self.appendUTF8(mapped, to: &word)
            if standsAlone { finishWord() }
        }
        finishWord()
    }

    /// Appends the tokens of "▁" + `word`, each the longest vocabulary entry starting where the
    /// previous one ended; [UNK] alone when some position starts no entry.
    private func appendTokens(ofWord word: [UInt8], to out: inout [TokenID]) {
        let text = SentencePieceSpaces.escapedSpace + word
        let firstToken = out.count
        text.withUnsafeBufferPointer { text in
            let n = text.count
            var i = 0
            while i < n {
                var end = min(n, i + maxTokenLength)
                var token: Int32? = nil
                while end > i {
                    token = vocab.textTable.lookup(text.baseAddress! + i, end - i)
                    if token != nil { break }
                    end -= 1
                }
                guard let token else {
                    out.removeSubrange(firstToken...)
                    return
                }
                out.append(token)
                i = end
            }
        }
        if out.count == firstToken, let unk = vocab.unk { out.append(unk) }
    }

    /// The CJK ideograph blocks BERT splits into single characters (with llama.cpp's range for
    /// Extensions E and F, which follows Hugging Face's code).
    static func isCJKIdeograph(_ cp: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(cp) || (0x3400...0x4DBF).contains(cp) || (0x20000...0x2A6DF).contains(cp)
            || (0x2A700...0x2B73F).contains(cp) || (0x2B740...0x2B81F).contains(cp) || (0x2B920...0x2CEAF).contains(cp)
            || (0xF900...0xFAFF).contains(cp) || (0x2F800...0x2FA1F).contains(cp)
    }

    static func appendUTF8(_ cp: UInt32, to bytes: inout [UInt8]) {
        guard let scalar = Unicode.Scalar(cp) else { return }
        UTF8.encode(scalar) { bytes.append($0) }
    }
}
