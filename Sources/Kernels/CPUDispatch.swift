import GGUF
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
import KernelsAVX512
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Which x86-64 kernel family the quantized matmul uses.
public enum KernelISA: String, Sendable, CaseIterable {
    /// Haswell baseline (AVX2 + FMA + F16C): the `Kernels` target itself; also the only
    /// choice on non-x86 hosts, where it means "the portable/NEON kernels".
    case avx2
    /// The `KernelsAVX512` target: 512-bit vectors and VNNI (`vpdpbusd`/`vpdpwssd`).
    case avx512
}

/// Run-time choice of the kernel family, made once at startup.
/// (This file is compiled for the Haswell baseline like the rest of `Kernels`: the detection
/// must run on any x86-64 machine, so it cannot live in `KernelsAVX512`.)
///
/// `KernelsAVX512` is compiled with `-target-cpu icelake-server`, so the compiler may emit
/// any instruction of that CPU in it (not only the intrinsics we call): it is used only when
/// the CPU reports every one of `requiredFlags` (Ice Lake server, Sapphire Rapids and later,
/// AMD Zen 4 and later). Linux reads the kernel's `/proc/cpuinfo` flags, which already
/// exclude features the OS does not enable (AVX-512 state in XSAVE); other systems use AVX2.
///
/// `SWIFTLET_CPU=avx2` forces the AVX2 kernels; `SWIFTLET_CPU=avx512` asks for AVX-512 but
/// still falls back to AVX2 when the CPU lacks a required feature.
public enum CPUDispatch {
    /// `/proc/cpuinfo` names of the features `-target-cpu icelake-server` lets the compiler use
    /// (beyond the Haswell baseline the rest of the package already requires).
    public static let requiredFlags: Set<String> = [
        "avx2", "fma", "f16c", "bmi1", "bmi2", "movbe", "popcnt",
        "avx512f", "avx512dq", "avx512cd", "avx512bw", "avx512vl",
        "avx512_vnni", "avx512vbmi", "avx512_vbmi2", "avx512_bitalg", "avx512_vpopcntdq", "avx512ifma",
        "gfni", "vaes", "vpclmulqdq",
    ]

    /// The flags of the first processor in a `/proc/cpuinfo` text.
    public static func flags(cpuinfo: String) -> Set<String> {
        for line in cpuinfo.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].trimmingWhitespace() == "flags" else { continue }
            return Set(parts[1].split(separator: " ").map(String.init))
        }
        return []
    }

    /// The kernel family for a CPU with `flags` and the value of `SWIFTLET_CPU` (nil: unset).
    public static func select(flags: Set<String>, override: String?) -> KernelISA {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        if override?.lowercased() == "avx2" { return .avx2 }
        return requiredFlags.isSubset(of: flags) ? .avx512 : .avx2
#else
        return .avx2
#endif
    }

    /// What this machine supports (ignoring `SWIFTLET_CPU`).
    public static let hardware: KernelISA = select(flags: flags(cpuinfo: readCPUInfo()), override: nil)

    /// The choice at startup: `hardware`, unless `SWIFTLET_CPU=avx2`.
    public static let detected: KernelISA = {
        let env = getenv("SWIFTLET_CPU").map { String(cString: $0) }
        return hardware == .avx512 ? select(flags: requiredFlags, override: env) : .avx2
    }()

    /// Test/benchmark override. Set it only while no matmul is running; the worker threads
    /// read it without synchronization.
    nonisolated(unsafe) static var forced: KernelISA?

    /// The family the matmul uses now.
    @inline(__always)
    public static var current: KernelISA { forced ?? detected }

    /// Whether the matmul of `type` with `tokens` tokens goes to the AVX-512 kernel: `current`
    /// is `.avx512`, the type has one, and, unless `.avx512` is forced (tests, A/B benchmarks),
    /// it is the faster kernel for this case (`avx512Pays`).
    @inline(__always)
    public static func useAVX512(_ type: TensorType, tokens: Int) -> Bool {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        if let forced { return forced == .avx512 }
        return detected == .avx512 && avx512Pays(type, tokens: tokens)
#else
        return false
#endif
    }

    /// Runs `body` with `isa` forced (tests and A/B benchmarks). Forcing `.avx512` on a CPU
    /// without it is refused (falls back to `.avx2`) rather than crashing on an illegal instruction.
    public static func with<T>(_ isa: KernelISA, _ body: () throws -> T) rethrows -> T {
        let saved = forced
        forced = isa == .avx512 && hardware != .avx512 ? .avx2 : isa
        defer { forced = saved }
        return try body()
    }

    private static func readCPUInfo() -> String {
#if os(Linux)
        guard let f = fopen("/proc/cpuinfo", "r") else { return "" }
        defer { fclose(f) }
        var text = [UInt8]()
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = fread(&buf, 1, buf.count, f)
            if n <= 0 { break }
            text += buf[0..<n]
            // the first processor's block (with its flags line) is enough
            if text.count > 1 << 16, String(decoding: text, as: UTF8.self).contains("\nflags") { break }
        }
        return String(decoding: text, as: UTF8.self)
#else
        return ""
#endif
    }
}

/// Types with an AVX-512 kernel.
public let avx512Types: Set<TensorType> = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K,
                                            .iq4_NL, .iq4_XS, .mxfp4]

/// Where the AVX-512 kernel is the faster one. For Q2_K–Q5_K a product with one token (a
/// matrix-vector product, as in decoding) gains nothing from the wider vectors and can lose a
/// little, so below 4 tokens they stay on AVX2; their prompt products gain. The other types'
/// AVX-512 kernels are faster from one token on.
@inline(__always)
public func avx512Pays(_ type: TensorType, tokens: Int) -> Bool {
    switch type {
    case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q6_K: true
    case .iq4_NL, .iq4_XS, .mxfp4, .tq1_0, .tq2_0: true
    case .q2_K, .q3_K, .q4_K, .q5_K: tokens >= 4
    // prompt batches, unpacked once (`decodedSuperRows`); fewer tokens read the grids per chunk
    case .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S: tokens > 2 * tokenTile
    default: false
    }
}

#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
/// Run-time hook of `computeRows`: when `CPUDispatch.useAVX512` picks the AVX-512 kernel for
/// this type and token count, computes the rows there (bitwise the same results) and returns true.
@inline(__always)
func avx512Rows(_ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int, _ rows: Range<Int>,
                _ y: UnsafeMutablePointer<Float>) -> Bool {
    guard CPUDispatch.useAVX512(w.type, tokens: tokens) else { return false }
    return avx512QuantRows(w.type, data: w.data, rows: w.rows, rowBytes: w.rowBytes, columns: w.columns,
                           act: act.avx512, tokens: tokens, range: rows, y: y)
}

/// `avx512Rows` for a matrix in 16-row tiles.
@inline(__always)
func avx512TiledRows(_ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int, _ rows: Range<Int>,
                     _ y: UnsafeMutablePointer<Float>) -> Bool {
    guard CPUDispatch.useAVX512(w.type, tokens: tokens) else { return false }
    return avx512TiledRows(w.type, tiles: w.data, rows: w.rows, columns: w.columns, act: act.avx512, tokens: tokens,
                           range: rows, y: y, blockTotals: w.summation.addsBlockTotals(w.type, rows: w.rows))
}

/// Run-time hook of `decodedSuperRows` for the formats whose unpacked chunks the AVX-512 kernel
/// takes (`QuantKernel.avx512UnpackedChunks`): multiplies a tile of `rows` unpacked rows there
/// when `CPUDispatch.useAVX512` picks it (bitwise the same results) and returns true.
@inline(__always)
func avx512UnpackedRows<K: QuantKernel>(_ k: K.Type, _ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int,
                                        headers: UnsafePointer<K.Header>, lanes: UnsafePointer<K.Chunk>,
                                        multipliers: UnsafePointer<SIMD16<Int16>>, rows: Int,
                                        _ y: UnsafeMutablePointer<Float>) -> Bool {
    guard K.avx512UnpackedChunks, K.Header.self == Float.self, K.Chunk.self == SIMD32<Int8>.self,
          CPUDispatch.useAVX512(w.type, tokens: tokens) else { return false }
    avx512UnpackedSignedRows(chunks: UnsafeRawPointer(lanes), multipliers: UnsafeRawPointer(multipliers),
                             blockScales: UnsafeRawPointer(headers).assumingMemoryBound(to: Float.self), rows: rows,
                             blocks: w.columns / 256, act: act.avx512, tokens: tokens, y: y, outputStride: w.rows)
    return true
}

/// GGUF bytes of rows `rows` of a tiled matrix.
func unpackTiledRows(_ w: WeightMatrix, _ rows: Range<Int>, into destination: UnsafeMutableRawPointer) {
    unpackRowTiles(w.type, tiles: w.data, columns: w.columns, range: rows, destination: destination)
}

extension QuantizedActivations {
    var avx512: AVX512Activations {
        AVX512Activations(q: q, d: d, ds: ds, bsums: bsums, offsetSums: offsetSums, offsetStride: offsetStride,
                          gemmRows: gemmRows, columns: columns)
    }
}
#else
@inline(__always)
func avx512TiledRows(_ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int, _ rows: Range<Int>,
                     _ y: UnsafeMutablePointer<Float>) -> Bool { false }

func unpackTiledRows(_ w: WeightMatrix, _ rows: Range<Int>, into destination: UnsafeMutableRawPointer) {
    fatalError("tiled weights exist only with the AVX-512 kernels")
}

@inline(__always)
func avx512Rows(_ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int, _ rows: Range<Int>,
                _ y: UnsafeMutablePointer<Float>) -> Bool { false }

@inline(__always)
func avx512UnpackedRows<K: QuantKernel>(_ k: K.Type, _ w: WeightMatrix, _ act: QuantizedActivations, _ tokens: Int,
                                        headers: UnsafePointer<K.Header>, lanes: UnsafePointer<K.Chunk>,
                                        multipliers: UnsafePointer<SIMD16<Int16>>, rows: Int,
                                        _ y: UnsafeMutablePointer<Float>) -> Bool { false }
#endif

extension Substring {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = self
        while let c = s.first, c == " " || c == "\t" { s = s.dropFirst() }
        while let c = s.last, c == " " || c == "\t" { s = s.dropLast() }
        return s
    }
}

extension CPUDispatch {
    /// Whether the attention kernels (`Kernels/Attention/`) take their 512-bit loops
    /// (`KernelsAVX512/RowAttention.swift`, `TileAttention.swift`): whenever `current` is
    /// `.avx512`. Those loops give the 256-bit loops' floats, so only the CPU decides.
    @inline(__always)
    static var avx512Attention: Bool {
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        current == .avx512
#else
        false
#endif
    }

    /// Whether the row attention kernels run grouped (several query heads of a KV group side by
    /// side): the 512-bit kernel for outputs in whole 64-lane vectors, else the 256-bit one
    /// (`rowGroupAccumulate`) for outputs in whole 32-lane vectors.
    static func groupedRowAttention(valueDimension: Int) -> Bool {
        avx512Attention ? valueDimension % 64 == 0 : valueDimension % 32 == 0
    }
}

// Run-time hooks of the attention kernels: when `CPUDispatch.avx512Attention`, each runs its
// 512-bit loop (bitwise the same results as the 256-bit one) and returns true.
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
@inline(__always)
func avx512RowGroupScoresIfEnabled(queries: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>,
                                   keyOffset: Int, positions: Range<Int>, headDimension: Int, scale: Float,
                                   scores: UnsafeMutablePointer<Float>, headStride: Int) -> Bool {
    guard CPUDispatch.avx512Attention else { return false }
    avx512RowGroupScores(queries: queries, heads: heads, keys: keys, keyOffset: keyOffset, positions: positions,
                         headDimension: headDimension, scale: scale, scores: scores, headStride: headStride)
    return true
}

@inline(__always)
func avx512RowGroupAccumulateIfEnabled(heads: Int, values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int,
                                       positions: Range<Int>, valueDimension: Int, factors: UnsafePointer<Float>,
                                       headStride: Int, inverses: UnsafePointer<Float>,
                                       into out: UnsafeMutablePointer<Float>, outStride: Int) -> Bool {
    guard CPUDispatch.avx512Attention else { return false }
    avx512RowGroupAccumulate(heads: heads, values: values, valueOffset: valueOffset, positions: positions,
                             valueDimension: valueDimension, factors: factors, headStride: headStride,
                             inverses: inverses, into: out, outStride: outStride)
    return true
}

@inline(__always)
func avx512TileScoresIfEnabled(_ q0: UnsafePointer<Float>, _ q1: UnsafePointer<Float>, _ q2: UnsafePointer<Float>,
                               _ q3: UnsafePointer<Float>, keys: UnsafePointer<Float>, tile: Int, headDimension: Int,
                               positions: Range<Int>, scale: Float, scores: UnsafeMutablePointer<Float>) -> Bool {
    guard CPUDispatch.avx512Attention else { return false }
    avx512TileScores(q0, q1, q2, q3, keys: keys, tile: tile, headDimension: headDimension, positions: positions,
                     scale: scale, scores: scores)
    return true
}

@inline(__always)
func avx512AccumulatePairIfEnabled(weights wA: UnsafePointer<Float>, _ wB: UnsafePointer<Float>,
                                   _ accA: UnsafeMutablePointer<Float>, _ accB: UnsafeMutablePointer<Float>?,
                                   values: UnsafePointer<Float>, valueDimension: Int,
                                   _ a: Range<Int>, _ b: Range<Int>) -> Bool {
    guard CPUDispatch.avx512Attention else { return false }
    avx512AccumulatePair(weights: wA, wB, accA, accB, values: values, valueDimension: valueDimension, a, b)
    return true
}
#else
@inline(__always)
func avx512RowGroupScoresIfEnabled(queries: UnsafePointer<Float>, heads: Int, keys: UnsafePointer<UnsafePointer<Float16>>,
                                   keyOffset: Int, positions: Range<Int>, headDimension: Int, scale: Float,
                                   scores: UnsafeMutablePointer<Float>, headStride: Int) -> Bool { false }

@inline(__always)
func avx512RowGroupAccumulateIfEnabled(heads: Int, values: UnsafePointer<UnsafePointer<Float16>>, valueOffset: Int,
                                       positions: Range<Int>, valueDimension: Int, factors: UnsafePointer<Float>,
                                       headStride: Int, inverses: UnsafePointer<Float>,
                                       into out: UnsafeMutablePointer<Float>, outStride: Int) -> Bool { false }

@inline(__always)
func avx512TileScoresIfEnabled(_ q0: UnsafePointer<Float>, _ q1: UnsafePointer<Float>, _ q2: UnsafePointer<Float>,
                               _ q3: UnsafePointer<Float>, keys: UnsafePointer<Float>, tile: Int, headDimension: Int,
                               positions: Range<Int>, scale: Float, scores: UnsafeMutablePointer<Float>) -> Bool { false }

@inline(__always)
func avx512AccumulatePairIfEnabled(weights wA: UnsafePointer<Float>, _ wB: UnsafePointer<Float>,
                                   _ accA: UnsafeMutablePointer<Float>, _ accB: UnsafeMutablePointer<Float>?,
                                   values: UnsafePointer<Float>, valueDimension: Int,
                                   _ a: Range<Int>, _ b: Range<Int>) -> Bool { false }
#endif
