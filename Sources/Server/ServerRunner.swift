import Engine
import Foundation
import Hummingbird
import Logging
import Models
import ServiceLifecycle

/// `--kv-cache`: a number of token positions ("8192", "8192t", "8k tokens") or of bytes
/// ("512MB", "1GiB", "2G").
public enum KVCacheSize: Sendable, Equatable {
    case tokens(Int)
    case bytes(Int)

    public init?(parsing text: String) {
        let s = text.trimmingCharacters(in: .whitespaces).lowercased().replacingOccurrences(of: " ", with: "")
        let digits = s.prefix { $0.isNumber || $0 == "." }
        guard let value = Double(digits), value > 0 else { return nil }
        let unit = s.dropFirst(digits.count)
        switch unit {
        case "", "t", "tok", "tokens": self = .tokens(Int(value))
        case "k", "kt", "ktokens": self = .tokens(Int(value * 1024))
        case "b": self = .bytes(Int(value))
        case "kb": self = .bytes(Int(value * 1e3))
        case "kib": self = .bytes(Int(value * 1024))
        case "m", "mb": self = .bytes(Int(value * 1e6))
        case "mib": self = .bytes(Int(value * 1_048_576))
        case "g", "gb": self = .bytes(Int(value * 1e9))
        case "gib": self = .bytes(Int(value * 1_073_741_824))
        default: return nil
        }
    }

    public func tokens(bytesPerToken: Int) -> Int {
        switch self {
        case .tokens(let n): n
        case .bytes(let b): b / max(1, bytesPerToken)
        }
    }
}

/// Runs `swiftlet serve`: listens at once (`/health` answers 503 while loading), loads the
/// model, starts the engine, and on SIGINT/SIGTERM stops accepting, lets in-flight requests
/// finish for up to `shutdownGrace`, cancels what is left and exits.
public struct ServerRunner: Sendable {
    public var modelPath: String
    public var configuration: ServerConfiguration
    public var kvCache: KVCacheSize?
    public var shutdownGrace: Duration = .seconds(10)
    /// Bytes of weights allowed to stay resident (`--mem-budget`); nil = no limit.
    public var memoryBudget: Int?
    public var logger: Logger

    public init(modelPath: String, configuration: ServerConfiguration, kvCache: KVCacheSize?, logger: Logger) {
        self.modelPath = modelPath
        self.configuration = configuration
        self.kvCache = kvCache
        self.logger = logger
    }

    public func run() async throws {
        let state = ServerState()
        let metrics = ServerMetrics()
        metrics.setModelLoaded(false)
        let server = OpenAIServer(configuration: configuration, state: state, metrics: metrics, logger: logger)
        let engineService = EngineService(runner: self, state: state, metrics: metrics)
        var app = Application(router: server.makeRouter(),
                              configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                                                   serverName: "swiftlet"),
                              onServerRunning: { channel in
                                  logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
                              },
                              logger: logger)
        app.addServices(engineService)
        try await app.runService()
        await state.engine?.shutdown()
        logger.info("stopped")
    }

    func loadEngine(metrics: ServerMetrics) throws -> InferenceEngine {
        let start = Date()
        let model = try LoadedModel(path: modelPath, memoryBudget: memoryBudget)
        var engineConfig = configuration.engine
        let perToken = KVBlockPool.bytesPerToken(config: model.config)
        if let kvCache { engineConfig.kvCacheTokens = kvCache.tokens(bytesPerToken: perToken) }
        let engine = try InferenceEngine(model: model, configuration: engineConfig, metrics: metrics, logger: logger)
        logger.info("model loaded", metadata: [
            "model": "\(model.name)", "seconds": "\(String(format: "%.2f", Date().timeIntervalSince(start)))",
            "ctx": "\(engineConfig.contextLength)", "parallel": "\(engineConfig.parallel)",
            "kv_blocks": "\(engine.blockCount)", "block_size": "\(engineConfig.blockSize)",
            "kv_cache_tokens": "\(engine.blockCount * engineConfig.blockSize)",
            "kv_cache_mib": "\(engine.kvCacheBytes >> 20)",
        ])
        return engine
    }
}

/// Loads the model off the event loops, then waits for graceful shutdown and drains the engine.
struct EngineService: Service {
    let runner: ServerRunner
    let state: ServerState
    let metrics: ServerMetrics

    func run() async throws {
        let logger = runner.logger
        let loader = Task.detached { [runner, metrics] in try runner.loadEngine(metrics: metrics) }
        do {
            let engine = try await loader.value
            state.engine = engine
            metrics.setModelLoaded(true)
        } catch {
            logger.critical("cannot load the model", metadata: ["path": "\(runner.modelPath)", "error": "\(error)"])
            state.loadError = "\(error)"
            throw error
        }
        try? await gracefulShutdown()
        guard let engine = state.engine else { return }
        let deadline = ContinuousClock.now + runner.shutdownGrace
        let pending = engine.outstandingSequences
        if pending > 0 { logger.info("shutting down: finishing in-flight requests", metadata: ["sequences": "\(pending)"]) }
        while engine.outstandingSequences > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if engine.outstandingSequences > 0 {
            logger.info("shutting down: cancelling requests still running", metadata: ["sequences": "\(engine.outstandingSequences)"])
        }
        await engine.shutdown()
    }
}
