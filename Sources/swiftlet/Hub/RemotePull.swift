import Engine
import Foundation
import GGUF

/// `swiftlet pull` for Hugging Face repositories and links: picks the file(s), downloads them
/// into the cache, checks them and writes the manifest `list` and `rm` read.
enum RemotePull {
    static func pull(_ remote: RemoteModel, token: String? = nil, revision: String = "main",
                     log: @escaping @Sendable (String) -> Void) async throws -> ModelManifest {
        let settings = try HubSettings.fromEnvironment(token: token)
        switch remote {
        case .hub(let repository, let quant):
            let downloader = Downloader(token: settings.token, proxyFor: settings.endpoint.host ?? "")
            do {
                let manifest = try await pullRepository(repository, quant: quant, revision: revision, settings: settings,
                                                        downloader: downloader, log: log)
                await downloader.shutdown()
                return manifest
            } catch {
                await downloader.shutdown()
                throw error
            }
        case .url(let url):
            // The token goes only to the Hub itself, never to another host.
            let hubHost = url.host?.lowercased() == settings.endpoint.host?.lowercased()
                || ["hf.co", "huggingface.co"].contains(url.host?.lowercased() ?? "")
            let downloader = Downloader(token: hubHost ? settings.token : nil, proxyFor: url.host ?? "")
            do {
                let manifest = try await pullLink(url, downloader: downloader, log: log)
                await downloader.shutdown()
                return manifest
            } catch {
                await downloader.shutdown()
                throw error
            }
        }
    }

    static func pullRepository(_ repository: String, quant: String?, revision: String, settings: HubSettings,
                               downloader: Downloader, log: @escaping @Sendable (String) -> Void) async throws -> ModelManifest {
        let endpoint = settings.endpoint
        let what = "the repository \(repository) on \(endpoint.host ?? endpoint.absoluteString)"
        // huggingface_hub's model_info(files_metadata=True): the commit and every file with its LFS sha256.
        let escapedRevision = revision.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? revision
        let infoURL = URL(string: "\(endpoint.absoluteString)/api/models/\(repository)/revision/\(escapedRevision)?blobs=true")!
        guard let info = try await downloader.json(infoURL, what: what) as? [String: Any],
              let siblings = info["siblings"] as? [[String: Any]] else {
            throw DownloadError.badResponse(url: infoURL.absoluteString, problem: "no 'siblings' list of files")
        }
        let commit = (info["sha"] as? String) ?? revision
        let files = siblings.compactMap { sibling -> HubFile? in
            guard let path = sibling["rfilename"] as? String else { return nil }
            let lfs = sibling["lfs"] as? [String: Any]
            return HubFile(path: path, size: (lfs?["size"] as? Int) ?? (sibling["size"] as? Int), sha256: lfs?["sha256"] as? String)
        }
        // File names become paths in the cache: none may climb out of the repository's folder.
        if let bad = files.first(where: { $0.path.hasPrefix("/") || $0.path.split(separator: "/").contains("..") }) {
            throw DownloadError.badResponse(url: infoURL.absoluteString, problem: "a file name that leaves the repository: '\(bad.path)'")
        }
        let choice = try QuantSelection.choose(quant, from: files, repository: repository)
        let label = choice.candidate.label
        if !choice.exact {
            log("\(repository) has no \(quant ?? QuantSelection.defaultQuant) file; taking \(label ?? choice.candidate.files[0].path), "
                + "the closest (available: \(choice.available.joined(separator: ", ")))")
        }
        let name = ModelStore.name(for: .hub(repository: repository, quant: nil), quantization: label)
        if let existing = ModelStore.find(name), existing.revision == commit {
            log("\(name) is already in the cache: \(existing.modelPath.path)")
            return existing
        }
        let directory = ModelStore.directory(for: .hub(repository: repository, quant: nil))
        let total = choice.candidate.files.compactMap(\.size).reduce(0, +)
        log("pulling \(name) (\(choice.candidate.files.count) file\(choice.candidate.files.count == 1 ? "" : "s"), "
            + "\(formatBytes(total))) from \(endpoint.host ?? ""), commit \(commit.prefix(12))")
        var recorded: [ModelManifest.File] = []
        for file in choice.candidate.files {
            let escapedPath = file.path.split(separator: "/").map {
                String($0).addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(CharacterSet(charactersIn: "/?#"))) ?? String($0)
            }.joined(separator: "/")
            let url = URL(string: "\(endpoint.absoluteString)/\(repository)/resolve/\(commit)/\(escapedPath)")!
            let relative = directory + "/" + file.path
            let destination = ModelCatalog.modelsDirectory.appendingPathComponent(relative)
            if file.sha256 == nil { log("\(file.path): the Hub publishes no sha256 for it (not an LFS file); checking its size only") }
            let result = try await downloader.download(url, to: destination, expectedSize: file.size, expectedSHA256: file.sha256,
                                                       progress: ProgressReporter(label: URL(fileURLWithPath: file.path).lastPathComponent))
            if file.sha256 != nil { log("\(file.path): sha256 verified (\(result.sha256.prefix(12))…)") }
            recorded.append(ModelManifest.File(path: relative, size: result.size, sha256: result.sha256))
        }
        let manifest = ModelManifest(name: name, source: "\(endpoint.absoluteString)/\(repository)", repository: repository,
                                     revision: commit, quantization: label, files: recorded)
        try checkGGUF(manifest)
        try ModelStore.save(manifest)
        log("saved \(name): \(manifest.modelPath.path)")
        return manifest
    }

    static func pullLink(_ url: URL, downloader: Downloader, log: @escaping @Sendable (String) -> Void) async throws -> ModelManifest {
        let remote = RemoteModel.url(url)
        if let existing = ModelStore.find(url.absoluteString) {
            log("\(existing.name) is already in the cache: \(existing.modelPath.path)")
            return existing
        }
        let relative = ModelStore.directory(for: remote) + "/" + url.lastPathComponent
        let destination = ModelCatalog.modelsDirectory.appendingPathComponent(relative)
        log("pulling \(url.absoluteString) (no published checksum: its sha256 is recorded, not checked)")
        let result = try await downloader.download(url, to: destination, expectedSize: nil, expectedSHA256: nil,
                                                   progress: ProgressReporter(label: url.lastPathComponent))
        let manifest = ModelManifest(name: ModelStore.name(for: remote, quantization: nil), source: url.absoluteString,
                                     repository: nil, revision: nil, quantization: QuantSelection.label(of: url.lastPathComponent),
                                     files: [ModelManifest.File(path: relative, size: result.size, sha256: result.sha256)])
        try checkGGUF(manifest)
        try ModelStore.save(manifest)
        log("saved \(manifest.name): \(manifest.modelPath.path)")
        return manifest
    }

    /// A download that is not a GGUF file (an error page, a different format) is deleted, not kept.
    static func checkGGUF(_ manifest: ModelManifest) throws {
        do {
            _ = try GGUFFile(path: manifest.modelPath.path)
        } catch {
            for file in manifest.files {
                try? FileManager.default.removeItem(at: ModelCatalog.modelsDirectory.appendingPathComponent(file.path))
            }
            throw DownloadError.badResponse(url: manifest.source, problem: "the download is not a usable GGUF file (\(error))")
        }
    }
}
