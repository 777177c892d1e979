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

    // Trie, nodes in depth-first order, node 0 the root. Node n's edges are
    // edgeByte/edgeChild[edgeStart[n] ..< edgeStart[n] + edgeCount[n]]; the tokens whose bytes
    // end at node n are terminalTokens[terminalStart[n] ..< terminalStart[n + 1]].
    let edgeStart: [Int32]
    let edgeCount: [Int32]
    let terminalStart: [Int32]
    let edgeByte: [UInt8]
    let edgeChild: [Int32]
    let terminalTokens: [TokenID]

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

        var builder = TrieBuilder(bytes: flat, offsets: offs)
        builder.order = (0..<pieces.count).compactMap { t in
            let id = TokenID(t)
            return pieces[t].isEmpty || endOfGeneration.contains(id) ? nil : id
        }
        builder.scratch = builder.order
        _ = builder.build(lo: 0, hi: builder.order.count, depth: 0)
        builder.terminalStart.append(Int32(builder.terminals.count))
        edgeStart = builder.edgeStart
        edgeCount = builder.edgeCount
        terminalStart = builder.terminalStart
        edgeByte = builder.edgeByte
        edgeChild = builder.edgeChild
        terminalTokens = builder.terminals
    }

    /// Token t's bytes.
    public func piece(_ token: TokenID) -> ArraySlice<UInt8> {
        bytes[Int(offsets[Int(token)])..<Int(offsets[Int(token) + 1])]
    }

    /// Number of trie nodes (for diagnostics).
    public var trieNodeCount: Int { edgeStart.count }
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
