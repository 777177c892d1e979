import GGUF

/// Per-token attributes, derived from `tokenizer.ggml.token_type` and then adjusted the way
/// llama.cpp adjusts them (e.g. end-of-generation tokens are forced to be control tokens).
public struct TokenAttributes: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let unknown = TokenAttributes(rawValue: 1 << 0)
    public static let unused = TokenAttributes(rawValue: 1 << 1)
    public static let normal = TokenAttributes(rawValue: 1 << 2)
    public static let control = TokenAttributes(rawValue: 1 << 3)
    public static let userDefined = TokenAttributes(rawValue: 1 << 4)
    public static let byte = TokenAttributes(rawValue: 1 << 5)

    /// GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    init(ggufTokenType type: Int) {
        switch type {
        case 1: self = .normal
        case 2: self = .unknown
        case 3: self = .control
        case 4: self = .userDefined
        case 5: self = .unused
        case 6: self = .byte
        default: self = []
        }
    }
}

/// Why a tokenizer could not be built from a GGUF file.
public enum TokenizerError: Error, CustomStringConvertible, Equatable {
    case missingKey(String)
    case unknownModel(String)
    case unknownPreTokenizer(String)
    case invalidMetadata(String)

    public var description: String {
        switch self {
        case .missingKey(let key): "tokenizer: the model file has no '\(key)' metadata"
        case .unknownModel(let model):
            "tokenizer: unsupported tokenizer.ggml.model '\(model)' (supported: 'gpt2' byte-level BPE, "
                + "'gemma4' SentencePiece-style BPE, 'llama' SentencePiece, 'bert' WordPiece)"
        case .unknownPreTokenizer(let pre): "tokenizer: unsupported tokenizer.ggml.pre '\(pre)'"
        case .invalidMetadata(let what): "tokenizer: invalid metadata: \(what)"
        }
    }
}

/// A piece of input after special tokens have been split out.
enum Fragment: Equatable {
    case text(Range<Int>)  // byte range of the input
    case token(TokenID)
}

/// The vocabulary shared by the tokenizer kinds: token texts, scores, attributes, special ids
/// and the special-token splitter. Immutable after loading.
final class Vocabulary: Sendable {
    enum Kind: Sendable { case bpe, spm, wordPiece }

    let kind: Kind
    let count: Int
    /// All token texts back to back; token i is `textBytes[textOffsets[i]..<textOffsets[i+1]]`.
    let textBytes: [UInt8]
    let textOffsets: [Int32]
    let scores: [Float]
    let attributes: [TokenAttributes]
    /// Stored token text → id.
    let textTable: ByteStringTable

    let bos: TokenID?
    let eos: TokenID?
    let eot: TokenID?
    let eom: TokenID?
    let unk: TokenID?
    let pad: TokenID?
    let addBOS: Bool
    let addEOS: Bool
    let addSpacePrefix: Bool
    let endOfGeneration: Set<TokenID>
    let specials: SpecialTokenMatcher

    struct Settings {
        var bos: TokenID?, eos: TokenID?, eot: TokenID?, eom: TokenID?, unk: TokenID?, pad: TokenID?
        var addBOS = false, addEOS = false, addSpacePrefix = false
        /// Add BOS whatever `tokenizer.ggml.add_bos_token` says (llama.cpp's rule for Gemma 4).
        var forcesBOS = false
    }

    /// Reads tokens, scores and types, then applies llama.cpp's rules for special ids,
    /// add-BOS/EOS defaults, end-of-generation detection and the special-token cache.
    init(file: GGUFFile, kind: Kind, defaults: Settings) throws(TokenizerError) {
        guard let tokenValues = file["tokenizer.ggml.tokens"]?.array else {
            throw .missingKey("tokenizer.ggml.tokens")
        }
        let n = tokenValues.count
        guard n > 0 else { throw .invalidMetadata("tokenizer.ggml.tokens is empty") }
        self.kind = kind
        self.count = n

        var bytes: [UInt8] = []
        bytes.reserveCapacity(n * 8)
        var offsets = [Int32](repeating: 0, count: n + 1)
        var table = ByteStringTable(expectedCount: n)
        for i in 0..<n {
            guard case .string(var s) = tokenValues[i] else {
                throw .invalidMetadata("tokenizer.ggml.tokens[\(i)] is not a string")
            }
            if s.isEmpty { s = "[EMPTY_\(i)]" }  // as llama.cpp does
            let start = bytes.count
            s.withUTF8 { utf8 in
                bytes.append(contentsOf: utf8)
                table.set(utf8.baseAddress!, utf8.count, Int32(i))
            }
            offsets[i] = Int32(start)
            offsets[i + 1] = Int32(bytes.count)
        }
        self.textBytes = bytes
        self.textOffsets = offsets
        self.textTable = table

        var scores = [Float](repeating: 0, count: n)
        if let values = file["tokenizer.ggml.scores"]?.array {
            guard values.count >= n else { throw .invalidMetadata("fewer scores than tokens") }
            for i in 0..<n { scores[i] = values[i].float ?? 0 }
        }
        self.scores = scores

        var attrs = [TokenAttributes](repeating: .normal, count: n)
        if let values = file["tokenizer.ggml.token_type"]?.array {
            guard values.count >= n else { throw .invalidMetadata("fewer token types than tokens") }
            for i in 0..<n { attrs[i] = TokenAttributes(ggufTokenType: values[i].int ?? 0) }
        }

        // Special ids: model-kind defaults (dropped when out of range), then metadata.
        func validDefault(_ id: TokenID?) -> TokenID? {
            guard let id, id >= 0, Int(id) < n else { return nil }
            return id
        }
        func special(_ key: String, _ fallback: TokenID?) -> TokenID? {
            if let v = file["tokenizer.ggml.\(key)"]?.int, v >= 0, v < n { return TokenID(v) }
            return validDefault(fallback)
        }
        let bos = special("bos_token_id", defaults.bos)
        let eos = special("eos_token_id", defaults.eos)
        var eot = special("eot_token_id", defaults.eot)
        var eom = special("eom_token_id", defaults.eom)
        let unk = special("unknown_token_id", defaults.unk)
        let pad = special("padding_token_id", defaults.pad)
        var fimPre = special("fim_pre_token_id", special("prefix_token_id", nil))
        var fimSuf = special("fim_suf_token_id", special("suffix_token_id", nil))
        var fimMid = special("fim_mid_token_id", special("middle_token_id", nil))
        var fimPad = special("fim_pad_token_id", nil)
        var fimRep = special("fim_rep_token_id", nil)
        var fimSep = special("fim_sep_token_id", nil)

        self.addBOS = defaults.forcesBOS || (file["tokenizer.ggml.add_bos_token"]?.bool ?? defaults.addBOS)
        self.addEOS = file["tokenizer.ggml.add_eos_token"]?.bool ?? defaults.addEOS
        self.addSpacePrefix = file["tokenizer.ggml.add_space_prefix"]?.bool ?? defaults.addSpacePrefix

        // Tokens recognised by their text when the metadata does not name them. A token found
        // this way is made a control token.
        func find(_ texts: [String]) -> TokenID? {
            for t in texts { if let id = table.lookup(t) { return TokenID(id) } }
            return nil
        }
        func detect(_ slot: inout TokenID?, _ texts: [String]) {
            guard slot == nil, let id = find(texts) else { return }
            slot = id
            attrs[Int(id)].insert(.control)
        }
        detect(&eot, ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
                      "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"])
        detect(&eom, ["<|eom_id|>"])
        detect(&fimPre, ["<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                         "<|code_prefix|>", "<|prefix|>"])
        detect(&fimSuf, ["<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                         "<|code_suffix|>", "<|suffix|>"])
        detect(&fimMid, ["<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                         "<|code_middle|>", "<|middle|>"])
        detect(&fimPad, ["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"])
        detect(&fimRep, ["<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"])
        detect(&fimSep, ["<|file_sep|>"])

        // Control tokens named "...unused..." are unused.
        for i in 0..<n where attrs[i].contains(.control) && !attrs[i].contains(.unused) {
            let lo = Int(offsets[i]), hi = Int(offsets[i + 1])
            if hi - lo >= 6 && Vocabulary.contains(bytes[lo..<hi], Array("unused".utf8)) {
                attrs[i].insert(.unused)
            }
        }

        // End-of-generation tokens.
        var eog = Set<TokenID>()
        for id in [fimPad, fimRep, fimSep] { if let id { eog.insert(id) } }
        for text in ["<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
                     "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
                     "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
                     "<｜end▁of▁sentence｜>", "[e~["] {
            if let id = table.lookup(text) {
                eog.insert(TokenID(id))
                attrs[Int(id)].insert(.control)
            }
        }
        for text in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let id = table.lookup(text) { attrs[Int(id)] = .userDefined }
        }
        for id in [eos, eot, eom] { if let id { eog.insert(id) } }
        func textOf(_ id: TokenID) -> String {
            String(decoding: bytes[Int(offsets[Int(id)])..<Int(offsets[Int(id) + 1])], as: UTF8.self)
        }
        let eogTexts = Dictionary(eog.map { (textOf($0), $0) }, uniquingKeysWith: { a, _ in a })
        if let end = eogTexts["<|end|>"],
           (eogTexts["<|return|>"] != nil && eogTexts["<|call|>"] != nil)
            || ((eogTexts["<|call|>"] != nil || eogTexts["<|calls|>"] != nil) && eogTexts["<|flush|>"] != nil) {
            eog.remove(end)
            attrs[Int(end)] = .userDefined
        }
        if let s = eogTexts["</s>"], eogTexts["<|tool_response>"] != nil || eogTexts["<|plamo:eos|>"] != nil {
            eog.remove(s)
            attrs[Int(s)] = .normal
        }

        self.attributes = attrs
        self.bos = bos
        self.eos = eos
        self.eot = eot
        self.eom = eom
        self.unk = unk
        self.pad = pad
        self.endOfGeneration = eog
        self.specials = SpecialTokenMatcher(textBytes: bytes, textOffsets: offsets, attributes: attrs)
    }

    private static func contains(_ haystack: ArraySlice<UInt8>, _ needle: [UInt8]) -> Bool {
        guard haystack.count >= needle.count else { return false }
        var i = haystack.startIndex
        while i + needle.count <= haystack.endIndex {
            if haystack[i..<i + needle.count].elementsEqual(needle) { return true }
            i += 1
        }
        return false
    }

    @inline(__always) func textRange(_ id: TokenID) -> Range<Int> {
        Int(textOffsets[Int(id)])..<Int(textOffsets[Int(id) + 1])
    }

    func textBytes(of id: TokenID) -> ArraySlice<UInt8> { textBytes[textRange(id)] }

    func text(of id: TokenID) -> String { String(decoding: textBytes(of: id), as: UTF8.self) }

    @inline(__always) func isValid(_ id: TokenID) -> Bool { id >= 0 && Int(id) < count }

    /// Adds BOS/EOS around the per-fragment output, as llama.cpp's `tokenize` does.
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool,
                fragment: (_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>, _ afterSpecial: Bool, _ out: inout [TokenID]) -> Void) -> [TokenID] {
        var output: [TokenID] = []
        if addSpecial && addBOS, let bos { output.append(bos) }
        var text = text
        text.withUTF8 { bytes in
            let fragments = bytes.isEmpty ? [] : specials.partition(bytes, parseSpecial: parseSpecial)
            output.reserveCapacity(output.count + bytes.count / 3 + 4)
            var afterSpecial = true
            for f in fragments {
                switch f {
                case .token(let t):
                    output.append(t)
                    afterSpecial = true
                case .text(let r):
                    fragment(bytes, r, afterSpecial, &output)
                    afterSpecial = false
                }
            }
        }
        if addSpecial && addEOS, let eos { output.append(eos) }
        return output
    }
}

/// Splits text on the strings of special tokens (control, user-defined and unknown tokens),
/// reproducing llama.cpp's partitioning: tokens are tried longest first, each one claiming its
/// non-overlapping occurrences left to right in the text not yet claimed. A scan over a trie
/// of all special texts first finds the few tokens that occur, so the thousands that do not
/// (Gemma has 6k) cost nothing.
struct SpecialTokenMatcher: Sendable {
    /// Special tokens in priority order (longest text first; ties by id).
    let tokens: [TokenID]
    let lengths: [Int32]
    /// Whether the token only takes part when `parseSpecial` is set (control/unknown tokens).
    let needsParseSpecial: [Bool]
    /// Trie over token texts: child of (node, byte) and the priority of the token ending at a node.
    private let children: [Int: Int32]
    private let terminal: [Int32]
    private let firstBytes: [Bool]

    init(textBytes: [UInt8], textOffsets: [Int32], attributes: [TokenAttributes]) {
        var ids: [TokenID] = []
        for i in 0..<attributes.count
        where !attributes[i].isDisjoint(with: [.control, .userDefined, .unknown]) {
            ids.append(TokenID(i))
        }
        func length(_ id: TokenID) -> Int32 { textOffsets[Int(id) + 1] - textOffsets[Int(id)] }
        ids.sort { a, b in
            let la = length(a), lb = length(b)
            return la != lb ? la > lb : a < b
        }
        tokens = ids
        lengths = ids.map(length)
        needsParseSpecial = ids.map { !attributes[Int($0)].isDisjoint(with: [.control, .unknown]) }

        var children: [Int: Int32] = [:]
        var terminal: [Int32] = [-1]
        var first = [Bool](repeating: false, count: 256)
        for (rank, id) in ids.enumerated() {
            let lo = Int(textOffsets[Int(id)]), hi = Int(textOffsets[Int(id) + 1])
            guard hi > lo else { continue }
            first[Int(textBytes[lo])] = true
            var node = 0
            for i in lo..<hi {
                let key = node << 8 | Int(textBytes[i])
                if let child = children[key] {
                    node = Int(child)
                } else {
                    terminal.append(-1)
                    children[key] = Int32(terminal.count - 1)
                    node = terminal.count - 1
                }
            }
            if terminal[node] < 0 { terminal[node] = Int32(rank) }
        }
        self.children = children
        self.terminal = terminal
        self.firstBytes = first
        self.textBytes = textBytes
        self.textOffsets = textOffsets
    }

    func partition(_ bytes: UnsafeBufferPointer<UInt8>, parseSpecial: Bool) -> [Fragment] {
        let n = bytes.count
        // One trie scan finds which special tokens occur at all.
        var present: [Int32] = []
        var seen = Set<Int32>()
        for p in 0..<n where firstBytes[Int(bytes[p])] {
            var node = 0
            var q = p
            while q < n, let child = children[node << 8 | Int(bytes[q])] {
                node = Int(child)
                q += 1
                let rank = terminal[node]
                if rank >= 0 && (parseSpecial || !needsParseSpecial[Int(rank)]) && seen.insert(rank).inserted {
                    present.append(rank)
                }
            }
        }
        guard !present.isEmpty else { return [.text(0..<n)] }
        present.sort()

        // Then, longest token first, each claims its occurrences left to right in the text
        // that no earlier token claimed (llama.cpp's partitioning, over the present tokens only).
        var fragments: [Fragment] = [.text(0..<n)]
        for rank in present {
            let token = tokens[Int(rank)]
            let length = Int(lengths[Int(rank)])
            fragments = textBytes.withUnsafeBufferPointer { all in
                let needle = UnsafeBufferPointer(rebasing: all[textRange(rank)])
                var next: [Fragment] = []
                next.reserveCapacity(fragments.count + 4)
                for f in fragments {
                    guard case .text(let r) = f, r.count >= length else { next.append(f); continue }
                    var start = r.lowerBound
                    var p = r.lowerBound
                    while p + length <= r.upperBound {
                        if bytes[p] == needle[0] && Self.equal(bytes, p, needle) {
                            if p > start { next.append(.text(start..<p)) }
                            next.append(.token(token))
                            p += length
                            start = p
                        } else {
                            p += 1
                        }
                    }
                    if r.upperBound > start { next.append(.text(start..<r.upperBound)) }
                }
                return next
            }
        }
        return fragments
    }

    private let textBytes: [UInt8]
    private let textOffsets: [Int32]

    private func textRange(_ rank: Int32) -> Range<Int> {
        let id = Int(tokens[Int(rank)])
        return Int(textOffsets[id])..<Int(textOffsets[id + 1])
    }

    @inline(__always)
    private static func equal(_ bytes: UnsafeBufferPointer<UInt8>, _ at: Int, _ needle: UnsafeBufferPointer<UInt8>) -> Bool {
        for i in 1..<needle.count where bytes[at + i] != needle[i] { return false }
        return true
    }
}
