/// One sequence's rows in a batch and its cache rows for one layer, looked up once per layer
/// (a store may be paged, so rows are found per position), and the kernel llama.cpp would run
/// for them.
public struct AttentionSequence: @unchecked Sendable {
    /// The sequence's first row among the batch's query and output rows.
    public let firstRow: Int
    /// The cache position of that row: the tokens the cache held before this pass.
    public let firstPosition: Int
    /// The sequence's rows (new tokens) in the batch.
    public let tokens: Int
    /// As llama.cpp: the tiled kernel for micro-batches of at least 64 tokens, else row by row.
    let tiled: Bool
    /// llama.cpp's cache cells when it would run its split-KV kernel (one token, 512+ cells).
    let splitCells: Int?
    /// The key and value rows of positions 0..<firstPosition + tokens. Typed for the F16
    /// kernels; under a quantized `cacheTypes` entry, the row's first byte (read as raw bytes).
    public let keys: UnsafeMutablePointer<UnsafePointer<Float16>>
    public let values: UnsafeMutablePointer<UnsafePointer<Float16>>
    /// Element types of the rows: anything but F16 takes llama.cpp's one-chunk kernel.
    public let cacheTypes: KVCacheTypes

    /// `key(p)` and `value(p)`: the cache rows of position p, for every p below
    /// `firstPosition + tokens` (the new tokens' rows are written through `keys` and `values`
    /// before `attend`). `cacheCapacity`: positions the sequence's cache holds; `batching`: the
    /// llama.cpp micro-batch these rows belong to. Those two pick llama.cpp's kernel, whose
    /// floats `attend` reproduces.
    @inlinable
    public init(firstRow: Int, firstPosition: Int, tokens: Int, cacheCapacity: Int, batching: ReferenceBatching,
                cacheTypes: KVCacheTypes = .f16,
                key: (Int) -> UnsafePointer<Float16>, value: (Int) -> UnsafePointer<Float16>) {
        let count = firstPosition + tokens
        let keys = UnsafeMutablePointer<UnsafePointer<Float16>>.allocate(capacity: count)
        let values = UnsafeMutablePointer<UnsafePointer<Float16>>.allocate(capacity: count)
        for p in 0..<count {
            keys[p] = key(p)
            values[p] = value(p)
        }
        self.init(firstRow: firstRow, firstPosition: firstPosition, tokens: tokens, cacheCapacity: cacheCapacity,
                  batching: batching, cacheTypes: cacheTypes, keys: keys, values: values)
    }

    @usableFromInline
    init(firstRow: Int, firstPosition: Int, tokens: Int, cacheCapacity: Int, batching: ReferenceBatching,
         cacheTypes: KVCacheTypes, keys: UnsafeMutablePointer<UnsafePointer<Float16>>,
         values: UnsafeMutablePointer<UnsafePointer<Float16>>) {
        self.cacheTypes = cacheTypes
        self.firstRow = firstRow
        self.firstPosition = firstPosition
        self.tokens = tokens
        self.keys = keys
        self.values = values
        // llama.cpp's cache view: the used cells rounded up to 256 (at least 256), at most the
        // context; one token over 512 or more of them takes its split-KV kernel.
        let cells = min(cacheCapacity, max(256, (firstPosition + tokens + 255) / 256 * 256))
        // ggml runs its tiled and split-KV kernels over F16 caches only
        tiled = cacheTypes.isF16 && batching.tokens >= attentionTile
        splitCells = cacheTypes.isF16 && batching.tokens == 1 && cells >= 512 ? cells : nil
    }

    public func deallocate() {
        keys.deallocate()
        values.deallocate()
    }
}

/// Multi-head attention with grouped KV heads for a batch of sequences: every query head of
/// every row attends over its sequence's cached positions up to its own (causal), restricted
/// to the last `window` positions if any, with the kernel `AttentionSequence` picked.
/// `queries`: one row of `heads · headDimension` floats per batch row, rotated; `out`: one row
/// of `heads · valueDimension`. Query head h reads KV head h / (heads / kvHeads).
/// `softCap`: attention logit soft-capping (gemma2): scores become c·tanh(q·k·scale / c), with
/// the 1/c folded into the scale as ggml does (nil or 0: none). `causal: false` (encoders):
/// every row attends over all of its sequence's positions, with the row kernel.
/// Jobs are (rows, heads) pairs dealt out round-robin to a few pool items, which balances the
/// causal triangle's uneven rows.
// Unchecked: heads % kvHeads == 0 and window ≥ 1 (Models' Attention.init checks the heads; windows come only from slidingWindowLayers, which yields none below 1).
// Unchecked: K rows hold kvHeads·headDimension halves, V rows kvHeads·valueDimension (caches are sized kvHeads·max(key, value length) from ModelConfig; Linear.init checks the K/V widths).
// Unchecked: under a quantized cache type, headDimension (keys) or valueDimension (values) is a multiple of 32 (KVCacheTypes.check, run when a model's caches are made, refuses anything else).
public func attend(queries: UnsafePointer<Float>, _ sequences: [AttentionSequence], heads: Int, kvHeads: Int,
                   headDimension: Int, valueDimension: Int, scale: Float, softCap: Float? = nil, window: Int?,
                   causal: Bool = true, into out: UnsafeMutablePointer<Float>, pool: ThreadPool) {
    let group = heads / kvHeads
    let softCap = softCap ?? 0
    let scale = softCap != 0 ? scale / softCap : scale
    let (queryStride, outStride) = (heads * headDimension, heads * valueDimension)
    // Heads per row-kernel job: as many as the kernel takes, while every thread still gets
    // a job (a lone decoding sequence has only `heads` of them). An uneven split is fine: the
    // grouped kernel is enough faster per head that fewer grouped jobs (SmolLM2: 3 on 2
    // threads) beat more one-head jobs (9).
    let rowRuns = sequences.reduce(0) { $0 + ($1.tiled && causal ? 0 : $1.tokens) }
    let threadCount = pool.threadCount  // also llama.cpp's split-KV chunk count: one per thread
    var together = rowKernelHeads(group: group, valueDimension: valueDimension)
    while together > 1 {
        let jobs = rowRuns * heads / together
        if jobs >= threadCount { break }
        together = (1..<together).last { group % $0 == 0 }!
    }
    // Jobs: a run of rows (one row, or a tile of up to 64 for the tiled kernel) of one
    // sequence, and one head (or, for the grouped row kernel, `together` heads of a KV group).
    var jobs: [(sequence: Int, row: Int, rows: Int, head: Int, heads: Int)] = []
    var work = 0, longest = 0
    for (s, seq) in sequences.enumerated() {
        longest = max(longest, seq.firstPosition + seq.tokens)
        let tiled = seq.tiled && causal
        let step = tiled ? attentionTile : 1
        let width = tiled ? 1 : together
        for i in stride(from: 0, to: seq.tokens, by: step) {
            let rows = min(step, seq.tokens - i)
            for h in stride(from: 0, to: heads, by: width) { jobs.append((s, seq.firstRow + i, rows, h, width)) }
            work += (seq.firstPosition + i + 1) * rows * heads * (headDimension + valueDimension)
        }
    }
    let jobCount = jobs.count
    let items = work < 1 << 15 ? 1 : min(jobCount, threadCount * 8)
    nonisolated(unsafe) let (q, o) = (queries, out)
    let (seqs, runs, longestRun, headsPerJob) = (sequences, jobs, longest, together)
    let quantizedCache = sequences.contains { !$0.cacheTypes.isF16 }
    pool.parallelFor(items) { item in
        let scratch = HeadScratch(headDimension: headDimension, positions: longestRun, valueDimension: valueDimension,
                                  heads: headsPerJob)
        let tile = TileScratch(headDimension: headDimension, valueDimension: valueDimension)
        let quantized = quantizedCache ? QuantizedCacheScratch(headDimension: headDimension, valueDimension: valueDimension) : nil
        defer { scratch.deallocate(); tile.deallocate(); quantized?.deallocate() }
        for job in stride(from: item, to: jobCount, by: items) {
            let (s, r, rows, h, width) = runs[job]
            let seq = seqs[s]
            let position = seq.firstPosition + (r - seq.firstRow)
            let first = window.map { max(0, position - $0 + 1) } ?? 0
            // the positions this row sees: up to its own, or (encoders) all of the sequence's
            let last = causal ? position : seq.firstPosition + seq.tokens - 1
            let (keyOffset, valueOffset) = ((h / group) * headDimension, (h / group) * valueDimension)
            let query = q + r * queryStride + h * headDimension, output = o + r * outStride + h * valueDimension
            if !seq.cacheTypes.isF16, let quantized {
                // the heads of a job share a KV group; at most maxHeads at a time
                for j in stride(from: 0, to: width, by: QuantizedCacheScratch.maxHeads) {
                    attendHeadsRowQuantizedCache(
                        query: query + j * headDimension, heads: min(QuantizedCacheScratch.maxHeads, width - j),
                        keys: seq.keys, keyOffset: keyOffset, keyType: seq.cacheTypes.key, values: seq.values,
                        valueOffset: valueOffset, valueType: seq.cacheTypes.value, positions: first..<last + 1,
                        headDimension: headDimension, valueDimension: valueDimension, scale: scale, softCap: softCap,
                        scratch: quantized, into: output + j * valueDimension)
                }
            } else if seq.tiled && causal {
                attendHeadTile(query: query, queryStride: queryStride, rows: rows, firstPosition: position, window: window,
                               keys: seq.keys, keyOffset: keyOffset, values: seq.values, valueOffset: valueOffset,
                               headDimension: headDimension, valueDimension: valueDimension, scale: scale,
                               softCap: softCap, scratch: tile, into: output, outStride: outStride)
            } else if let cells = seq.splitCells, causal {
                attendHeadsRowSplit(query: query, heads: width,
                                    keys: seq.keys, keyOffset: keyOffset, values: seq.values, valueOffset: valueOffset,
                                    positions: first..<position + 1, cells: cells,
                                    chunkSize: (cells + threadCount - 1) / threadCount, headDimension: headDimension,
                                    valueDimension: valueDimension, scale: scale, softCap: softCap, scratch: scratch,
                                    into: output)
            } else {
                attendHeadsRow(query: query, heads: width,
                               keys: seq.keys, keyOffset: keyOffset, values: seq.values, valueOffset: valueOffset,
                               positions: first..<last + 1, headDimension: headDimension,
                               valueDimension: valueDimension, scale: scale, softCap: softCap, scratch: scratch,
                               into: output)
            }
        }
    }
}
