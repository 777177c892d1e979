import Foundation
import Kernels
import Models
import Tokenization

// llama.cpp's `--kl-divergence-base` file (tools/perplexity/perplexity.cpp), little-endian:
//   "_logits_"                     8 bytes
//   n_ctx                          UInt32
//   n_vocab, n_chunk               Int32, Int32
//   tokens                         Int32 × n_ctx·n_chunk (the evaluated text, before BOS replacement)
//   per chunk, per scored position (n_ctx − 1 − n_ctx/2 of them), nv = 2·⌈n_vocab/2⌉ + 4 UInt16:
//     scale, min_log_prob          Float32, Float32 (the first 4 UInt16)
//     q[i]                         UInt16 × n_vocab (+1 padding when n_vocab is odd)
//   log p(i) = scale·q[i] + min_log_prob; log-probabilities more than 16 below the top one are
//   clamped to min_log_prob (q = 0).

/// Rows of one log-probability record: two header floats as four UInt16, then the vocabulary
/// rounded up to even.
func logProbRecordLength(vocabularySize: Int) -> Int { 2 * ((vocabularySize + 1) / 2) + 4 }

/// llama.cpp's `nearest_int`: round to nearest (ties to even) through the float mantissa.
@inline(__always)
func nearestInt(_ value: Float) -> Int32 {
    let bits = Int32(bitPattern: (value + 12582912).bitPattern)
    return (bits & 0x007f_ffff) - 0x0040_0000
}

/// One scored position's log-probabilities, quantized as llama-perplexity writes them.
func encodeLogProbs(_ logits: [Float], into record: UnsafeMutableBufferPointer<UInt16>) {
    var maxLogit = logits[0], minLogit = logits[0]
    for l in logits.dropFirst() {
        maxLogit = max(maxLogit, l)
        minLogit = min(minLogit, l)
    }
    minLogit = max(minLogit, maxLogit - 16)
    var sumExp = 0.0
    for l in logits { sumExp += Double(expf(l - maxLogit)) }
    let logSumExp = Float(log(sumExp))
    let minLogProb = minLogit - maxLogit - logSumExp
    let scale = (maxLogit - minLogit) / 65535
    let header = UnsafeMutableRawPointer(record.baseAddress!)
    header.storeBytes(of: scale.bitPattern.littleEndian, as: UInt32.self)
    header.storeBytes(of: minLogProb.bitPattern.littleEndian, toByteOffset: 4, as: UInt32.self)
    let q = record.baseAddress! + 4
    if scale != 0 {
        let inverse = 1 / scale
        for (i, l) in logits.enumerated() {
            q[i] = l > minLogit ? UInt16(truncatingIfNeeded: nearestInt(inverse * (l - minLogit)).littleEndian) : 0
        }
    } else {
        q.initialize(repeating: 0, count: logits.count)
    }
    for i in logits.count..<(record.count - 4) { q[i] = 0 }
}

/// Writes a `--kl-divergence-base` file while perplexity runs.
final class BaseLogProbsWriter {
    private let handle: FileHandle
    private let path: String
    private var record: [UInt16]
    private var buffer = Data()

    init(path: String, context: Int, vocabularySize: Int, tokens: [TokenID]) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw KLDivergenceError.cannotWrite(path: path)
        }
        self.handle = handle
        self.path = path
        record = Array(repeating: 0, count: logProbRecordLength(vocabularySize: vocabularySize))
        var header = Data("_logits_".utf8)
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { header.append(contentsOf: $0) } }
        put(UInt32(context))
        put(Int32(vocabularySize))
        put(Int32(tokens.count / context))
        for t in tokens { put(Int32(t)) }
        try write(header)
    }

    func append(logits: [Float]) throws {
        record.withUnsafeMutableBufferPointer { encodeLogProbs(logits, into: $0) }
        record.withUnsafeBytes { buffer.append(contentsOf: $0) }
        if buffer.count >= 1 << 22 { try flush() }
    }

    func close() throws {
        try flush()
        try handle.close()
    }

    private func flush() throws {
        try write(buffer)
        buffer.removeAll(keepingCapacity: true)
    }

    private func write(_ data: Data) throws {
        do { try handle.write(contentsOf: data) } catch { throw KLDivergenceError.cannotWrite(path: path) }
    }
}

/// A `--kl-divergence-base` file, checked against the model that is to be compared with it.
struct BaseLogProbsFile {
    let context: Int
    let vocabularySize: Int
    let chunks: Int
    let tokens: [TokenID]
    private let data: Data
    private let recordsStart: Int

    init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw KLDivergenceError.cannotRead(path: path) }
        self.data = data
        func int32(at offset: Int) throws -> Int32 {
            guard offset + 4 <= data.count else { throw KLDivergenceError.truncated(path: path, needed: offset + 4, size: data.count) }
            return data.withUnsafeBytes { Int32(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: Int32.self)) }
        }
        guard data.count >= 8, data.prefix(8) == Data("_logits_".utf8) else { throw KLDivergenceError.notALogitsFile(path: path) }
        let context = Int(UInt32(bitPattern: try int32(at: 8)))
        let vocabularySize = Int(try int32(at: 12))
        let chunks = Int(try int32(at: 16))
        guard context >= 4, vocabularySize > 0, chunks > 0 else {
            throw KLDivergenceError.badHeader(path: path, context: context, vocabularySize: vocabularySize, chunks: chunks)
        }
        let tokenCount = context.multipliedReportingOverflow(by: chunks)
        let record = logProbRecordLength(vocabularySize: vocabularySize) * 2
        let scored = context - 1 - context / 2
        let tokensEnd = 20 + 4 * tokenCount.partialValue
        let needed = tokensEnd + chunks * scored * record
        guard !tokenCount.overflow, needed <= Int(Int32.max) * 1024 else {
            throw KLDivergenceError.badHeader(path: path, context: context, vocabularySize: vocabularySize, chunks: chunks)
        }
        guard data.count >= needed else { throw KLDivergenceError.truncated(path: path, needed: needed, size: data.count) }
        tokens = data.withUnsafeBytes { raw in
            (0..<tokenCount.partialValue).map { TokenID(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 20 + 4 * $0, as: Int32.self))) }
        }
        if let bad = tokens.first(where: { $0 < 0 || Int($0) >= vocabularySize }) {
            throw KLDivergenceError.tokenOutOfRange(path: path, token: Int(bad), vocabularySize: vocabularySize)
        }
        self.context = context
        self.vocabularySize = vocabularySize
        self.chunks = chunks
        recordsStart = tokensEnd
    }

    /// The record of scored position `row` (0-based over all chunks).
    func withRecord<R>(_ row: Int, _ body: (UnsafeBufferPointer<UInt16>) -> R) -> R {
        let length = logProbRecordLength(vocabularySize: vocabularySize)
        return data.withUnsafeBytes { raw in
            let start = recordsStart + row * length * 2
            // the file is read as a whole, so records are not necessarily 2-byte aligned: copy
            var record = [UInt16](repeating: 0, count: length)
            record.withUnsafeMutableBytes { $0.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[start..<start + length * 2])) }
            for i in record.indices { record[i] = UInt16(littleEndian: record[i]) }
            return record.withUnsafeBufferPointer(body)
        }
    }
}

/// The sums llama.cpp keeps while comparing (`kl_divergence_result`).
struct KLDivergenceSums {
    var nll = 0.0, nll2 = 0.0
    var nllBase = 0.0, nllBase2 = 0.0, nllNllBase = 0.0
    var kld = 0.0, kld2 = 0.0
    var pDiff = 0.0, pDiff2 = 0.0, pDiff4 = 0.0
    var sameTop = 0
    var count = 0

    /// One position: this model's logits against the base record; returns (KLD, Δp). Follows
    /// llama.cpp's float/double choices so the statistics agree with llama-perplexity's.
    mutating func add(logits: [Float], base record: UnsafeBufferPointer<UInt16>, target: Int) -> (kld: Double, pDiff: Float) {
        var maxLogit = logits[0]
        var top = 0
        for i in 1..<logits.count where logits[i] > maxLogit {
            maxLogit = logits[i]
            top = i
        }
        var sumExp = 0.0
        for l in logits { sumExp += Double(expf(l - maxLogit)) }
        let logSumExp = Float(log(sumExp))
        let header = UnsafeRawPointer(record.baseAddress!)
        let scale = Float(bitPattern: UInt32(littleEndian: header.loadUnaligned(as: UInt32.self)))
        let minLogProb = Float(bitPattern: UInt32(littleEndian: header.loadUnaligned(fromByteOffset: 4, as: UInt32.self)))
        let q = record.baseAddress! + 4

        let nll = maxLogit + logSumExp - logits[target]
        self.nll += Double(nll)
        nll2 += Double(nll * nll)
        let nllBase = -(scale * Float(q[target]) + minLogProb)
        self.nllBase += Double(nllBase)
        nllBase2 += Double(nllBase * nllBase)
        nllNllBase += Double(nll * nllBase)

        let logNormalizer = maxLogit + logSumExp
        var sum = 0.0
        var topBase = -1
        var topBaseLogProb: Float = 0
        for i in 0..<logits.count {
            let logProbBase = scale * Float(q[i]) + minLogProb
            if i == 0 || logProbBase > topBaseLogProb {
                topBaseLogProb = logProbBase
                topBase = i
            }
            if logProbBase > -16 {
                sum += Double(expf(logProbBase) * (logProbBase - logits[i] + logNormalizer))
            }
        }
        kld += sum
        kld2 += sum * sum
        count += 1
        if top == topBase { sameTop += 1 }

        let p = expf(-nll), pBase = expf(-nllBase)
        let diff = p - pBase
        pDiff += Double(diff)
        let d2 = Double(diff * diff)
        pDiff2 += d2
        pDiff4 += d2 * d2
        return (sum, diff)
    }
}

/// What `llama-perplexity --kl-divergence` reports: this model (Q) against the base.
public struct KLDivergenceResult: Sendable, Encodable {
    public struct ValueWithUncertainty: Sendable {
        public var value: Double
        public var uncertainty: Double
    }

    public struct Distribution: Sendable, Encodable {
        public var mean: Double
        public var meanUncertainty: Double
        public var min: Double
        public var max: Double
        public var median: Double
        /// Percentile → value, keyed as llama.cpp prints them ("99.9", "99.0", "95.0", …).
        public var percentiles: [String: Double]

        public var p99: Double { percentiles["99.0"] ?? .nan }

        enum CodingKeys: String, CodingKey {
            case mean, min, max, median, p99, percentiles
            case meanUncertainty = "mean_uncertainty"
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(mean, forKey: .mean)
            try c.encode(meanUncertainty, forKey: .meanUncertainty)
            try c.encode(min, forKey: .min)
            try c.encode(max, forKey: .max)
            try c.encode(median, forKey: .median)
            try c.encode(p99, forKey: .p99)
            try c.encode(percentiles, forKey: .percentiles)
        }
    }

    public var ppl: ValueWithUncertainty
    public var pplBase: ValueWithUncertainty
    /// Correlation of ln PPL(Q) and ln PPL(base) over positions.
    public var lnPPLCorrelation: Double
    public var lnPPLRatio: ValueWithUncertainty
    public var pplRatio: ValueWithUncertainty
    public var kld: Distribution
    /// p(Q) − p(base) of the correct token.
    public var deltaP: Distribution
    public var deltaPRMS: ValueWithUncertainty
    /// Fraction of positions where both models' most likely token is the same.
    public var sameTopP: ValueWithUncertainty
    public var chunks: Int
    public var context: Int
    public var scoredTokens: Int
    public var seconds: Double

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// Flat snake_case JSON: each value with an `_uncertainty` sibling; fractions, not percent.
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for (name, v) in [("ppl", ppl), ("ppl_base", pplBase), ("ln_ppl_ratio", lnPPLRatio), ("ppl_ratio", pplRatio),
                          ("delta_p_rms", deltaPRMS), ("same_top_p", sameTopP)] {
            try c.encode(v.value, forKey: Key(name))
            try c.encode(v.uncertainty, forKey: Key(name + "_uncertainty"))
        }
        try c.encode(lnPPLCorrelation, forKey: Key("ln_ppl_correlation"))
        try c.encode(kld, forKey: Key("kld"))
        try c.encode(deltaP, forKey: Key("delta_p"))
        try c.encode(chunks, forKey: Key("chunks"))
        try c.encode(context, forKey: Key("context"))
        try c.encode(scoredTokens, forKey: Key("scored_tokens"))
        try c.encode(seconds, forKey: Key("seconds"))
    }

    /// The report llama-perplexity prints at the end, in its layout.
    public var summary: String {
        var lines: [String] = []
        func add(_ format: String, _ args: CVarArg...) { lines.append(String(format: format, arguments: args)) }
        lines.append("====== Perplexity statistics ======")
        add("Mean PPL(Q)                   : %10.6f ± %10.6f", ppl.value, ppl.uncertainty)
        add("Mean PPL(base)                : %10.6f ± %10.6f", pplBase.value, pplBase.uncertainty)
        add("Cor(ln(PPL(Q)), ln(PPL(base))): %6.2f%%", 100 * lnPPLCorrelation)
        add("Mean ln(PPL(Q)/PPL(base))     : %10.6f ± %10.6f", lnPPLRatio.value, lnPPLRatio.uncertainty)
        add("Mean PPL(Q)/PPL(base)         : %10.6f ± %10.6f", pplRatio.value, pplRatio.uncertainty)
        lines.append("")
        lines.append("====== KL divergence statistics ======")
        add("Mean    KLD: %10.6f ± %10.6f", kld.mean, kld.meanUncertainty)
        add("Maximum KLD: %10.6f", kld.max)
        func label(_ key: String) -> String { (key.count < 4 ? " " : "") + key + "%" }
        for k in ["99.9", "99.0", "95.0", "90.0"] { lines.append(label(k) + String(format: "   KLD: %10.6f", kld.percentiles[k]!)) }
        add("Median  KLD: %10.6f", kld.median)
        for k in ["10.0", "5.0", "1.0", "0.1"] { lines.append(label(k) + String(format: "   KLD: %10.6f", kld.percentiles[k]!)) }
        add("Minimum KLD: %10.6f", kld.min)
        lines.append("")
        lines.append("====== Token probability statistics ======")
        add("Mean    Δp: %6.3f ± %5.3f %%", 100 * deltaP.mean, 100 * deltaP.meanUncertainty)
        add("Maximum Δp: %6.3f%%", 100 * deltaP.max)
        for k in ["99.9", "99.0", "95.0", "90.0", "75.0"] { lines.append(label(k) + String(format: "   Δp: %6.3f%%", 100 * deltaP.percentiles[k]!)) }
        add("Median  Δp: %6.3f%%", 100 * deltaP.median)
        for k in ["25.0", "10.0", "5.0", "1.0", "0.1"] { lines.append(label(k) + String(format: "   Δp: %6.3f%%", 100 * deltaP.percentiles[k]!)) }
        add("Minimum Δp: %6.3f%%", 100 * deltaP.min)
        add("RMS Δp    : %6.3f ± %5.3f %%", 100 * deltaPRMS.value, 100 * deltaPRMS.uncertainty)
        add("Same top p: %6.3f ± %5.3f %%", 100 * sameTopP.value, 100 * sameTopP.uncertainty)
        return lines.joined(separator: "\n")
    }
}

public enum KLDivergenceError: Error, CustomStringConvertible, Equatable {
    case cannotRead(path: String)
    case cannotWrite(path: String)
    case notALogitsFile(path: String)
    case badHeader(path: String, context: Int, vocabularySize: Int, chunks: Int)
    case truncated(path: String, needed: Int, size: Int)
    case tokenOutOfRange(path: String, token: Int, vocabularySize: Int)
    case vocabularyMismatch(path: String, file: Int, model: Int)
    case tooFewPositions(Int)

    public var description: String {
        switch self {
        case .cannotRead(let p): "cannot read '\(p)'"
        case .cannotWrite(let p): "cannot write '\(p)'"
        case .notALogitsFile(let p): "'\(p)' is not a log-probability file (it must start with \"_logits_\", as llama-perplexity --kl-divergence-base writes it)"
        case .badHeader(let p, let ctx, let vocab, let chunks): "'\(p)': impossible header (context \(ctx), vocabulary \(vocab), chunks \(chunks))"
        case .truncated(let p, let needed, let size): "'\(p)' is truncated: its header needs \(needed) bytes, the file has \(size)"
        case .tokenOutOfRange(let p, let t, let n): "'\(p)' holds token \(t), outside its vocabulary of \(n)"
        case .vocabularyMismatch(let p, let file, let model): "'\(p)' was computed with a vocabulary of \(file) tokens, this model has \(model): the two models cannot be compared"
        case .tooFewPositions(let n): "only \(n) positions were scored; the statistics need at least 100 (use more or longer chunks)"
        }
    }
}

/// `llama-perplexity --kl-divergence`: runs this model over the base file's tokens and
/// compares its distributions with the base's at every scored position.
public func klDivergence(model: LoadedModel, basePath: String, maxChunks: Int? = nil, pool: ThreadPool,
                         progress: (Int, Int, Double) -> Void = { _, _, _ in }) throws -> KLDivergenceResult {
    let base = try BaseLogProbsFile(path: basePath)
    guard base.vocabularySize == model.config.vocabularySize else {
        throw KLDivergenceError.vocabularyMismatch(path: basePath, file: base.vocabularySize, model: model.config.vocabularySize)
    }
    try model.validateContext(base.context)
    let chunks = min(maxChunks ?? base.chunks, base.chunks)
    var sums = KLDivergenceSums()
    var klds: [Double] = [], pDiffs: [Double] = []
    var row = 0
    let start = Date()
    try evaluateChunks(model: model, tokens: Array(base.tokens[..<(chunks * base.context)]), context: base.context,
                       pool: pool) { chunk, logits, targets in
        for (l, target) in zip(logits, targets) {
            let (kld, diff) = base.withRecord(row) { sums.add(logits: l, base: $0, target: Int(target)) }
            klds.append(kld)
            pDiffs.append(Double(diff))
            row += 1
        }
        progress(chunk + 1, chunks, sums.kld / Double(sums.count))
    }
    guard sums.count >= 100 else { throw KLDivergenceError.tooFewPositions(sums.count) }
    return KLDivergenceResult(sums: sums, klds: klds, pDiffs: pDiffs, chunks: chunks, context: base.context,
                              seconds: Date().timeIntervalSince(start))
}

extension KLDivergenceResult {
    /// The statistics as llama.cpp derives them from the sums.
    init(sums s: KLDivergenceSums, klds: [Double], pDiffs: [Double], chunks: Int, context: Int, seconds: Double) {
        let n = Double(s.count)
        func meanAndUncertainty(_ sum: Double, _ sum2: Double) -> (Double, Double) {
            let f = sum / n
            let df = sum2 / n - f * f
            return (f, df > 0 && s.count > 10 ? (df / (n - 1)).squareRoot() : 0)
        }
        func covariance(_ a: Double, _ b: Double, _ ab: Double) -> Double {
            s.count < 10 ? 0 : (ab / n - (a / n) * (b / n)) / (n - 1)
        }
        // llama.cpp's linear interpolation between ranks
        func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
            let p = fraction * Double(sorted.count - 1)
            let i = Int(p)
            return (1 - (p - Double(i))) * sorted[i] + (p - Double(i)) * sorted[Swift.min(i + 1, sorted.count - 1)]
        }
        func median(_ sorted: [Double]) -> Double {
            sorted.count % 2 == 0 ? 0.5 * (sorted[sorted.count / 2] + sorted[sorted.count / 2 - 1]) : sorted[sorted.count / 2]
        }
        func distribution(_ values: [Double], _ sum: Double, _ sum2: Double, _ keys: [String]) -> Distribution {
            let sorted = values.sorted()
            let (mean, unc) = meanAndUncertainty(sum, sum2)
            var percentiles: [String: Double] = [:]
            for k in keys { percentiles[k] = percentile(sorted, Double(k)! / 100) }
            return Distribution(mean: mean, meanUncertainty: unc, min: sorted.first!, max: sorted.last!,
                                median: median(sorted), percentiles: percentiles)
        }

        let logPPL = meanAndUncertainty(s.nll, s.nll2)
        let logPPLBase = meanAndUncertainty(s.nllBase, s.nllBase2)
        let cov = covariance(s.nll, s.nllBase, s.nllNllBase)
        ppl = ValueWithUncertainty(value: exp(logPPL.0), uncertainty: exp(logPPL.0) * logPPL.1)
        pplBase = ValueWithUncertainty(value: exp(logPPLBase.0), uncertainty: exp(logPPLBase.0) * logPPLBase.1)
        // undefined without spread (fewer than 11 positions, or identical runs): reported as 0, so
        // the results stay finite numbers (JSON has no NaN)
        let spread = logPPL.1 * logPPLBase.1
        lnPPLCorrelation = spread > 0 ? cov / spread : 0
        let ratio = logPPL.0 - logPPLBase.0
        // a variance: rounding can push it just below 0 when the two runs are nearly identical
        let ratioUnc = max(0, logPPL.1 * logPPL.1 + logPPLBase.1 * logPPLBase.1 - 2 * cov).squareRoot()
        lnPPLRatio = ValueWithUncertainty(value: ratio, uncertainty: ratioUnc)
        pplRatio = ValueWithUncertainty(value: exp(ratio), uncertainty: exp(ratio) * ratioUnc)
        kld = distribution(klds, s.kld, s.kld2, ["99.9", "99.0", "95.0", "90.0", "10.0", "5.0", "1.0", "0.1"])
        deltaP = distribution(pDiffs, s.pDiff, s.pDiff2, ["99.9", "99.0", "95.0", "90.0", "75.0", "25.0", "10.0", "5.0", "1.0", "0.1"])
        let mse = meanAndUncertainty(s.pDiff2, s.pDiff4)
        let rms = mse.0.squareRoot()
        deltaPRMS = ValueWithUncertainty(value: rms, uncertainty: rms > 0 ? 0.5 / rms * mse.1 : 0)
        let same = Double(s.sameTop) / n
        sameTopP = ValueWithUncertainty(value: same, uncertainty: (same * (1 - same) / (n - 1)).squareRoot())
        self.chunks = chunks
        self.context = context
        scoredTokens = s.count
        self.seconds = seconds
    }
}
