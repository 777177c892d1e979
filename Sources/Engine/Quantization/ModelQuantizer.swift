import Foundation
import GGUF
import Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Re-encodes a GGUF model's weights as `llama-quantize` does: metadata is copied (with
/// `general.file_type` set to llama.cpp's number for the mix and
/// `general.quantization_version`), tensors llama.cpp never quantizes (1-D tensors, norms, the
/// MoE router, convolution kernels, ...) keep their type, and every other tensor gets the type
/// llama.cpp's `llama_tensor_get_type` picks for the mix: the output projection (and tied token
/// embeddings) Q6_K, more bits for some attn_v / ffn_down / attn_output layers in the `_S`/`_M`/
/// `_L` mixes, and a fallback when a row is not whole blocks of the chosen type (Q4_K → Q5_0,
/// Q5_K → Q5_1, Q6_K → Q8_0, Q2_K/Q3_K → Q4_0, IQ4_XS → IQ4_NL, then F16). With an importance
/// matrix the quantizers weight each column's error by it, as llama.cpp's do.
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
        case alreadyQuantized(tensor: String, type: TensorType)
        case writeFailed(path: String, reason: String)
        case noLayer(tensor: String, layers: Int)
        case importanceRequired(tensor: String, type: TensorType)
        case importanceSize(tensor: String, expected: Int, found: Int)

        public var description: String {
            switch self {
            case .alreadyQuantized(let name, let t):
                "tensor '\(name)' is already quantized (\(t)); pass --allow-requantize to re-quantize it (quality suffers)"
            case .writeFailed(let path, let reason): "cannot write '\(path)': \(reason)"
            case .noLayer(let name, let layers): "tensor '\(name)': no layer index in 0..<\(layers) in its name (blk.N.)"
            case .importanceRequired(let name, let t):
                "tensor '\(name)' becomes \(t) in this mix, which needs an importance matrix entry for it (--imatrix)"
            case .importanceSize(let name, let expected, let found):
                "importance matrix entry for '\(name)' has \(found) values, the tensor needs \(expected) (columns × experts)"
            }
        }
    }

    /// A llama.cpp file type ("ftype"): the type most tensors get plus its per-tensor rules.
    public struct Mix: Sendable, Hashable, CustomStringConvertible {
        public let name: String
        /// llama.cpp's `llama_ftype` number, written as `general.file_type`.
        public let fileType: UInt32
        /// The type of the tensors no rule singles out.
        public let base: TensorType
        public var description: String { name }

        init(_ name: String, _ fileType: UInt32, _ base: TensorType) {
            self.name = name
            self.fileType = fileType
            self.base = base
        }

        public static let f32 = Mix("F32", 0, .f32), f16 = Mix("F16", 1, .f16), bf16 = Mix("BF16", 32, .bf16)
        public static let q4_0 = Mix("Q4_0", 2, .q4_0), q4_1 = Mix("Q4_1", 3, .q4_1)
        public static let q5_0 = Mix("Q5_0", 8, .q5_0), q5_1 = Mix("Q5_1", 9, .q5_1), q8_0 = Mix("Q8_0", 7, .q8_0)
        public static let q2_K = Mix("Q2_K", 10, .q2_K), q2_K_S = Mix("Q2_K_S", 21, .q2_K)
        public static let q3_K_S = Mix("Q3_K_S", 11, .q3_K), q3_K_M = Mix("Q3_K_M", 12, .q3_K), q3_K_L = Mix("Q3_K_L", 13, .q3_K)
        public static let q4_K_S = Mix("Q4_K_S", 14, .q4_K), q4_K_M = Mix("Q4_K_M", 15, .q4_K)
        public static let q5_K_S = Mix("Q5_K_S", 16, .q5_K), q5_K_M = Mix("Q5_K_M", 17, .q5_K)
        public static let q6_K = Mix("Q6_K", 18, .q6_K)
        public static let iq4_NL = Mix("IQ4_NL", 25, .iq4_NL), iq4_XS = Mix("IQ4_XS", 30, .iq4_XS)

        /// Every mix the command accepts, in llama-quantize's order.
        public static let all: [Mix] = [
            .q4_0, .q4_1, .q5_0, .q5_1, .q2_K, .q2_K_S, .q3_K_S, .q3_K_M, .q3_K_L, .iq4_NL, .iq4_XS,
            .q4_K_S, .q4_K_M, .q5_K_S, .q5_K_M, .q6_K, .q8_0, .f16, .bf16, .f32,
        ]
        /// llama-quantize's short names: Q3_K, Q4_K and Q5_K mean their _M mixes.
        public static let aliases: [String: Mix] = ["Q3_K": .q3_K_M, "Q4_K": .q4_K_M, "Q5_K": .q5_K_M]

        /// A mix by llama.cpp's name (case-insensitive), alias or file-type number.
        public init?(name: String) {
            let upper = name.uppercased()
            if let mix = Mix.all.first(where: { $0.name == upper }) ?? Mix.aliases[upper] {
                self = mix
            } else if let number = UInt32(name), let mix = Mix.all.first(where: { $0.fileType == number }) {
                self = mix
            } else {
                return nil
            }
        }
    }

    /// What llama.cpp's rules read from the model's metadata.
    public struct ModelFacts: Sendable {
        public var architecture: String
        /// `ARCH.block_count`.
        public var layers: Int
        public var heads: Int
        public var kvHeads: Int
        /// `ARCH.expert_count` (0 for a dense model).
        public var experts: Int

        public init(architecture: String, layers: Int, heads: Int, kvHeads: Int, experts: Int = 0) {
            self.architecture = architecture
            self.layers = layers
            self.heads = heads
            self.kvHeads = kvHeads
            self.experts = experts
        }

        public init(_ file: GGUFFile) {
            func first(_ key: String) -> Int? { file.arch(key)?.int ?? file.arch(key)?.intArray?.first }
            let heads = first("attention.head_count") ?? 0
            self.init(architecture: file.architecture ?? "", layers: file.arch("block_count")?.int ?? 0,
                      heads: heads, kvHeads: first("attention.head_count_kv") ?? heads,
                      experts: file.arch("expert_count")?.int ?? 0)
        }

        /// Query heads per key/value head (`n_gqa`).
        var gqa: Int { kvHeads == 0 ? 0 : heads / kvHeads }
        var isFalcon: Bool { architecture == "falcon" }
        /// llama.cpp's LLM_TYPE_70B, the one model size its rules single out.
        var is70B: Bool {
            switch architecture {
            case "llama": layers == 80 && heads != kvHeads
            case "qwen2", "deci", "olmo": layers == 80
            case "jais2": layers == 68
            default: false
            }
        }
    }

    /// Whether llama.cpp would quantize this tensor at all (`tensor_allows_quantization`).
    public static func allowsQuantization(name: String, shape: [Int]) -> Bool {
        var dims = shape.count
        while dims > 1 && shape[dims - 1] == 1 { dims -= 1 }
        guard dims >= 2, name.hasSuffix("weight") else { return false }
        let never = ["_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
                     "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
                     "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
                     "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
                     "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
                     "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
                     "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd", "sam.neck.",
                     "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook", "mm.a.code_embd"]
        if never.contains(where: { name.contains($0) }) { return false }
        return name != "position_embd.weight" && name != "token_types.weight"
    }

    enum Category { case output, tokenEmbedding, attentionQKV, attentionKVB, attentionV, attentionK, attentionQ,
                    attentionOutput, ffnUp, ffnGate, ffnDown, other }

    /// llama.cpp's broad tensor categories, tested in its order.
    static func category(_ name: String) -> Category {
        if name == "output.weight" { return .output }
        if name == "token_embd.weight" || name == "per_layer_token_embd.weight" { return .tokenEmbedding }
        let rules: [(String, Category)] = [
            ("attn_qkv.weight", .attentionQKV), ("attn_kv_b.weight", .attentionKVB), ("attn_v.weight", .attentionV),
            ("attn_k.weight", .attentionK), ("attn_q.weight", .attentionQ), ("attn_output.weight", .attentionOutput),
            ("ffn_up", .ffnUp), ("ffn_gate", .ffnGate), ("ffn_down", .ffnDown),
        ]
        return rules.first { name.contains($0.0) }?.1 ?? .other
    }

    /// N of a `blk.N.` name (sscanf's reading: optional sign, digits).
    static func layerIndex(_ name: String) -> Int? {
        guard name.hasPrefix("blk.") else { return nil }
        var rest = name.dropFirst(4)
        var sign = 1
        if let c = rest.first, c == "-" || c == "+" {
            sign = c == "-" ? -1 : 1
            rest = rest.dropFirst()
        }
        guard let n = Int(rest.prefix { $0.isASCII && $0.isNumber }) else { return nil }
        return sign * n
    }

    static func useMoreBits(_ layer: Int, _ layers: Int) -> Bool {
        layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
    }

    /// The type of every tensor (in the given order) under `mix`, as `llama_tensor_get_type`
    /// chooses. `pure` skips the mix's per-tensor rules (llama-quantize --pure); `hasImportance`
    /// says an importance matrix is given (IQ4_NL/IQ4_XS then keep the first ffn_down layers
    /// at their type, Q4_0/Q5_0 move them to Q4_1/Q5_1).
    public static func types(for tensors: [(name: String, shape: [Int], type: TensorType)], model: ModelFacts, mix: Mix,
                             pure: Bool = false, hasImportance: Bool = false) throws(QuantizeError) -> [TensorType] {
        let categories = tensors.map { category($0.name) }
        let tied = !categories.contains(.output)
        let attentionV = categories.filter { [.attentionV, .attentionQKV, .attentionKVB].contains($0) }.count
        // llama.cpp visits tensors by layer (non-layer tensors first), then by name; its
        // attn_v / ffn_down counters follow that order
        let order = tensors.indices.sorted {
            let a = layerIndex(tensors[$0].name) ?? -1, b = layerIndex(tensors[$1].name) ?? -1
            return a != b ? a < b : tensors[$0].name < tensors[$1].name
        }
        var iAttentionV = 0, iFFNDown = 0
        var result = tensors.map { $0.type }
        let ft = mix.fileType
        for index in order {
            let t = tensors[index], cat = categories[index]
            guard allowsQuantization(name: t.name, shape: t.shape) else { continue }
            var type = mix.base
            guard type.isQuantized else { result[index] = type; continue }
            let columns = t.shape.first ?? 1
            if !pure {
                func layer(_ counter: Int) throws(QuantizeError) -> Int {
                    guard model.experts > 1 else { return counter }
                    guard let n = layerIndex(t.name), n >= 0, n < model.layers else {
                        throw QuantizeError.noLayer(tensor: t.name, layers: model.layers)
                    }
                    return n
                }
                let n = model.layers
                switch cat {
                case .output,
                     .tokenEmbedding where tied:
                    if model.isFalcon || columns % type.blockSize != 0 {
                        type = .q8_0
                    } else if type != .q8_0 {
                        type = .q6_K
                    }
                case .attentionV, .attentionQKV, .attentionKVB:
                    let i = iAttentionV
                    if ft == Mix.q2_K.fileType {
                        type = model.gqa >= 4 ? .q4_K : .q3_K
                    } else if ft == Mix.q2_K_S.fileType && model.gqa >= 4 {
                        type = .q4_K
                    } else if ft == Mix.q3_K_M.fileType {
                        type = i < 2 ? .q5_K : .q4_K
                    } else if ft == Mix.q3_K_L.fileType {
                        type = .q5_K
                    } else if (ft == Mix.iq4_NL.fileType || ft == Mix.iq4_XS.fileType) && model.gqa >= 4 {
                        type = .q5_K
                    } else if (ft == Mix.q4_K_M.fileType || ft == Mix.q5_K_M.fileType) && useMoreBits(i, attentionV) {
                        type = .q6_K
                    } else if ft == Mix.q4_K_S.fileType && i < 4 {
                        type = .q5_K
                    }
                    if model.is70B && (type == .q3_K || type == .q4_K) { type = .q5_K }
                    if model.experts == 8 { type = .q8_0 }
                    iAttentionV += 1
                case .attentionK:
                    if model.experts == 8 { type = .q8_0 }
                case .ffnDown:
                    let i = try layer(iFFNDown)
                    let falcon = model.isFalcon
                    if ft == Mix.q2_K.fileType {
                        type = .q3_K
                    } else if ft == Mix.q2_K_S.fileType {
                        if i < n / 8 { type = .q4_K }
                    } else if ft == Mix.q3_K_M.fileType {
                        type = i < n / 16 ? .q5_K : !falcon || useMoreBits(i, n) ? .q4_K : .q3_K
                    } else if ft == Mix.q3_K_L.fileType {
                        type = falcon ? .q4_K : .q5_K
                    } else if ft == Mix.q4_K_M.fileType {
                        if falcon {
                            type = i < n / 16 ? .q6_K : useMoreBits(i, n) ? .q5_K : .q4_K
                        } else if useMoreBits(i, n) {
                            type = .q6_K
                        }
                    } else if i < n / 8 && (ft == Mix.iq4_NL.fileType || ft == Mix.iq4_XS.fileType) && !hasImportance {
                        type = .q5_K
                    } else if ft == Mix.q5_K_M.fileType && useMoreBits(i, n) {
                        type = .q6_K
                    } else if ft == Mix.q4_K_S.fileType && !falcon && i < n / 8 {
                        type = .q5_K
                    } else if (ft == Mix.q4_0.fileType || ft == Mix.q5_0.fileType) && hasImportance && i < n / 8 {
                        type = ft == Mix.q4_0.fileType ? .q4_1 : .q5_1
                    }
                    iFFNDown += 1
                case .attentionOutput:
                    if !model.isFalcon {
                        if model.experts == 8 {
                            let bumped: [Mix] = [.q2_K, .q3_K_S, .q3_K_M, .iq4_NL, .q4_K_S, .q4_K_M, .iq4_XS]
                            if bumped.contains(where: { $0.fileType == ft }) { type = .q5_K }
                        } else if ft == Mix.q2_K.fileType {
                            type = .q3_K
                        } else if ft == Mix.q3_K_M.fileType {
                            type = .q4_K
                        } else if ft == Mix.q3_K_L.fileType {
                            type = .q5_K
                        }
                    } else if ft == Mix.q3_K_L.fileType {
                        type = .q4_K
                    }
                case .ffnGate, .ffnUp:
                    // their layer rules are for mixes not offered here; the name must still carry a layer
                    _ = try layer(0)
                default:
                    break
                }
            }
            // a row that is not whole blocks falls back to a 32-block type, then F16
            if columns % type.blockSize != 0 {
                switch type {
                case .iq4_XS: type = .iq4_NL
                case .q2_K, .q3_K: type = .q4_0
                case .q4_K: type = .q5_0
                case .q5_K: type = .q5_1
                case .q6_K: type = .q8_0
                default: break
                }
                if columns % type.blockSize != 0 { type = .f16 }
            }
            result[index] = type
        }
        return result
    }

    /// The plan for a whole file: every tensor with its new type, in file order.
    public static func plan(_ file: GGUFFile, mix: Mix, pure: Bool = false,
                            hasImportance: Bool = false) throws(QuantizeError) -> [(TensorInfo, TensorType)] {
        let chosen = try types(for: file.tensors.map { (name: $0.name, shape: $0.shape, type: $0.type) },
                               model: ModelFacts(file), mix: mix, pure: pure, hasImportance: hasImportance)
        return Array(zip(file.tensors, chosen))
    }

    /// Whether llama.cpp refuses to make `type` for this tensor without importance weights
    /// (Q2_K in a Q2_K_S file, except the embeddings and the output).
    static func requiresImportance(_ name: String, _ type: TensorType, mix: Mix) -> Bool {
        guard name != "output.weight", category(name) != .tokenEmbedding else { return false }
        return type == .q2_K && mix == .q2_K_S
    }

    /// Writes `output`: `input` with its weights quantized as `mix` says (every quantized tensor
    /// of `mix.base` with `pure`), the quantizers weighted by `importance` where llama.cpp's are.
    /// `progress(index, count, entry)` is called after each tensor is written.
    public static func quantize(input: String, output: String, mix: Mix, pure: Bool = false,
                                importance: ImportanceMatrix? = nil, threads: Int? = nil,
                                allowRequantize: Bool = false,
                                progress: ((Int, Int, Entry) -> Void)? = nil) throws -> Summary {
        let start = Date()
        let file = try GGUFFile(path: input)
        let plan = try Self.plan(file, mix: mix, pure: pure, hasImportance: importance != nil)
        for (t, type) in plan where t.type != type && t.type.isQuantized && !allowRequantize {
            throw QuantizeError.alreadyQuantized(tensor: t.name, type: t.type)
        }
        for (t, type) in plan where type != t.type && !(quantizableTypes.contains(type) && supportedWeightTypes.contains(t.type)) {
            throw KernelError.unsupportedType(supportedWeightTypes.contains(t.type) ? type : t.type)
        }
        // importance weights per tensor: columns × experts values, or none
        var weights: [String: [Float]] = [:]
        for (t, type) in plan where type != t.type {
            let expected = t.rowLength * (t.shape.count > 2 ? t.shape[2] : 1)
            if let values = importance?.entries[t.name] {
                if values.count == expected {
                    weights[t.name] = values
                } else if category(t.name) != .tokenEmbedding {
                    throw QuantizeError.importanceSize(tensor: t.name, expected: expected, found: values.count)
                }
            }
            if weights[t.name] == nil && requiresImportance(t.name, type, mix: mix) {
                throw QuantizeError.importanceRequired(tensor: t.name, type: type)
            }
        }

        var writer = GGUFWriter()
        // A split input is written as one file: its split.* keys would describe the parts.
        for key in file.metadataKeys where !key.hasPrefix("split.") {
            if let value = file.metadata[key] { writer.set(key, value) }
        }
        writer.set("general.quantization_version", .uint32(2))
        writer.set("general.file_type", .uint32(mix.fileType))
        if let importance {
            writer.set("quantize.imatrix.file", .string(String(decoding: importance.path.utf8.prefix(127), as: UTF8.self)))
            if let dataset = importance.datasets.first {
                writer.set("quantize.imatrix.dataset", .string(String(decoding: dataset.utf8.prefix(127), as: UTF8.self)))
            }
            writer.set("quantize.imatrix.entries_count", .uint32(UInt32(importance.entries.count)))
            if importance.chunkCount > 0 {
                writer.set("quantize.imatrix.chunks_count", .uint32(UInt32(importance.chunkCount)))
            }
        }
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
                convertRows(tensor, source: source, to: type, into: buffer, importance: weights[tensor.name], pool: pool)
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

    /// Decodes each row of `tensor` to floats and encodes it in `type`, rows split across the
    /// pool; `importance` holds one slice of row-length weights per expert (rows of expert e
    /// use slice e).
    static func convertRows(_ tensor: TensorInfo, source: UnsafeRawPointer, to type: TensorType,
                            into destination: UnsafeMutableRawPointer, importance: [Float]?, pool: ThreadPool) {
        let columns = tensor.rowLength, rows = tensor.rowCount
        let rowsPerExpert = tensor.shape.count > 1 ? tensor.shape[1] : 1
        let inRow = tensor.rowBytes, outRow = type.byteCount(elements: columns)!
        nonisolated(unsafe) let src = source, dst = destination
        let fromType = tensor.type
        pool.parallelChunks(rows, granularity: max(1, 16_384 / max(columns, 1))) { range in
            let floats = UnsafeMutablePointer<Float>.allocate(capacity: columns)
            defer { floats.deallocate() }
            importance.withOptionalBufferPointer { weights in
                for r in range {
                    let row = src + r * inRow
                    let qw = weights.map { $0 + (r / rowsPerExpert) * columns }
                    if fromType == .f32 {
                        quantizeRow(type, row.assumingMemoryBound(to: Float.self), into: dst + r * outRow, count: columns, importance: qw)
                    } else {
                        dequantizeRow(fromType, row, into: floats, count: columns)
                        quantizeRow(type, floats, into: dst + r * outRow, count: columns, importance: qw)
                    }
                }
            }
        }
    }
}

extension Optional where Wrapped == [Float] {
    /// The array's base address (nil for nil or an empty array) for the duration of `body`.
    func withOptionalBufferPointer<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        switch self {
        case .some(let array): array.withUnsafeBufferPointer { body($0.baseAddress) }
        case .none: body(nil)
        }
    }
}
