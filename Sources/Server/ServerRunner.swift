import Engine
import Kernels
import Foundation
import Hummingbird
import Logging
import Models
import ServiceLifecycle
import Tokenization

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

/// Runs `swiftlet serve`: listens at once (`/health` answers 200 and `/ready` 503 while
/// loading), loads the model and starts the engine. On SIGINT/SIGTERM it drains: `/ready` turns
/// 503 at once and new requests get 503 with `Retry-After` while the listener stays open and
/// in-flight requests finish for up to `shutdownGrace`; then it cancels what is left and exits.
public struct ServerRunner: Sendable {
    public var modelPath: String
    public var configuration: ServerConfiguration
    public var kvCache: KVCacheSize?
    public var shutdownGrace: Duration = .seconds(10)
    /// Bytes of weights allowed to stay resident (`--mem-budget`); nil = no limit.
    public var memoryBudget: Int?
    /// Models served besides the first, loaded on first use (`serve A B…`, `--models-dir`).
    public var otherModels: [ModelRouter.Model] = []
    /// Most of `otherModels` resident at once (`--max-loaded`).
    public var maxLoaded = 1
    /// Unload one of `otherModels` after this long without requests (`--idle-unload`).
    public var idleUnload: Duration?
    /// Used instead of the model's own chat template (`--chat-template-file`).
    public var chatTemplate: ChatTemplate?
    /// `--draft`: drafts for the first model.
    public var draftModelPath: String?
    /// LoRA adapters of the first model (`--lora`, `--lora-scaled`).
    public var adapters: [LoRAFile] = []
    /// Element types of every model's KV cache (`--cache-type-k/v`).
    public var cacheTypes: KVCacheTypes = .f16
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
        if !otherModels.isEmpty {
            state.router = ModelRouter(models: otherModels, maxLoaded: maxLoaded, idleUnload: idleUnload) { [self] model in
                try loadEngine(path: model.path, metrics: metrics, observesScheduler: false)
            }
        }
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
        // Services shut down in reverse order: the drain runs to its end while the HTTP server
        // still listens, and only then does the server stop accepting and the engine stop.
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: app), .init(service: DrainService(state: state, grace: shutdownGrace, logger: logger))],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await state.router?.shutdownAll()
        await state.engine?.shutdown()
        logger.info("stopped")
    }

    /// Loads a model and starts its engine. Only the first model's engine drives the scheduler
    /// gauges of `/metrics` (`observesScheduler`); every engine counts tokens and requests.
    func loadEngine(path: String, metrics: ServerMetrics, observesScheduler: Bool = true) throws -> Generator {
        let start = Date()
        // --chat-template-file and the adapters belong to the first model only
        let model = try LoadedModel(path: path, memoryBudget: memoryBudget, chatTemplate: path == modelPath ? chatTemplate : nil,
                                    adapters: path == modelPath ? adapters : [], cacheTypes: cacheTypes)
        var engineConfig = configuration.engine
        let perToken = KVBlockPool.bytesPerToken(config: model.config, types: cacheTypes)
        if let kvCache { engineConfig.kvCacheTokens = kvCache.tokens(bytesPerToken: perToken) }
        let draft = try draftModelPath.flatMap { path == modelPath ? try DraftModel(LoadedModel(path: $0), for: model) : nil }
        let engine = try Generator(model: model, configuration: engineConfig,
                                   observer: ServerObserver(metrics: metrics, logger: logger, observesScheduler: observesScheduler),
                                   draftModel: draft)
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

/// Loads the model off the event loops, then waits for graceful shutdown and stops the engine
/// (after `DrainService` has let in-flight requests finish).
struct EngineService: Service {
    let runner: ServerRunner
    let state: ServerState
    let metrics: ServerMetrics

    func run() async throws {
        let logger = runner.logger
        let loader = Task.detached { [runner, metrics] in try runner.loadEngine(path: runner.modelPath, metrics: metrics) }
        do {
            let engine = try await loader.value
            state.engine = engine
            metrics.engineLoaded(engine)
        } catch {
            logger.critical("cannot load the model", metadata: ["path": "\(runner.modelPath)", "error": "\(error)"])
            state.loadError = "\(error)"
            throw error
        }
        if let router = state.router, let idle = router.idleUnload {
            // Idle models are unloaded on a timer until shutdown.
            let sweeper = Task {
                while !Task.isCancelled {
                    try await Task.sleep(for: min(idle, .seconds(5)))
                    await router.unloadIdle()
                }
            }
            try? await gracefulShutdown()
            sweeper.cancel()
        } else {
            try? await gracefulShutdown()
        }
        guard let engine = state.engine else { return }
        if engine.outstandingSequences > 0 {
            logger.info("shutting down: cancelling requests still running", metadata: ["sequences": "\(engine.outstandingSequences)"])
        }
        await engine.shutdown()
    }
}

/// The first thing to stop on SIGTERM/SIGINT: marks the server as draining (`/ready` 503, new
/// requests 503 + `Retry-After`) and waits until no sequence is in flight or `grace` has passed,
/// while the listener stays open so load balancers see the 503s and move traffic elsewhere.
struct DrainService: Service {
    let state: ServerState
    let grace: Duration
    let logger: Logger

    func run() async throws {
        do { try await gracefulShutdown() } catch { return }  // cancelled: the server failed
        state.draining = true
        guard let engine = state.engine else {
            logger.info("shutting down while loading")
            return
        }
        let deadline = ContinuousClock.now + grace
        let pending = engine.outstandingSequences
        logger.info("draining: refusing new requests, finishing in-flight ones",
                    metadata: ["sequences": "\(pending)", "grace_seconds": "\(grace.components.seconds)"])
        while engine.outstandingSequences > 0 && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(50))
        }
        if engine.outstandingSequences > 0 {
            logger.info("drain grace expired: cancelling requests still running",
                        metadata: ["sequences": "\(engine.outstandingSequences)"])
            await engine.shutdown()
        }
    }
}
