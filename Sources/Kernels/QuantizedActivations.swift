#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel
#endif
import GGUF

/// Activations (the `tokens` input rows of a matmul) quantized once per call to 8 bits,
/// so that every weight block can be multiplied with integer SIMD dot products.
///
/// Per block of `blockSize` floats x (32 for the small formats, 256 for K-quants):
///   d = max|x| / 127,  q[i] = round(x[i] / d) ∈ [-127, 127]   (x[i] ≈ d·q[i])
///   s = d · Σ q[i]                 (32-blocks: the Q4_1/Q5_1 min term, m·s)
///   offsetSums[o][l] = -offset_o · Σ q[4l..<4l+4], offsets 8, 16, 128   (32-blocks: lets
///       kernels multiply offset-coded weights such as Q5_0's v - 16 as unsigned bytes, exactly)
///   bsums[g] = Σ q[i] over 16-element groups   (256-blocks: for the K-quant mins)
/// 32-blocks round d and s to f16 as GGUF's Q8_0/Q8_1 blocks (and llama.cpp) do, so that the
/// kernels reproduce llama.cpp's results; 256-blocks keep a float d as Q8_K does.
/// Blocks with max|x| ≤ 1e-30 quantize to zeros (127/max would overflow); the error that
/// introduces is below 1e-30·Σ|w|.
///
/// Error this implies: |x[i] - d·q[i]| ≤ d/2 = max|x|_block / 254 (plus ~1 ulp from the
/// float arithmetic), so for one weight row w the matmul result differs from the exact
/// float dot product by at most  Σ_blocks (max|x|_block / 254) · Σ_{i∈block} |w[i]|,
/// i.e. a relative error of ~0.4 % of Σ|w||x| in the worst case and typically far less
/// (the rounding errors have random signs: ~ 1/254/√3 · ‖w‖·max|x| per block).
/// This is the same approximation llama.cpp's CPU path makes with its Q8_0/Q8_1/Q8_K
/// activations; tests check it against exactly this bound.
struct QuantizedActivations: @unchecked Sendable {
    let columns: Int
    let tokens: Int
    let blockSize: Int
    let blocksPerRow: Int
    let q: UnsafeMutablePointer<Int8>      // tokens × columns
    let d: UnsafeMutablePointer<Float>     // tokens × blocksPerRow
    /// 32-blocks: (d, s) pairs interleaved, tokens × blocksPerRow × 2, so the kernels load
    /// the scales of two consecutive blocks with one 16-byte load.
    let ds: UnsafeMutablePointer<Float>
    let bsums: UnsafeMutablePointer<Int16> // tokens × blocksPerRow × 16 (256-blocks)
    let offsetSums: UnsafeMutablePointer<Int32> // 3 × tokens × blocksPerRow × 8 (32-blocks), one array per offset
    /// Offsets of `offsetSums`, in order: Q4_0's 8, Q5_0's 16, and 128 for Q8_0 read as q + 128.
    static let offsets: [Int32] = [8, 16, 128]
    /// Distance between the offsets' arrays in `offsetSums` (so one offset's lanes of
    /// consecutive blocks are contiguous).
    var offsetStride: Int { tokens * blocksPerRow * 8 }
    private let base: UnsafeMutableRawPointer

    /// Tokens llama.cpp's repacked gemm kernel would multiply (see `matmul`'s `batching`).
    let gemmRows: Int
    /// Bit o set: `offsetSums` of offset o are computed (the others are left undefined).
    let offsetSlots: UInt8

    /// The `offsetSums` slots a kernel for weights of `type` may read (Q4_0: 0, Q5_0: 1, Q8_0
    /// read as q + 128: 2), so a matmul computes only the sums its weights use.
    static func offsetSlots(for type: TensorType) -> UInt8 {
        switch type {
        case .q4_0: 1 << 0
        case .q5_0: 1 << 1
        case .q8_0: 1 << 2
        case .iq4_NL, .mxfp4: 1 << 2  // AVX-512: table value + 128 as unsigned bytes
        default: 0
        }
    }

    init(columns: Int, tokens: Int, blockSize: Int, gemmRows: Int = 0, offsetSlots: UInt8 = 0b111) {
        self.gemmRows = gemmRows
        self.offsetSlots = offsetSlots
        precondition(columns % blockSize == 0)
        self.columns = columns
        self.tokens = tokens
        self.blockSize = blockSize
        blocksPerRow = columns / blockSize
        let nq = (tokens * columns + 63) & ~63
        let nd = tokens * blocksPerRow
        let nbs = blockSize == 256 ? nd * 16 : 0
        let nls = blockSize == 32 ? nd * 24 : 0
        base = .allocate(byteCount: nq + 12 * nd + 2 * nbs + 4 * nls + 128, alignment: 64)
        q = base.bindMemory(to: Int8.self, capacity: nq)
        d = (base + nq).bindMemory(to: Float.self, capacity: nd)
        ds = (base + nq + 4 * nd).bindMemory(to: Float.self, capacity: 2 * nd)
        bsums = (base + nq + 12 * nd).bindMemory(to: Int16.self, capacity: max(nbs, 1))
        let lanesOffset = (nq + 12 * nd + 2 * nbs + 63) & ~63
        offsetSums = (base + lanesOffset).bindMemory(to: Int32.self, capacity: max(nls, 1))
    }

    func deallocate() { base.deallocate() }

    /// Quantizes rows t ∈ range of `x` (each `columns` floats).
    func quantize(_ x: UnsafePointer<Float>, tokens range: Range<Int>) {
        for t in range {
            let xt = x + t * columns
            for b in 0..<blocksPerRow {
                quantizeBlock(xt + b * blockSize, token: t, block: b)
            }
        }
    }

#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
    /// Σ of the 8 lanes (wrapping, as `wrappedSum`, which compiles to lane-by-lane extracts).
    @inline(__always)
    private func horizontalSum(_ v: __m256i) -> Int32 {
        let halves = unsafeBitCast(v, to: (__m128i, __m128i).self)
        let four = _mm_add_epi32(halves.0, halves.1)
        let two = _mm_hadd_epi32(four, four)
        return _mm_cvtsi128_si32(_mm_hadd_epi32(two, two))
    }
#endif

    @inline(__always)
    private func quantizeBlock(_ x: UnsafePointer<Float>, token t: Int, block b: Int) {
        let raw = UnsafeRawPointer(x)
        let qb = q + t * columns + b * blockSize
        let bi = t * blocksPerRow + b
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        let n8 = blockSize / 8
        let signBit = _mm256_set1_ps(-0.0)
        var amax = _mm256_setzero_ps()
        for k in 0..<n8 {
            amax = _mm256_max_ps(amax, _mm256_andnot_ps(signBit, raw.loadUnaligned(fromByteOffset: 32 * k, as: __m256.self)))
        }
        // llama.cpp's reduction (branch-free; Swift's max would compare and branch per lane)
        let halves = unsafeBitCast(amax, to: (__m128, __m128).self)
        var m4 = _mm_max_ps(halves.1, halves.0)
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4))
        let m = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)))
        let scale = m / 127
        let inv = _mm256_set1_ps(m > 1e-30 ? 127 / m : 0)
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)
        var total = _mm256_setzero_si256()
        for k in stride(from: 0, to: n8, by: 4) {
            // round to nearest even (default MXCSR); |x·inv| ≤ 127
            func conv(_ j: Int) -> __m256i {
                _mm256_cvtps_epi32(_mm256_mul_ps(raw.loadUnaligned(fromByteOffset: 32 * (k + j), as: __m256.self), inv))
            }
            let i0 = conv(0), i1 = conv(1), i2 = conv(2), i3 = conv(3)
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3))
            UnsafeMutableRawPointer(qb + 8 * k).storeBytes(of: _mm256_permutevar8x32_epi32(packed, order), as: __m256i.self)
            if blockSize == 256 {
                let g0 = horizontalSum(_mm256_add_epi32(i0, i1))
                let g1 = horizontalSum(_mm256_add_epi32(i2, i3))
                bsums[bi * 16 + k / 2] = Int16(truncatingIfNeeded: g0)
                bsums[bi * 16 + k / 2 + 1] = Int16(truncatingIfNeeded: g1)
            } else {
                total = _mm256_add_epi32(total, _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3)))
                if offsetSlots != 0 {
                    // hadd twice gives the 4-element sums as [L0 L2 L4 L6 | L1 L3 L5 L7]
                    let sums = _mm256_hadd_epi32(_mm256_hadd_epi32(i0, i1), _mm256_hadd_epi32(i2, i3))
                    let negated = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_permutevar8x32_epi32(sums, order))
                    let out = UnsafeMutableRawPointer(offsetSums + 8 * bi), stride = 4 * offsetStride
                    if offsetSlots & 1 != 0 { out.storeBytes(of: _mm256_slli_epi32(negated, 3), as: __m256i.self) }
                    if offsetSlots & 2 != 0 {
                        out.storeBytes(of: _mm256_slli_epi32(negated, 4), toByteOffset: stride, as: __m256i.self)
                    }
                    if offsetSlots & 4 != 0 {
                        out.storeBytes(of: _mm256_slli_epi32(negated, 7), toByteOffset: 2 * stride, as: __m256i.self)
                    }
                }
            }
        }
        if blockSize != 256 {
            // As GGUF's Q8_0/Q8_1 blocks (and llama.cpp), the scale and the block sum are
            // stored in half precision; Q8_K keeps a float scale.
            d[bi] = Float(Float16(scale))
            ds[2 * bi] = d[bi]
            ds[2 * bi + 1] = Float(Float16(scale * Float(horizontalSum(total))))
        } else {
            // as llama.cpp's quantize_row_q8_K: d = 1/iscale (not max/127)
            d[bi] = m > 1e-30 ? 1 / (127 / m) : 0
        }
#else
        let n8 = blockSize / 8
        var amax = SIMD8<Float>()
        for k in 0..<n8 {
            let v = raw.loadUnaligned(fromByteOffset: 32 * k, as: SIMD8<Float>.self)
            amax = pointwiseMax(amax, pointwiseMax(v, -v))
        }
        let m = amax.max()
        let scale = m / 127
        let inv: Float = m > 1e-30 ? 127 / m : 0
        var total = SIMD8<Int32>()
        for k in 0..<n8 {
            let v = raw.loadUnaligned(fromByteOffset: 32 * k, as: SIMD8<Float>.self) * inv
            var iv = SIMD8<Int32>(v.rounded(.toNearestOrEven))
            iv = pointwiseMin(pointwiseMax(iv, SIMD8(repeating: -127)), SIMD8(repeating: 127))
            UnsafeMutableRawPointer(qb + 8 * k).storeBytes(of: SIMD8<Int8>(truncatingIfNeeded: iv), as: SIMD8<Int8>.self)
            total &+= iv
            if blockSize == 32 {
                for (o, offset) in Self.offsets.enumerated() where offsetSlots & (1 << o) != 0 {
                    offsetSums[o * offsetStride + 8 * bi + 2 * k] = 0 &- offset &* (iv[0] &+ iv[1] &+ iv[2] &+ iv[3])
                    offsetSums[o * offsetStride + 8 * bi + 2 * k + 1] = 0 &- offset &* (iv[4] &+ iv[5] &+ iv[6] &+ iv[7])
                }
            }
            if blockSize == 256 && k & 1 == 1 {
                bsums[bi * 16 + k / 2] = Int16(truncatingIfNeeded: total.wrappedSum())
                total = SIMD8<Int32>()
            }
        }
        if blockSize != 256 {
            d[bi] = Float(Float16(scale))
            ds[2 * bi] = d[bi]
            ds[2 * bi + 1] = Float(Float16(scale * Float(total.wrappedSum())))
        } else {
            d[bi] = m > 1e-30 ? 1 / (127 / m) : 0
        }
#endif
    }
}
