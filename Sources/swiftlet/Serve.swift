import ArgumentParser
import Engine
import Foundation
import Logging
import Models
import Server

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve a model over an OpenAI-compatible HTTP API (continuous batching, paged KV cache).",
        discussion: """
        Endpoints: POST /v1/chat/completions, POST /v1/completions, POST /v1/embeddings, \
        POST /v1/rerank, GET /v1/models, llama.cpp's POST /tokenize, /detokenize and /apply-template, GET /health \
        (liveness: 200 while the process answers; the body says loading, ok, draining or error), \
        GET /ready (readiness: 200 once the model is loaded, 503 while loading, draining or over \
        --ready-queue-limit), GET /metrics (Prometheus). With --api-key, every call but /health, \
        /ready and /metrics needs 'Authorization: Bearer KEY' (compared in constant time). The server binds to 127.0.0.1 \
        unless --host says otherwise and sends no CORS headers unless --cors-origin names the origins allowed. SIGINT/SIGTERM drain: /ready and \
        new requests get 503 with Retry-After while in-flight requests finish (up to \
        --shutdown-grace), then the server exits.
        """)

    @Argument(help: ArgumentHelp("Paths to .gguf files or model names from the cache.",
                                 discussion: "The first loads at start and stays; the others (and those of --models-dir) load when a request names them."))
    var models: [String] = []
    @Option(name: .customLong("models-dir"), help: "Also serve every .gguf file in DIR, by file name without .gguf.")
    var modelsDir: String?
    @Option(name: .customLong("max-loaded"), help: "Models besides the first kept loaded at once; the least recently used idle one is unloaded (default 1).")
    var maxLoaded = 1
    @Option(name: .customLong("idle-unload"), help: "Unload a model besides the first after SECONDS without requests.")
    var idleUnload: Double?
    @Option(help: "Address to bind (default: loopback only).")
    var host = "127.0.0.1"
    @Option(help: "TCP port.")
    var port = 8080
    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer KEY' on every route but /health, /ready and /metrics.")
    var apiKey: String?
    @Option(name: .customLong("api-key-file"), help: "As --api-key, with the key read from the first line of FILE.")
    var apiKeyFile: String?
    @Option(name: .customLong("cors-origin"),
            help: ArgumentHelp("Send CORS headers to pages from ORIGIN (scheme://host[:port], or * for any); repeatable or a comma list. Default: none.",
                               valueName: "ORIGIN"))
    var corsOrigins: [String] = []
    @Option(name: .customLong("ctx"), help: "Context length per sequence, in tokens.")
    var contextLength = 2048
    @Option(help: "Sequences decoded together in one batch.")
    var parallel = 4
    @Option(name: .customLong("kv-cache"),
            help: ArgumentHelp("KV cache pool size: tokens (8192, 8k = 8192) or bytes (512MB, 1GiB). Default: ctx × parallel tokens.",
                               discussion: "A byte size takes a unit: B, K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024); a number alone, or with t or k (× 1024), counts tokens.",
                               valueName: "SIZE"))
    var kvCache: String?
    @Option(name: .customLong("prompt-cache"), help: ArgumentHelp(
        "Keep full KV blocks on disk in DIR, so prompts seen before a restart are not computed again.",
        discussion: "Files are per model (a fingerprint of its tensors); corrupt ones or another model's are refused and deleted.",
        valueName: "DIR"))
    var promptCache: String?
    @Option(name: .customLong("prompt-cache-size"), help: "Most bytes the prompt cache keeps on disk (oldest files go first).")
    var promptCacheSize = "4GiB"
    @Option(name: .customLong("queue"), help: "Requests waiting beyond the running batch before 429.")
    var maxQueue = 64
    @Option(name: .customLong("batch-tokens"), help: "Tokens per forward pass (prompt chunks + decodes).")
    var batchTokens = 256
    @Option(name: .customLong("block-size"), help: "Token positions per KV cache block.")
    var blockSize = 16
    @Option(name: .customLong("max-body"), help: "Largest request body in bytes.")
    var maxBody = 4 << 20
    @Option(name: [.customShort("t"), .customLong("threads")], help: "Threads (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("mem-budget"), help: memBudgetHelp)
    var memBudget: String?
    @Option(help: "How /v1/embeddings pools hidden states: mean, cls or last (default: the model's pooling_type, else mean).")
    var pooling: EmbeddingPooling?
    @Option(name: .customLong("reasoning-format"),
            help: "Where chat replies' <think> blocks go: deepseek (message.reasoning_content) or none (left in content).")
    var reasoningFormat = ReasoningFormat.deepseek
    @OptionGroup var speculative: SpeculativeOptions
    @Option(name: .customLong("reasoning-budget"),
            help: "Thinking tokens per chat reply before the server closes the <think> block (-1: no limit; 0: no thinking).")
    var reasoningBudget = -1
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"
    @Option(name: .customLong("ready-queue-limit"),
            help: ArgumentHelp("GET /ready answers 503 while more than N sequences wait for admission (default: no limit).",
                               valueName: "N"))
    var readyQueueLimit: Int?
    @Option(name: .customLong("shutdown-grace"),
            help: ArgumentHelp("Seconds in-flight requests may take to finish after SIGTERM before they are cancelled.",
                               valueName: "SECONDS"))
    var shutdownGrace: Double = 10
    @OptionGroup var chatTemplate: ChatTemplateOptions
    @OptionGroup var lora: LoRAOptions
    @OptionGroup var cache: CacheTypeOptions

    func validate() throws {
        guard !models.isEmpty || modelsDir != nil else { throw ValidationError("name a model to serve (or --models-dir DIR)") }
        guard maxLoaded > 0 else { throw ValidationError("--max-loaded must be positive") }
        if let idleUnload { guard idleUnload > 0, idleUnload.isFinite else { throw ValidationError("--idle-unload must be a positive number of seconds") } }
        if let modelsDir {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: modelsDir, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--models-dir: '\(modelsDir)' is not a directory")
            }
            guard !(try ModelRouter.models(inDirectory: modelsDir)).isEmpty || !models.isEmpty else {
                throw ValidationError("--models-dir: '\(modelsDir)' holds no .gguf file")
            }
        }
        for model in models { try ModelLocator.validate(model) }
        guard contextLength > 0 else { throw ValidationError("--ctx must be positive") }
        guard apiKey == nil || apiKeyFile == nil else { throw ValidationError("give --api-key or --api-key-file, not both") }
        if let apiKeyFile {
            do { _ = try ServerConfiguration.apiKey(fromFile: apiKeyFile) } catch { throw ValidationError("\(error)") }
        }
        do { _ = try ServerConfiguration.corsOrigins(parsing: corsOrigins) } catch { throw ValidationError("\(error)") }
        guard reasoningBudget >= -1 else { throw ValidationError("--reasoning-budget must be -1 (no limit) or a token count") }
        guard parallel > 0 else { throw ValidationError("--parallel must be positive") }
        guard (1...65535).contains(port) || port == 0 else { throw ValidationError("--port must be 0...65535") }
        _ = try parseKVCache()
        _ = try parsePromptCacheSize()
        _ = try parseMemBudget(memBudget)
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level '\(logLevel)'") }
        if let readyQueueLimit, readyQueueLimit < 0 { throw ValidationError("--ready-queue-limit must be 0 or more") }
        guard shutdownGrace >= 0 && shutdownGrace <= 86_400 else {
            throw ValidationError("--shutdown-grace must be 0 to 86400 seconds")
        }
    }

    func parsePromptCacheSize() throws -> Int {
        do { return try ByteCount.parse(promptCacheSize, option: "--prompt-cache-size") } catch { throw ValidationError("\(error)") }
    }

    func parseKVCache() throws -> KVCacheSize? {
        guard let kvCache else { return nil }
        do { return try KVCacheSize(parsing: kvCache) } catch { throw ValidationError("\(error)") }
    }

    func run() async throws {
        var others: [ModelRouter.Model] = []
        for name in models.dropFirst() {
            let path = try await ModelLocator.resolve(name)
            others.append(ModelRouter.Model(name: URL(fileURLWithPath: path).deletingPathExtension().lastPathComponent,
                                            path: path, aliases: [name]))
        }
        if let modelsDir { others += try ModelRouter.models(inDirectory: modelsDir) }
        let model = models.first ?? others.removeFirst().path
        let path = try await ModelLocator.resolve(model)
        others.removeAll { URL(fileURLWithPath: $0.path).standardized == URL(fileURLWithPath: path).standardized }
        var logger = Logger(label: "swiftlet.serve")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        config.apiKey = try apiKey ?? apiKeyFile.map(ServerConfiguration.apiKey(fromFile:))
        config.maxBodyBytes = maxBody
        config.corsOrigins = try ServerConfiguration.corsOrigins(parsing: corsOrigins)
        config.modelAliases = [model]
        config.pooling = pooling
        config.reasoningFormat = reasoningFormat
        config.reasoningBudget = reasoningBudget < 0 ? nil : reasoningBudget
        config.speculation = speculative.speculation
        config.readyQueueLimit = readyQueueLimit
        config.engine = Generator.Configuration(
            contextLength: contextLength, parallel: parallel, maxQueue: maxQueue, kvCacheTokens: nil,
            blockSize: blockSize, maxBatchTokens: batchTokens, threads: threads)
        config.engine.promptCacheDirectory = promptCache
        config.engine.promptCacheBytes = try parsePromptCacheSize()
        var runner = ServerRunner(modelPath: path, configuration: config,
                                  kvCache: try parseKVCache(), logger: logger)
        runner.memoryBudget = try parseMemBudget(memBudget)
        if let draft = speculative.draft { runner.draftModelPath = try await ModelLocator.resolve(draft) }
        runner.otherModels = others
        runner.maxLoaded = maxLoaded
        runner.idleUnload = idleUnload.map { .milliseconds(Int64($0 * 1000)) }
        runner.shutdownGrace = .milliseconds(Int64(shutdownGrace * 1000))
        runner.chatTemplate = try chatTemplate.template()
        runner.adapters = try lora.files()
        runner.cacheTypes = cache.types
        try await runner.run()
    }
}
