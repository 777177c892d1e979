#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif

// Grid i-quants: each group of 8 (IQ2_*, IQ1_*) or 4 (IQ3_*) weights is one point of a fixed
// lattice (GridTables.swift, from gguf-py), stored as its index, with per-element signs
// (IQ2_*, IQ3_*) and a 4-bit (IQ1_*: 3-bit) scale per 32 or 16 elements:
//   IQ2_XXS, IQ2_XS, IQ2_S: d · (s + ½)/4 · grid · sign    (grid values 8, 25, 43)
//   IQ3_XXS: d · (s + ½)/2 · grid · sign                    (grid values 4 … 62)
//   IQ3_S:   d · (2s + 1) · grid · sign                      (grid values 1 … 15)
//   IQ1_S, IQ1_M: d · (2s + 1) · (grid ± ⅛)                  (grid values -1, 0, 1)
// The products use Q8_K activations as llama.cpp's x86 kernels (`ggml_vec_dot_<type>_q8_K`) do:
// the signed grid bytes times the activations in integer lanes, scaled by the odd integer
// 2s + 1 per 32 (or 16) elements, then acc = fma(d·d_x, lanes, acc) per block and a constant
// factor on hsum(acc): ⅛ (IQ2), ¼ (IQ3_XXS), 1 (IQ3_S). Multiplying d by that power of two
// up front instead gives the same floats (a power-of-two factor commutes with every rounding
// away from the subnormal range), so these are `SuperStyle.lanes` kernels with no correction.
// IQ1_S adds the ±⅛ offsets as llama.cpp does, from the activation group sums in a scalar FMA
// chain (`SuperStyle.minChain`); IQ1_M keeps them in a second vector accumulator
// (`iq1mRows`).
// Every grid byte is at most 62 in magnitude, so the signed-byte pair sums stay within Int16.
//
// Unchecked: every table index is masked to its table's size (grids: 8 bits IQ2_XXS/IQ3_XXS,
// 9 IQ2_XS/IQ3_S, 10 IQ2_S, 11 IQ1; `evenSigns` 7 bits, `bitSigns` 8), and rows are whole
// 256-element blocks (GGUFFile rejects a tensor whose row is not, `matmul` checks its operands).

/// Byte j is -1 (0xFF) where bit j of the index is set, else +1: the signs of 8 elements.
let bitSigns: [UInt64] = (0..<256).map { (b: Int) -> UInt64 in
    var word: UInt64 = 0
    for j in 0..<8 { word |= ((b >> j) & 1 == 1 ? 0xFF : 0x01) << UInt64(8 * j) }
    return word
}

/// `bitSigns` of the 7-bit sign indices of IQ2_XXS, IQ2_XS and IQ3_XXS.
let evenSigns: [UInt64] = ksigns.map { bitSigns[Int($0)] }

/// grid · sign, byte by byte (sign bytes are ±1).
@inline(__always)
private func applySigns(_ grid: SIMD32<Int8>, _ signs: SIMD4<UInt64>) -> SIMD32<Int8> {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    unsafeBitCast(_mm256_sign_epi8(unsafeBitCast(grid, to: __m256i.self), unsafeBitCast(signs, to: __m256i.self)),
                  to: SIMD32<Int8>.self)
#else
    grid &* unsafeBitCast(signs, to: SIMD32<Int8>.self)
#endif
}

@inline(__always)
private func bytes(_ v: SIMD4<UInt64>) -> SIMD32<Int8> { unsafeBitCast(v, to: SIMD32<Int8>.self) }

@inline(__always)
private func bytes(_ v: SIMD8<UInt32>) -> SIMD32<Int8> { unsafeBitCast(v, to: SIMD32<Int8>.self) }

/// Byte k of a 64-bit grid row, as a signed value.
@inline(__always)
private func gridByte(_ row: UInt64, _ k: Int) -> Int8 { Int8(truncatingIfNeeded: row >> UInt64(8 * k)) }

@inline(__always)
private func u16(_ p: UnsafeRawPointer, _ offset: Int) -> UInt16 { p.loadUnaligned(fromByteOffset: offset, as: UInt16.self) }

@inline(__always)
private func u32(_ p: UnsafeRawPointer, _ offset: Int) -> UInt32 { p.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }

/// IQ1_M's f16 block scale, kept in the top 4 bits of its four 16-bit scale words.
@inline(__always)
private func iq1mScale(_ p: UnsafeRawPointer) -> Float {
    let s0 = u16(p, 48), s1 = u16(p, 50), s2 = u16(p, 52), s3 = u16(p, 54)
    let bits = (s0 >> 12) | ((s1 >> 8) & 0x00F0) | ((s2 >> 4) & 0x0F00) | (s3 & 0xF000)
    return Float(Float16(bitPattern: bits))
}

/// IQ1_M: the 3-bit scale of 16-element group g (0..<16).
@inline(__always)
private func iq1mGroupScale(_ p: UnsafeRawPointer, _ g: Int) -> UInt16 { (u16(p, 48 + 2 * (g >> 2)) >> UInt16(3 * (g & 3))) & 7 }

// MARK: dequantization (bit-identical to gguf.quants.dequantize: the same float products in the same order)

/// y = (db · grid) · sign for the 8 elements of one grid row.
@inline(__always)
private func decodeSigned(_ row: UInt64, signs: UInt8, scale db: Float, into y: UnsafeMutablePointer<Float>) {
    for j in 0..<8 {
        let v = db * Float(gridByte(row, j))
        y[j] = (signs >> UInt8(j)) & 1 == 1 ? -v : v
    }
}

func dequantizeIQ2XXS(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 66
        let d = loadF16(p, 0)
        for ib in 0..<8 {
            let idx = u32(p, 2 + 8 * ib), aux = u32(p, 6 + 8 * ib)
            let db = d * (0.5 + Float(aux >> 28)) * 0.25
            for k in 0..<4 {
                decodeSigned(iq2xxsGrid[Int((idx >> UInt32(8 * k)) & 0xFF)], signs: ksigns[Int((aux >> UInt32(7 * k)) & 127)],
                             scale: db, into: y + 256 * b + 32 * ib + 8 * k)
            }
        }
    }
}

func dequantizeIQ2XS(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 74
        let d = loadF16(p, 0)
        for g in 0..<32 {  // 8-element groups; 16-element halves share a scale nibble
            let s = (byte(p, 66 + g / 4) >> UInt8(4 * ((g / 2) & 1))) & 0x0F
            let db = d * (0.5 + Float(s)) * 0.25
            let q = u16(p, 2 + 2 * g)
            decodeSigned(iq2xsGrid[Int(q & 511)], signs: ksigns[Int(q >> 9)], scale: db, into: y + 256 * b + 8 * g)
        }
    }
}

func dequantizeIQ2S(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 82
        let d = loadF16(p, 0)
        for g in 0..<32 {
            let s = (byte(p, 74 + g / 4) >> UInt8(4 * ((g / 2) & 1))) & 0x0F
            let db = d * (0.5 + Float(s)) * 0.25
            let high = (Int(byte(p, 66 + g / 4)) >> (2 * (g & 3))) & 3
            decodeSigned(iq2sGrid[Int(byte(p, 2 + g)) | high << 8], signs: byte(p, 34 + g), scale: db, into: y + 256 * b + 8 * g)
        }
    }
}

func dequantizeIQ3XXS(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 98
        let d = loadF16(p, 0)
        for ib in 0..<8 {
            let aux = u32(p, 66 + 4 * ib)
            let db = d * (0.5 + Float(aux >> 28)) * 0.5
            for k in 0..<4 {  // 8 elements: two grid points, one sign pattern
                let signs = ksigns[Int((aux >> UInt32(7 * k)) & 127)]
                let row = UInt64(iq3xxsGrid[Int(byte(p, 2 + 8 * ib + 2 * k))])
                    | UInt64(iq3xxsGrid[Int(byte(p, 2 + 8 * ib + 2 * k + 1))]) << 32
                decodeSigned(row, signs: signs, scale: db, into: y + 256 * b + 32 * ib + 8 * k)
            }
        }
    }
}

func dequantizeIQ3S(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 110
        let d = loadF16(p, 0)
        for ib in 0..<8 {
            let s = (byte(p, 106 + ib / 2) >> UInt8(4 * (ib & 1))) & 0x0F
            let db = d * Float(1 + 2 * s)
            let qh = Int(byte(p, 66 + ib))
            for k in 0..<4 {
                let i0 = Int(byte(p, 2 + 8 * ib + 2 * k)) | ((qh >> (2 * k)) & 1) << 8
                let i1 = Int(byte(p, 2 + 8 * ib + 2 * k + 1)) | ((qh >> (2 * k + 1)) & 1) << 8
                let row = UInt64(iq3sGrid[i0]) | UInt64(iq3sGrid[i1]) << 32
                decodeSigned(row, signs: byte(p, 74 + 4 * ib + k), scale: db, into: y + 256 * b + 32 * ib + 8 * k)
            }
        }
    }
}

/// y = dl · (grid + delta) for the 8 elements of one IQ1 grid row.
@inline(__always)
private func decodeOffset(_ row: UInt64, delta: Float, scale dl: Float, into y: UnsafeMutablePointer<Float>) {
    for j in 0..<8 { y[j] = dl * (Float(gridByte(row, j)) + delta) }
}

func dequantizeIQ1S(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 50
        let d = loadF16(p, 0)
        for ib in 0..<8 {
            let qh = u16(p, 34 + 2 * ib)
            let dl = d * Float(2 * ((qh >> 12) & 7) + 1)
            let delta: Float = qh & 0x8000 == 0 ? 0.125 : -0.125
            for k in 0..<4 {
                let index = Int(byte(p, 2 + 4 * ib + k)) | Int((qh >> UInt16(3 * k)) & 7) << 8
                decodeOffset(iq1sGrid[index], delta: delta, scale: dl, into: y + 256 * b + 32 * ib + 8 * k)
            }
        }
    }
}

func dequantizeIQ1M(_ source: UnsafeRawPointer, into y: UnsafeMutablePointer<Float>, blocks: Int) {
    for b in 0..<blocks {
        let p = source + b * 56
        let d = iq1mScale(p)
        for g in 0..<32 {  // 8-element groups: a nibble of qh each (3 index bits, the delta's sign)
            let nibble = (Int(byte(p, 32 + g / 2)) >> (4 * (g & 1))) & 0x0F
            let dl = d * Float(2 * iq1mGroupScale(p, g / 2) + 1)
            let index = Int(byte(p, g)) | (nibble & 7) << 8
            decodeOffset(iq1sGrid[index], delta: nibble & 8 == 0 ? 0.125 : -0.125, scale: dl, into: y + 256 * b + 8 * g)
        }
    }
}

// MARK: matrix-product kernels

/// [2·lo + 1 ×8, 2·hi + 1 ×8] from a byte of two 4-bit scales (IQ2_XS, IQ2_S: one per 16 elements).
@inline(__always)
private func oddScalePair(_ s: UInt8) -> SIMD16<Int16> {
    scalePair(Int16(2 * (s & 0x0F) + 1), Int16(2 * (s >> 4) + 1))
}

/// A 256-element format whose chunks are signed grid bytes with one odd scale per 16 lanes and
/// a float d per block (IQ2_*, IQ3_*): products as `.lanes` K-quant blocks, no offset term.
protocol SignedGridKernel: QuantKernel where Header == Float, Chunk == SIMD32<Int8> {}

extension SignedGridKernel {
    @inline(__always) static func dot(_ w: SIMD32<Int8>, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotI8I8(w, x, scale)
    }
    @inline(__always) static func blockScale(_ d: Float) -> Float { d }
    @inline(__always) static func correction(_ d: Float, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float { 0 }
    static var avx512UnpackedChunks: Bool { true }
}

struct KIQ2_XXS: SignedGridKernel {
    static var blockBytes: Int { 66 }
    static var blockElements: Int { 256 }
    /// d/8 (llama.cpp multiplies the sum by 0.125 instead: the same floats).
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { 0.125 * loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        // 4 grid indices (bytes), then 4 7-bit sign indices and the scale in the top 4 bits
        let idx = u32(p, 2 + 8 * c), aux = u32(p, 6 + 8 * c)
        let grid = SIMD4(iq2xxsGrid[Int(idx & 0xFF)], iq2xxsGrid[Int((idx >> 8) & 0xFF)],
                         iq2xxsGrid[Int((idx >> 16) & 0xFF)], iq2xxsGrid[Int(idx >> 24)])
        let signs = SIMD4(evenSigns[Int(aux & 127)], evenSigns[Int((aux >> 7) & 127)],
                          evenSigns[Int((aux >> 14) & 127)], evenSigns[Int((aux >> 21) & 127)])
        return (applySigns(bytes(grid), signs), splat16(Int16(truncatingIfNeeded: 2 * (aux >> 28) + 1)))
    }
}

struct KIQ2_XS: SignedGridKernel {
    static var blockBytes: Int { 74 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { 0.125 * loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        // 4 16-bit codes: 9-bit grid index, 7-bit sign index
        let q = p.loadUnaligned(fromByteOffset: 2 + 8 * c, as: SIMD4<UInt16>.self)
        let grid = SIMD4(iq2xsGrid[Int(q[0] & 511)], iq2xsGrid[Int(q[1] & 511)],
                         iq2xsGrid[Int(q[2] & 511)], iq2xsGrid[Int(q[3] & 511)])
        let signs = SIMD4(evenSigns[Int(q[0] >> 9)], evenSigns[Int(q[1] >> 9)],
                          evenSigns[Int(q[2] >> 9)], evenSigns[Int(q[3] >> 9)])
        return (applySigns(bytes(grid), signs), oddScalePair(byte(p, 66 + c)))
    }
}

struct KIQ2_S: SignedGridKernel {
    static var blockBytes: Int { 82 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { 0.125 * loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        // low 8 index bits in qs, the top 2 in qh (2 bits per group), sign bits in a byte per group
        let qs = u32(p, 2 + 4 * c), qh = UInt32(byte(p, 66 + c))
        @inline(__always) func index(_ k: UInt32) -> Int { Int(((qs >> (8 * k)) & 0xFF) | ((qh >> (2 * k)) & 3) << 8) }
        let grid = SIMD4(iq2sGrid[index(0)], iq2sGrid[index(1)], iq2sGrid[index(2)], iq2sGrid[index(3)])
        let s = u32(p, 34 + 4 * c)
        let signs = SIMD4(bitSigns[Int(s & 0xFF)], bitSigns[Int((s >> 8) & 0xFF)],
                          bitSigns[Int((s >> 16) & 0xFF)], bitSigns[Int(s >> 24)])
        return (applySigns(bytes(grid), signs), oddScalePair(byte(p, 74 + c)))
    }
}

struct KIQ3_XXS: SignedGridKernel {
    static var blockBytes: Int { 98 }
    static var blockElements: Int { 256 }
    /// d/4 (llama.cpp: 0.25 · the sum).
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { 0.25 * loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        let q = p.loadUnaligned(fromByteOffset: 2 + 8 * c, as: SIMD8<UInt8>.self)
        let grid = SIMD8(iq3xxsGrid[Int(q[0])], iq3xxsGrid[Int(q[1])], iq3xxsGrid[Int(q[2])], iq3xxsGrid[Int(q[3])],
                         iq3xxsGrid[Int(q[4])], iq3xxsGrid[Int(q[5])], iq3xxsGrid[Int(q[6])], iq3xxsGrid[Int(q[7])])
        let aux = u32(p, 66 + 4 * c)
        let signs = SIMD4(evenSigns[Int(aux & 127)], evenSigns[Int((aux >> 7) & 127)],
                          evenSigns[Int((aux >> 14) & 127)], evenSigns[Int((aux >> 21) & 127)])
        return (applySigns(bytes(grid), signs), splat16(Int16(truncatingIfNeeded: 2 * (aux >> 28) + 1)))
    }
}

struct KIQ3_S: SignedGridKernel {
    static var blockBytes: Int { 110 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        // 8 grid indices: a byte of qs and bit k of the chunk's qh byte
        let q = p.loadUnaligned(fromByteOffset: 2 + 8 * c, as: SIMD8<UInt8>.self)
        let qh = Int(byte(p, 66 + c))
        @inline(__always) func point(_ k: Int) -> UInt32 { iq3sGrid[Int(q[k]) | ((qh >> k) & 1) << 8] }
        let grid = SIMD8(point(0), point(1), point(2), point(3), point(4), point(5), point(6), point(7))
        let s = u32(p, 74 + 4 * c)
        let signs = SIMD4(bitSigns[Int(s & 0xFF)], bitSigns[Int((s >> 8) & 0xFF)],
                          bitSigns[Int((s >> 16) & 0xFF)], bitSigns[Int(s >> 24)])
        let scale = (byte(p, 106 + c / 2) >> UInt8(4 * (c & 1))) & 0x0F
        return (applySigns(bytes(grid), signs), splat16(Int16(2 * scale + 1)))
    }
}

/// IQ1_S block header: d and, per 16-element activation group, ±(2s + 1) (the sign of the
/// sub-block's ⅛ offset times its scale).
struct IQ1SHeader {
    var d: Float
    var offsets: SIMD16<Int16>
}

/// The 8 IQ1 grid rows of indices `index(k)`, k in 0..<4, as 32 signed bytes.
@inline(__always)
private func iq1Grid(_ index: (Int) -> Int) -> SIMD32<Int8> {
    bytes(SIMD4(iq1sGrid[index(0)], iq1sGrid[index(1)], iq1sGrid[index(2)], iq1sGrid[index(3)]))
}

/// IQ1_S, as `ggml_vec_dot_iq1_s_q8_K`: the grid values' lanes as the other formats, and the
/// offsets as an integer Σ ±(2s + 1)·(group sums) per block, added with
/// accum1 = fma(d·d_x, Σ, accum1) and result hsum(acc) + ⅛·accum1. `.minChain` computes
/// mins = fma(-(blockMin·d_x), Σ, mins) and hsum(acc) + mins: with blockMin = -d/8 that is ⅛
/// of llama.cpp's accum1 at every step (a power-of-two factor: the same floats).
struct KIQ1_S: QuantKernel {
    static var blockBytes: Int { 50 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> IQ1SHeader {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        // in vector registers: the generic SIMD version compiled to a branchy loop over the
        // lanes that took most of a matrix-vector product's time
        let qh = p.loadUnaligned(fromByteOffset: 34, as: __m128i.self)
        let odd = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(qh, 11), _mm_set1_epi16(0x0E)), _mm_set1_epi16(1))
        let negative = _mm_srai_epi16(qh, 15)  // all ones where bit 15 (the offset's sign) is set
        let s = _mm_sub_epi16(_mm_xor_si128(odd, negative), negative)
        let offsets = _mm256_set_m128i(_mm_unpackhi_epi16(s, s), _mm_unpacklo_epi16(s, s))
        return IQ1SHeader(d: loadF16(p, 0), offsets: unsafeBitCast(offsets, to: SIMD16<Int16>.self))
#else
        let qh = p.loadUnaligned(fromByteOffset: 34, as: SIMD8<UInt16>.self)
        let odd = SIMD8<Int16>(truncatingIfNeeded: ((qh &>> 12) & 7) &* 2 &+ 1)
        let s = odd.replacing(with: 0 &- odd, where: (qh & 0x8000) .!= 0)
        let offsets = SIMD16(s[0], s[0], s[1], s[1], s[2], s[2], s[3], s[3], s[4], s[4], s[5], s[5], s[6], s[6], s[7], s[7])
        return IQ1SHeader(d: loadF16(p, 0), offsets: offsets)
#endif
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: IQ1SHeader, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        // 11-bit indices: a byte of qs, 3 bits of the sub-block's qh word
        let qs = u32(p, 2 + 4 * c), qh = UInt32(u16(p, 34 + 2 * c))
        let grid = iq1Grid { k in Int(((qs >> UInt32(8 * k)) & 0xFF) | ((qh >> UInt32(3 * k)) & 7) << 8) }
        return (grid, splat16(Int16(truncatingIfNeeded: 2 * ((qh >> 12) & 7) + 1)))
    }
    @inline(__always) static func dot(_ w: SIMD32<Int8>, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotI8I8(w, x, scale)
    }
    @inline(__always) static func blockScale(_ h: IQ1SHeader) -> Float { h.d }
    static var superStyle: SuperStyle { .minChain }
    @inline(__always) static func blockMin(_ h: IQ1SHeader) -> Float { -0.125 * h.d }
    @inline(__always) static func minSum(_ h: IQ1SHeader, bsums: UnsafePointer<Int16>) -> Int32 {
        dotI16(h.offsets, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self))
    }
}

/// IQ1_M chunk c: the grid bytes, the ±1 signs of the ⅛ offsets (per 8 elements) and the two
/// 16-element scales 2s + 1.
@inline(__always)
func iq1mChunk(_ p: UnsafeRawPointer, _ c: Int) -> (grid: SIMD32<Int8>, delta: SIMD32<Int8>, scale: SIMD16<Int16>) {
    let qs = u32(p, 4 * c), qh = UInt32(u16(p, 32 + 2 * c))  // a nibble per group: 3 index bits, the offset's sign
    let grid = iq1Grid { k in Int(((qs >> UInt32(8 * k)) & 0xFF) | ((qh >> UInt32(4 * k)) & 7) << 8) }
    @inline(__always) func sign(_ k: UInt32) -> UInt64 { (qh >> (4 * k + 3)) & 1 == 1 ? ~0 : 0x0101_0101_0101_0101 }
    let delta = bytes(SIMD4(sign(0), sign(1), sign(2), sign(3)))
    let scale = scalePair(Int16(2 * iq1mGroupScale(p, 2 * c) + 1), Int16(2 * iq1mGroupScale(p, 2 * c + 1) + 1))
    return (grid, delta, scale)
}

/// IQ1_M weights, rows `range` × all tokens, as `ggml_vec_dot_iq1_m_q8_K`: per block the grid
/// lanes and the offset-sign lanes (both scaled by 2s + 1), each into its own accumulator with
/// fma(d·d_x, lanes, acc), and hsum(acc1) + ⅛·hsum(acc2). Up to 3 tokens read the row's blocks
/// directly; larger batches unpack each row once and take its chunks 4 tokens at a time.
func iq1mRows(_ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int, _ range: Range<Int>,
              _ y: UnsafeMutablePointer<Float>) {
    let nb = w.columns / 256, rows = w.rows
    if tokens < 4 {
        for r in range {
            let row = w.row(r)
            @inline(__always)
            func direct(_ n: Int) {
                iq1mDot(nb, act, 0, n, y + r, rows, blockScale: { iq1mScale(row + 56 * $0) },
                        chunk: { b, c in iq1mChunk(row + 56 * b, c) })
            }
            switch tokens {
            case 3: direct(3)
            case 2: direct(2)
            default: direct(1)
            }
        }
        return
    }
    let grids = UnsafeMutablePointer<SIMD32<Int8>>.allocate(capacity: 8 * nb)
    let deltas = UnsafeMutablePointer<SIMD32<Int8>>.allocate(capacity: 8 * nb)
    let scales = UnsafeMutablePointer<SIMD16<Int16>>.allocate(capacity: 8 * nb)
    let ds = UnsafeMutablePointer<Float>.allocate(capacity: nb)
    defer {
        grids.deallocate()
        deltas.deallocate()
        scales.deallocate()
        ds.deallocate()
    }
    for r in range {
        let row = w.row(r)
        for b in 0..<nb {
            let p = row + 56 * b
            ds[b] = iq1mScale(p)
            for c in 0..<8 {
                let chunk = iq1mChunk(p, c)
                grids[8 * b + c] = chunk.grid
                deltas[8 * b + c] = chunk.delta
                scales[8 * b + c] = chunk.scale
            }
        }
        var t0 = 0
        while t0 < tokens {
            let nt = min(tokenTile, tokens - t0)
            @inline(__always)
            func unpacked(_ n: Int) {
                iq1mDot(nb, act, t0, n, y + t0 * rows + r, rows, blockScale: { ds[$0] },
                        chunk: { b, c in (grids[8 * b + c], deltas[8 * b + c], scales[8 * b + c]) })
            }
            switch nt {
            case 4: unpacked(4)
            case 3: unpacked(3)
            case 2: unpacked(2)
            default: unpacked(1)
            }
            t0 += nt
        }
    }
}

/// One IQ1_M row with tokens t0..<t0+nt (nt 1...4, a literal after inlining), each token's
/// floats exactly those of `ggml_vec_dot_iq1_m_q8_K`; `out` is token t0, token t0+j at
/// `out + j·outStride`.
@inline(__always)
private func iq1mDot(_ nb: Int, _ act: QuantizedActivations, _ t0: Int, _ nt: Int,
                     _ out: UnsafeMutablePointer<Float>, _ outStride: Int, blockScale: (Int) -> Float,
                     chunk: (Int, Int) -> (grid: SIMD32<Int8>, delta: SIMD32<Int8>, scale: SIMD16<Int16>)) {
    let cols = act.columns
    let q0 = UnsafeRawPointer(act.q + t0 * cols)
    var g0 = SIMD8<Float>(), g1 = SIMD8<Float>(), g2 = SIMD8<Float>(), g3 = SIMD8<Float>()
    var e0 = SIMD8<Float>(), e1 = SIMD8<Float>(), e2 = SIMD8<Float>(), e3 = SIMD8<Float>()
    for b in 0..<nb {
        var s0 = SIMD8<Int32>(), s1 = SIMD8<Int32>(), s2 = SIMD8<Int32>(), s3 = SIMD8<Int32>()
        var o0 = SIMD8<Int32>(), o1 = SIMD8<Int32>(), o2 = SIMD8<Int32>(), o3 = SIMD8<Int32>()
        for c in 0..<8 {
            let k = chunk(b, c)
            let offset = 256 * b + 32 * c
            @inline(__always)
            func step(_ j: Int, _ s: inout SIMD8<Int32>, _ o: inout SIMD8<Int32>) {
                let x = q0.loadUnaligned(fromByteOffset: offset + j * cols, as: SIMD32<Int8>.self)
                s &+= dotI8I8(k.grid, x, k.scale)
                o &+= dotI8I8(k.delta, x, k.scale)
            }
            step(0, &s0, &o0)
            if nt > 1 { step(1, &s1, &o1) }
            if nt > 2 { step(2, &s2, &o2) }
            if nt > 3 { step(3, &s3, &o3) }
        }
        let db = blockScale(b)
        @inline(__always)
        func finish(_ j: Int, _ s: SIMD8<Int32>, _ o: SIMD8<Int32>, _ g: inout SIMD8<Float>, _ e: inout SIMD8<Float>) {
            let d = SIMD8(repeating: act.d[(t0 + j) * nb + b] * db)
            g = g.addingProduct(d, floats(s))
            e = e.addingProduct(d, floats(o))
        }
        finish(0, s0, o0, &g0, &e0)
        if nt > 1 { finish(1, s1, o1, &g1, &e1) }
        if nt > 2 { finish(2, s2, o2, &g2, &e2) }
        if nt > 3 { finish(3, s3, o3, &g3, &e3) }
    }
    out[0] = hsum(g0) + 0.125 * hsum(e0)
    if nt > 1 { out[outStride] = hsum(g1) + 0.125 * hsum(e1) }
    if nt > 2 { out[2 * outStride] = hsum(g2) + 0.125 * hsum(e2) }
    if nt > 3 { out[3 * outStride] = hsum(g3) + 0.125 * hsum(e3) }
}
