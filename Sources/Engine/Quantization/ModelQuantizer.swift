import Foundation
import GGUF
import Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Re-encodes a GGUF model's weights in another type, as `llama-quantize` does without an
/// importance matrix: metadata is copied (with `general.file_type` and
/// `general.quantization_version` set), 1-D tensors (norms, biases) and the tensors llama.cpp
/// never quantizes (norms, the MoE router, convolution kernels, ...) keep their type, the
/// output projection — and the token embeddings when they double as the output — become Q6_K
/// (Q8_0 when the target is Q8_0 or a row does not fill a block), and a tensor whose rows are
/// not whole blocks of the target falls back the way llama.cpp's does (Q4_K → Q5_0,
/// Q6_K → Q8_0, then F16). Other tensors get the target type: the per-layer mixes of
/// llama.cpp's `_S`/`_M` presets (more bits for some attn_v / ffn_down layers) are not applied.
public enum ModelQuantizer {
    public struct Entry: Sendable {
        public let name: String
        public let shape: [Int]
        public let from: TensorType
        public let to: TensorType
        public let inputBytes: Int
        public let outputBytes: Int
    }

    public struct Summary: Sendable {
        public let entries: [Entry]
        public let seconds: Double
        public var inputBytes: Int { entries.reduce(0) { $0 + $1.inputBytes } }
        public var outputBytes: Int { entries.reduce(0) { $0 + $1.outputBytes } }
    }

    public enum QuantizeError: Error, CustomStringConvertible {
        case unsupportedTarget(TensorType)
        case alreadyQuantized(tensor: String, type: TensorType)
        case writeFailed(path: String, reason: String)

        public var description: String {
            switch self {
            case .unsupportedTarget(let t):
                "cannot quantize to \(t) (supported: \(ModelQuantizer.targets.map(\.description).joined(separator: ", ")))"
            case .alreadyQuantized(let name, let t):
                "tensor '\(name)' is already quantized (\(t)); pass --allow-requantize to re-quantize it (quality suffers)"
            case .writeFailed(let path, let reason): "cannot write '\(path)': \(reason)"
            }
        }
    }

    /// Target types the command accepts.
    public static let targets: [TensorType] = [.q8_0, .q4_0, .q4_1, .q5_0, .q5_1, .q4_K, .q6_K, .f16, .bf16, .f32]

    /// llama.cpp's `llama_ftype` for a file whose weights are mostly `type`
    /// (Q4_K is reported as Q4_K_S, the preset closest to "all Q4_K").
    public static func fileType(for type: TensorType) -> UInt32 {
        switch type {
        case .f32: 0
        case .f16: 1
        case .q4_0: 2
        case .q4_1: 3
        case .q8_0: 7
        case .q5_0: 8
        case .q5_1: 9
        case .q4_K: 14
        case .q6_K: 18
        case .bf16: 32
        default: 0
        }
    }

    /// Whether llama.cpp would quantize this tensor at all (`tensor_allows_quantization`).
    public static func allowsQuantization(_ t: TensorInfo) -> Bool {
        let name = t.name
        guard t.shape.count >= 2, name.hasSuffix("weight") else { return false }
        let never = ["_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d", "shortconv.conv.weight",
                     "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
                     "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
                     "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
                     "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
                     "attn_rel_b.weight", ".position_embd", "altup", "laurel", "per_layer_model_proj"]
        if never.contains(where: { name.contains($0) }) { return false }
        return name != "position_embd.weight" && name != "token_types.weight"
    }

    /// The type llama.cpp's default rules give `tensor` when the model is quantized to `target`.
    public static func targetType(for tensor: TensorInfo, target: TensorType, tiedEmbeddings: Bool) -> TensorType {
        guard allowsQuantization(tensor) else { return tensor.type }
        guard target.isQuantized else { return target }
        var type = target
        let columns = tensor.rowLength
        if tensor.name == "output.weight" || (tiedEmbeddings && tensor.name == "token_embd.weight") {
            if columns % target.blockSize != 0 {
                type = .q8_0
            } else if target != .q8_0 {
                type = .q6_K
            }
        }
        if columns % type.blockSize != 0 {
            switch type {
            case .q4_K: type = .q5_0
            case .q5_K: type = .q5_1
            case .q6_K: type = .q8_0
            case .q2_K, .q3_K: type = .q4_0
            default: break
            }
            if columns % type.blockSize != 0 { type = .f16 }
        }
        return type
    }

    /// The plan for a whole file: every tensor with its new type, in file order.
    public static func plan(_ file: GGUFFile, target: TensorType) -> [(TensorInfo, TensorType)] {
        let tied = file.tensor(named: "output.weight") == nil
        return file.tensors.map { ($0, targetType(for: $0, target: target, tiedEmbeddings: tied)) }
    }

    /// Writes `output`: `input` with its weights quantized to `target`.
    /// `progress(index, count, entry)` is called after each tensor is written.
    public static func quantize(input: String, output: String, target: TensorType, threads: Int? = nil,
                                allowRequantize: Bool = false,
                                progress: ((Int, Int, Entry) -> Void)? = nil) throws -> Summary {
        guard targets.contains(target) else { throw QuantizeError.unsupportedTarget(target) }
        let start = Date()
        let file = try GGUFFile(path: input)
        let plan = plan(file, target: target)
        for (t, type) in plan where t.type != type && t.type.isQuantized && !allowRequantize {
            throw QuantizeError.alreadyQuantized(tensor: t.name, type: t.type)
        }
        for (t, type) in plan where type != t.type && !(quantizableTypes.contains(type) && supportedWeightTypes.contains(t.type)) {
            throw KernelError.unsupportedType(supportedWeightTypes.contains(t.type) ? type : t.type)
        }

        var writer = GGUFWriter()
        // A split input is written as one file: its split.* keys would describe the parts.
        for key in file.metadataKeys where !key.hasPrefix("split.") {
            if let value = file.metadata[key] { writer.set(key, value) }
        }
        writer.set("general.file_type", .uint32(fileType(for: target)))
        if target.isQuantized { writer.set("general.quantization_version", .uint32(2)) }
        let header = writer.header(for: plan.map { ($0.0.name, $0.1, $0.0.shape) })

        guard let out = fopen(output, "wb") else {
            throw QuantizeError.writeFailed(path: output, reason: String(cString: strerror(errno)))
        }
        var closed = false
        defer { if !closed { fclose(out) } }
        func write(_ p: UnsafeRawPointer, _ n: Int) throws {
            guard n == 0 || fwrite(p, 1, n, out) == n else {
                throw QuantizeError.writeFailed(path: output, reason: String(cString: strerror(errno)))
            }
        }
        try header.withUnsafeBytes { try write($0.baseAddress!, $0.count) }
        var written = header.count

        let pool = ThreadPool(threads: threads)
        var entries: [Entry] = []
        let zeros = [UInt8](repeating: 0, count: writer.alignment)
        for (index, (tensor, type)) in plan.enumerated() {
            let outBytes = type.byteCount(elements: tensor.elementCount)!
            let source = file.data(for: tensor)
            if type == tensor.type {
                try write(source, tensor.byteCount)
            } else {
                let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(outBytes, 1), alignment: 64)
                defer { buffer.deallocate() }
                convertRows(tensor, source: source, to: type, into: buffer, pool: pool)
                try write(buffer, outBytes)
            }
            written += outBytes
            let pad = (writer.alignment - written % writer.alignment) % writer.alignment
            try zeros.withUnsafeBytes { try write($0.baseAddress!, pad) }
            written += pad
            // the input has been read once; do not keep it resident
            file.advise(.dontNeed, tensor: tensor)
            let entry = Entry(name: tensor.name, shape: tensor.shape, from: tensor.type, to: type,
                              inputBytes: tensor.byteCount, outputBytes: outBytes)
            entries.append(entry)
            progress?(index, plan.count, entry)
        }
        closed = true
        guard fclose(out) == 0 else { throw QuantizeError.writeFailed(path: output, reason: String(cString: strerror(errno))) }
        return Summary(entries: entries, seconds: Date().timeIntervalSince(start))
    }

    /// Decodes each row of `tensor` to floats and encodes it in `type`, rows split across the pool.
    static func convertRows(_ tensor: TensorInfo, source: UnsafeRawPointer, to type: TensorType,
                            into destination: UnsafeMutableRawPointer, pool: ThreadPool) {
        let columns = tensor.rowLength, rows = tensor.rowCount
        let inRow = tensor.rowBytes, outRow = type.byteCount(elements: columns)!
        nonisolated(unsafe) let src = source, dst = destination
        let fromType = tensor.type
        pool.parallelChunks(rows, granularity: max(1, 16_384 / max(columns, 1))) { range in
            let floats = UnsafeMutablePointer<Float>.allocate(capacity: columns)
            defer { floats.deallocate() }
            for r in range {
                let row = src + r * inRow
                if fromType == .f32 {
                    quantizeRow(type, row.assumingMemoryBound(to: Float.self), into: dst + r * outRow, count: columns)
                } else {
                    dequantizeRow(fromType, row, into: floats, count: columns)
                    quantizeRow(type, floats, into: dst + r * outRow, count: columns)
                }
            }
        }
    }
}
