/// One weight format's integer dot product with 8-bit activations (see QuantizedActivations).
///
/// A weight block is visited as `chunks` runs of 32 elements. For each run the kernel yields
/// 32 small non-negative integers n (or signed bytes for Q8_0) and a 16-bit multiplier per
/// pair of lanes (the sub-block scale), so that per token
///     isum += Σ (n · q_x) · scale          (integer, exact)
/// and at the end of the block
///     acc  += (blockScale · d_x) · isum    (float, one FMA per 8 lanes)
///     corr += correction(...)              (offsets/mins: -8·d·s_x, m·s_x, -dmin·Σ m·bsums, …)
protocol QuantKernel: SendableMetatype {
    associatedtype Header
    associatedtype Chunk
    static var blockBytes: Int { get }
    /// 32 or 256; the activations use the same block size.
    static var blockElements: Int { get }
    static func header(_ p: UnsafeRawPointer) -> Header
    static func chunk(_ p: UnsafeRawPointer, _ h: Header, _ c: Int) -> (Chunk, SIMD16<Int16>)
    static func dot(_ w: Chunk, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32>
    static func blockScale(_ h: Header) -> Float
    static func correction(_ h: Header, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float
}

extension QuantKernel where Chunk == SIMD32<UInt8> {
    @inline(__always)
    static func dot(_ w: Chunk, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotU8I8(w, x, scale)
    }
}

extension QuantKernel {
    static var chunks: Int { blockElements / 32 }
}

@inline(__always) private var ones16: SIMD16<Int16> { splat16(1) }

// MARK: 32-element formats (activations: d and s = d·Σq per block)

struct KQ4_0: QuantKernel {
    static var blockBytes: Int { 18 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        (nibbles(p + 2), ones16)
    }
    @inline(__always) static func blockScale(_ d: Float) -> Float { d }
    @inline(__always) static func correction(_ d: Float, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float { -8 * d * sx }
}

struct KQ4_1: QuantKernel {
    static var blockBytes: Int { 20 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> (Float, Float) { (loadF16(p, 0), loadF16(p, 2)) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: (Float, Float), _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        (nibbles(p + 4), ones16)
    }
    @inline(__always) static func blockScale(_ h: (Float, Float)) -> Float { h.0 }
    @inline(__always) static func correction(_ h: (Float, Float), dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float { h.1 * sx }
}

struct KQ5_0: QuantKernel {
    static var blockBytes: Int { 22 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        let qh = p.loadUnaligned(fromByteOffset: 2, as: UInt32.self)
        return (or(nibbles(p + 6), expandBits(qh, 0x10)), ones16)
    }
    @inline(__always) static func blockScale(_ d: Float) -> Float { d }
    @inline(__always) static func correction(_ d: Float, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float { -16 * d * sx }
}

struct KQ5_1: QuantKernel {
    static var blockBytes: Int { 24 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> (Float, Float) { (loadF16(p, 0), loadF16(p, 2)) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: (Float, Float), _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        let qh = p.loadUnaligned(fromByteOffset: 4, as: UInt32.self)
        return (or(nibbles(p + 8), expandBits(qh, 0x10)), ones16)
    }
    @inline(__always) static func blockScale(_ h: (Float, Float)) -> Float { h.0 }
    @inline(__always) static func correction(_ h: (Float, Float), dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float { h.1 * sx }
}

struct KQ8_0: QuantKernel {
    static var blockBytes: Int { 34 }
    static var blockElements: Int { 32 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> Float { loadF16(p, 0) }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ d: Float, _ c: Int) -> (SIMD32<Int8>, SIMD16<Int16>) {
        (p.loadUnaligned(fromByteOffset: 2, as: SIMD32<Int8>.self), ones16)
    }
    @inline(__always) static func dot(_ w: SIMD32<Int8>, _ x: SIMD32<Int8>, _ scale: SIMD16<Int16>) -> SIMD8<Int32> {
        dotI8I8(w, x)
    }
    @inline(__always) static func blockScale(_ d: Float) -> Float { d }
    @inline(__always) static func correction(_ d: Float, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float { 0 }
}

// MARK: K-quants, 256-element super-blocks (activations: d and 16 group sums per block)

struct KHeader {
    var d: Float
    var dmin: Float
    /// Per-chunk (Q4_K/Q5_K: lanes 0..<8) or per-16-group (Q2_K/Q3_K/Q6_K) integer scales.
    var scales: SIMD16<Int16>
    /// Per-16-group multipliers of the activation group sums.
    var mins: SIMD16<Int16>
}

@inline(__always)
private func kScalesMins(_ p: UnsafeRawPointer) -> (SIMD16<Int16>, SIMD16<Int16>) {
    var sc = SIMD16<Int16>(), mn = SIMD16<Int16>()
    for j in 0..<8 {
        let (s, m) = kScaleMin(p, j)
        sc[j] = Int16(s)
        mn[2 * j] = Int16(m)
        mn[2 * j + 1] = Int16(m)
    }
    return (sc, mn)
}

struct KQ4_K: QuantKernel {
    static var blockBytes: Int { 144 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let (sc, mn) = kScalesMins(p + 4)
        return KHeader(d: loadF16(p, 0), dmin: loadF16(p, 2), scales: sc, mins: mn)
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        let n = shiftMask(load32(p + 16 + (c >> 1) * 32), 4 * (c & 1), 0x0F)
        return (n, splat16(h.scales[c]))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -(h.dmin * dx) * Float(dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self)))
    }
}

struct KQ5_K: QuantKernel {
    static var blockBytes: Int { 176 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let (sc, mn) = kScalesMins(p + 4)
        return KHeader(d: loadF16(p, 0), dmin: loadF16(p, 2), scales: sc, mins: mn)
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        let lo = shiftMask(load32(p + 48 + (c >> 1) * 32), 4 * (c & 1), 0x0F)
        let hb = shiftMaskUp(load32(p + 16), c, 1, 4)
        return (or(lo, hb), splat16(h.scales[c]))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -(h.dmin * dx) * Float(dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self)))
    }
}

struct KQ6_K: QuantKernel {
    static var blockBytes: Int { 210 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let sc = widenI8(p + 192)
        return KHeader(d: loadF16(p, 208), dmin: 0, scales: sc, mins: sc)
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        // chunk c: half hf = c/4, s = c%4; low 4 bits from ql[hf*64 + (s&1)*32 + i] nibble s/2,
        // high 2 bits from qh[hf*32 + i] bits 2s..2s+1; value n - 32 (the -32 is in `correction`)
        let hf = c >> 2, s = c & 3
        let lo = shiftMask(load32(p + hf * 64 + (s & 1) * 32), 4 * (s >> 1), 0x0F)
        let hi = shiftMaskUp(load32(p + 128 + hf * 32), 2 * s, 3, 4)
        return (or(lo, hi), scalePair(h.scales[2 * c], h.scales[2 * c + 1]))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -32 * (h.d * dx) * Float(dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self)))
    }
}

struct KQ2_K: QuantKernel {
    static var blockBytes: Int { 84 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        let b = load16(p)
        return KHeader(d: loadF16(p, 80), dmin: loadF16(p, 82),
                       scales: widenU8(shiftMask16(b, 0, 0x0F)), mins: widenU8(shiftMask16(b, 4, 0x0F)))
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        // chunk c: half hf = c/4, bits 2s.. (s = c%4) of qs[hf*32 + i]
        let n = shiftMask(load32(p + 16 + (c >> 2) * 32), 2 * (c & 3), 3)
        return (n, scalePair(h.scales[2 * c], h.scales[2 * c + 1]))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -(h.dmin * dx) * Float(dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self)))
    }
}

struct KQ3_K: QuantKernel {
    static var blockBytes: Int { 110 }
    static var blockElements: Int { 256 }
    @inline(__always) static func header(_ p: UnsafeRawPointer) -> KHeader {
        var sc = SIMD16<Int16>()
        for k in 0..<16 {
            let lo = k < 8 ? byte(p, 96 + k) & 0x0F : byte(p, 96 + k - 8) >> 4
            let hi = (byte(p, 104 + k % 4) >> UInt8(2 * (k / 4))) & 3
            sc[k] = Int16(lo | hi << 4) - 32
        }
        return KHeader(d: loadF16(p, 108), dmin: 0, scales: sc, mins: sc)
    }
    @inline(__always) static func chunk(_ p: UnsafeRawPointer, _ h: KHeader, _ c: Int) -> (SIMD32<UInt8>, SIMD16<Int16>) {
        // n = low 2 bits | hmask bit << 2 ∈ 0..7; weight value n - 4 (the -4 is in `correction`)
        let lo = shiftMask(load32(p + 32 + (c >> 2) * 32), 2 * (c & 3), 3)
        let hb = shiftMaskUp(load32(p), c, 1, 2)
        return (or(lo, hb), scalePair(h.scales[2 * c], h.scales[2 * c + 1]))
    }
    @inline(__always) static func blockScale(_ h: KHeader) -> Float { h.d }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, sx: Float, bsums: UnsafePointer<Int16>) -> Float {
        -4 * (h.d * dx) * Float(dotI16(h.mins, UnsafeRawPointer(bsums).loadUnaligned(as: SIMD16<Int16>.self)))
    }
}
