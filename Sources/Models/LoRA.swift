import Foundation
import GGUF
import Kernels

/// A LoRA adapter in llama.cpp's GGUF adapter format (`general.type` adapter, `adapter.type`
/// lora): for a base projection `NAME` (y = x·W), the pair `NAME.lora_a` (A: rank × inputs,
/// GGUF shape [inputs, rank]) and `NAME.lora_b` (B: outputs × rank, shape [rank, outputs]) adds
/// scale·(x·A)·B, with scale = s·alpha/rank for the user's scale s (s alone when alpha is 0).
/// The term is added unmerged, so the base weights stay in the file mapping and the same
/// model serves any mix of adapters, row by row (`LoRAPass`).
public final class LoRAAdapter: Sendable {
    public struct Pair: Sendable {
        /// A, rank rows of the projection's input width.
        public let down: WeightMatrix
        /// B, one row of `rank` per projection output.
        public let up: WeightMatrix
        public var rank: Int { down.rows }
    }

    public let path: String
    public let alpha: Float
    /// `adapter.lora.task_name` and `adapter.lora.prompt_prefix`, when the file has them.
    public let taskName: String
    public let promptPrefix: String
    /// By base tensor name (`blk.0.attn_q.weight`).
    public let pairs: [String: Pair]
    let file: GGUFFile

    /// Opens and checks the adapter against a model: `architecture` must be the model's,
    /// every pair must adapt a tensor of `base` that the model applies as a projection
    /// (`projections`, see `recordingProjections`), with A and B of matching shapes.
    public init(path: String, base: GGUFFile, architecture: String, projections: Set<String>) throws {
        let file: GGUFFile
        do { file = try GGUFFile(path: path) } catch { throw LoRAError(path: path, problem: .unreadable("\(error)")) }
        func fail(_ problem: LoRAError.Problem) -> LoRAError { LoRAError(path: path, problem: problem) }
        let type = file["general.type"]?.string
        guard type == "adapter" else { throw fail(.notAnAdapter(generalType: type)) }
        let adapterType = file["adapter.type"]?.string
        guard adapterType == "lora" else { throw fail(.notLoRA(adapterType: adapterType)) }
        let adapterArchitecture = file.architecture ?? ""
        guard adapterArchitecture == architecture else {
            throw fail(.wrongArchitecture(adapter: adapterArchitecture, model: architecture))
        }
        // llama.cpp reads a missing alpha as 0 (no alpha/rank factor)
        var alpha: Float = 0
        if let value = file["adapter.lora.alpha"] {
            guard let a = value.double.map({ Float($0) }), value.type == .float32 || value.type == .float64,
                  a.isFinite, a >= 0 else { throw fail(.badAlpha(value.description)) }
            alpha = a
        }
        var halves: [String: (a: TensorInfo?, b: TensorInfo?)] = [:]
        for tensor in file.tensors {
            if tensor.name.hasSuffix(".lora_a") {
                halves[String(tensor.name.dropLast(7)), default: (nil, nil)].a = tensor
            } else if tensor.name.hasSuffix(".lora_b") {
                halves[String(tensor.name.dropLast(7)), default: (nil, nil)].b = tensor
            } else if tensor.name.hasSuffix("_norm.weight") {
                // norm deltas: llama.cpp loads adapters that carry them and leaves them out too
                continue
            } else {
                throw fail(.unexpectedTensor(tensor.name))
            }
        }
        var pairs: [String: Pair] = [:]
        for (name, half) in halves.sorted(by: { $0.key < $1.key }) {
            guard let a = half.a, let b = half.b else { throw fail(.missingHalf(name + (half.a == nil ? ".lora_a" : ".lora_b"))) }
            guard let weight = base.tensor(named: name) else { throw fail(.baseTensorMissing(name)) }
            guard projections.contains(name) else { throw fail(.notAdaptable(name)) }
            for t in [a, b] where !t.type.hasWeightKernels { throw fail(.unsupportedType(name: t.name, type: t.type)) }
            let inputs = weight.rowLength, outputs = weight.rowCount
            guard a.shape.count == 2, b.shape.count == 2, a.shape[0] == inputs, b.shape[1] == outputs else {
                throw fail(.shapeMismatch(name: name, base: weight.shape, a: a.shape, b: b.shape))
            }
            // A's rows are B's columns; a rank of 0 would divide alpha by zero
            guard a.shape[1] == b.shape[0], a.shape[1] > 0 else {
                throw fail(.rankMismatch(name: name, a: a.shape, b: b.shape))
            }
            pairs[name] = Pair(down: WeightMatrix(file: file, tensor: a), up: WeightMatrix(file: file, tensor: b))
        }
        guard !pairs.isEmpty else { throw fail(.empty) }
        self.path = path
        self.alpha = alpha
        self.file = file
        self.pairs = pairs
        taskName = file["adapter.lora.task_name"]?.string ?? ""
        promptPrefix = file["adapter.lora.prompt_prefix"]?.string ?? ""
    }

    /// The factor of (x·A)·B for the user's scale `scale`, as llama.cpp derives it.
    public func effectiveScale(_ scale: Float, rank: Int) -> Float {
        alpha != 0 ? scale * alpha / Float(rank) : scale
    }
}

public struct LoRAError: Error, CustomStringConvertible, Equatable {
    public enum Problem: Equatable, Sendable {
        case unreadable(String)
        case notAnAdapter(generalType: String?)
        case notLoRA(adapterType: String?)
        case wrongArchitecture(adapter: String, model: String)
        case badAlpha(String)
        case unexpectedTensor(String)
        case missingHalf(String)
        case baseTensorMissing(String)
        /// A base tensor the model does not apply as a projection (embeddings, norms, experts).
        case notAdaptable(String)
        case unsupportedType(name: String, type: TensorType)
        case shapeMismatch(name: String, base: [Int], a: [Int], b: [Int])
        case rankMismatch(name: String, a: [Int], b: [Int])
        case empty
    }

    public let path: String
    public let problem: Problem

    public var description: String {
        let what: String = switch problem {
        case .unreadable(let m): m
        case .notAnAdapter(let t): "general.type is \(t.map { "'\($0)'" } ?? "missing"), expected 'adapter'"
        case .notLoRA(let t): "adapter.type is \(t.map { "'\($0)'" } ?? "missing"), expected 'lora'"
        case .wrongArchitecture(let a, let m): "the adapter is for architecture '\(a)', the model is '\(m)'"
        case .badAlpha(let v): "adapter.lora.alpha is \(v): expected a non-negative finite float"
        case .unexpectedTensor(let n): "tensor '\(n)' is neither a .lora_a nor a .lora_b"
        case .missingHalf(let n): "tensor '\(n)' is missing (each adapted tensor needs .lora_a and .lora_b)"
        case .baseTensorMissing(let n): "the base model has no tensor '\(n)' (an adapter for another model?)"
        case .notAdaptable(let n): "'\(n)' is not a projection Swiftlet applies adapters to (attention, feed-forward, SSM and output projections are)"
        case .unsupportedType(let n, let t): "tensor '\(n)' has type \(t), which has no kernels in Swiftlet"
        case .shapeMismatch(let n, let w, let a, let b):
            "'\(n)' has shape \(w) in the model, but its lora_a is \(a) and lora_b \(b) (expected [\(w.first ?? 0), rank] and [rank, \(w.count > 1 ? w[1] : 1)])"
        case .rankMismatch(let n, let a, let b): "'\(n)': lora_a \(a) and lora_b \(b) disagree on the rank"
        case .empty: "the adapter has no lora_a/lora_b pairs"
        }
        return "LoRA adapter \(path): \(what)"
    }
}

/// The adapters of a forward pass and each batch row's scale for each (the user's scale; 0:
/// not applied to that row). Bound while the model computes (`LanguageModel.forward`), read
/// by every `Linear`, so the architectures' graphs need not know about adapters.
public struct LoRAPass: Sendable {
    public let adapters: [LoRAAdapter]
    /// `rowScales[k][row]`: adapter k's scale for that row of the pass.
    public let rowScales: [[Float]]

    @TaskLocal static var current: LoRAPass?

    /// The pass for `batch`: each sequence's rows take its `loraScales`; nil when no row
    /// applies any adapter.
    init?(adapters: [LoRAAdapter], batch: [BatchSequence]) {
        guard !adapters.isEmpty, batch.contains(where: { $0.loraScales.contains { $0 != 0 } }) else { return nil }
        self.adapters = adapters
        rowScales = adapters.indices.map { k in
            batch.flatMap { seq in
                [Float](repeating: k < seq.loraScales.count ? seq.loraScales[k] : 0, count: seq.tokens.count)
            }
        }
    }

    private init(adapters: [LoRAAdapter], rowScales: [[Float]]) {
        self.adapters = adapters
        self.rowScales = rowScales
    }

    /// Runs `body` with the current pass restricted to `rows` of it, in that order (a head
    /// that projects only the rows whose logits are wanted).
    static func selecting<T>(rows: [Int], _ body: () -> T) -> T {
        guard let pass = current else { return body() }
        return $current.withValue(LoRAPass(adapters: pass.adapters, rowScales: pass.rowScales.map { s in rows.map { s[$0] } }),
                                  operation: body)
    }

    /// Adds every active adapter's term for the projection `name` to `rows` rows of its output
    /// `y` (`outputs` wide), whose inputs `x` are rows `firstRow…` of the pass.
    func apply(name: String, x: UnsafePointer<Float>, rows: Int, firstRow: Int, y: UnsafeMutablePointer<Float>,
               outputs: Int, pool: ThreadPool) {
        for (adapter, scales) in zip(adapters, rowScales) {
            guard let pair = adapter.pairs[name] else { continue }
            precondition(firstRow + rows <= scales.count, "LoRA: projection '\(name)' ran on rows outside the pass")
            let rowScale = (0..<rows).map { adapter.effectiveScale(scales[firstRow + $0], rank: pair.rank) }
            guard rowScale.contains(where: { $0 != 0 }) else { continue }
            let xa = Matrix(rows: rows, columns: pair.rank, zeroed: false)
            let xab = Matrix(rows: rows, columns: outputs, zeroed: false)
            matmul(pair.down, input: x, tokens: rows, output: xa.data, pool: pool)
            matmul(pair.up, input: xa.data, tokens: rows, output: xab.data, pool: pool)
            // rows at scale 0 are left untouched, so they equal the base model's exactly
            for r in 0..<rows where rowScale[r] != 0 {
                addScaled(y + r * outputs, xab[r], scale: rowScale[r], count: outputs)
            }
        }
    }
}

/// Collects the names of the projections (`Linear`) a model builds, so an adapter can be
/// checked against what the forward pass applies.
public final class ProjectionRecorder: @unchecked Sendable {
    private let lock = NSLock()
    private var names: Set<String> = []

    @TaskLocal static var current: ProjectionRecorder?

    func record(_ name: String) {
        lock.lock()
        names.insert(name)
        lock.unlock()
    }

    /// Runs `build` and returns its result with the names of the projections it created.
    /// (The token embedding, tied to the head in some models, and a reranker's classifier,
    /// which runs on pooled rows, take no adapters.)
    public static func recording<T>(_ build: () throws -> T) rethrows -> (T, Set<String>) {
        let recorder = ProjectionRecorder()
        let result = try $current.withValue(recorder, operation: build)
        let names = recorder.names.filter { $0 != "token_embd.weight" && !$0.hasPrefix("cls.") }
        return (result, names)
    }
}
