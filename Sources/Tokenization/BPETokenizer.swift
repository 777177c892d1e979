import HeapModule
import Foundation
import GGUF

/// GPT-2's reversible byte ↔ code-point mapping: printable Latin-1 bytes stand for themselves,
/// the other 68 bytes are moved to U+0100...U+0143 so every byte has a visible character.
enum ByteLevel {
    /// Code point that stands for each byte.
    static let byteToCodepoint: [UInt32] = {
        var map = [UInt32](repeating: 0, count: 256)
        var next: UInt32 = 256
        for b in 0..<256 {
            if (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b) {
                map[b] = UInt32(b)
            } else {
                map[b] = next
                next += 1
            }
        }
        return map
    }()

    /// Byte for each code point below U+0144, or -1.
    static let codepointToByte: [Int16] = {
        var map = [Int16](repeating: -1, count: 0x144)
        for (b, cp) in byteToCodepoint.enumerated() { map[Int(cp)] = Int16(b) }
        return map
    }()

    /// Raw bytes of a byte-level token text, or nil if it has a character outside the mapping.
    static func decode(_ utf8: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count)
        var ok = true
        UTF8Scanner.forEachScalar(utf8) { cp in
            if cp < 0x144, codepointToByte[Int(cp)] >= 0 {
                out.append(UInt8(codepointToByte[Int(cp)]))
            } else {
                ok = false
            }
        }
        return ok ? out : nil
    }
}

/// Decoding of valid UTF-8 (Swift strings always are).
enum UTF8Scanner {
    @inline(__always)
    static func sequenceLength(_ lead: UInt8) -> Int {
        lead < 0xC0 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4
    }

    @inline(__always)
    static func forEachScalar(_ bytes: UnsafeBufferPointer<UInt8>, _ body: (UInt32) -> Void) {
        var i = 0
        let n = bytes.count
        while i < n {
            let b0 = UInt32(bytes[i])
            if b0 < 0x80 { body(b0); i += 1; continue }
            let len = min(sequenceLength(UInt8(b0)), n - i)
            var cp: UInt32 = len == 2 ? b0 & 0x1F : len == 3 ? b0 & 0x0F : b0 & 0x07
            for k in 1..<max(len, 1) { cp = cp << 6 | (UInt32(bytes[i + k]) & 0x3F) }
            body(cp)
            i += max(len, 1)
        }
    }

    /// Code points of `bytes[range]` and the byte offset where each starts (plus the end).
    static func scalars(_ bytes: UnsafeBufferPointer<UInt8>, _ range: Range<Int>) -> (cps: [UInt32], offsets: [Int32]) {
        var cps: [UInt32] = []
        var offsets: [Int32] = []
        cps.reserveCapacity(range.count)
        offsets.reserveCapacity(range.count + 1)
        var i = range.lowerBound
        let n = range.upperBound
        while i < n {
            offsets.append(Int32(i))
            let b0 = UInt32(bytes[i])
            if b0 < 0x80 { cps.append(b0); i += 1; continue }
            let len = min(sequenceLength(UInt8(b0)), n - i)
            var cp: UInt32 = len == 2 ? b0 & 0x1F : len == 3 ? b0 & 0x0F : b0 & 0x07
            for k in 1..<max(len, 1) { cp = cp << 6 | (UInt32(bytes[i + k]) & 0x3F) }
            cps.append(cp)
            i += max(len, 1)
        }
        offsets.append(Int32(n))
        return (cps, offsets)
    }
}

/// How a BPE vocabulary spells text in its token texts and merges.
enum BPESpelling: Sendable {
    /// GPT-2's byte-level mapping: every byte of the UTF-8 text is one character of a token.
    case byteLevel
    /// Raw UTF-8 with spaces written as "▁", and `<0xXX>` tokens for bytes no token covers
    /// (SentencePiece-style BPE, as Gemma 4's vocabulary is).
    case sentencePiece
}

/// BPE (`tokenizer.ggml.model` "gpt2", and "gemma4"): pre-tokenize into words, then merge the
/// symbols of each word (bytes, or characters for SentencePiece spelling) by merge rank,
/// exactly as llama.cpp does.
public final class BPETokenizer: Tokenizer, @unchecked Sendable {
    let vocab: Vocabulary
    let preTokenizer: PreTokenizer
    let ignoreMerges: Bool
    let spelling: BPESpelling
    let newlineRunsWhole: Bool
    public let preTokenizerName: String

    /// Raw bytes of every token (spelling undone) for decoding.
    private let rawBytes: [UInt8]
    private let rawOffsets: [Int32]
    /// Symbol text → symbol id, in the spelling of the input after escaping (raw bytes for
    /// byte-level vocabularies, "▁" for spaces otherwise). Ids below the vocabulary size are
    /// tokens; ids above are merge intermediates that are not tokens themselves.
    private let symbolTable: ByteStringTable
    /// Token for each single byte, or -1 (some vocabularies lack a few bytes; llama.cpp then
    /// drops such bytes, so text containing them cannot round-trip).
    let byteTokens: [Int32]
    /// What llama.cpp emits for a byte of a piece that is not a token. Byte-level: its
    /// single-byte lookups of the byte-level character's UTF-8 bytes (only printable ASCII ever
    /// succeeds); SentencePiece spelling: the byte's `<0xXX>` token, if any.
    private let fallbackTokens: [[TokenID]]
    /// (left id, right id) → (rank << 32 | merged id).
    private let merges: [UInt64: UInt64]
    private let cache = WordCache()

    /// `pre` replaces `tokenizer.ggml.pre` for models that imply their pre-tokenizer (Gemma 4);
    /// `defaultSpecialIDs` false for models without llama.cpp's GPT-2 default BOS/EOS id 11.
    init(file: GGUFFile, pre impliedPre: String? = nil, defaultSpecialIDs: Bool = true) throws(TokenizerError) {
        let pre = impliedPre ?? file["tokenizer.ggml.pre"]?.string
        let config = try PreTokenizer.config(for: pre)
        var defaults = defaultSpecialIDs ? Vocabulary.Settings(bos: 11, eos: 11, unk: nil) : Vocabulary.Settings()
        if !config.hasBOS { defaults.bos = nil }
        defaults.addBOS = config.addBOS
        defaults.forcesBOS = config.forcesBOS
        let vocab = try Vocabulary(file: file, kind: .bpe, defaults: defaults)
        self.vocab = vocab
        self.preTokenizer = config.preTokenizer
        self.ignoreMerges = config.ignoreMerges
        self.spelling = config.spelling
        self.newlineRunsWhole = config.newlineRunsWhole
        self.preTokenizerName = pre ?? "default"

        // A token's symbol text (what merges and lookups see) and its decoded bytes.
        let spelling = config.spelling
        func symbolText(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
            spelling == .byteLevel ? ByteLevel.decode(text) : Array(text)
        }
        let n = vocab.count
        var raw: [UInt8] = []
        raw.reserveCapacity(vocab.textBytes.count)
        var rawOffsets = [Int32](repeating: 0, count: n + 1)
        var table = ByteStringTable(expectedCount: n + 1024)
        vocab.textBytes.withUnsafeBufferPointer { all in
            for i in 0..<n {
                let text = UnsafeBufferPointer(rebasing: all[vocab.textRange(TokenID(i))])
                switch spelling {
                case .byteLevel:
                    if let decoded = ByteLevel.decode(text) {
                        raw.append(contentsOf: decoded)
                        table.set(decoded, Int32(i))
                    } else {
                        raw.append(contentsOf: text)
                    }
                case .sentencePiece:
                    table.set(Array(text), Int32(i))
                    raw.append(contentsOf: SentencePieceSpaces.unescape(text))
                }
                rawOffsets[i + 1] = Int32(raw.count)
            }
        }
        self.rawBytes = raw
        self.rawOffsets = rawOffsets

        guard let mergeValues = file["tokenizer.ggml.merges"]?.array else {
            throw .missingKey("tokenizer.ggml.merges")
        }
        var merges: [UInt64: UInt64] = [:]
        merges.reserveCapacity(mergeValues.count)
        var nextVirtual = Int32(n)
        func symbolID(_ bytes: [UInt8]) -> Int32 {
            if let id = table.lookup(bytes) { return id }
            table.set(bytes, nextVirtual)
            nextVirtual += 1
            return nextVirtual - 1
        }
        for (rank, value) in mergeValues.enumerated() {
            guard case .string(var line) = value else { continue }
            var parts: ([UInt8], [UInt8])? = nil
            line.withUTF8 { utf8 in
                // Split at the first space after the first byte (a merge side may start with one).
                guard utf8.count > 1, let space = utf8[1...].firstIndex(of: 0x20) else { return }
                guard let a = symbolText(UnsafeBufferPointer(rebasing: utf8[0..<space])),
                      let b = symbolText(UnsafeBufferPointer(rebasing: utf8[(space + 1)...])) else { return }
                parts = (a, b)
            }
            guard let (a, b) = parts else { continue }
            let left = symbolID(a), right = symbolID(b), merged = symbolID(a + b)
            let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
            if merges[key] == nil {  // the first rule for a pair wins
                merges[key] = UInt64(rank) << 32 | UInt64(UInt32(bitPattern: merged))
            }
        }
        self.merges = merges
        self.symbolTable = table
        var byteTokens = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = table.lookup([UInt8(b)]), Int(id) < n { byteTokens[b] = id }
        }
        self.byteTokens = byteTokens
        switch spelling {
        case .byteLevel:
            self.fallbackTokens = (0..<256).map { b in
                var utf8: [UInt8] = []
                utf8.append(contentsOf: String(Character(Unicode.Scalar(ByteLevel.byteToCodepoint[b])!)).utf8)
                return utf8.compactMap { vocab.textTable.lookup([$0]) }
            }
        case .sentencePiece:
            self.fallbackTokens = (0..<256).map { b in
                vocab.textTable.lookup(SPMTokenizer.byteTokenText(UInt8(b))).map { [$0] } ?? []
            }
        }
    }

    // MARK: Tokenizer

    public var vocabularySize: Int { vocab.count }
    public var bosToken: TokenID? { vocab.bos }
    public var eosToken: TokenID? { vocab.eos }
    public var endOfGenerationTokens: Set<TokenID> { vocab.endOfGeneration }
    public var addsBOS: Bool { vocab.addBOS }
    public var addsEOS: Bool { vocab.addEOS }

    public func attributes(_ token: TokenID) -> TokenAttributes {
        vocab.isValid(token) ? vocab.attributes[Int(token)] : []
    }

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID] {
        var scratch = MergeScratch()
        var local: [WordKey: [TokenID]] = [:]
        return vocab.encode(text, addSpecial: addSpecial, parseSpecial: parseSpecial) { bytes, range, _, out in
            switch spelling {
            case .byteLevel:
                encodeFragment(UnsafeBufferPointer(rebasing: bytes[range]), into: &out, scratch: &scratch, local: &local)
            case .sentencePiece:
                SentencePieceSpaces.escape(UnsafeBufferPointer(rebasing: bytes[range])).withUnsafeBufferPointer { escaped in
                    encodeFragment(escaped, into: &out, scratch: &scratch, local: &local)
                }
            }
        }
    }

    private func encodeFragment(_ bytes: UnsafeBufferPointer<UInt8>, into out: inout [TokenID],
                                scratch: inout MergeScratch, local: inout [WordKey: [TokenID]]) {
        let (cps, offsets) = UTF8Scanner.scalars(bytes, 0..<bytes.count)
        var start = 0
        for end in preTokenizer.split(cps) {
            let word = UnsafeBufferPointer(rebasing: bytes[Int(offsets[start])..<Int(offsets[end])])
            start = end
            encodeWord(word, into: &out, scratch: &scratch, local: &local)
        }
    }

    public func pieceBytes(_ token: TokenID) -> [UInt8] { pieceBytes(token, special: false) }

    public func pieceBytes(_ token: TokenID, special: Bool) -> [UInt8] {
        guard vocab.isValid(token) else { return [] }
        let attr = vocab.attributes[Int(token)]
        if !attr.isDisjoint(with: [.control, .unknown]) {
            return special ? Array(vocab.textBytes(of: token)) : []
        }
        if attr.contains(.userDefined) { return Array(vocab.textBytes(of: token)) }
        if attr.contains(.normal) {
            return Array(rawBytes[Int(rawOffsets[Int(token)])..<Int(rawOffsets[Int(token) + 1])])
        }
        if attr.contains(.byte) { return SPMTokenizer.byteValue(vocab.textBytes(of: token)).map { [$0] } ?? [] }
        return []
    }

    public func tokenText(_ token: TokenID) -> String {
        vocab.isValid(token) ? vocab.text(of: token) : ""
    }

    // MARK: merging

    private func encodeWord(_ word: UnsafeBufferPointer<UInt8>, into out: inout [TokenID],
                            scratch: inout MergeScratch, local: inout [WordKey: [TokenID]]) {
        let n = word.count
        guard n > 0 else { return }
        if ignoreMerges || (newlineRunsWhole && word.allSatisfy { $0 == 0x0A }),
           let id = symbolTable.lookup(word.baseAddress!, n), Int(id) < vocab.count {
            out.append(id)
            return
        }
        if n == 1 && spelling == .byteLevel {
            // A single byte cannot merge.
            let id = byteTokens[Int(word[0])]
            if id >= 0 { out.append(id) } else { out.append(contentsOf: fallbackTokens[Int(word[0])]) }
            return
        }
        // Long words (SentencePiece-spelled lines) are rarely repeated: do not cache them.
        if n > 64 && spelling == .sentencePiece {
            merge(word, into: &out, scratch: &scratch)
            return
        }
        cache.append(word, to: &out, local: &local) { merge(word, into: &$0, scratch: &scratch) }
    }

    private func merge(_ word: UnsafeBufferPointer<UInt8>, into out: inout [TokenID], scratch: inout MergeScratch) {
        let n = word.count
        scratch.symbols.removeAll(keepingCapacity: true)
        scratch.heap.removeAll { _ in true }  // keeps the storage for the next word
        // The first symbols: each byte, or each UTF-8 character for SentencePiece spelling.
        var offset = 0
        while offset < n {
            let length = spelling == .byteLevel ? 1 : min(UTF8Scanner.sequenceLength(word[offset]), n - offset)
            let id = spelling == .byteLevel
                ? byteTokens[Int(word[offset])]
                : symbolTable.lookup(word.baseAddress! + offset, length) ?? -1
            let index = Int32(scratch.symbols.count)
            scratch.symbols.append(Symbol(start: Int32(offset), length: Int32(length), prev: index - 1,
                                          next: offset + length < n ? index + 1 : -1, id: id))
            offset += length
        }
        func addPair(_ left: Int32, _ right: Int32, _ s: inout MergeScratch) {
            guard left >= 0, right >= 0 else { return }
            let l = s.symbols[Int(left)], r = s.symbols[Int(right)]
            guard l.id >= 0, r.id >= 0 else { return }
            let key = UInt64(UInt32(bitPattern: l.id)) << 32 | UInt64(UInt32(bitPattern: r.id))
            guard let m = merges[key] else { return }
            s.heap.insert(Bigram(rank: Int32(truncatingIfNeeded: m >> 32), left: left, right: right,
                               leftLength: l.length, rightLength: r.length,
                               merged: Int32(bitPattern: UInt32(truncatingIfNeeded: m))))
        }
        for i in 1..<scratch.symbols.count { addPair(Int32(i - 1), Int32(i), &scratch) }
        while let b = scratch.heap.popMin() {
            let l = scratch.symbols[Int(b.left)], r = scratch.symbols[Int(b.right)]
            // Skip pairs made stale by an earlier merge.
            guard l.length == b.leftLength, r.length == b.rightLength, l.next == b.right else { continue }
            scratch.symbols[Int(b.left)].length = l.length + r.length
            scratch.symbols[Int(b.left)].id = b.merged
            scratch.symbols[Int(b.left)].next = r.next
            scratch.symbols[Int(b.right)].length = 0
            if r.next >= 0 { scratch.symbols[Int(r.next)].prev = b.left }
            addPair(l.prev, b.left, &scratch)
            addPair(b.left, r.next, &scratch)
        }
        var i: Int32 = 0
        while i >= 0 {
            let s = scratch.symbols[Int(i)]
            if s.id >= 0 && Int(s.id) < vocab.count {
                out.append(s.id)
            } else {
                for k in Int(s.start)..<Int(s.start + s.length) {
                    out.append(contentsOf: fallbackTokens[Int(word[k])])
                }
            }
            i = s.next
        }
    }
}

/// SentencePiece's whitespace escape: a space is written as "▁" (U+2581) in token texts.
enum SentencePieceSpaces {
    static let escapedSpace: [UInt8] = [0xE2, 0x96, 0x81]

    /// `text` with every space replaced by "▁".
    static func escape(_ text: UnsafeBufferPointer<UInt8>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.count + text.count / 2)
        for b in text {
            if b == 0x20 { out += escapedSpace } else { out.append(b) }
        }
        return out
    }

    /// `text` with every "▁" replaced by a space.
    static func unescape<C: Collection<UInt8>>(_ text: C) -> [UInt8] where C.Index == Int {
        var out: [UInt8] = []
        out.reserveCapacity(text.count)
        var i = text.startIndex
        while i < text.endIndex {
            if text[i] == 0xE2 && i + 2 < text.endIndex && text[i + 1] == 0x96 && text[i + 2] == 0x81 {
                out.append(0x20)
                i += 3
            } else {
                out.append(text[i])
                i += 1
            }
        }
        return out
    }
}

struct Symbol {
    var start: Int32
    var length: Int32
    var prev: Int32
    var next: Int32
    var id: Int32
}

struct Bigram: Comparable {
    var rank: Int32
    var left: Int32
    var right: Int32
    var leftLength: Int32
    var rightLength: Int32
    var merged: Int32

    /// The lowest-rank merge first, leftmost among equals.
    static func < (a: Bigram, b: Bigram) -> Bool {
        a.rank != b.rank ? a.rank < b.rank : a.left < b.left
    }
}

struct MergeScratch {
    var symbols: [Symbol] = []
    var heap = Heap<Bigram>()
}

/// A word's UTF-8 bytes as a dictionary key. A `String` key would be wrong: strings compare
/// by canonical equivalence, so "ά" (U+1F71) and "ά" (U+03AC) would share an entry although
/// their tokens differ.
struct WordKey: Hashable {
    let bytes: [UInt8]

    init(_ word: UnsafeBufferPointer<UInt8>) { bytes = Array(word) }

    func hash(into hasher: inout Hasher) {
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }
}

/// Word → tokens, shared by all encode calls on one tokenizer (bounded; cleared when full).
final class WordCache: @unchecked Sendable {
    private let lock = NSLock()
    private var entries: [WordKey: [TokenID]] = [:]
    private let limit = 100_000

    func get(_ key: WordKey) -> [TokenID]? {
        lock.lock()
        defer { lock.unlock() }
        return entries[key]
    }

    func put(_ key: WordKey, _ value: [TokenID]) {
        lock.lock()
        defer { lock.unlock() }
        if entries.count >= limit { entries.removeAll(keepingCapacity: true) }
        entries[key] = value
    }

    /// Appends the tokens of `word` from the per-call `local` map, this shared cache, or, on a
    /// miss, `encode` (whose output is then remembered in both).
    func append(_ word: UnsafeBufferPointer<UInt8>, to out: inout [TokenID], local: inout [WordKey: [TokenID]],
                encode: (inout [TokenID]) -> Void) {
        let key = WordKey(word)
        if let hit = local[key] ?? get(key) {
            local[key] = hit
            out.append(contentsOf: hit)
            return
        }
        let start = out.count
        encode(&out)
        let result = Array(out[start...])
        local[key] = result
        put(key, result)
    }
}
