import ArgumentParser
import GGUF
import Kernels
import Models
import Tokenization

struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Describe a GGUF model: architecture, hyper-parameters, tokenizer, tensors.")

    @Argument(help: "Path to a .gguf file or a model name from the cache.")
    var model: String

    @Flag(help: "List every tensor with its type, shape and size.")
    var tensors = false

    @Flag(help: "Print every metadata key.")
    var metadata = false

    func validate() throws { try ModelLocator.validate(model) }

    func run() throws {
        let file = try GGUFFile(path: ModelLocator.resolve(model))
        print(ModelSummary(file: file).text(includeTensors: tensors, includeMetadata: metadata), terminator: "")
    }
}

/// Human-readable facts about a GGUF file, as `swiftlet info` prints them.
struct ModelSummary {
    let file: GGUFFile

    func text(includeTensors: Bool, includeMetadata: Bool) -> String {
        var out = ""
        func line(_ key: String, _ value: Any?) {
            guard let value else { return }
            out += key.padding(toLength: 34, withPad: " ", startingAt: 0) + "\(value)\n"
        }
        line("file", file.path)
        if file.partPaths.count > 1 { line("split into", "\(file.partPaths.count) parts (all opened together)") }
        line("GGUF version", file.version)
        line("name", file["general.name"]?.string)
        line("architecture", file.architecture ?? "(missing general.architecture)")
        for key in ["context_length", "embedding_length", "block_count", "feed_forward_length",
                    "attention.head_count", "attention.head_count_kv", "attention.key_length",
                    "attention.value_length", "attention.layer_norm_rms_epsilon", "attention.sliding_window",
                    "rope.freq_base", "rope.dimension_count", "expert_count", "expert_used_count",
                    "ssm.conv_kernel", "ssm.inner_size", "ssm.state_size", "ssm.time_step_rank"] {
            line(key, file.arch(key))
        }
        let tokens = file["tokenizer.ggml.tokens"]?.array?.count
        line("tokenizer", file["tokenizer.ggml.model"]?.string.map { kind in
            let name = kind == "gpt2" ? "byte-level BPE" : kind == "llama" ? "SentencePiece" : kind
            return "\(name) (\(kind), pre: \(file["tokenizer.ggml.pre"]?.string ?? "default"))"
        })
        line("vocabulary size", tokens)
        line("chat template", file["tokenizer.chat_template"]?.string != nil ? "present" : "none")
        line("parameters", "\(file.parameterCount) (\(formatCount(file.parameterCount)))")
        var byType: [String: Int] = [:]
        for t in file.tensors { byType[t.type.description, default: 0] += 1 }
        line("tensor types", byType.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: " "))
        line("tensors", file.tensors.count)
        line("weights size", formatBytes(file.tensorDataBytes))
        line("file size", formatBytes(file.fileSize))
        let problems = missingSupport()
        line("runs in Swiftlet", problems.isEmpty ? "yes" : "no, missing:")
        for problem in problems { out += "  - \(problem)\n" }
        if let config = try? ModelConfig(file: file), case let kvHeads = config.layerHeadCountsKV.reduce(0, +), kvHeads > 0 {
            // keys and values for every KV head of every layer (none in recurrent layers)
            let width = max(config.keyLength, config.valueLength)
            let kvPerToken = kvHeads * KVCacheTypes.f16.bytes(width: width)
            line("KV cache (F16)", "\(formatBytes(kvPerToken * 1024)) per 1024 tokens")
            for type in [KVCacheType.q8_0, .q4_0] where config.keyLength % type.blockSize == 0 && config.valueLength % type.blockSize == 0 {
                let bytes = kvHeads * KVCacheTypes(key: type, value: type).bytes(width: width)
                line("KV cache (\(type.rawValue.uppercased()))", "\(formatBytes(bytes * 1024)) per 1024 tokens (--cache-type-k/v \(type.rawValue))")
            }
            for context in [2048, config.contextLength] {
                line("memory at \(context) ctx", "\(formatBytes(file.tensorDataBytes + kvPerToken * context)) (weights, memory-mapped, + KV cache)")
            }
        }
        if includeMetadata {
            out += "\nmetadata:\n"
            for key in file.metadataKeys { out += "  \(key) = \(file[key]!)\n" }
        }
        if includeTensors {
            out += "\n" + "name".padding(toLength: 36, withPad: " ", startingAt: 0) + "type   shape                 bytes\n"
            for t in file.tensors {
                out += t.name.padding(toLength: 36, withPad: " ", startingAt: 0)
                    + t.type.description.padding(toLength: 7, withPad: " ", startingAt: 0)
                    + t.shape.map(String.init).joined(separator: " × ").padding(toLength: 22, withPad: " ", startingAt: 0)
                    + "\(t.byteCount)\n"
            }
        }
        return out
    }
}

extension ModelSummary {
    /// What Swiftlet lacks to run this file: its architecture, tensor types and tokenizer are
    /// checked separately, so each missing piece is named; when all three are there, the model
    /// is built (weights stay memory-mapped) to catch inconsistent shapes or unused tensors.
    func missingSupport() -> [String] {
        var problems: [String] = []
        let architecture = file.architecture ?? "(none)"
        if !ModelRegistry.supported.contains(architecture) {
            problems.append("architecture '\(architecture)' (supported: \(ModelRegistry.supported.joined(separator: ", ")))")
        }
        let types = unsupportedTensorTypes(file)
        if !types.isEmpty { problems.append("\(ModelError.unsupportedTensorTypes(types))") }
        do { _ = try loadTokenizer(from: file) } catch { problems.append("\(error)") }
        if problems.isEmpty {
            do { _ = try ModelRegistry.load(file, repackWeights: false) } catch { problems.append("\(error)") }
        }
        return problems
    }
}

func formatBytes(_ n: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(n)
    var unit = 0
    while value >= 1024 && unit < units.count - 1 { value /= 1024; unit += 1 }
    return unit == 0 ? "\(n) B" : String(format: "%.2f %@", value, units[unit])
}

func formatCount(_ n: Int) -> String {
    n >= 1_000_000_000 ? String(format: "%.2fB", Double(n) / 1e9) : String(format: "%.1fM", Double(n) / 1e6)
}
