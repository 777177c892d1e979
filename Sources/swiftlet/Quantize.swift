import ArgumentParser
import Engine
import Foundation
import GGUF

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Quantize an F32/F16/BF16 GGUF model (llama.cpp-compatible output).",
        discussion: """
        TYPE is one of \(ModelQuantizer.targets.map(\.description).joined(separator: ", ")). Norms, biases and the \
        MoE router keep their type; the output projection (or tied token embeddings) becomes Q6_K \
        (Q8_0 for a Q8_0 target), as llama-quantize chooses.
        """)

    @Argument(help: "Input .gguf file (or a model name from the cache).")
    var input: String
    @Argument(help: "Output .gguf file.")
    var output: String
    @Argument(help: "Target type, e.g. Q4_K, Q8_0.")
    var type: String
    @Option(name: [.customShort("t"), .customLong("threads")], help: "Threads (default: all cores).")
    var threads: Int?
    @Flag(help: "Also re-quantize tensors that are already quantized.")
    var allowRequantize = false
    @Flag(name: .shortAndLong, help: "No per-tensor lines.")
    var quiet = false

    func validate() throws {
        _ = try target()
        try requireWritableFile(output, what: "OUTPUT")
        try ModelLocator.validate(input)
    }

    func target() throws -> TensorType {
        guard let target = TensorType(name: type), ModelQuantizer.targets.contains(target) else {
            throw ValidationError("unknown TYPE '\(type)' (use one of \(ModelQuantizer.targets.map(\.description).joined(separator: ", ")))")
        }
        return target
    }

    func run() throws {
        let target = try target()
        let path = try ModelLocator.resolve(input)
        let mb = { (bytes: Int) in String(format: "%.2f MiB", Double(bytes) / 1_048_576) }
        let summary = try ModelQuantizer.quantize(input: path, output: output, target: target, threads: threads,
                                                  allowRequantize: allowRequantize) { i, n, e in
            guard !quiet else { return }
            let shape = e.shape.map(String.init).joined(separator: " x ")
            let action = e.from == e.to ? "kept" : "\(e.from) -> \(e.to)"
            printError("[\(i + 1)/\(n)] \(e.name) [\(shape)] \(action), \(mb(e.inputBytes)) -> \(mb(e.outputBytes))")
        }
        let weights = summary.entries.reduce(0) { $0 + $1.shape.reduce(1, *) }
        let bpw = String(format: "%.2f", 8 * Double(summary.outputBytes) / Double(max(1, weights)))
        print("\(output): \(mb(summary.inputBytes)) -> \(mb(summary.outputBytes)) (\(bpw) bits per weight) in \(String(format: "%.1f", summary.seconds)) s")
    }
}
