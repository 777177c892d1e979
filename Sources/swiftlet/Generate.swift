import ArgumentParser
import Engine
import Foundation
import Kernels
import Models

struct Generate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Complete a raw prompt (no chat template).",
        discussion: "With --chat-template-file, the prompt is instead sent as one user message through that template.")

    @Argument(help: "Path to a .gguf file or a model name from the cache.")
    var model: String
    @Argument(help: "The prompt; special-token text such as <|im_start|> is parsed.")
    var prompt: String
    @Option(name: [.customShort("n"), .customLong("n-predict")], help: "Tokens to generate at most.")
    var maxTokens = 128
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var speculative: SpeculativeOptions
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var chatTemplate: ChatTemplateOptions
    @OptionGroup var lora: LoRAOptions
    @OptionGroup var cache: CacheTypeOptions
    @Flag(help: "Print one JSON object with the text, tokens, finish reason and timings.")
    var json = false

    func validate() throws {
        guard maxTokens >= 1 else { throw ValidationError("--n-predict must be at least 1") }
        try ModelLocator.validate(model)
    }

    func run() throws {
        let template = try chatTemplate.template()
        let loaded = try LoadedModel(path: ModelLocator.resolve(model), memoryBudget: runtime.memoryBudget,
                                     chatTemplate: template, adapters: lora.files(), cacheTypes: cache.types)
        let generator = try Generator(model: loaded, configuration: .singleSequence(contextLength: runtime.contextLength,
                                                                                     threads: runtime.threads),
                                      draftModel: try speculative.loadDraftModel(for: loaded))
        defer { generator.shutdownAndWait() }
        let tokens = template == nil
            ? loaded.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
            : loaded.promptTokens(for: try loaded.renderChat([.user(prompt)]))
        let options = sampling.generationOptions(maxTokens: maxTokens, speculation: speculative.speculation)
        let result = try generator.generate(prompt: tokens, options: options) { piece in
            if !json { print(piece, terminator: ""); fflush(nil) }
            return true
        }
        if json {
            let object: [String: Any] = [
                "text": result.text,
                "tokens": result.tokens.map(Int.init),
                "prompt_tokens": tokens.count,
                "finish_reason": result.finishReason.rawValue,
                "timings": [
                    "prompt_tokens_per_second": result.timings.promptTokensPerSecond,
                    "generation_tokens_per_second": result.timings.generationTokensPerSecond,
                    "time_to_first_token_ms": result.timings.timeToFirstToken * 1000,
                    "prompt_ms": result.timings.promptSeconds * 1000,
                    "generation_ms": result.timings.generationSeconds * 1000,
                    "draft_tokens": result.timings.draftTokens,
                    "accepted_draft_tokens": result.timings.acceptedDraftTokens,
                    "draft_acceptance_rate": result.timings.draftAcceptanceRate,
                ],
            ]
            var output = object
            if let budget = loaded.memoryBudget { output["memory_budget"] = budget.report() }
            output["memory"] = ["peak_rss_bytes": MemoryBudget.status("VmHWM"), "rss_bytes": MemoryBudget.status("VmRSS"),
                                "rss_file_bytes": MemoryBudget.status("RssFile")]
            let data = try JSONSerialization.data(withJSONObject: output, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print()
            fflush(nil)
            printError(result.timings.summary)
            if let budget = loaded.memoryBudget { printError(budget.summary) }
        }
    }
}

struct Perplexity: ParsableCommand {
    /// Statistics without spread come out finite, but a non-finite one is written as a string
    /// rather than failing the whole report.
    static let jsonEncoder: JSONEncoder = {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        return encoder
    }()

    static let configuration = CommandConfiguration(
        abstract: "Perplexity of a text file, or KL divergence against a base model, measured as llama.cpp's llama-perplexity does.",
        discussion: """
            perplexity MODEL FILE                                   perplexity of FILE
            perplexity MODEL FILE --kl-divergence-base BASE         also writes BASE: this model's log-probabilities
            perplexity MODEL --kl-divergence-base BASE --kl-divergence
                                                                    compares MODEL with the model that wrote BASE
            BASE files are llama.cpp's format: llama-perplexity reads Swiftlet's and Swiftlet reads llama-perplexity's.
            """)

    @Argument(help: "Path to a .gguf file or a model name from the cache.")
    var model: String
    @Argument(help: "Text file to score (not needed with --kl-divergence: the tokens come from the base file).")
    var file: String?
    @Option(name: .customLong("ctx"), help: "Tokens per chunk; the second half of each is scored.")
    var contextLength = 512
    @Option(help: "Score at most this many chunks.")
    var chunks: Int?
    @Option(name: [.customShort("t"), .customLong("threads")], help: "Threads (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("kl-divergence-base"), help: "File of the base model's log-probabilities (written, or with --kl-divergence read).")
    var klDivergenceBase: String?
    @Flag(name: .customLong("kl-divergence"), help: "Compare with the model that wrote --kl-divergence-base: KLD, Δp, same top p, PPL ratio.")
    var klDivergence = false
    @OptionGroup var lora: LoRAOptions
    @OptionGroup var cache: CacheTypeOptions
    @Flag(help: "Print one JSON object with the results.")
    var json = false

    func validate() throws {
        if klDivergence {
            guard klDivergenceBase != nil else { throw ValidationError("--kl-divergence needs --kl-divergence-base FILE") }
        } else {
            guard file != nil else { throw ValidationError("missing the text FILE to score") }
        }
        if let chunks, chunks < 1 { throw ValidationError("--chunks must be at least 1") }
        guard contextLength > 1 else { throw ValidationError("--ctx must be at least 2") }
        // Every file is checked before the model is pulled or loaded.
        if !klDivergence, let file { try requireReadableFile(file, what: "text FILE") }
        if klDivergence, let klDivergenceBase { try requireReadableFile(klDivergenceBase, what: "--kl-divergence-base FILE") }
        if !klDivergence, let klDivergenceBase { try requireWritableFile(klDivergenceBase, what: "--kl-divergence-base FILE") }
        try ModelLocator.validate(model)
    }

    func run() throws {
        let loaded = try LoadedModel(path: ModelLocator.resolve(model), adapters: lora.files(), cacheTypes: cache.types)
        let pool = ThreadPool(threads: threads)
        if klDivergence, let base = klDivergenceBase {
            let result = try Engine.klDivergence(model: loaded, basePath: base, maxChunks: chunks, pool: pool) { done, total, kld in
                if !json { printError(String(format: "[%d/%d] mean KLD %.6f", done, total, kld)) }
            }
            if json {
                print(String(decoding: try Self.jsonEncoder.encode(result), as: UTF8.self))
            } else {
                print(result.summary)
            }
            return
        }
        guard let file, let data = FileManager.default.contents(atPath: file) else {
            throw ValidationError("cannot read '\(file ?? "")'")
        }
        let text = String(decoding: data, as: UTF8.self)
        let result = try Engine.perplexity(model: loaded, text: text, context: contextLength, maxChunks: chunks,
                                           pool: pool, saveBase: klDivergenceBase) { done, total, ppl in
            if !json { printError(String(format: "[%d/%d] %.4f", done, total, ppl)) }
        }
        if json {
            let data = try Self.jsonEncoder.encode(result)
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: "Final estimate: PPL = %.4f +/- %.5f (%d chunks of %d tokens, %.1f s)",
                         result.ppl, result.stderr, result.chunks, result.context, result.seconds))
        }
    }
}
