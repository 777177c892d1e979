// The KV cache in 8 or 4 bits (llama.cpp's `-ctk/-ctv q8_0|q4_0`): rows stored as Q8_0 or
// Q4_0 blocks, and the attention kernel ggml's CPU backend runs over such a cache.
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif
import Foundation

/// Element type of the keys or the values in a KV cache.
public enum KVCacheType: String, CaseIterable, Sendable {
    /// Half precision: llama.cpp's default, and the only type the tiled and split-KV kernels read.
    case f16
    /// 32-element blocks of an f16 scale and 32 signed bytes (34 bytes: 1.06 bytes per element).
    case q8_0
    /// 32-element blocks of an f16 scale and 32 nibbles offset by 8 (18 bytes: 0.56 per element).
    case q4_0

    /// Elements per block: a quantized row's heads must each be a whole number of blocks.
    @inline(__always) public var blockSize: Int { self == .f16 ? 1 : 32 }

    @inline(__always) var blockBytes: Int {
        switch self {
        case .f16: 2
        case .q8_0: 34
        case .q4_0: 18
        }
    }

    /// Bytes of a row of `elements` (a multiple of `blockSize`: `KVCacheTypes.check` at load).
    @inline(__always) public func rowBytes(_ elements: Int) -> Int { elements / blockSize * blockBytes }
}

/// The key and the value type of a cache (`--cache-type-k`, `--cache-type-v`).
public struct KVCacheTypes: Sendable, Equatable, CustomStringConvertible {
    public var key: KVCacheType
    public var value: KVCacheType

    public init(key: KVCacheType = .f16, value: KVCacheType = .f16) {
        self.key = key
        self.value = value
    }

    public static let f16 = KVCacheTypes()

    public var isF16: Bool { key == .f16 && value == .f16 }

    /// Bytes one position takes in one layer whose keys and values are `width` elements wide.
    public func bytes(width: Int) -> Int { key.rowBytes(width) + value.rowBytes(width) }

    /// A small code for file headers (the prompt cache): different types, different codes.
    public var code: UInt64 {
        UInt64(KVCacheType.allCases.firstIndex(of: key)!) | UInt64(KVCacheType.allCases.firstIndex(of: value)!) << 4
    }

    public var description: String { "K \(key.rawValue), V \(value.rawValue)" }
}

/// Stores `count` floats as one cache row of `type` at `row` (llama.cpp's conversion when it
/// writes the cache: f16 rounding, Q8_0 as its x86 `quantize_row_q8_0` — nearest-even — and
/// Q4_0 as `quantize_row_q4_0_ref`).
// Unchecked: count is a multiple of type.blockSize (KVCacheTypes.check at load: head widths are).
@inline(__always)
public func storeCacheRow(_ x: UnsafePointer<Float>, count: Int, type: KVCacheType, into row: UnsafeMutableRawPointer) {
    switch type {
    case .f16: storeHalf(x, row.assumingMemoryBound(to: Float16.self), count: count)
    case .q8_0: for b in 0..<count / 32 { quantizeQ8_0Nearest(x + 32 * b, scale: nil, row + 34 * b) }
    case .q4_0: quantizeRow(.q4_0, x, into: row, count: count)
    }
}

/// One 32-element block to Q8_0 as ggml's x86 `quantize_row_q8_0`: d = max|x| / 127 (stored as
/// f16), q = round-to-nearest-even(x · 127 / max|x|). With `scale`, the f16-rounded d is also
/// written there as a float.
@inline(__always)
func quantizeQ8_0Nearest(_ x: UnsafePointer<Float>, scale: UnsafeMutablePointer<Float>?, _ y: UnsafeMutableRawPointer) {
    var amax = SIMD8<Float>()
    for k in 0..<4 { amax = maxMagnitude(amax, load8(x + 8 * k)) }
    let m = max(max(max(amax[0], amax[4]), max(amax[2], amax[6])), max(max(amax[1], amax[5]), max(amax[3], amax[7])))
    let d = Float16(m / 127)
    y.storeBytes(of: d.bitPattern, as: UInt16.self)
    scale?.pointee = Float(d)
    let inverse = m != 0 ? 127 / m : 0
    for k in 0..<4 {
        let scaled = load8(x + 8 * k) * inverse
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        // vcvtps2dq rounds to nearest even (the default MXCSR), as ggml's _mm256_round_ps does
        let q = unsafeBitCast(_mm256_cvtps_epi32(unsafeBitCast(scaled, to: __m256.self)), to: SIMD8<Int32>.self)
#else
        let q = SIMD8<Int32>(scaled, rounding: .toNearestOrEven)
#endif
        for i in 0..<8 { y.storeBytes(of: Int8(truncatingIfNeeded: q[i]), toByteOffset: 2 + 8 * k + i, as: Int8.self) }
    }
}

/// Σ over each 4 consecutive lanes of a·b (|a|, |b| ≤ 127): lane l = Σ_{j<4} a[4l+j]·b[4l+j],
/// the lanes of ggml's `mul_sum_i8_pairs_float`.
@inline(__always)
func quadDotProducts(_ a: SIMD32<Int8>, _ b: SIMD32<Int8>) -> SIMD8<Int32> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let x = unsafeBitCast(a, to: __m256i.self), y = unsafeBitCast(b, to: __m256i.self)
    let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(x, x), _mm256_sign_epi8(y, x))
    return unsafeBitCast(_mm256_madd_epi16(_mm256_set1_epi16(1), pairs), to: SIMD8<Int32>.self)
#else
    let products = SIMD32<Int32>(truncatingIfNeeded: a) &* SIMD32<Int32>(truncatingIfNeeded: b)
    let pairs = products.evenHalf &+ products.oddHalf
    return pairs.evenHalf &+ pairs.oddHalf
#endif
}

/// One Q4_0 block's 32 values − 8 as signed bytes: the low nibbles are elements 0..<16, the
/// high ones 16..<32.
@inline(__always)
func q4_0Values(_ block: UnsafeRawPointer) -> SIMD32<Int8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let packed = block.loadUnaligned(fromByteOffset: 2, as: __m128i.self)
    let mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8)
    let low = _mm_sub_epi8(_mm_and_si128(packed, mask), eight)
    let high = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(packed, 4), mask), eight)
    return unsafeBitCast((low, high), to: SIMD32<Int8>.self)
#else
    let packed = block.loadUnaligned(fromByteOffset: 2, as: SIMD16<UInt8>.self)
    var out = SIMD32<Int8>()
    for i in 0..<16 {
        out[i] = Int8(packed[i] & 0x0F) - 8
        out[i + 16] = Int8(packed[i] >> 4) - 8
    }
    return out
#endif
}


/// float(values[i]) · d for the 32 bytes of a block (ggml's Q8_0/Q4_0 `to_float`), handed to
/// `body` 8 at a time with the first element's index.
@inline(__always)
func scaledChunks(_ values: SIMD32<Int8>, _ d: Float, _ body: (Int, SIMD8<Float>) -> Void) {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    let (low, high) = unsafeBitCast(values, to: (__m128i, __m128i).self)
    let scale = _mm256_set1_ps(d)
    @inline(__always) func chunk(_ bytes: __m128i) -> SIMD8<Float> {  // the low 8 bytes of `bytes`
        unsafeBitCast(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes)), scale), to: SIMD8<Float>.self)
    }
    body(0, chunk(low))
    body(8, chunk(_mm_unpackhi_epi64(low, low)))
    body(16, chunk(high))
    body(24, chunk(_mm_unpackhi_epi64(high, high)))
#else
    for c in 0..<4 {
        var f = SIMD8<Float>()
        for i in 0..<8 { f[i] = Float(values[8 * c + i]) * d }
        body(8 * c, f)
    }
#endif
}

/// The `count` elements (whole blocks) of a Q8_0 or Q4_0 value row segment at `row` as floats
/// (ggml's `to_float`: d·q, d·(q − 8)), handed to `body` 8 at a time with the first index.
@inline(__always)
func quantizedValueChunks(_ row: UnsafeRawPointer, type: KVCacheType, count: Int, _ body: (Int, SIMD8<Float>) -> Void) {
    let blockBytes = type.blockBytes
    for b in 0..<count / 32 {
        let block = row + b * blockBytes
        let values = type == .q8_0 ? block.loadUnaligned(fromByteOffset: 2, as: SIMD32<Int8>.self) : q4_0Values(block)
        scaledChunks(values, loadF16(block, 0)) { i, v in body(32 * b + i, v) }
    }
}

/// acc[i] += value[i] · w (fused) over a value row segment of `type` — ggml's `to_float` then
/// `ggml_vec_mad_f32`, without the float row in between.
@inline(__always)
func accumulateValueRow(_ row: UnsafeRawPointer, type: KVCacheType, count: Int, weight w: Float,
                        into acc: UnsafeMutablePointer<Float>) {
    guard type == .f16 else {
        quantizedValueChunks(row, type: type, count: count) { i, v in store8(load8(acc + i).addingProduct(v, w), acc + i) }
        return
    }
    let h = row.assumingMemoryBound(to: Float16.self)
    var i = 0
    while i + 8 <= count { store8(load8(acc + i).addingProduct(load8(h + i), w), acc + i); i += 8 }
    while i < count { acc[i] = acc[i].addingProduct(Float(h[i]), w); i += 1 }
}

/// Per-thread buffers of `attendHeadsRowQuantizedCache` for up to `maxHeads` heads at once.
struct QuantizedCacheScratch {
    static let maxHeads = 4
    let headDimension: Int, valueDimension: Int
    /// Per head: the query rounded to half (F16 keys).
    let query: UnsafeMutablePointer<Float>
    /// Per head: the query as Q8_0 (quantized keys), 32-element blocks of an f16 scale + bytes.
    let quantizedQuery: UnsafeMutableRawPointer
    /// Per head: those blocks' scales as floats.
    let queryScales: UnsafeMutablePointer<Float>
    /// Per head: the float accumulator.
    let accumulator: UnsafeMutablePointer<Float>
    /// One value row in float, shared by the heads of a group.
    let valueRow: UnsafeMutablePointer<Float>

    init(headDimension: Int, valueDimension: Int) {
        self.headDimension = headDimension
        self.valueDimension = valueDimension
        let heads = Self.maxHeads, blocks = headDimension / 32 + 1
        query = .allocate(capacity: headDimension * heads)
        quantizedQuery = .allocate(byteCount: 34 * blocks * heads, alignment: 32)
        queryScales = .allocate(capacity: blocks * heads)
        accumulator = .allocate(capacity: valueDimension * heads)
        valueRow = .allocate(capacity: valueDimension)
    }

    func deallocate() {
        query.deallocate(); quantizedQuery.deallocate(); queryScales.deallocate()
        accumulator.deallocate(); valueRow.deallocate()
    }

    /// Head j's query converted for `keyType`.
    func scorer(_ j: Int, query q: UnsafePointer<Float>, keyType: KVCacheType) -> KeyScorer {
        let blocks = headDimension / 32 + 1
        return KeyScorer(query: q, count: headDimension, keyType: keyType, rounded: query + j * headDimension,
                         quantized: quantizedQuery + 34 * blocks * j, scales: queryScales + blocks * j)
    }
}

/// A query head in the form the key type's dot product takes (ggml converts q to the key
/// type's `vec_dot_type`: f16 for F16 keys, Q8_0 for Q8_0 and Q4_0 keys), and that product.
struct KeyScorer {
    let type: KVCacheType
    let count: Int
    let rounded: UnsafeMutablePointer<Float>
    let quantized: UnsafeMutableRawPointer
    let scales: UnsafeMutablePointer<Float>

    init(query: UnsafePointer<Float>, count: Int, keyType: KVCacheType, rounded: UnsafeMutablePointer<Float>,
         quantized: UnsafeMutableRawPointer, scales: UnsafeMutablePointer<Float>) {
        type = keyType
        self.count = count
        self.rounded = rounded
        self.quantized = quantized
        self.scales = scales
        if keyType == .f16 {
            storeRoundedToHalf(query, rounded, count: count)
        } else {
            for b in 0..<count / 32 { quantizeQ8_0Nearest(query + 32 * b, scale: scales + b, quantized + 34 * b) }
        }
    }

    /// q·k for the key row segment at `key` (the head's first element or block): ggml's
    /// `vec_dot` for the key type — for the quantized ones, per block d_k·d_q times the
    /// block's integer lanes accumulated fused into 8 float lanes, then `hsum`.
    @inline(__always)
    func dot(_ key: UnsafeRawPointer) -> Float {
        if type == .f16 { return dotHalfGGML(key.assumingMemoryBound(to: Float16.self), rounded, count: count) }
        var acc = SIMD8<Float>()
        let q = UnsafeRawPointer(quantized)
        for b in 0..<count / 32 {
            let qValues = q.loadUnaligned(fromByteOffset: 34 * b + 2, as: SIMD32<Int8>.self)
            let block: UnsafeRawPointer, kValues: SIMD32<Int8>
            if type == .q8_0 {
                block = key + 34 * b
                kValues = block.loadUnaligned(fromByteOffset: 2, as: SIMD32<Int8>.self)
            } else {
                block = key + 18 * b
                kValues = q4_0Values(block)
            }
            let d = loadF16(block, 0) * scales[b]
            acc = acc.addingProduct(floats(quadDotProducts(kValues, qValues)), d)
        }
        return hsum(acc)
    }
}

/// Byte offset of element `element` (a block boundary) in a row of `type`.
@inline(__always)
func cacheRowOffset(_ element: Int, _ type: KVCacheType) -> Int { type.rowBytes(element) }

/// softmax(q·Kᵀ·scale)·V for one query row and head over a cache with a quantized key or value
/// type, in the floats of ggml's `flash_attn_ext_f16_one_chunk` (the only kernel llama.cpp runs
/// over such a cache, for any batch size): q converted for the key type (`KeyScorer`), the
/// positions in order with the online softmax — on a new maximum ms = e^(old − new), the
/// accumulator scaled by ms, w = 1; else w = e^(s − max) — the value row converted to float
/// and accumulated *in float* (acc += v·w fused), S = S·ms + w fused, out = acc · (1/S).
/// (F16 values under quantized keys also accumulate in float here; ggml keeps those in half.)
/// `heads` (≤ `QuantizedCacheScratch.maxHeads`) consecutive query heads of one KV group go
/// together (head j's query at `query + j · headDimension`, output at `out + j · valueDimension`):
/// each key and value row is read and converted once for all of them; each head's floats are
/// its own, as if alone. `keys`/`values`: the cache rows of each position, as raw row
/// addresses (see `AttentionSequence`); `keyOffset`/`valueOffset`: the group's first element in a row.
func attendHeadsRowQuantizedCache(query: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>,
                                  keyOffset: Int, keyType: KVCacheType, values: UnsafePointer<UnsafePointer<Float16>>,
                                  valueOffset: Int, valueType: KVCacheType, positions: Range<Int>, headDimension: Int,
                                  valueDimension: Int, scale: Float, softCap: Float, scratch: QuantizedCacheScratch,
                                  into out: UnsafeMutablePointer<Float>) {
    let scorers = (0..<heads).map { scratch.scorer($0, query: query + $0 * headDimension, keyType: keyType) }
    let keyByteOffset = cacheRowOffset(keyOffset, keyType), valueByteOffset = cacheRowOffset(valueOffset, valueType)
    let accumulators = scratch.accumulator, v = scratch.valueRow
    accumulators.initialize(repeating: 0, count: valueDimension * heads)
    withUnsafeTemporaryAllocation(of: (maximum: Float, sum: Float).self, capacity: heads) { state in
        for j in 0..<heads { state[j] = (-Float.infinity, 0) }
        for p in positions {
            let key = UnsafeRawPointer(keys[p]) + keyByteOffset, value = UnsafeRawPointer(values[p]) + valueByteOffset
            if heads > 1 { loadValueRow(value, type: valueType, count: valueDimension, into: v) }
            for j in 0..<heads {
                let acc = accumulators + j * valueDimension
                var s = scorers[j].dot(key) * scale
                if softCap != 0 { s = softCap * tanhf(s) }
                var ms: Float = 1, w: Float = 1
                if s > state[j].maximum {
                    let old = state[j].maximum
                    state[j].maximum = s
                    ms = expf(old - s)
                    var d = 0
                    while d + 8 <= valueDimension { store8(load8(acc + d) * ms, acc + d); d += 8 }
                    while d < valueDimension { acc[d] *= ms; d += 1 }
                } else {
                    w = expf(s - state[j].maximum)
                }
                if heads > 1 {
                    var d = 0
                    while d + 8 <= valueDimension { store8(load8(acc + d).addingProduct(load8(v + d), w), acc + d); d += 8 }
                    while d < valueDimension { acc[d] = acc[d].addingProduct(v[d], w); d += 1 }
                } else {
                    accumulateValueRow(value, type: valueType, count: valueDimension, weight: w, into: acc)
                }
                state[j].sum = w.addingProduct(state[j].sum, ms)
            }
        }
        for j in 0..<heads {
            let acc = accumulators + j * valueDimension, o = out + j * valueDimension
            let inverse: Float = state[j].sum == 0 ? 0 : 1 / state[j].sum
            var d = 0
            while d + 8 <= valueDimension { store8(load8(acc + d) * inverse, o + d); d += 8 }
            while d < valueDimension { o[d] = acc[d] * inverse; d += 1 }
        }
    }
}

/// `count` elements of a value row segment of `type` at `row`, as floats (f16 widened, the
/// quantized types as `quantizedValueChunks`).
@inline(__always)
func loadValueRow(_ row: UnsafeRawPointer, type: KVCacheType, count: Int, into out: UnsafeMutablePointer<Float>) {
    guard type == .f16 else {
        quantizedValueChunks(row, type: type, count: count) { i, v in store8(v, out + i) }
        return
    }
    let h = row.assumingMemoryBound(to: Float16.self)
    var i = 0
    while i + 8 <= count { store8(load8(h + i), out + i); i += 8 }
    while i < count { out[i] = Float(h[i]); i += 1 }
}

/// A cache type the model's head widths do not allow.
public struct CacheTypeError: Error, CustomStringConvertible {
    public let description: String

    public init(description: String) { self.description = description }
}

extension KVCacheTypes {
    /// Throws unless each head's keys (`keyWidth` elements) and values (`valueWidth`) are
    /// whole blocks of their types, as quantized rows are read head by head.
    public func check(keyWidth: Int, valueWidth: Int, architecture: String) throws {
        for (option, type, width, what) in [("--cache-type-k", key, keyWidth, "key_length"),
                                            ("--cache-type-v", value, valueWidth, "value_length")]
        where width % type.blockSize != 0 {
            throw CacheTypeError(description:
                "\(option) \(type.rawValue) stores \(type.blockSize)-element blocks, but \(architecture)'s attention heads are "
                    + "\(width) wide (\(what)); use f16")
        }
    }
}

extension KVCacheTypes {
    /// Size of the Walsh–Hadamard rotation llama.cpp applies to queries and keys before a
    /// quantized key cache (it spreads a head's outliers over the whole block, so the 8- or
    /// 4-bit steps cost less): the largest power of two from 64 up that divides the head width;
    /// nil for F16 keys or heads that are not a multiple of 64 wide.
    public func keyRotation(headDimension: Int) -> Int? {
        guard key != .f16, headDimension % 64 == 0 else { return nil }
        var n = 64
        while headDimension % (2 * n) == 0 { n *= 2 }
        return n
    }

    /// The rotation of values before a quantized value cache (and of the attention output
    /// after it: the rotation is its own inverse): always 64 wide, as llama.cpp finds smaller
    /// ones better for values; nil for F16 values or heads not a multiple of 64 wide.
    public func valueRotation(valueDimension: Int) -> Int? {
        value != .f16 && valueDimension % 64 == 0 ? 64 : nil
    }
}

/// Rotates each `size`-element chunk of `x[0..<count]` by the orthonormal Walsh–Hadamard
/// matrix (entries ±1/√size) in ggml's order (`ggml_compute_forward_fwht`): the chunk scaled by
/// 1/√size first, then the butterflies (u, v) → (u + v, u − v) with the span doubling from 1.
// Unchecked: size is a power of two dividing count (KVCacheTypes.keyRotation/valueRotation give only such sizes for head widths they divide).
public func walshHadamardRotate(_ x: UnsafeMutablePointer<Float>, count: Int, size: Int) {
    let scale = 1 / Float(size).squareRoot()
    for chunk in stride(from: 0, to: count, by: size) {
        let c = x + chunk
        var i = 0
        while i + 8 <= size { store8(load8(c + i) * scale, c + i); i += 8 }
        while i < size { c[i] *= scale; i += 1 }
        var span = 1
        while span < size {
            for start in stride(from: 0, to: size, by: 2 * span) {
                if span >= 8 {
                    for j in stride(from: 0, to: span, by: 8) {
                        let u = load8(c + start + j), v = load8(c + start + span + j)
                        store8(u + v, c + start + j)
                        store8(u - v, c + start + span + j)
                    }
                } else {
                    for j in 0..<span {
                        let u = c[start + j], v = c[start + span + j]
                        c[start + j] = u + v
                        c[start + span + j] = u - v
                    }
                }
            }
            span *= 2
        }
    }
}
