import Foundation
import GGUF
@testable import Kernels
import Testing

/// Cache rows of one type, one per position, written as the model writes them (`storeCacheRow`).
struct CacheRows {
    let type: KVCacheType
    let width: Int
    let rows: [UnsafeMutableRawPointer]
    /// The floats each row was made from.
    let source: [[Float]]

    init(_ count: Int, width: Int, type: KVCacheType, in range: ClosedRange<Float>, _ rng: inout SplitMix) {
        self.type = type
        self.width = width
        var source: [[Float]] = []
        rows = (0..<count).map { _ in
            let x = (0..<width).map { _ in Float.random(in: range, using: &rng) }
            source.append(x)
            let row = UnsafeMutableRawPointer.allocate(byteCount: type.rowBytes(width), alignment: 64)
            storeCacheRow(x, count: width, type: type, into: row)
            return row
        }
        self.source = source
    }

    /// Row `p` decoded independently of the kernels: f16 widened, Q8_0 d·q, Q4_0 d·(nibble − 8).
    func decoded(_ p: Int) -> [Float] { decodeCacheRow(rows[p], type: type, count: width) }

    var typed: [UnsafePointer<Float16>] { rows.map { UnsafePointer($0.assumingMemoryBound(to: Float16.self)) } }

    func deallocate() { for r in rows { r.deallocate() } }
}

func decodeCacheRow(_ row: UnsafeRawPointer, type: KVCacheType, count: Int) -> [Float] {
    func half(_ offset: Int) -> Float { Float(Float16(bitPattern: row.loadUnaligned(fromByteOffset: offset, as: UInt16.self))) }
    switch type {
    case .f16: return (0..<count).map { half(2 * $0) }
    case .q8_0:
        return (0..<count).map { i in half(34 * (i / 32)) * Float(row.load(fromByteOffset: 34 * (i / 32) + 2 + i % 32, as: Int8.self)) }
    case .q4_0:
        return (0..<count).map { i in
            let block = 18 * (i / 32), j = i % 32
            let byte = row.load(fromByteOffset: block + 2 + j % 16, as: UInt8.self)
            return half(block) * Float(Int(j < 16 ? byte & 15 : byte >> 4) - 8)
        }
    }
}

@Suite struct QuantizedCacheTests {
    /// Q8_0 rows are within about half a step of each block's scale (nearest-even rounding of
    /// x·127/max|x|), Q4_0 rows are exactly `quantizeRow(.q4_0)` (llama.cpp's reference quantizer).
    @Test func rowsRoundTrip() {
        var rng = SplitMix(state: 5)
        let q8 = CacheRows(20, width: 128, type: .q8_0, in: -3...3, &rng)
        let q4 = CacheRows(20, width: 128, type: .q4_0, in: -3...3, &rng)
        defer { q8.deallocate(); q4.deallocate() }
        for p in 0..<20 {
            let got = q8.decoded(p)
            for b in 0..<4 {
                let block = q8.source[p][32 * b..<32 * b + 32]
                let step = Float(Float16(block.map(abs).max()! / 127))
                // half a step, plus the f16 rounding of the stored scale (the quotients use the
                // exact one, as llama.cpp's do) times up to 127 steps
                for i in block.indices { #expect(abs(got[i] - block[i]) <= step * (0.5 + 127.0 / 2048), "row \(p) element \(i)") }
            }
            var reference = [UInt8](repeating: 0, count: KVCacheType.q4_0.rowBytes(128))
            reference.withUnsafeMutableBytes { quantizeRow(.q4_0, q4.source[p], into: $0.baseAddress!, count: 128) }
            #expect(Array(UnsafeRawBufferPointer(start: q4.rows[p], count: reference.count)) == reference)
        }
        #expect(KVCacheType.q8_0.rowBytes(64) == 68 && KVCacheType.q4_0.rowBytes(64) == 36 && KVCacheType.f16.rowBytes(64) == 128)
    }

    /// The key product of each type against the definition over the decoded key and the query
    /// as the kernel converts it (rounded to half for F16 keys, quantized to Q8_0 otherwise).
    @Test(arguments: KVCacheType.allCases)
    func keyProductsMatchTheDecodedRows(_ type: KVCacheType) {
        var rng = SplitMix(state: 9)
        let keys = CacheRows(50, width: 96, type: type, in: -2...2, &rng)
        defer { keys.deallocate() }
        let scratch = QuantizedCacheScratch(headDimension: 96, valueDimension: 32)
        defer { scratch.deallocate() }
        let query = (0..<96).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        let scorer = scratch.scorer(0, query: query, keyType: type)
        let convertedQuery: [Float]
        if type == .f16 {
            convertedQuery = query.map { Float(Float16($0)) }
        } else {
            let row = UnsafeMutableRawPointer.allocate(byteCount: KVCacheType.q8_0.rowBytes(96), alignment: 64)
            defer { row.deallocate() }
            storeCacheRow(query, count: 96, type: .q8_0, into: row)
            convertedQuery = decodeCacheRow(row, type: .q8_0, count: 96)
        }
        for p in 0..<50 {
            let expected = zip(keys.decoded(p), convertedQuery).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            let got = scorer.dot(keys.rows[p])
            #expect(abs(Double(got) - expected) <= 1e-5 * max(1, abs(expected)), "position \(p): \(got) vs \(expected)")
        }
    }

    /// `attend` over sequences whose caches are quantized — a 70-token prompt (which would take the
    /// tiled kernel over F16), single decodes over short and 600-position caches (row and split-KV
    /// over F16), grouped heads, a window, a soft cap — against the two-pass definition over the
    /// decoded rows and the converted query.
    @Test(arguments: [KVCacheTypes(key: .q8_0, value: .q8_0), KVCacheTypes(key: .q4_0, value: .q4_0),
                      KVCacheTypes(key: .q8_0, value: .f16), KVCacheTypes(key: .f16, value: .q4_0)],
          [(nil, nil), (40, 4)] as [(Int?, Float?)])
    func batchOverAQuantizedCacheMatchesTheDefinition(_ types: KVCacheTypes, _ options: (window: Int?, softCap: Float?)) {
        var rng = SplitMix(state: 17)
        let (heads, kvHeads, headDimension, valueDimension, scale) = (6, 2, 64, 64, Float(0.125))
        let capacity = 700
        let layout = [(10, 70, 70), (30, 1, 1), (600, 1, 1), (5, 3, 3)]
        let width = kvHeads * headDimension
        let caches = layout.map { _ in (CacheRows(capacity, width: width, type: types.key, in: -2...2, &rng),
                                        CacheRows(capacity, width: width, type: types.value, in: -3...3, &rng)) }
        defer { for (k, v) in caches { k.deallocate(); v.deallocate() } }
        var sequences: [AttentionSequence] = []
        var rows = 0
        for ((cached, tokens, batchTokens), (keys, values)) in zip(layout, caches) {
            let (k, v) = (keys.typed, values.typed)
            sequences.append(AttentionSequence(firstRow: rows, firstPosition: cached, tokens: tokens, cacheCapacity: capacity,
                                               batching: ReferenceBatching(tokens: batchTokens, offset: 0), cacheTypes: types,
                                               key: { k[$0] }, value: { v[$0] }))
            rows += tokens
        }
        defer { for s in sequences { s.deallocate() } }
        #expect(sequences.allSatisfy { !$0.tiled && $0.splitCells == nil }, "llama.cpp runs only its one-chunk kernel here")
        let queries = (0..<rows * heads * headDimension).map { _ in Float.random(in: -1.5...1.5, using: &rng) }
        var out = [Float](repeating: .nan, count: rows * heads * valueDimension)
        out.withUnsafeMutableBufferPointer { o in
            attend(queries: queries, sequences, heads: heads, kvHeads: kvHeads, headDimension: headDimension,
                   valueDimension: valueDimension, scale: scale, softCap: options.softCap, window: options.window,
                   into: o.baseAddress!, pool: ThreadPool(threads: 2))
        }
        let converted = UnsafeMutableRawPointer.allocate(byteCount: KVCacheType.q8_0.rowBytes(headDimension), alignment: 64)
        defer { converted.deallocate() }
        var worst = 0.0
        for (s, seq) in sequences.enumerated() {
            let (keys, values) = caches[s]
            for t in 0..<seq.tokens {
                let r = seq.firstRow + t, positions = visible(seq.firstPosition + t, window: options.window)
                for h in 0..<heads {
                    let query = Array(queries[(r * heads + h) * headDimension..<(r * heads + h + 1) * headDimension])
                    let q: [Float]
                    if types.key == .f16 {
                        q = query.map { Float(Float16($0)) }
                    } else {
                        storeCacheRow(query, count: headDimension, type: .q8_0, into: converted)
                        q = decodeCacheRow(converted, type: .q8_0, count: headDimension)
                    }
                    let kv = h / (heads / kvHeads)
                    let scores = positions.map { p -> Double in
                        let k = keys.decoded(p)[kv * headDimension..<(kv + 1) * headDimension]
                        let s = Double(scale) * zip(q, k).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                        return options.softCap.map { Double($0) * tanh(s / Double($0)) } ?? s
                    }
                    let top = scores.max()!
                    let weights = scores.map { exp($0 - top) }
                    let total = weights.reduce(0, +)
                    let decodedValues = positions.map { values.decoded($0) }
                    for d in 0..<valueDimension {
                        let expected = zip(decodedValues, weights).reduce(0.0) { $0 + $1.1 * Double($1.0[kv * valueDimension + d]) } / total
                        worst = max(worst, abs(Double(out[(r * heads + h) * valueDimension + d]) - expected))
                    }
                }
            }
        }
        #expect(worst < 1e-4, "\(types): largest difference from the definition \(worst)")
    }
}
