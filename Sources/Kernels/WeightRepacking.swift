import Foundation
import GGUF
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import KernelsAVX512
#endif

/// Load-time repacking of weight matrices into the layout the CPU's fastest kernel reads.
///
/// On AVX-512 machines the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) are repacked
/// into 16-row tiles (`WeightMatrix.Layout.rowTiles16`): the tile kernel keeps 16 rows in
/// vector lanes, and in the GGUF layout each use had to decode and transpose the rows first,
/// which at a decode step of 16 sequences cost more than the dot products themselves.
/// The copy is the same size as the tensor and replaces it in memory (the file's pages are
/// dropped after the copy), but it is anonymous memory rather than the zero-copy mapping:
/// `--mem-budget` (weights paged from the file on demand) turns repacking off.
public enum WeightRepacking {
    /// Whether models loaded in this task repack their matrices (see `LoadedModel`). On unless
    /// `SWIFTLET_REPACK=0` (or false/off/no). Repacking pays where decoding the rows was the
    /// cost: batched decode steps (many sequences) and generation on one thread; generation on
    /// all threads is bound by memory bandwidth either way.
    @TaskLocal public static var enabled: Bool =
        !["0", "false", "off", "no"].contains(ProcessInfo.processInfo.environment["SWIFTLET_REPACK"]?.lowercased() ?? "")
}

/// The order in which a quantized matrix product's terms are added. The integer products inside
/// a 32-element block are exact in each; what differs is where they become floats, and so the
/// last bits of every output (the fidelity policy in the README bounds the difference).
public enum ProductSummation: String, Sendable, CaseIterable {
    /// `ggml_vec_dot_*`'s, for every type: a block's 8 four-element integer sums each converted
    /// and added to its own float chain, the 8 chains summed at the end (`hsum_float_8`). What
    /// matrices in GGUF layout take.
    case vecDot = "vec_dot"
    /// llama.cpp's, as its x86 build (AVX2 and up) computes the type: bitwise its results.
    /// Q4_1, Q5_0, Q5_1 and Q8_0 as `vecDot`. Q4_0 and IQ4_NL matrices whose rows are a multiple
    /// of 8 llama.cpp repacks at load and multiplies a block total at a time
    /// (`gemv/gemm_q4_b32_8x8_q8_0_lut_avx`: fma(Float(the block's integer dot), d·d_x, acc)),
    /// as `blockTotals` does.
    case llamaCpp = "llama.cpp"
    /// A block's integer products summed exactly first, then one conversion and one FMA per
    /// block: a third of the float work. The AVX-512 tile kernels' default.
    case blockTotals = "block"

    /// What matrices tiled in this task use (`WeightMatrix.withRowTiles`): `SWIFTLET_SUMS`
    /// (`llama.cpp`, `block` or `vec_dot`), `blockTotals` when unset. Matrices in GGUF layout
    /// (AVX2 kernels, `--mem-budget`, `SWIFTLET_REPACK=0`) always take `vecDot`.
    @TaskLocal public static var forTiles: ProductSummation =
        ProcessInfo.processInfo.environment["SWIFTLET_SUMS"].flatMap { ProductSummation(rawValue: $0.lowercased()) }
            ?? .blockTotals

    /// Whether a tiled `type` matrix of `rows` rows adds block totals in this order.
    public func addsBlockTotals(_ type: TensorType, rows: Int) -> Bool {
        switch self {
        case .vecDot: false
        // llama.cpp's repacking condition (`ggml_repack_get_optimal_repack_type`: ne[1] % 8 == 0)
        case .llamaCpp: (type == .q4_0 || type == .iq4_NL) && rows % 8 == 0
        case .blockTotals: true
        }
    }
}

final class TileStorage {
    let pointer: UnsafeMutableRawPointer
    init(bytes: Int) { pointer = .allocate(byteCount: max(bytes, 64), alignment: 64) }
    deinit { pointer.deallocate() }
}

extension WeightMatrix {
    /// This matrix in 16-row tiles, or nil when the AVX-512 kernels are not in use, the type
    /// has no tile layout, or the rows are not a multiple of 16 (or it is tiled already).
    /// `consumed` is told each stretch of the source bytes once it has been copied.
    public func withRowTiles(summation: ProductSummation = ProductSummation.forTiles,
                             consumed: (UnsafeRawBufferPointer) -> Void = { _ in }) -> WeightMatrix? {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        guard layout == .rows, CPUDispatch.current == .avx512, rows % 16 == 0, rows > 0,
              let groupBytes = rowTileGroupBytes(type, columns: columns) else { return nil }
        let storage = TileStorage(bytes: rows / 16 * groupBytes)
        // in stretches of ~4 MB, so the source pages can go while the copy grows
        let step = max(16, (4 << 20) / max(rowBytes, 1) / 16 * 16)
        for r0 in stride(from: 0, to: rows, by: step) {
            let n = min(step, rows - r0)
            guard packRowTiles(type, source: data + r0 * rowBytes, rows: n, columns: columns,
                               destination: storage.pointer + r0 / 16 * groupBytes) else { return nil }
            consumed(UnsafeRawBufferPointer(start: data + r0 * rowBytes, count: n * rowBytes))
        }
        return WeightMatrix(tiledFrom: self, data: storage.pointer, groupBytes: groupBytes, summation: summation,
                            owner: storage)
#else
        return nil
#endif
    }

    /// The matrix as `Linear` layers hold it: tiled when `WeightRepacking.enabled` and
    /// `withRowTiles()` applies, with each copied stretch of the source passed to `dropSource`
    /// (which drops the file's pages, so peak memory stays that of one copy); else unchanged.
    public func repackedForCPU(dropSource: (UnsafeRawBufferPointer) -> Void) -> WeightMatrix {
        guard WeightRepacking.enabled else { return self }
        return withRowTiles(consumed: dropSource) ?? self
    }

    /// Row r as floats, in either layout.
    public func dequantize(row r: Int, into output: UnsafeMutablePointer<Float>) {
        guard case .rowTiles16 = layout else {
            dequantizeRow(type, row(r), into: output, count: columns)
            return
        }
        withUnsafeTemporaryAllocation(byteCount: rowBytes, alignment: 64) { buffer in
            unpackTiledRows(self, r..<r + 1, into: buffer.baseAddress!)
            dequantizeRow(type, UnsafeRawPointer(buffer.baseAddress!), into: output, count: columns)
        }
    }
}
