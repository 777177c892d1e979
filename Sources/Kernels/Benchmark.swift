import Foundation
import GGUF

/// Times matrix-vector products at the shapes of the supported models for every weight type
/// and reports weight bytes streamed per second, single- and multi-threaded, next to a
/// memcpy baseline. Returns a markdown report. Meant for release builds
/// (`swiftlet bench --kernels`); takes ~1–2 minutes.
///
/// - Parameters:
///   - threads: threads of the multi-threaded runs (default: all active processors).
///   - types: weight types to time (default: all supported).
///   - minSeconds: minimum measuring time per cell.
public func runKernelBenchmark(threads: Int? = nil, types: [TensorType] = supportedWeightTypes,
                               minSeconds: Double = 0.15) -> String {
    let multi = ThreadPool(threads: threads)
    let single = ThreadPool(threads: 1)
    // (input columns × output rows), as in SmolLM2-135M and Gemma-3-270M
    let shapes: [(columns: Int, rows: Int)] = [(576, 1536), (1536, 576), (640, 2048), (2048, 640), (640, 262_144)]
    var out = "# Swiftlet kernel benchmark\n\n"
    out += "matvec (1 token), GB/s of weight bytes (best of repeated runs); 1 thread / \(multi.threadCount) threads. "
    out += "Shapes are input columns × output rows; all but the last fit in L2/L3, so they can "
    out += "exceed DRAM bandwidth. – : not a whole number of blocks per row.\n\n"

    let copy1 = memcpyBandwidth(pool: single, seconds: minSeconds)
    let copyN = memcpyBandwidth(pool: multi, seconds: minSeconds)
    out += String(format: "memcpy baseline (256 MiB, read+write bytes): %.1f GB/s / %.1f GB/s\n\n", copy1, copyN)

    out += String(format: "thread pool: %.2f µs per empty parallelFor(%d) (%d threads)\n\n",
                  poolOverheadMicroseconds(multi), multi.threadCount, multi.threadCount)

    out += "| type |" + shapes.map { " \($0.columns)×\($0.rows) |" }.joined() + "\n"
    out += "|---|" + shapes.map { _ in "---|" }.joined() + "\n"
    for type in types {
        var line = "| \(type) |"
        for shape in shapes {
            // rows must be whole blocks: K-quants (256) cannot have 576 or 640 columns
            guard shape.columns % type.blockSize == 0 else { line += " – |"; continue }
            let m = BenchMatrix(type: type, rows: shape.rows, columns: shape.columns)
            let g1 = m.gigabytesPerSecond(tokens: 1, pool: single, seconds: minSeconds)
            let gN = m.gigabytesPerSecond(tokens: 1, pool: multi, seconds: minSeconds)
            line += String(format: " %.1f / %.1f |", g1, gN)
            m.free()
        }
        out += line + "\n"
    }

    // whole-model sweeps: every matmul of one token (or of a 64-token prompt chunk)
    out += "\nall matmuls of one forward pass, with the models' layer counts, shapes and types "
    out += "(random weights; excludes attention, norms, etc.); 1 / \(multi.threadCount) threads\n\n"
    out += "| model | weights MB | decode ms/token | decode tokens/s | decode, fused QKV & gate/up, ms/token | prefill (64) tokens/s |\n"
    out += "|---|---|---|---|---|---|\n"
    for model in benchModels {
        let groups = model.layers.flatMap { _ in
            model.perLayer.map { $0.map { BenchMatrix(type: $0.type, rows: $0.rows, columns: $0.columns) } }
        } + [[BenchMatrix(type: model.head.type, rows: model.head.rows, columns: model.head.columns)]]
        let mb = Double(groups.joined().reduce(0) { $0 + $1.bytes }) / 1e6
        let d1 = sweepSeconds(groups, fused: false, tokens: 1, pool: single, seconds: minSeconds)
        let dN = sweepSeconds(groups, fused: false, tokens: 1, pool: multi, seconds: minSeconds)
        let f1 = sweepSeconds(groups, fused: true, tokens: 1, pool: single, seconds: minSeconds)
        let fN = sweepSeconds(groups, fused: true, tokens: 1, pool: multi, seconds: minSeconds)
        // prefill: the head only runs for the last token
        let body = Array(groups.dropLast())
        let p1 = sweepSeconds(body, fused: true, tokens: 64, pool: single, seconds: minSeconds)
        let pN = sweepSeconds(body, fused: true, tokens: 64, pool: multi, seconds: minSeconds)
        out += String(format: "| %@ | %.0f | %.2f / %.2f | %.0f / %.0f | %.2f / %.2f | %.0f / %.0f |\n", model.name, mb,
                      d1 * 1e3, dN * 1e3, 1 / d1, 1 / dN, f1 * 1e3, fN * 1e3, 64 / p1, 64 / pN)
        groups.joined().forEach { $0.free() }
    }

    // prompt processing: many tokens per call, compute-bound
    let prefillTokens = 64
    let prefillShapes = Array(shapes.prefix(4))
    out += "\nprefill (\(prefillTokens) tokens per call), GMAC/s (multiply-adds per second); 1 thread / \(multi.threadCount) threads\n\n"
    out += "| type |" + prefillShapes.map { " \($0.columns)×\($0.rows) |" }.joined() + "\n"
    out += "|---|" + prefillShapes.map { _ in "---|" }.joined() + "\n"
    for type in types {
        var line = "| \(type) |"
        for shape in prefillShapes {
            // rows must be whole blocks: K-quants (256) cannot have 576 or 640 columns
            guard shape.columns % type.blockSize == 0 else { line += " – |"; continue }
            let m = BenchMatrix(type: type, rows: shape.rows, columns: shape.columns)
            let macs = Double(shape.rows * shape.columns * prefillTokens) / 1e9
            let bytes = Double(m.bytes) / 1e9
            let g1 = m.gigabytesPerSecond(tokens: prefillTokens, pool: single, seconds: minSeconds) / bytes * macs
            let gN = m.gigabytesPerSecond(tokens: prefillTokens, pool: multi, seconds: minSeconds) / bytes * macs
            line += String(format: " %.1f / %.1f |", g1, gN)
            m.free()
        }
        out += line + "\n"
    }
    let step1 = blockStepGMACs(pool: single, seconds: minSeconds), stepN = blockStepGMACs(pool: multi, seconds: minSeconds)
    let int1 = blockStepGMACs(pool: single, seconds: minSeconds, floatStep: false)
    let intN = blockStepGMACs(pool: multi, seconds: minSeconds, floatStep: false)
    out += "\nthe block steps alone, on L1-resident operands (8 independent chains, no tiles, no memory "
    out += "traffic): the arithmetic ceiling of the prefill rows above. 32-element formats (llama.cpp's "
    out += "per-lane form: integer dot, conversion, FMA per block): "
    out += String(format: "%.1f / %.1f GMAC/s; K-quants (integer dot into integer lanes): %.1f / %.1f GMAC/s\n\n",
                  step1, stepN, int1, intN)
    out += "| model | prefill MMAC per token (matmuls) | prefill tokens/s if every product ran at its block step's rate |\n"
    out += "|---|---|---|\n"
    for model in benchModels {
        let shapes = model.layers.flatMap { _ in model.perLayer.joined() }
        let macs = shapes.reduce(0.0) { $0 + Double($1.rows * $1.columns) }
        let seconds = shapes.reduce(0.0) {
            $0 + Double($1.rows * $1.columns) / 1e9 / ($1.type.blockSize == 32 ? stepN : intN)
        }
        out += String(format: "| %@ | %.1f | %.0f (%d threads) |\n", model.name, macs / 1e6, 1 / seconds,
                      multi.threadCount)
    }
    return out
}

/// Multiply-adds per second of the kernels' block step with nothing else: `dotU8I8` on 32
/// weight and activation bytes, then (`floatStep`) llama.cpp's per-lane conversion and FMA, or
/// (K-quants, whose float step comes once per 256 elements) an integer accumulate. Eight chains
/// over L1-resident operands, so that neither latency nor memory limits it: no prompt kernel
/// can beat it, and `swiftlet bench` results can be read against it.
func blockStepGMACs(pool: ThreadPool, seconds: Double, floatStep: Bool = true) -> Double {
    let threads = pool.threadCount
    let operandBytes = 64 * 32
    let operands = UnsafeMutableRawPointer.allocate(byteCount: threads * operandBytes, alignment: 64)
    let sink = UnsafeMutablePointer<Float>.allocate(capacity: threads * 16)
    defer { operands.deallocate(); sink.deallocate() }
    for i in 0..<threads * operandBytes { operands.storeBytes(of: UInt8(truncatingIfNeeded: i &* 37 &+ 11) & 0x7F, toByteOffset: i, as: UInt8.self) }
    nonisolated(unsafe) let ops = operands, out = sink
    let steps = 1 << 18
    func run() -> Double {
        let t0 = monotonicNanos()
        pool.parallelFor(threads) { t in
            let base = UnsafeRawPointer(ops + t * operandBytes)
            let w = base.load(as: SIMD32<UInt8>.self), ones = splat16(1)
            var f0 = SIMD8<Float>(), f1 = f0, f2 = f0, f3 = f0, f4 = f0, f5 = f0, f6 = f0, f7 = f0
            var i0 = SIMD8<Int32>(), i1 = i0, i2 = i0, i3 = i0, i4 = i0, i5 = i0, i6 = i0, i7 = i0
            let scale = SIMD8<Float>(repeating: 1e-9)
            for s in 0..<steps {
                // a different activation set per step, so the products cannot be hoisted
                let x = base + 256 * (s & 7)
                @inline(__always) func step(_ j: Int, _ f: inout SIMD8<Float>, _ i: inout SIMD8<Int32>) {
                    let lanes = dotU8I8(w, x.load(fromByteOffset: 32 * j, as: SIMD32<Int8>.self), ones)
                    if floatStep { f = f.addingProduct(scale, floats(lanes)) } else { i &+= lanes }
                }
                step(0, &f0, &i0); step(1, &f1, &i1); step(2, &f2, &i2); step(3, &f3, &i3)
                step(4, &f4, &i4); step(5, &f5, &i5); step(6, &f6, &i6); step(7, &f7, &i7)
            }
            let f = ((f0 + f1) + (f2 + f3)) + ((f4 + f5) + (f6 + f7))
            let i = ((i0 &+ i1) &+ (i2 &+ i3)) &+ ((i4 &+ i5) &+ (i6 &+ i7))
            out[16 * t] = f.sum() + Float(i.wrappedSum())
        }
        return Double(monotonicNanos() - t0) * 1e-9
    }
    _ = run()
    var best = Double.infinity, total = 0.0, runs = 0
    while total < seconds || runs < 3 {
        let dt = run()
        best = min(best, dt)
        total += dt
        runs += 1
    }
    return Double(threads * steps * 8 * 32) / best / 1e9
}

struct BenchShape {
    let type: TensorType
    let rows: Int
    let columns: Int
    init(_ type: TensorType, _ columns: Int, _ rows: Int) { self.type = type; self.rows = rows; self.columns = columns }
}

struct BenchModel {
    let name: String
    let layers: Range<Int>
    /// Matrices of one layer, grouped by shared input (QKV; output; gate & up; down).
    let perLayer: [[BenchShape]]
    let head: BenchShape
}

/// Matmul shapes and types of the real model files (GGUF tensor shapes are columns × rows).
let benchModels: [BenchModel] = [
    BenchModel(name: "SmolLM2-135M Q4_1", layers: 0..<30, perLayer: [
        [BenchShape(.q4_1, 576, 576), BenchShape(.q4_1, 576, 192), BenchShape(.q4_1, 576, 192)],
        [BenchShape(.q4_1, 576, 576)],
        [BenchShape(.q4_1, 576, 1536), BenchShape(.q4_1, 576, 1536)],
        [BenchShape(.q4_1, 1536, 576)],
    ], head: BenchShape(.q8_0, 576, 49152)),
    BenchModel(name: "Gemma-3-270M Q4_K_M", layers: 0..<18, perLayer: [
        [BenchShape(.q5_0, 640, 1024), BenchShape(.q5_0, 640, 256), BenchShape(.q8_0, 640, 256)],
        [BenchShape(.q4_K, 1024, 640)],
        [BenchShape(.q5_0, 640, 2048), BenchShape(.q5_0, 640, 2048)],
        [BenchShape(.q6_K, 2048, 640)],
    ], head: BenchShape(.q8_0, 640, 262_144)),
]

/// Best time of running every matrix once, in order, with `tokens` inputs; `fused`: one
/// multi-matrix `matmul` per group instead of one call per matrix.
func sweepSeconds(_ groups: [[BenchMatrix]], fused: Bool, tokens: Int, pool: ThreadPool, seconds: Double) -> Double {
    let all = groups.joined()
    let maxColumns = all.map(\.columns).max() ?? 0, maxRows = all.map(\.rows).max() ?? 0
    let x = UnsafeMutablePointer<Float>.allocate(capacity: tokens * maxColumns)
    let ys = (0..<4).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: tokens * maxRows) }
    defer { x.deallocate(); ys.forEach { $0.deallocate() } }
    for i in 0..<tokens * maxColumns { x[i] = Float(i % 13) * 0.1 - 0.6 }
    let weights = groups.map { $0.map { WeightMatrix(type: $0.type, data: $0.data, rows: $0.rows, columns: $0.columns) } }
    func once() {
        for g in weights {
            if fused {
                matmul(g, input: x, tokens: tokens, outputs: Array(ys.prefix(g.count)), pool: pool)
            } else {
                for (i, w) in g.enumerated() { matmul(w, input: x, tokens: tokens, output: ys[i], pool: pool) }
            }
        }
    }
    once()
    var best = Double.infinity, total = 0.0, runs = 0
    while total < seconds || runs < 3 {
        let t0 = monotonicNanos()
        once()
        let dt = Double(monotonicNanos() - t0) * 1e-9
        best = min(best, dt)
        total += dt
        runs += 1
    }
    return best
}

/// Random but valid weights of one type (finite f16 scales), plus an input.
struct BenchMatrix {
    let type: TensorType
    let rows: Int
    let columns: Int
    let bytes: Int
    let data: UnsafeMutableRawPointer

    init(type: TensorType, rows: Int, columns: Int) {
        self.type = type
        self.rows = rows
        self.columns = columns
        bytes = type.byteCount(elements: rows * columns)!
        data = .allocate(byteCount: bytes, alignment: 64)
        var state: UInt64 = 0x1234_5678_9ABC_DEF1 ^ UInt64(type.rawValue)
        let words = data.bindMemory(to: UInt64.self, capacity: bytes / 8)
        for i in 0..<bytes / 8 {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            words[i] = state
        }
        let raw = data
        func setF16(_ offset: Int, _ v: Float) { raw.storeBytes(of: Float16(v).bitPattern, toByteOffset: offset, as: UInt16.self) }
        switch type {
        case .f32:
            let f = data.bindMemory(to: Float.self, capacity: rows * columns)
            for i in 0..<rows * columns { f[i] = Float(Int32(truncatingIfNeeded: words[i / 2] >> 32)) * 1e-10 }
        // Scales and values of a real model's size: random exponents give subnormal products,
        // which cost a microcode assist per FMA on x86 and measure that instead of the kernel.
        case .f16:
            let h = data.bindMemory(to: UInt16.self, capacity: rows * columns)
            for i in 0..<rows * columns { h[i] &= 0xBEFF } // exponent ≤ 15: |w| < 2, subnormals at least 2^-24
        case .bf16:
            let h = data.bindMemory(to: UInt16.self, capacity: rows * columns)
            for i in 0..<rows * columns { h[i] = h[i] & 0x80FF | 0x3C00 } // exponent 120 or 121: |w| ≈ 0.01
        default:
            let fields: [Int]
            switch type {
            case .q4_0, .q5_0, .q8_0, .iq4_NL, .iq4_XS, .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S: fields = [0]
            case .q4_1, .q5_1, .q4_K, .q5_K: fields = [0, 2]
            case .q2_K: fields = [80, 82]
            case .q3_K: fields = [108]
            case .q6_K: fields = [208]
            case .tq1_0: fields = [52]
            case .tq2_0: fields = [64]
            default: fields = []
            }
            for b in 0..<bytes / type.blockBytes {
                let block = b * type.blockBytes
                for f in fields { setF16(block + f, 0.01) }
                switch type {
                case .mxfp4:
                    raw.storeBytes(of: UInt8(121), toByteOffset: block, as: UInt8.self)  // 2^-6 (halved: 2^-7)
                case .iq1_M:
                    // d = 0.01 as f16, its four nibbles in the top 4 bits of the four 16-bit scales
                    let d = Float16(0.01).bitPattern
                    for k in 0..<4 {
                        let offset = block + 48 + 2 * k
                        let scales = raw.load(fromByteOffset: offset, as: UInt16.self) & 0x0FFF
                        raw.storeBytes(of: scales | (d >> UInt16(4 * k) & 0xF) << 12, toByteOffset: offset, as: UInt16.self)
                    }
                default: break
                }
            }
        }
    }

    func free() { data.deallocate() }

    /// Weight bytes per second of `matmul` with `tokens` input rows, in GB/s.
    func gigabytesPerSecond(tokens: Int, pool: ThreadPool, seconds: Double) -> Double {
        let w = WeightMatrix(type: type, data: data, rows: rows, columns: columns)
        let x = UnsafeMutablePointer<Float>.allocate(capacity: tokens * columns)
        let y = UnsafeMutablePointer<Float>.allocate(capacity: tokens * rows)
        defer { x.deallocate(); y.deallocate() }
        for i in 0..<tokens * columns { x[i] = Float(i % 17) * 0.1 - 0.8 }
        matmul(w, input: x, tokens: tokens, output: y, pool: pool) // warm-up
        var best = Double.infinity
        var total = 0.0
        var runs = 0
        while total < seconds || runs < 3 {
            let t0 = monotonicNanos()
            matmul(w, input: x, tokens: tokens, output: y, pool: pool)
            let dt = Double(monotonicNanos() - t0) * 1e-9
            best = min(best, dt)
            total += dt
            runs += 1
        }
        // best run: other processes on a shared machine only ever make runs slower
        return Double(bytes) / best / 1e9
    }
}

/// Read bandwidth of a 256 MiB buffer (larger than any cache), summed in parallel parts as a
/// decode step reads its weights, in GB/s: the best of repeated runs for at least `seconds`.
public func readBandwidth(pool: ThreadPool, seconds: Double = 0.5) -> Double {
    let n = 256 << 20
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
    defer { buffer.deallocate() }
    memset(buffer, 1, n)
    nonisolated(unsafe) let base = buffer
    let parts = pool.threadCount
    let sums = UnsafeMutablePointer<UInt32>.allocate(capacity: parts)
    defer { sums.deallocate() }
    nonisolated(unsafe) let out = sums
    var best = Double.infinity, total = 0.0, runs = 0
    while total < seconds || runs < 3 {
        let t0 = monotonicNanos()
        pool.parallelFor(parts) { i in
            // whole 256-byte steps per part: n and parts' boundaries are multiples of 256
            let lo = n / parts * i / 256 * 256, hi = i == parts - 1 ? n : n / parts * (i + 1) / 256 * 256
            let vectors = (base + lo).assumingMemoryBound(to: SIMD16<UInt32>.self)
            var a = SIMD16<UInt32>(), b = a, c = a, d = a
            for j in stride(from: 0, to: (hi - lo) / 64, by: 4) {
                a &+= vectors[j]; b &+= vectors[j + 1]; c &+= vectors[j + 2]; d &+= vectors[j + 3]
            }
            out[i] = (a &+ b &+ c &+ d).wrappedSum()  // stored, so the reads cannot be optimized away
        }
        let dt = Double(monotonicNanos() - t0) * 1e-9
        best = min(best, dt)
        total += dt
        runs += 1
    }
    return Double(n) / best / 1e9
}

/// Copy bandwidth of a 256 MiB buffer (counting bytes read plus bytes written), in GB/s.
func memcpyBandwidth(pool: ThreadPool, seconds: Double) -> Double {
    let n = 256 << 20
    let src = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
    let dst = UnsafeMutableRawPointer.allocate(byteCount: n, alignment: 64)
    defer { src.deallocate(); dst.deallocate() }
    memset(src, 1, n)
    memset(dst, 2, n)
    nonisolated(unsafe) let s = src, d = dst
    let parts = pool.threadCount
    var best = Double.infinity
    var total = 0.0
    var runs = 0
    while total < seconds || runs < 3 {
        let t0 = monotonicNanos()
        pool.parallelFor(parts) { i in
            let lo = n / parts * i, hi = i == parts - 1 ? n : n / parts * (i + 1)
            memcpy(d + lo, s + lo, hi - lo)
        }
        let dt = Double(monotonicNanos() - t0) * 1e-9
        best = min(best, dt)
        total += dt
        runs += 1
    }
    return 2 * Double(n) / best / 1e9
}

/// Average wall time of an empty `parallelFor(threadCount)` call, back to back.
func poolOverheadMicroseconds(_ pool: ThreadPool) -> Double {
    let n = pool.threadCount
    for _ in 0..<1000 { pool.parallelFor(n) { _ in } }
    let calls = 20_000
    let t0 = monotonicNanos()
    for _ in 0..<calls { pool.parallelFor(n) { _ in } }
    return Double(monotonicNanos() - t0) / Double(calls) / 1e3
}
