/// Where rows of a forward pass sit in the micro-batches llama.cpp would cut the same tokens
/// into (its `n_ubatch` grouping, per sequence). llama.cpp picks kernels by micro-batch — its
/// repacked gemm or gemv kernel for Q4_K products, tiled, row or split-KV flash attention — and
/// they round differently, so kernels that reproduce its floats need to know. It changes the
/// rounding only, never what is computed, and is independent of how Swiftlet itself splits a
/// batch into passes.
public struct ReferenceBatching: Sendable, Equatable {
    /// llama.cpp's default micro-batch (`n_ubatch`): the grouping followed, for rounding fidelity.
    public static let ubatchTokens = 512

    /// The sequence's tokens in the llama.cpp micro-batch that holds these rows (at most
    /// `ubatchTokens`; 0 for rows that map onto no one micro-batch).
    public var tokens: Int
    /// Where the first of these rows sits within that micro-batch.
    public var offset: Int

    public init(tokens: Int, offset: Int) {
        self.tokens = tokens
        self.offset = offset
    }

    /// The rows from the `start`th new token on of a sequence that adds `sequenceTokens` tokens.
    public init(from start: Int, of sequenceTokens: Int) {
        let ubatchStart = start / Self.ubatchTokens * Self.ubatchTokens
        self.init(tokens: min(Self.ubatchTokens, sequenceTokens - ubatchStart), offset: start - ubatchStart)
    }

    /// Rows that map onto no one llama.cpp micro-batch (a pass of several sequences): they take
    /// the rounding of its single-token kernels throughout.
    public static let ungrouped = ReferenceBatching(tokens: 0, offset: 0)

    /// Of `rows` rows from here, how many lead rows llama.cpp's repacked gemm kernel multiplies:
    /// it takes a micro-batch's tokens in whole groups of 4, the rest (and single tokens) going
    /// through its gemv kernel, which rounds Q4_K differently.
    public func gemmRows(_ rows: Int) -> Int { max(0, min(rows, tokens - tokens % 4 - offset)) }

    /// The same rows without their first `count` (a later slice of a pass).
    public func dropping(_ count: Int) -> ReferenceBatching { ReferenceBatching(tokens: tokens, offset: offset + count) }
}
