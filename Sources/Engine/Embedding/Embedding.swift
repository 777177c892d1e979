import Foundation
import GGUF
import Tokenization

/// How one vector is made of a sequence's final hidden states (llama.cpp's `pooling_type`).
public enum EmbeddingPooling: String, Sendable, CaseIterable {
    /// The average over every position.
    case mean
    /// The first position (BERT's [CLS] token).
    case cls
    /// The last position (decoder models, whose last token has seen the whole text).
    case last
    /// A reranker's score: the first position through the model's classification head (not
    /// normalized). The prompt is a query and a document together (`/v1/rerank`).
    case rank

    /// The pooling a GGUF file asks for (`{arch}.pooling_type`: 1 mean, 2 cls, 3 last, 4 rank),
    /// or nil when it names none (0, absent).
    public init?(file: GGUFFile) {
        switch file.arch("pooling_type")?.int {
        case 1: self = .mean
        case 2: self = .cls
        case 3: self = .last
        case 4: self = .rank
        default: return nil
        }
    }

    /// What `swiftlet embed` and `/v1/embeddings` use when neither the request nor the file says:
    /// mean pooling, as `llama-embedding --pooling mean`.
    public static let fallback = EmbeddingPooling.mean
}

/// Sums a sequence's hidden-state rows into one vector as they come, chunk by chunk, so a long
/// text prefilled in several steps is pooled without keeping every row.
struct EmbeddingAccumulator {
    let pooling: EmbeddingPooling
    private(set) var vector: [Float] = []
    private var rows = 0

    init(pooling: EmbeddingPooling) { self.pooling = pooling }

    /// Adds the rows of positions `range` (in order). A range starting at 0 starts over: the
    /// sequence was preempted and is being computed again.
    mutating func add(_ hidden: ArraySlice<[Float]>, positions range: Range<Int>) {
        precondition(hidden.count == range.count)
        if range.lowerBound == 0 { vector = []; rows = 0 }
        for row in hidden {
            switch pooling {
            case .mean:
                if vector.isEmpty { vector = [Float](repeating: 0, count: row.count) }
                for i in row.indices { vector[i] += row[i] }
            case .cls, .rank: if rows == 0 { vector = row }
            case .last: vector = row
            }
            rows += 1
        }
    }

    /// The pooled vector, L2-normalized (as `--embd-normalize 2`; a zero vector stays zero);
    /// rank pooling's row as it is (the classification head comes next).
    var normalized: [Float] {
        if pooling == .rank { return vector }
        var v = vector
        if pooling == .mean, rows > 0 { for i in v.indices { v[i] /= Float(rows) } }
        return l2Normalized(v)
    }
}

/// `v / ‖v‖₂`, summed in double as llama.cpp's `common_embd_normalize` does; zero stays zero.
public func l2Normalized(_ v: [Float]) -> [Float] {
    let norm = v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot()
    guard norm > 0 else { return v }
    let scale = Float(1 / norm)
    return v.map { $0 * scale }
}

extension LoadedModel {
    /// One query-document prompt: the GGUF's `rerank` template with {query} and {document}
    /// filled in (as llama.cpp's server), else the two texts framed as the tokenizer frames one
    /// with a separator between them — BOS query [EOS][SEP] document [EOS][SEP], each marker
    /// where the vocabulary adds it (BERT: [CLS] query [SEP] document [SEP], the pair encoding
    /// cross-encoders were trained on, and what `llama-embedding` builds).
    public func rerankPrompt(query: String, document: String) -> [TokenID] {
        if let template = file["tokenizer.chat_template.rerank"]?.string {
            let text = template.replacingOccurrences(of: "{query}", with: query).replacingOccurrences(of: "{document}", with: document)
            return tokenizer.encode(text, addSpecial: false, parseSpecial: true)
        }
        var ends: [TokenID] = []
        if tokenizer.addsEOS, let eos = tokenizer.eosToken { ends.append(eos) }
        if let separator = tokenizer.addedSeparator { ends.append(separator) }
        var tokens: [TokenID] = []
        if tokenizer.addsBOS, let bos = tokenizer.bosToken { tokens.append(bos) }
        tokens += tokenizer.encode(query, addSpecial: false, parseSpecial: false) + ends
        tokens += tokenizer.encode(document, addSpecial: false, parseSpecial: false) + ends
        return tokens
    }
}
