import Foundation
import GGUF

/// How one vector is made of a sequence's final hidden states (llama.cpp's `pooling_type`).
public enum EmbeddingPooling: String, Sendable, CaseIterable {
    /// The average over every position.
    case mean
    /// The first position (BERT's [CLS] token).
    case cls
    /// The last position (decoder models, whose last token has seen the whole text).
    case last

    /// The pooling a GGUF file asks for (`{arch}.pooling_type`: 1 mean, 2 cls, 3 last), or nil
    /// when it names none (0, absent) or one that gives no single vector per text (4, rank).
    public init?(file: GGUFFile) {
        switch file.arch("pooling_type")?.int {
        case 1: self = .mean
        case 2: self = .cls
        case 3: self = .last
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
            case .cls: if rows == 0 { vector = row }
            case .last: vector = row
            }
            rows += 1
        }
    }

    /// The pooled vector, L2-normalized (as `--embd-normalize 2`; a zero vector stays zero).
    var normalized: [Float] {
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
