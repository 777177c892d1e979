import ArgumentParser
import Engine
import Foundation
import Kernels
import Models

struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure prompt processing and token generation speed, as llama-bench does.",
        discussion: "With --kernels, measures matrix-vector throughput per tensor type instead (no model needed).")

    @Argument(help: "Path to a .gguf file or a model name from the cache.")
    var model: String = ModelCatalog.defaultModel
    @Option(name: [.customShort("t"), .customLong("threads")], help: "Threads (default: all cores).")
    var threads: Int?
    @Option(name: [.customShort("p"), .customLong("n-prompt")], help: "Prompt tokens for the pp test (0 skips it).")
    var promptTokens = 512
    @Option(name: [.customShort("n"), .customLong("n-gen")], help: "Generated tokens for the tg test (0 skips it).")
    var generatedTokens = 128
    @Option(name: [.customShort("d"), .customLong("n-depth")],
            help: "Tokens already in the cache before each test (untimed), as llama-bench's -d.")
    var depth = 0
    @Option(name: [.customShort("r"), .customLong("repetitions")], help: "Timed repetitions of each test.")
    var repetitions = 5
    @Option(name: .customLong("mem-budget"), help: memBudgetHelp)
    var memBudget: String?
    @OptionGroup var lora: LoRAOptions
    @Flag(help: "Print a JSON array, one object per test.")
    var json = false
    @Flag(help: "Benchmark the matrix-vector kernels of every tensor type instead of a model.")
    var kernels = false

    func validate() throws {
        guard repetitions > 0 else { throw ValidationError("--repetitions must be at least 1") }
        guard promptTokens >= 0, generatedTokens >= 0, depth >= 0 else { throw ValidationError("token counts cannot be negative") }
        _ = try parseMemBudget(memBudget)
        if !kernels { try ModelLocator.validate(model) }
    }

    func run() throws {
        if kernels {
            print(runKernelBenchmark(threads: threads))
            return
        }
        let path = try ModelLocator.resolve(model)
        let loaded = try LoadedModel(path: path, memoryBudget: try parseMemBudget(memBudget), adapters: lora.files())
        let longest = depth + max(promptTokens, generatedTokens)
        try loaded.validateContext(longest)
        let results = try benchmark(model: loaded, promptTokens: promptTokens, generatedTokens: generatedTokens,
                                    depth: depth, repetitions: repetitions, pool: ThreadPool(threads: threads))
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            print(String(decoding: try encoder.encode(results), as: UTF8.self))
            return
        }
        let size = formatBytes(loaded.file.tensorDataBytes)
        print("| model | size | params | threads | test | t/s | peak RSS |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in results {
            print("| \(loaded.name) | \(size) | \(formatCount(loaded.file.parameterCount)) | \(r.n_threads) | \(r.test) | "
                  + String(format: "%.2f ± %.2f", r.avg_ts, r.stddev_ts) + " | \(formatBytes(r.peak_rss_bytes)) |")
        }
        if let budget = loaded.memoryBudget { print("\n" + budget.summary) }
        if let ttft = results.first(where: { $0.time_to_first_token_ms != nil })?.time_to_first_token_ms {
            print(String(format: "\ntime to first token after a %d-token prompt: %.0f ms (median)", promptTokens, ttft)
                  + (depth > 0 ? " on top of \(depth) cached tokens" : ""))
        }
    }
}
