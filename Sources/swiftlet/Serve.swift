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
        Endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health \
        (200 once the model is loaded, 503 before), GET /metrics (Prometheus). With --api-key, \
        every /v1/* call needs 'Authorization: Bearer KEY' (compared in constant time). The server \
        binds to 127.0.0.1 unless --host says otherwise and sends no CORS headers. SIGINT/SIGTERM \
        shut down gracefully.
        """)

    @Argument(help: "Path to a .gguf file or a model name from the cache.")
    var model: String
    @Option(help: "Address to bind (default: loopback only).")
    var host = "127.0.0.1"
    @Option(help: "TCP port.")
    var port = 8080
    @Option(name: .customLong("api-key"), help: "Require 'Authorization: Bearer KEY' on /v1/*.")
    var apiKey: String?
    @Option(name: .customLong("api-key-file"), help: "As --api-key, with the key read from the first line of FILE.")
    var apiKeyFile: String?
    @Option(name: .customLong("ctx"), help: "Context length per sequence, in tokens.")
    var contextLength = 2048
    @Option(help: "Sequences decoded together in one batch.")
    var parallel = 4
    @Option(name: .customLong("kv-cache"),
            help: ArgumentHelp("KV cache pool size: tokens (8192, 8k = 8192) or bytes (512MB, 1GiB). Default: ctx × parallel tokens.",
                               discussion: "A byte size takes a unit: B, K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024); a number alone, or with t or k (× 1024), counts tokens.",
                               valueName: "SIZE"))
    var kvCache: String?
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
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    func validate() throws {
        try ModelLocator.validate(model)
        guard contextLength > 0 else { throw ValidationError("--ctx must be positive") }
        guard apiKey == nil || apiKeyFile == nil else { throw ValidationError("give --api-key or --api-key-file, not both") }
        if let apiKeyFile {
            do { _ = try ServerConfiguration.apiKey(fromFile: apiKeyFile) } catch { throw ValidationError("\(error)") }
        }
        guard parallel > 0 else { throw ValidationError("--parallel must be positive") }
        guard (1...65535).contains(port) || port == 0 else { throw ValidationError("--port must be 0...65535") }
        _ = try parseKVCache()
        _ = try parseMemBudget(memBudget)
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("--log-level: unknown level '\(logLevel)'") }
    }

    func parseKVCache() throws -> KVCacheSize? {
        guard let kvCache else { return nil }
        do { return try KVCacheSize(parsing: kvCache) } catch { throw ValidationError("\(error)") }
    }

    func run() async throws {
        let path = try await ModelLocator.resolve(model)
        var logger = Logger(label: "swiftlet.serve")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        var config = ServerConfiguration()
        config.host = host
        config.port = port
        config.apiKey = try apiKey ?? apiKeyFile.map(ServerConfiguration.apiKey(fromFile:))
        config.maxBodyBytes = maxBody
        config.modelAliases = [model]
        config.engine = Generator.Configuration(
            contextLength: contextLength, parallel: parallel, maxQueue: maxQueue, kvCacheTokens: nil,
            blockSize: blockSize, maxBatchTokens: batchTokens, threads: threads)
        var runner = ServerRunner(modelPath: path, configuration: config,
                                  kvCache: try parseKVCache(), logger: logger)
        runner.memoryBudget = try parseMemBudget(memBudget)
        try await runner.run()
    }
}
