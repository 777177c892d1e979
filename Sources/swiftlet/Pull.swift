import ArgumentParser
import Engine

struct Pull: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Fetch a known model into the model cache (~/.cache/swiftlet or $SWIFTLET_HOME).")

    @Argument(help: "Model names: \(ModelCatalog.entries.map(\.name).joined(separator: ", ")).")
    var models: [String] = [ModelCatalog.defaultModel]

    func run() throws {
        for name in models {
            guard let entry = ModelCatalog.entry(named: name) else { throw PullError.unknownModel(name) }
            let path = try ModelCatalog.pull(entry, log: printError)
            print(path.path)
        }
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the models in the cache and the ones `pull` knows.")

    func run() {
        let cached = ModelCatalog.cachedModels()
        print("cache: \(ModelCatalog.modelsDirectory.path)")
        if cached.isEmpty { print("  (empty)") }
        for model in cached {
            print("  \(model.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(formatBytes(model.bytes).padding(toLength: 11, withPad: " ", startingAt: 0)) \(model.path.path)")
        }
        print("known models:")
        for entry in ModelCatalog.entries {
            print("  \(entry.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(entry.summary)")
        }
    }
}
