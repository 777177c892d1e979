import Engine
import Foundation

/// The models a server answers for besides the one it starts with (`swiftlet serve A B C`,
/// `--models-dir DIR`): each is loaded on first use, by the first request that names it, and
/// unloaded when more than `maxLoaded` are resident (least recently used first, never one with
/// sequences in flight) or after `idleUnload` without requests.
///
/// A request's `model` is only ever compared with the names of this fixed list, made when the
/// server starts; it is never turned into a path, so no name reaches a file outside it.
///
/// An actor: loading runs in a detached task that later callers for the same model wait on.
public actor ModelRouter {
    public struct Model: Sendable, Equatable {
        /// The name requests use: the file name without `.gguf`.
        public let name: String
        public let path: String
        /// Other names it answers to (the command-line argument, e.g. `gemma3`).
        public var aliases: [String] = []

        public init(name: String, path: String, aliases: [String] = []) {
            self.name = name
            self.path = path
            self.aliases = aliases
        }

        func answers(to requested: String) -> Bool {
            ([name, name + ".gguf"] + aliases).contains { $0.lowercased() == requested.lowercased() }
        }
    }

    public nonisolated let models: [Model]
    public nonisolated let maxLoaded: Int
    public nonisolated let idleUnload: Duration?
    private let load: @Sendable (Model) throws -> Generator

    private var resident: [String: (engine: Generator, lastUsed: ContinuousClock.Instant)] = [:]
    private var loading: [String: Task<Generator, any Error>] = [:]

    public init(models: [Model], maxLoaded: Int, idleUnload: Duration?, load: @escaping @Sendable (Model) throws -> Generator) {
        self.models = models
        self.maxLoaded = max(1, maxLoaded)
        self.idleUnload = idleUnload
        self.load = load
    }

    /// The `*.gguf` files directly in `directory`, by name (split files' later parts excluded).
    public static func models(inDirectory directory: String) throws -> [Model] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        return names.filter { $0.lowercased().hasSuffix(".gguf") }.sorted().map { file in
            Model(name: String(file.dropLast(5)), path: URL(fileURLWithPath: directory).appendingPathComponent(file).path)
        }
    }

    public nonisolated func model(named name: String) -> Model? { models.first { $0.answers(to: name) } }

    public var loadedNames: [String] { resident.keys.sorted() }

    /// The engine of the model `name` answers to, loaded first when it is not resident; nil
    /// when no model here has that name.
    public func engine(named name: String) async throws -> Generator? {
        guard let model = model(named: name) else { return nil }
        let task: Task<Generator, any Error>
        if let entry = resident[model.name] {
            resident[model.name]!.lastUsed = .now
            return entry.engine
        }
        if let pending = loading[model.name] {
            task = pending
        } else {
            // Room first: the least recently used idle model goes.
            while resident.count + loading.count >= maxLoaded {
                let idle = resident.filter { $0.value.engine.outstandingSequences == 0 }
                guard let victim = idle.min(by: { $0.value.lastUsed < $1.value.lastUsed }) else {
                    throw ModelRouterError.allBusy(loaded: resident.count + loading.count)
                }
                resident[victim.key] = nil
                Task { await victim.value.engine.shutdown() }
            }
            let load = self.load
            task = Task.detached { try load(model) }
            loading[model.name] = task
        }
        do {
            let engine = try await task.value
            // the first caller back (after the await, the actor may have served others) files it
            if loading[model.name] != nil {
                loading[model.name] = nil
                resident[model.name] = (engine, .now)
            }
            resident[model.name]?.lastUsed = .now
            return engine
        } catch {
            loading[model.name] = nil
            throw ModelRouterError.loadFailed(model: model.name, reason: "\(error)")
        }
    }

    /// Unloads the models idle for `idleUnload` (call now and then).
    public func unloadIdle(now: ContinuousClock.Instant = .now) async {
        guard let idleUnload else { return }
        let stale = resident.filter { now - $0.value.lastUsed >= idleUnload && $0.value.engine.outstandingSequences == 0 }
        for name in stale.keys { resident[name] = nil }
        for entry in stale.values { await entry.engine.shutdown() }
    }

    public func shutdownAll() async {
        let all = resident.values.map(\.engine)
        resident.removeAll()
        for engine in all { await engine.shutdown() }
    }
}

public enum ModelRouterError: Error, CustomStringConvertible {
    case allBusy(loaded: Int)
    case loadFailed(model: String, reason: String)

    public var description: String {
        switch self {
        case .allBusy(let n): "all \(n) loaded models are busy, so none can be unloaded to make room; retry shortly or raise --max-loaded"
        case .loadFailed(let model, let reason): "the model '\(model)' could not be loaded: \(reason)"
        }
    }
}
