import Engine
import Foundation
import Hummingbird
import Logging
import Models
import ServiceLifecycle

/// `--kv-cache`: a number of token positions ("8192", "8192t", "8k tokens"; `k` here is 1024
/// tokens) or of bytes, with a byte unit as `ByteCount` reads it ("512MB", "1GiB", "2G").
public enum KVCacheSize: Sendable, Equatable {
    case tokens(Int)
    case bytes(Int)

    static let tokenUnits = ["": 1, "t": 1, "tok": 1, "tokens": 1, "k": 1024, "kt": 1024, "ktokens": 1024]

    public init(parsing text: String) throws {
        let option = "--kv-cache"
        let hint = "expected a token count (8192, 8k) or a size (512MB, 1GiB; K, M, G, T are powers of 1000, KiB, MiB, GiB, TiB powers of 1024)"
        if let n = try? ByteCount.parse(text, units: Self.tokenUnits, option: option, hint: hint) {
            self = .tokens(n)
        } else {
            do {
                self = .bytes(try ByteCount.parse(text, option: option))
            } catch var error as ByteCount.ParseError {
                if error.kind == .malformed { error.reason = hint }
                throw error
            }
        }
        guard tokens(bytesPerToken: 1) > 0 else {
            throw ByteCount.ParseError(.outOfRange, option: option, text: text, reason: "must be more than zero")
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
                                                   serverName: SwiftletVersion.product),
                              onServerRunning: { channel in
                                  logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
                              },
                              logger: logger)
        app.addServices(engineService)
        try await app.runService()
        await state.engine?.shutdown()
        logger.info("stopped")
    }

    func loadEngine(metrics: ServerMetrics) throws -> Generator {
        let start = Date()
        let model = try LoadedModel(path: modelPath, memoryBudget: memoryBudget)
        var engineConfig = configuration.engine
        let perToken = KVBlockPool.bytesPerToken(config: model.config)
        if let kvCache { engineConfig.kvCacheTokens = kvCache.tokens(bytesPerToken: perToken) }
        let engine = try Generator(model: model, configuration: engineConfig,
                                   observer: ServerObserver(metrics: metrics, logger: logger))
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
