// Prompt batches of the grid i-quants (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): `Kernels`
// unpacks each row tile once through its grid tables (`decodedSuperRows`: per chunk 32 signed
// bytes and 16 multipliers, per block d), and the products here take two chunks per 512-bit
// step with `SuperKernel.dot`'s signed-weight path (|w| times x with w's sign, vpmaddubsw, then
// vpdpwssd with the multipliers): the same exact Int32 lanes as the AVX2 kernel's vpsignb,
// vpmaddubsw and vpmaddwd, then the same float steps (`SuperStyle.lanes`, no correction).
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import _Builtin_intrinsics.intel

/// The grid i-quants' arithmetic (`Kernels.SignedGridKernel`): signed weights, per block
/// fma(d·d_x, lanes, acc), and hsum(acc) plus a correction that is always 0.
private enum SignedGridArithmetic: SuperArithmetic {
    static var signedWeights: Bool { true }
    @inline(__always) static func correction(_ h: KHeader, dx: Float, bsums: UnsafePointer<Int16>) -> Float { 0 }
}

/// `rows` unpacked rows of `blocks` 256-element blocks for all `tokens`: row i's chunk c of
/// block b is the 32 bytes at `chunks + (i·blocks + b)·256 + 32c` (signed, every grid value
/// nonzero, so 0 - x is exactly vpsignb's x with w's sign), its multipliers the 16 Int16 at
/// the same offset in `multipliers`, its block scale `blockScales[i·blocks + b]`. Row i of
/// token t goes to `y[t·outputStride + i]`.
@inline(never)
public func avx512UnpackedSignedRows(chunks: UnsafeRawPointer, multipliers: UnsafeRawPointer,
                                     blockScales: UnsafePointer<Float>, rows: Int, blocks nb: Int,
                                     act: AVX512Activations, tokens: Int, y: UnsafeMutablePointer<Float>,
                                     outputStride: Int) {
    SuperKernel<SignedGridArithmetic>.tileDot(superConsts(scalesPerChunk: 1), nb, act, tokens, rows: rows, y,
                                              outputStride) { r, b in
        KHeader(d: blockScales[r * nb + b], dmin: 0, scales: _mm512_setzero_si512(), mins: _mm256_setzero_si256())
    } pair: { r, b, cp, _ in
        let offset = (r * nb + b) * 256 + cp * 64
        return (_mm512_loadu_si512(chunks + offset), _mm512_loadu_si512(multipliers + offset))
    }
}
#endif
