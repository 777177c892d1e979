import ArgumentParser
import Engine
import Foundation
import Kernels
import Models
import Tokenization

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
    @OptionGroup var cache: CacheTypeOptions
    @OptionGroup(title: "Speculative decoding (adds a test: greedy decoding with it against without it)")
    var speculative: SpeculativeOptions
    @Option(name: .customLong("prompt-file"),
            help: "Text the speculative test decodes after (default: a paragraph and a request to repeat it with one word changed).")
    var promptFile: String?
    @Flag(help: "Print a JSON array, one object per test.")
    var json = false
    @Flag(help: "Benchmark the matrix-vector kernels of every tensor type instead of a model.")
    var kernels = false

    func validate() throws {
        guard repetitions > 0 else { throw ValidationError("--repetitions must be at least 1") }
        guard promptTokens >= 0, generatedTokens >= 0, depth >= 0 else { throw ValidationError("token counts cannot be negative") }
        _ = try parseMemBudget(memBudget)
        if !kernels { try ModelLocator.validate(model) }
        if speculative.speculation != nil {
            guard !kernels else { throw ValidationError("--lookup and --draft measure a model, not --kernels") }
            guard generatedTokens > 0 else { throw ValidationError("the speculative test generates -n tokens: give -n above 0") }
        }
        if let promptFile { try requireReadableFile(promptFile, what: "--prompt-file") }
    }

    func run() throws {
        if kernels {
            print(runKernelBenchmark(threads: threads))
            return
        }
        let path = try ModelLocator.resolve(model)
        let loaded = try LoadedModel(path: path, memoryBudget: try parseMemBudget(memBudget), adapters: lora.files(), cacheTypes: cache.types)
        let longest = depth + max(promptTokens, generatedTokens)
        try loaded.validateContext(longest)
        let pool = ThreadPool(threads: threads)
        var results = try benchmark(model: loaded, promptTokens: promptTokens, generatedTokens: generatedTokens,
                                    depth: depth, repetitions: repetitions, pool: pool)
        if let speculation = speculative.speculation {
            // a prompt file is raw text (special-token text parsed, as `generate` reads it); the
            // built-in request goes through the model's chat template when it has one
            let prompt: [TokenID]
            if let promptFile {
                prompt = loaded.tokenizer.encode(try String(contentsOfFile: promptFile, encoding: .utf8),
                                                 addSpecial: true, parseSpecial: true)
            } else if loaded.hasChatTemplate {
                prompt = loaded.promptTokens(for: try loaded.renderChat([ChatMessage(role: "user", content: speculativeBenchmarkPrompt)]))
            } else {
                prompt = loaded.tokenizer.encode(speculativeBenchmarkPrompt, addSpecial: true, parseSpecial: false)
            }
            results.append(try benchmarkSpeculation(model: loaded, speculation: speculation,
                                                    draftModel: try speculative.loadDraftModel(for: loaded), prompt: prompt,
                                                    generatedTokens: generatedTokens, repetitions: repetitions, threads: threads))
        }
        let kvBytesPerToken = loaded.model is any AttentionModel
            ? KVBlockPool.bytesPerToken(config: loaded.config, types: loaded.cacheTypes) : nil
        for i in results.indices {
            results[i].type_k = loaded.cacheTypes.key.rawValue
            results[i].type_v = loaded.cacheTypes.value.rawValue
            results[i].kv_bytes_per_token = kvBytesPerToken
        }
        // decode reads the weights once per token: how close it comes to the machine's read bandwidth
        if results.contains(where: { $0.test.hasPrefix("tg") }) {
            let bandwidth = readBandwidth(pool: pool)
            let bytes = loaded.decodeWeightBytes
            for i in results.indices where results[i].test.hasPrefix("tg") {
                results[i].weight_bytes_per_token = bytes
                results[i].read_bandwidth_gbs = bandwidth
                results[i].bandwidth_share = Double(bytes) * results[i].avg_ts / 1e9 / bandwidth
            }
        }
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
        if let kvBytesPerToken {
            print("\nKV cache (\(loaded.cacheTypes)): \(formatBytes(kvBytesPerToken)) per token")
        }
        for r in results {
            if let plain = r.plain_avg_ts, let rate = r.draft_acceptance_rate, let speedup = r.speedup_vs_plain {
                print("\n\(r.test): " + String(format: "%.2f t/s against %.2f t/s plain on the same prompt (%.2f×, medians), "
                             + "%d of %d drafted tokens accepted (%.0f%%)", r.avg_ts, plain, speedup,
                             r.accepted_draft_tokens ?? 0, r.draft_tokens ?? 0, rate * 100))
            }
        }
        if let tg = results.first(where: { $0.bandwidth_share != nil }), let share = tg.bandwidth_share,
           let bandwidth = tg.read_bandwidth_gbs, let bytes = tg.weight_bytes_per_token {
            print("\ndecode reads \(formatBytes(bytes)) of weights per token: \(tg.test) "
                  + String(format: "at %.1f GB/s, %.0f%% of the %.1f GB/s read bandwidth measured now",
                           Double(bytes) * tg.avg_ts / 1e9, share * 100, bandwidth))
        }
        if let ttft = results.first(where: { $0.time_to_first_token_ms != nil })?.time_to_first_token_ms {
            print(String(format: "\ntime to first token after a %d-token prompt: %.0f ms (median)", promptTokens, ttft)
                  + (depth > 0 ? " on top of \(depth) cached tokens" : ""))
        }
    }
}
