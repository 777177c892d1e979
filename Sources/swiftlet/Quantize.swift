import ArgumentParser
import Engine
import Foundation
import GGUF

struct Quantize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Quantize an F32/F16/BF16 GGUF model (llama.cpp-compatible output).",
        discussion: """
        TYPE is one of llama-quantize's: \(ModelQuantizer.Mix.all.map(\.name).joined(separator: ", ")) \
        (Q3_K, Q4_K and Q5_K mean Q3_K_M, Q4_K_M and Q5_K_M). Tensors get the types llama-quantize \
        gives them for TYPE: norms, biases and the MoE router keep theirs, the output projection (or \
        tied token embeddings) becomes Q6_K, the _S/_M/_L mixes give some attn_v / ffn_down / \
        attn_output layers more bits, and rows that are not whole blocks fall back to a 32-block type. \
        --pure gives every quantized tensor TYPE's base type. --imatrix reads llama-imatrix's output \
        (GGUF or legacy .dat) and weights the quantizers' errors by it, as llama-quantize does.
        """)

    @Argument(help: "Input .gguf file (or a model name from the cache).")
    var input: String
    @Argument(help: "Output .gguf file.")
    var output: String
    @Argument(help: "Target type, e.g. Q4_K_M, Q5_K_S, IQ4_XS, Q8_0.")
    var type: String
    @Option(name: [.customShort("t"), .customLong("threads")], help: "Threads (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("imatrix"), help: "Importance matrix from llama-imatrix (.gguf or legacy .dat).")
    var imatrix: String?
    @Flag(help: "No per-layer mix: every quantized tensor gets TYPE's base type.")
    var pure = false
    @Flag(help: "Also re-quantize tensors that are already quantized.")
    var allowRequantize = false
    @Flag(name: .shortAndLong, help: "No per-tensor lines.")
    var quiet = false

    func validate() throws {
        _ = try mix()
        try requireWritableFile(output, what: "OUTPUT")
        try ModelLocator.validate(input)
        if let imatrix, !FileManager.default.isReadableFile(atPath: imatrix) {
            throw ValidationError("cannot read --imatrix '\(imatrix)'")
        }
    }

    func mix() throws -> ModelQuantizer.Mix {
        guard let mix = ModelQuantizer.Mix(name: type) else {
            throw ValidationError("unknown TYPE '\(type)' (use one of \(ModelQuantizer.Mix.all.map(\.name).joined(separator: ", ")))")
        }
        return mix
    }

    func run() throws {
        let mix = try mix()
        let path = try ModelLocator.resolve(input)
        let importance = try imatrix.map { try ImportanceMatrix(path: $0) }
        if let importance, !quiet {
            printError("\(importance.path): \(importance.entries.count) entries, \(importance.chunkCount) chunks")
        }
        let mb = { (bytes: Int) in String(format: "%.2f MiB", Double(bytes) / 1_048_576) }
        let summary = try ModelQuantizer.quantize(input: path, output: output, mix: mix, pure: pure, importance: importance,
                                                  threads: threads, allowRequantize: allowRequantize) { i, n, e in
            guard !quiet else { return }
            let shape = e.shape.map(String.init).joined(separator: " x ")
            let action = e.from == e.to ? "kept" : "\(e.from) -> \(e.to)"
            printError("[\(i + 1)/\(n)] \(e.name) [\(shape)] \(action), \(mb(e.inputBytes)) -> \(mb(e.outputBytes))")
        }
        let weights = summary.entries.reduce(0) { $0 + $1.shape.reduce(1, *) }
        let bpw = String(format: "%.2f", 8 * Double(summary.outputBytes) / Double(max(1, weights)))
        print("\(output): \(mix) \(mb(summary.inputBytes)) -> \(mb(summary.outputBytes)) (\(bpw) bits per weight) in \(String(format: "%.1f", summary.seconds)) s")
    }
}
