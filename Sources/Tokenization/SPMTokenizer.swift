import HeapModule
import GGUF

/// SentencePiece (`tokenizer.ggml.model == "llama"`), as llama.cpp runs it: spaces become `▁`,
/// the text starts as one symbol per character, and the adjacent pair whose concatenation is the
/// highest-scoring vocabulary token is merged until none is left. Characters that end up in no
/// token are emitted as `<0xXX>` byte tokens.
public final class SPMTokenizer: Tokenizer, @unchecked Sendable {
    let vocab: Vocabulary
    /// Token for each byte value (`<0xXX>`, else the one-byte text, else unknown), or -1.
    private let byteTokens: [Int32]
    /// Characters that some token has directly before a `▁` (other than `▁` itself). Merges
    /// never cross a boundary "X▁" for any other X, so the text is cut into words there and
    /// each word is merged (and cached) on its own, with the same result as one big pass.
    private let spaceJoiners: Set<UInt32>
    private let cache = WordCache()

    init(file: GGUFFile) throws(TokenizerError) {
        let defaults = Vocabulary.Settings(bos: 1, eos: 2, unk: 0, addBOS: true, addEOS: false, addSpacePrefix: true)
        let vocab = try Vocabulary(file: file, kind: .spm, defaults: defaults)
        self.vocab = vocab
        var byteTokens = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            if let id = vocab.textTable.lookup(SPMTokenizer.byteTokenText(UInt8(b))) {
                byteTokens[b] = id
            } else if let id = vocab.textTable.lookup([UInt8(b)]) {
                byteTokens[b] = id
            } else if let unk = vocab.unk {
                byteTokens[b] = unk
            }
        }
        self.byteTokens = byteTokens

        var joiners = Set<UInt32>()
        vocab.textBytes.withUnsafeBufferPointer { all in
            for i in 0..<vocab.count {
                let r = vocab.textRange(TokenID(i))
                guard r.count > 3 else { continue }
                var k = r.lowerBound + 1
                var found = false
                while k + 2 < r.upperBound {
                    if all[k] == 0xE2 && all[k + 1] == 0x96 && all[k + 2] == 0x81 { found = true; break }
                    k += 1
                }
                guard found else { continue }
                var previous: UInt32 = 0x2581
                var first = true
                UTF8Scanner.forEachScalar(UnsafeBufferPointer(rebasing: all[r])) { cp in
                    if cp == 0x2581 && !first && previous != 0x2581 { joiners.insert(previous) }
                    previous = cp
                    first = false
                }
            }
        }
        self.spaceJoiners = joiners
    }

    /// The text of the token for byte `b`: `<0xXX>`, uppercase hexadecimal.
    static func byteTokenText(_ b: UInt8) -> [UInt8] {
        let hex = Array("0123456789ABCDEF".utf8)
        return [0x3C, 0x30, 0x78, hex[Int(b >> 4)], hex[Int(b & 15)], 0x3E]
    }

    /// The byte a `<0xXX>` token stands for.
    static func byteValue(_ text: ArraySlice<UInt8>) -> UInt8? {
        guard text.count == 6 else { return nil }
        let t = Array(text)
        guard t[0] == 0x3C, t[1] == 0x30, t[2] == 0x78, t[5] == 0x3E else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: c - 0x30
            case 0x41...0x46: c - 0x41 + 10
            case 0x61...0x66: c - 0x61 + 10
            default: nil
            }
        }
        guard let hi = nibble(t[3]), let lo = nibble(t[4]) else { return nil }
        return hi << 4 | lo
    }

    // MARK: Tokenizer

    public var vocabularySize: Int { vocab.count }
    public var bosToken: TokenID? { vocab.bos }
    public var eosToken: TokenID? { vocab.eos }
    public var endOfGenerationTokens: Set<TokenID> { vocab.endOfGeneration }
    public var addsBOS: Bool { vocab.addBOS }
    public var addsEOS: Bool { vocab.addEOS }
    /// Whether a space is put before text that starts the input or follows a special token.
    public var addsSpacePrefix: Bool { vocab.addSpacePrefix }

    public func attributes(_ token: TokenID) -> TokenAttributes {
        vocab.isValid(token) ? vocab.attributes[Int(token)] : []
    }

    public func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID] {
        encode(text, addSpecial: addSpecial, parseSpecial: parseSpecial, splitWords: true)
    }

    /// `splitWords: false` merges each fragment in one pass, exactly as llama.cpp does (for tests).
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool, splitWords: Bool) -> [TokenID] {
        var scratch = SPMScratch()
        var local: [WordKey: [TokenID]] = [:]
        return vocab.encode(text, addSpecial: addSpecial, parseSpecial: parseSpecial) { bytes, range, afterSpecial, out in
            // Escape whitespace: ' ' → U+2581 '▁', with the optional leading space.
            var text: [UInt8] = []
            text.reserveCapacity(range.count + range.count / 2 + 3)
            if vocab.addSpacePrefix && afterSpecial { text += SentencePieceSpaces.escapedSpace }
            for i in range {
                let b = bytes[i]
                if b == 0x20 { text += SentencePieceSpaces.escapedSpace } else { text.append(b) }
            }
            text.withUnsafeBufferPointer { text in
                guard splitWords else { return tokenize(text, into: &out, scratch: &scratch) }
                forEachWord(text) { word in
                    tokenizeCached(word, into: &out, scratch: &scratch, local: &local)
                }
            }
        }
    }

    /// Cuts escaped text before each `▁` that follows a character no token joins to a `▁`.
    private func forEachWord(_ text: UnsafeBufferPointer<UInt8>, _ body: (UnsafeBufferPointer<UInt8>) -> Void) {
        let n = text.count
        var start = 0
        var i = 0
        var previous: UInt32 = 0x2581
        while i < n {
            let b0 = text[i]
            let len = min(UTF8Scanner.sequenceLength(b0), n - i)
            var cp = UInt32(b0)
            if len > 1 {
                cp = len == 2 ? cp & 0x1F : len == 3 ? cp & 0x0F : cp & 0x07
                for k in 1..<len { cp = cp << 6 | (UInt32(text[i + k]) & 0x3F) }
            }
            if cp == 0x2581 && i > start && previous != 0x2581 && !spaceJoiners.contains(previous) {
                body(UnsafeBufferPointer(rebasing: text[start..<i]))
                start = i
            }
            previous = cp
            i += len
        }
        if n > start { body(UnsafeBufferPointer(rebasing: text[start..<n])) }
    }

    private func tokenizeCached(_ word: UnsafeBufferPointer<UInt8>, into out: inout [TokenID],
                                scratch: inout SPMScratch, local: inout [WordKey: [TokenID]]) {
        if word.count > 64 {  // long runs are rarely repeated: do not cache them
            tokenize(word, into: &out, scratch: &scratch)
            return
        }
        cache.append(word, to: &out, local: &local) { tokenize(word, into: &$0, scratch: &scratch) }
    }

    private func tokenize(_ text: UnsafeBufferPointer<UInt8>, into out: inout [TokenID], scratch: inout SPMScratch) {
        let n = text.count
        guard n > 0, let base = text.baseAddress else { return }
        scratch.symbols.removeAll(keepingCapacity: true)
        scratch.heap.removeAll { _ in true }  // keeps the storage for the next word
        var offset = 0
        var index: Int32 = 0
        while offset < n {
            let len = min(UTF8Scanner.sequenceLength(text[offset]), n - offset)
            scratch.symbols.append(Symbol(start: Int32(offset), length: Int32(len), prev: index - 1,
                                          next: offset + len == n ? -1 : index + 1, id: 0))
            offset += len
            index += 1
        }
        func addPair(_ left: Int32, _ right: Int32, _ s: inout SPMScratch) {
            guard left >= 0, right >= 0 else { return }
            let l = s.symbols[Int(left)], r = s.symbols[Int(right)]
            let size = Int(l.length + r.length)
            guard let id = vocab.textTable.lookup(base + Int(l.start), size), Int(id) < vocab.count else { return }
            s.heap.insert(ScoredPair(score: vocab.scores[Int(id)], left: left, right: right, size: Int32(size)))
        }
        for i in 1..<scratch.symbols.count { addPair(Int32(i - 1), Int32(i), &scratch) }
        while let p = scratch.heap.popMin() {
            let l = scratch.symbols[Int(p.left)], r = scratch.symbols[Int(p.right)]
            // Skip pairs made stale by an earlier merge.
            guard l.length > 0, r.length > 0, l.length + r.length == p.size else { continue }
            scratch.symbols[Int(p.left)].length = p.size
            scratch.symbols[Int(p.left)].next = r.next
            scratch.symbols[Int(p.right)].length = 0
            if r.next >= 0 { scratch.symbols[Int(r.next)].prev = p.left }
            addPair(l.prev, p.left, &scratch)
            addPair(p.left, r.next, &scratch)
        }
        var i: Int32 = 0
        while i >= 0 {
            let s = scratch.symbols[Int(i)]
            if let id = vocab.textTable.lookup(base + Int(s.start), Int(s.length)) {
                out.append(id)
            } else {
                for k in Int(s.start)..<Int(s.start + s.length) {
                    let id = byteTokens[Int(text[k])]
                    if id >= 0 { out.append(id) }
                }
            }
            i = s.next
        }
    }

    public func pieceBytes(_ token: TokenID) -> [UInt8] { pieceBytes(token, special: false) }

    public func pieceBytes(_ token: TokenID, special: Bool) -> [UInt8] {
        guard vocab.isValid(token) else { return [] }
        let attr = vocab.attributes[Int(token)]
        let text = vocab.textBytes(of: token)
        if !attr.isDisjoint(with: [.control, .unknown]) { return special ? Array(text) : [] }
        if attr.contains(.userDefined) { return Array(text) }
        if attr.contains(.normal) { return SentencePieceSpaces.unescape(text) }
        if attr.contains(.byte) { return SPMTokenizer.byteValue(text).map { [$0] } ?? [] }
        return []
    }

    public func tokenText(_ token: TokenID) -> String {
        vocab.isValid(token) ? vocab.text(of: token) : ""
    }
}

struct ScoredPair: Comparable {
    var score: Float
    var left: Int32
    var right: Int32
    var size: Int32

    /// Heap order: the highest score first, leftmost among equals.
    static func < (a: ScoredPair, b: ScoredPair) -> Bool {
        a.score != b.score ? a.score > b.score : a.left < b.left
    }
}

struct SPMScratch {
    var symbols: [Symbol] = []
    var heap = Heap<ScoredPair>()
}

