import Foundation

/// What `swiftlet pull` recorded about a downloaded model: where it came from, which commit,
/// and each file's size and sha256. Stored as JSON in `models/manifests/`.
public struct ModelManifest: Codable, Sendable, Equatable {
    public struct File: Codable, Sendable, Equatable {
        /// Relative to the models directory.
        public var path: String
        public var size: Int
        public var sha256: String

        public init(path: String, size: Int, sha256: String) {
            self.path = path
            self.size = size
            self.sha256 = sha256
        }
    }

    /// `hf.co/USER/REPO:QUANT`, or `HOST/PATH` for a link.
    public var name: String
    /// The repository page or the link the files came from.
    public var source: String
    /// `USER/REPO` for Hub models.
    public var repository: String?
    /// The commit the files were taken from (Hub models).
    public var revision: String?
    public var quantization: String?
    /// In load order: a split model's first part comes first.
    public var files: [File]
    public var pulledAt: String

    public init(name: String, source: String, repository: String?, revision: String?, quantization: String?,
                files: [File], pulledAt: Date = Date()) {
        self.name = name
        self.source = source
        self.repository = repository
        self.revision = revision
        self.quantization = quantization
        self.files = files
        self.pulledAt = ISO8601DateFormatter().string(from: pulledAt)
    }

    public var bytes: Int { files.reduce(0) { $0 + $1.size } }

    /// The file to open: the only one, or a split model's first part (the rest are found beside it).
    public var modelPath: URL { ModelStore.root.appendingPathComponent(files[0].path) }
}

/// The manifests of pulled models and the files they own.
public enum ModelStore {
    static var root: URL { ModelCatalog.modelsDirectory }
    public static var manifestsDirectory: URL { root.appendingPathComponent("manifests") }

    /// Where the files of a model go: `hf.co/USER/REPO/…` or `HOST/…` under the models directory.
    public static func directory(for remote: RemoteModel) -> String {
        switch remote {
        case .hub(let repository, _): "hf.co/\(repository)"
        // No '.' or '..' from a link may lead outside the models directory.
        case .url(let url): ([url.host ?? "download"] + url.deletingLastPathComponent().path.split(separator: "/").map(String.init)
            .filter { $0 != "." && $0 != ".." }).joined(separator: "/")
        }
    }

    /// The cache name a pulled model is listed (and removed) under.
    public static func name(for remote: RemoteModel, quantization: String?) -> String {
        switch remote {
        case .hub(let repository, _): "hf.co/\(repository)" + (quantization.map { ":\($0)" } ?? "")
        case .url(let url): (url.host ?? "") + url.path
        }
    }

    static func manifestURL(named name: String) -> URL {
        let safe = name.replacingOccurrences(of: "/", with: "--").replacingOccurrences(of: ":", with: "@")
            .map { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.@".contains($0)) ? String($0) : "_" }.joined()
        return manifestsDirectory.appendingPathComponent(safe + ".json")
    }

    public static func manifests() -> [ModelManifest] {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: manifestsDirectory.path)) ?? []
        let decoder = JSONDecoder()
        return files.filter { $0.hasSuffix(".json") }.sorted().compactMap { file in
            guard let data = FileManager.default.contents(atPath: manifestsDirectory.appendingPathComponent(file).path) else { return nil }
            return try? decoder.decode(ModelManifest.self, from: data)
        }
    }

    public static func save(_ manifest: ModelManifest) throws {
        try FileManager.default.createDirectory(at: manifestsDirectory, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try encoder.encode(manifest).write(to: manifestURL(named: manifest.name), options: .atomic)
    }

    /// A pulled model whose files are all present, by cache name or by the name it was pulled with
    /// (`USER/REPO` alone prefers the default quantization, then any pulled one).
    public static func find(_ text: String) -> ModelManifest? {
        let all = manifests().filter(isComplete)
        if let byName = all.first(where: { $0.name == text }) { return byName }
        guard let remote = RemoteModel(parsing: text) else { return nil }
        switch remote {
        case .url(let url):
            return all.first { $0.source == url.absoluteString }
        case .hub(let repository, let quant):
            let same = all.filter { $0.repository?.lowercased() == repository.lowercased() }
            if let quant { return same.first { $0.quantization == quant } }
            return same.first { $0.quantization == QuantSelection.defaultQuant } ?? same.first
        }
    }

    static func isComplete(_ manifest: ModelManifest) -> Bool {
        !manifest.files.isEmpty && manifest.files.allSatisfy { file in
            let attributes = try? FileManager.default.attributesOfItem(atPath: root.appendingPathComponent(file.path).path)
            return (attributes?[.size] as? Int) == file.size
        }
    }

    /// Deletes a manifest and the files no other manifest uses; returns the deleted paths.
    public static func remove(_ manifest: ModelManifest) throws -> [String] {
        let fm = FileManager.default
        let kept = Set(manifests().filter { $0.name != manifest.name }.flatMap { $0.files.map(\.path) })
        var removed: [String] = []
        for file in manifest.files where !kept.contains(file.path) {
            let url = root.appendingPathComponent(file.path)
            for path in [url.path, url.path + ".partial"] where fm.fileExists(atPath: path) {
                try fm.removeItem(atPath: path)
                removed.append(path)
            }
            // Drop the folders the pull made (hf.co/USER/REPO), up to the models directory.
            var directory = url.deletingLastPathComponent()
            while directory.path.count > root.path.count,
                  (try? fm.contentsOfDirectory(atPath: directory.path))?.isEmpty == true {
                try? fm.removeItem(at: directory)
                directory = directory.deletingLastPathComponent()
            }
        }
        try fm.removeItem(at: manifestURL(named: manifest.name))
        return removed
    }
}
