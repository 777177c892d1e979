import Foundation
import GGUF
import Kernels
import TestSupport

/// Writes random-weight llama-architecture GGUFs (dense or Mixtral-style experts) of any size,
/// with a toy byte-level vocabulary so the `swiftlet` commands load them too.
struct SyntheticGGUF {
    var embedding = 256
    var layers = 2
    var heads = 4
    var kvHeads = 2
    var feedForward = 512
    var experts = 0
    var expertsUsed = 0
    var vocabulary = 96
    var type: TensorType = .f32
    var seed: UInt64 = 1
    var context = 256
    /// A token whose embedding row is NaN (a broken file's forward pass).
    var poisonedToken: Int?
    /// Tensors of zeros added after the model's own (a file with more than the graph reads).
    var extraTensors: [(name: String, type: TensorType, shape: [Int])] = []
    /// Metadata beyond the architecture's usual keys.
    var extraMetadata: [String: MetadataValue] = [:]
    /// Control tokens taking the places of the last single-character tokens.
    var controlTokens: [String] = []

    static let directory: URL = {
        let dir = TestSupport.scratchRoot.appendingPathComponent("synthetic-gguf")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }()

    /// Writes the model (once per name and process) and returns its path.
    func write(name: String) throws -> String {
        let path = Self.directory.appendingPathComponent(name + ".gguf").path
        if FileManager.default.fileExists(atPath: path) { return path }
        var state = seed &* 0x9E37_79B9_7F4A_7C15 | 1
        func uniform() -> Float {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17
            return Float(state >> 40) / Float(1 << 24)
        }
        func normal() -> Float {
            // sum of 4 uniforms, centered and scaled to unit variance: fast and good enough
            (uniform() + uniform() + uniform() + uniform() - 2) * 1.732
        }
        var w = GGUFWriter()
        let a = "llama"
        w.set("general.architecture", .string(a))
        w.set("general.name", .string(name))
        w.set("\(a).context_length", .uint32(UInt32(context)))
        w.set("\(a).embedding_length", .uint32(UInt32(embedding)))
        w.set("\(a).block_count", .uint32(UInt32(layers)))
        w.set("\(a).feed_forward_length", .uint32(UInt32(feedForward)))
        w.set("\(a).attention.head_count", .uint32(UInt32(heads)))
        w.set("\(a).attention.head_count_kv", .uint32(UInt32(kvHeads)))
        w.set("\(a).rope.dimension_count", .uint32(UInt32(embedding / heads)))
        w.set("\(a).attention.layer_norm_rms_epsilon", .float32(1e-5))
        w.set("\(a).vocab_size", .uint32(UInt32(vocabulary)))
        if experts > 0 {
            w.set("\(a).expert_count", .uint32(UInt32(experts)))
            w.set("\(a).expert_used_count", .uint32(UInt32(expertsUsed)))
        }
        for (key, value) in extraMetadata.sorted(by: { $0.key < $1.key }) { w.set(key, value) }
        let characters = (0..<vocabulary - 4 - controlTokens.count).map { String(UnicodeScalar(UInt8(33 + $0))) }
        let tokens = ["<unk>", "<s>", "</s>"] + characters + controlTokens + ["ab"]
        let control = Set([0, 1, 2] + (0..<controlTokens.count).map { 3 + characters.count + $0 })
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.pre", .string("default"))
        w.set("tokenizer.ggml.tokens", .array(.string, tokens.map { .string($0) }))
        w.set("tokenizer.ggml.token_type", .array(.int32, tokens.indices.map { .int32(control.contains($0) ? 3 : 1) }))
        w.set("tokenizer.ggml.merges", .array(.string, [.string("a b")]))
        w.set("tokenizer.ggml.bos_token_id", .uint32(1))
        w.set("tokenizer.ggml.eos_token_id", .uint32(2))
        w.set("tokenizer.ggml.add_bos_token", .bool(false))

        func matrix(_ name: String, _ shape: [Int], scale: Float? = nil, keepF32: Bool = false, nanRow: Int? = nil) {
            let count = shape.reduce(1, *)
            let s = scale ?? 1 / Float(shape[0]).squareRoot()
            var values = [Float](repeating: 0, count: count)
            for i in 0..<count { values[i] = normal() * s }
            if let nanRow { for i in nanRow * shape[0]..<(nanRow + 1) * shape[0] { values[i] = .nan } }
            let t: TensorType = keepF32 ? .f32 : type
            var bytes = [UInt8](repeating: 0, count: t.byteCount(elements: count)!)
            let rowBytes = t.byteCount(elements: shape[0])!
            values.withUnsafeBufferPointer { src in
                bytes.withUnsafeMutableBytes { dst in
                    for r in 0..<count / shape[0] {
                        quantizeRow(t, src.baseAddress! + r * shape[0], into: dst.baseAddress! + r * rowBytes, count: shape[0])
                    }
                }
            }
            w.addTensor(name: name, type: t, shape: shape, data: bytes)
        }
        func vector(_ name: String, _ n: Int) {
            w.addTensor(name: name, shape: [n], floats: (0..<n).map { _ in 1 + 0.1 * normal() })
        }
        let d = embedding, hd = embedding / heads
        matrix("token_embd.weight", [d, vocabulary], scale: 1, keepF32: poisonedToken != nil, nanRow: poisonedToken)
        for i in 0..<layers {
            let p = "blk.\(i)."
            vector(p + "attn_norm.weight", d)
            matrix(p + "attn_q.weight", [d, heads * hd])
            matrix(p + "attn_k.weight", [d, kvHeads * hd])
            matrix(p + "attn_v.weight", [d, kvHeads * hd])
            matrix(p + "attn_output.weight", [heads * hd, d])
            vector(p + "ffn_norm.weight", d)
            if experts > 0 {
                matrix(p + "ffn_gate_inp.weight", [d, experts], scale: 1, keepF32: true)
                matrix(p + "ffn_gate_exps.weight", [d, feedForward, experts])
                matrix(p + "ffn_up_exps.weight", [d, feedForward, experts])
                matrix(p + "ffn_down_exps.weight", [feedForward, d, experts])
            } else {
                matrix(p + "ffn_gate.weight", [d, feedForward])
                matrix(p + "ffn_up.weight", [d, feedForward])
                matrix(p + "ffn_down.weight", [feedForward, d])
            }
        }
        vector("output_norm.weight", d)
        matrix("output.weight", [d, vocabulary])
        for extra in extraTensors {
            let bytes = extra.type.byteCount(elements: extra.shape.reduce(1, *))!
            w.addTensor(name: extra.name, type: extra.type, shape: extra.shape, data: [UInt8](repeating: 0, count: bytes))
        }
        let temporary = path + ".\(UUID().uuidString).partial"
        try w.write(to: temporary)
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.moveItem(atPath: temporary, toPath: path)
        return path
    }
}
