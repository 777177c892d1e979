#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import KernelsAVX512

/// Run-time hook of `computeRows`: when the CPU has AVX-512 VNNI (see `CPUDispatch`) and the
/// type has an AVX-512 kernel, computes the rows there (bitwise the same results) and returns true.
@inline(__always)
func avx512Rows(_ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int, _ rows: Range<Int>,
                _ y: UnsafeMutablePointer<Float>) -> Bool {
    guard CPUDispatch.useAVX512(w.type, tokens: tokens) else { return false }
    let a = AVX512Activations(q: act.q, d: act.d, ds: act.ds, bsums: act.bsums, columns: act.columns)
    return avx512QuantRows(w.type, data: w.data, rows: w.rows, rowBytes: w.rowBytes, columns: w.columns,
                           act: a, tokens: tokens, range: rows, y: y)
}
#else
@inline(__always)
func avx512Rows(_ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int, _ rows: Range<Int>,
                _ y: UnsafeMutablePointer<Float>) -> Bool { false }
#endif
