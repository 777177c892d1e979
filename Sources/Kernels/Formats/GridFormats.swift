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

