import Tokenization

/// A tokenizer's token byte strings, precomputed once and arranged in a trie so that a
/// constraint can test every token by walking the trie alongside its automaton: tokens that
/// share a prefix share the work, and a rejected prefix prunes its whole subtree.
///
/// Build one per tokenizer and share it (it is immutable and Sendable); building walks all
/// `vocabularySize` tokens once.
public final class TokenVocabulary: Sendable {
    /// Number of token ids (`tokenizer.vocabularySize`).
    public let size: Int
    /// End-of-generation tokens (EOS and `endOfGenerationTokens`): allowed by a constraint
    /// exactly when its document is complete.
    public let endOfGeneration: [TokenID]
    /// Concatenated token bytes; token t is `bytes[offsets[t]..<offsets[t+1]]`.
    let bytes: [UInt8]
    let offsets: [Int32]
    /// Every token that can appear in the trie (non-empty, not end-of-generation).
    let trie: TokenTrie
    /// Tokens made only of plain string content: printable ASCII other than `"` and `\`,
    /// and complete, well-formed UTF-8 characters. Inside a JSON string (not after a
    /// backslash or within a character) each of them is accepted and leaves the string
    /// lexer where it was, whatever the rest of the automaton holds.
    let plainStringTokens: TokenMask
    /// The plain tokens ordered by character count: those with k characters are
    /// plainByLength[plainLengthStart[k] ..< plainLengthStart[k + 1]].
    let plainByLength: [TokenID]
    let plainLengthStart: [Int32]
    /// The other tokens: the only ones a string state has to walk.
    let nonPlainTrie: TokenTrie

    public convenience init(tokenizer: some Tokenizer) {
        var pieces: [[UInt8]] = []
        pieces.reserveCapacity(tokenizer.vocabularySize)
        for t in 0..<tokenizer.vocabularySize { pieces.append(tokenizer.pieceBytes(TokenID(t))) }
        var eog = tokenizer.endOfGenerationTokens
        if let eos = tokenizer.eosToken { eog.insert(eos) }
        self.init(pieces: pieces, endOfGeneration: eog)
    }

    /// `pieces[t]` are token t's bytes. Tokens with no bytes (control tokens) and
    /// end-of-generation tokens are left out of the trie: a constraint never allows them as text.
    public init(pieces: [[UInt8]], endOfGeneration: Set<TokenID>) {
        size = pieces.count
        self.endOfGeneration = endOfGeneration.filter { $0 >= 0 && Int($0) < pieces.count }.sorted()
        var flat: [UInt8] = []
        var offs: [Int32] = [0]
        offs.reserveCapacity(pieces.count + 1)
        for p in pieces {
            flat.append(contentsOf: p)
            offs.append(Int32(flat.count))
        }
        bytes = flat
        offsets = offs

        var all: [TokenID] = []
        var nonPlain: [TokenID] = []
        var plain = TokenMask(vocabularySize: pieces.count)
        for (t, piece) in pieces.enumerated() {
            let id = TokenID(t)
            if piece.isEmpty || endOfGeneration.contains(id) { continue }
            all.append(id)
            if Self.isPlainStringContent(piece) { plain.insert(id) } else { nonPlain.append(id) }
        }
        // Bucket the plain tokens by character count (bytes that are not continuation bytes).
        var lengths: [Int] = []
        var maxLength = 0
        for t in all where plain.contains(t) {
            let n = pieces[Int(t)].reduce(0) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) }
            lengths.append(n)
            maxLength = max(maxLength, n)
        }
        var starts = [Int32](repeating: 0, count: maxLength + 2)
        for n in lengths { starts[n + 1] += 1 }
        for k in 1..<starts.count { starts[k] += starts[k - 1] }
        var next = starts.map { Int($0) }
        var byLength = [TokenID](repeating: 0, count: lengths.count)
        var j = 0
        for t in all where plain.contains(t) {
            byLength[next[lengths[j]]] = t
            next[lengths[j]] += 1
            j += 1
        }
        plainByLength = byLength
        plainLengthStart = starts
        trie = TokenTrie(tokens: all, bytes: flat, offsets: offs)
        nonPlainTrie = TokenTrie(tokens: nonPlain, bytes: flat, offsets: offs)
        plainStringTokens = plain
    }

    /// The plain string tokens of at most `characters` characters.
    func plainStringTokens(maxCharacters characters: Int) -> TokenMask {
        let longest = plainLengthStart.count - 2
        if characters >= longest { return plainStringTokens }
        var mask = TokenMask(vocabularySize: size)
        for i in 0..<Int(plainLengthStart[characters + 1]) { mask.insert(plainByLength[i]) }
        return mask
    }

    /// Printable ASCII except `"` and `\`, or complete UTF-8 characters as `JSONRecognizer`
    /// accepts them (no overlongs, surrogates or code points past U+10FFFF).
    static func isPlainStringContent(_ piece: [UInt8]) -> Bool {
        var i = 0
        while i < piece.count {
            let b = piece[i]
            var need = 0
            var lo: UInt8 = 0x80, hi: UInt8 = 0xBF
            switch b {
            case 0x22, 0x5C: return false
            case 0x20..<0x80: i += 1; continue
            case 0xC2...0xDF: need = 1
            case 0xE0: need = 2; lo = 0xA0
            case 0xED: need = 2; hi = 0x9F
            case 0xE1...0xEF: need = 2
            case 0xF0: need = 3; lo = 0x90
            case 0xF1...0xF3: need = 3
            case 0xF4: need = 3; hi = 0x8F
            default: return false
            }
            guard i + need < piece.count else { return false }
            for k in 1...need {
                let c = piece[i + k]
                let (l, h): (UInt8, UInt8) = k == 1 ? (lo, hi) : (0x80, 0xBF)
                guard c >= l && c <= h else { return false }
            }
            i += need + 1
        }
        return true
    }

    /// Token t's bytes.
    public func piece(_ token: TokenID) -> ArraySlice<UInt8> {
        bytes[Int(offsets[Int(token)])..<Int(offsets[Int(token) + 1])]
    }

    /// Number of trie nodes (for diagnostics).
    public var trieNodeCount: Int { trie.edgeStart.count }
}

/// A trie over token byte strings, nodes in depth-first order, node 0 the root. Node n's edges
/// are edgeByte/edgeChild[edgeStart[n] ..< edgeStart[n] + edgeCount[n]]; the tokens whose bytes
/// end at node n are terminalTokens[terminalStart[n] ..< terminalStart[n + 1]].
struct TokenTrie: Sendable {
    let edgeStart: [Int32]
    let edgeCount: [Int32]
    let terminalStart: [Int32]
    let edgeByte: [UInt8]
    let edgeChild: [Int32]
    let terminalTokens: [TokenID]

    init(tokens: [TokenID], bytes: [UInt8], offsets: [Int32]) {
        var builder = TrieBuilder(bytes: bytes, offsets: offsets)
        builder.order = tokens
        builder.scratch = tokens
        _ = builder.build(lo: 0, hi: tokens.count, depth: 0)
        builder.terminalStart.append(Int32(builder.terminals.count))
        edgeStart = builder.edgeStart
        edgeCount = builder.edgeCount
        terminalStart = builder.terminalStart
        edgeByte = builder.edgeByte
        edgeChild = builder.edgeChild
        terminalTokens = builder.terminals
    }
}

private struct TrieBuilder {
    let bytes: [UInt8]
    let offsets: [Int32]
    var order: [TokenID] = []
    var scratch: [TokenID] = []
    var edgeStart: [Int32] = []
    var edgeCount: [Int32] = []
    var terminalStart: [Int32] = []
    var edgeByte: [UInt8] = []
    var edgeChild: [Int32] = []
    var terminals: [TokenID] = []
    var counts = [Int](repeating: 0, count: 257)

    init(bytes: [UInt8], offsets: [Int32]) {
        self.bytes = bytes
        self.offsets = offsets
    }

    func length(_ t: TokenID) -> Int { Int(offsets[Int(t) + 1] - offsets[Int(t)]) }
    func byte(_ t: TokenID, _ depth: Int) -> UInt8 { bytes[Int(offsets[Int(t)]) + depth] }

    /// Builds the node for order[lo..<hi], all of which share their first `depth` bytes.
    mutating func build(lo: Int, hi: Int, depth: Int) -> Int32 {
        let node = edgeStart.count
        edgeStart.append(0)
        edgeCount.append(0)
        terminalStart.append(Int32(terminals.count))

        // Tokens ending here come first.
        var mid = lo
        for i in lo..<hi where length(order[i]) == depth {
            order.swapAt(i, mid)
            mid += 1
        }
        for i in lo..<mid { terminals.append(order[i]) }
        if mid == hi { return Int32(node) }

        // Group the rest by their byte at `depth`.
        if hi - mid <= 32 {
            // Insertion sort for small groups.
            for i in (mid + 1)..<hi {
                let t = order[i]
                let key = byte(t, depth)
                var j = i - 1
                while j >= mid && byte(order[j], depth) > key {
                    order[j + 1] = order[j]
                    j -= 1
                }
                order[j + 1] = t
            }
        } else {
            // Counting sort.
            for k in 0..<257 { counts[k] = 0 }
            for i in mid..<hi { counts[Int(byte(order[i], depth)) + 1] += 1 }
            for k in 1..<257 { counts[k] += counts[k - 1] }
            for i in mid..<hi {
                let b = Int(byte(order[i], depth))
                scratch[mid + counts[b]] = order[i]
                counts[b] += 1
            }
            for i in mid..<hi { order[i] = scratch[i] }
        }

        // One edge per distinct byte, contiguous; then the children, depth first.
        let firstEdge = edgeByte.count
        var i = mid
        while i < hi {
            let b = byte(order[i], depth)
            edgeByte.append(b)
            edgeChild.append(-1)
            while i < hi && byte(order[i], depth) == b { i += 1 }
        }
        edgeStart[node] = Int32(firstEdge)
        edgeCount[node] = Int32(edgeByte.count - firstEdge)
        var edge = firstEdge
        i = mid
        while i < hi {
            let b = byte(order[i], depth)
            var j = i
            while j < hi && byte(order[j], depth) == b { j += 1 }
            let child = build(lo: i, hi: j, depth: depth + 1)
            edgeChild[edge] = child
            edge += 1
            i = j
        }
        return Int32(node)
    }
}
