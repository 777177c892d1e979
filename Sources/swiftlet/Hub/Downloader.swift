import AsyncHTTPClient
import Crypto
import Engine
import Foundation
import NIOCore
import NIOHTTP1

/// Where to reach the Hub and as whom: `HF_ENDPOINT` (default https://huggingface.co) and
/// `--token` or `HF_TOKEN`, as huggingface_hub reads them.
struct HubSettings: Sendable {
    var endpoint: URL
    var token: String?

    static func fromEnvironment(token: String? = nil) throws -> HubSettings {
        let environment = ProcessInfo.processInfo.environment
        var text = environment["HF_ENDPOINT"].flatMap { $0.isEmpty ? nil : $0 } ?? "https://huggingface.co"
        while text.hasSuffix("/") { text.removeLast() }
        guard let endpoint = URL(string: text), ["http", "https"].contains(endpoint.scheme ?? ""), endpoint.host != nil else {
            throw DownloadError.badEndpoint(text)
        }
        let token = token ?? environment["HF_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        return HubSettings(endpoint: endpoint, token: token)
    }
}

enum DownloadError: Error, CustomStringConvertible {
    case badEndpoint(String)
    case unreachable(url: String, reason: String)
    case unauthorized(what: String, hadToken: Bool)
    case forbidden(what: String)
    case notFound(what: String)
    case status(Int, url: String)
    case badResponse(url: String, problem: String)
    case checksumMismatch(file: String, expected: String, actual: String)
    case sizeMismatch(file: String, expected: Int, actual: Int)
    case interrupted(file: String, reason: String)

    var description: String {
        switch self {
        case .badEndpoint(let text): "HF_ENDPOINT '\(text)' is not an http(s) URL"
        case .unreachable(let url, let reason): "cannot reach \(url): \(reason)"
        case .unauthorized(let what, false):
            "\(what) answered 401: it does not exist, or it is gated or private and needs a Hugging Face token (set HF_TOKEN or pass --token)"
        case .unauthorized(let what, true): "the Hugging Face token was refused for \(what) (HTTP 401): check HF_TOKEN or --token"
        case .forbidden(let what): "no access to \(what) (HTTP 403): accept its terms on the Hub, or use a token that has access"
        case .notFound(let what): "\(what) was not found (HTTP 404)"
        case .status(let code, let url): "\(url) answered HTTP \(code)"
        case .badResponse(let url, let problem): "unexpected answer from \(url): \(problem)"
        case .checksumMismatch(let file, let expected, let actual):
            "\(file) is corrupt: its sha256 is \(actual), the Hub publishes \(expected); the download was deleted, pull again"
        case .sizeMismatch(let file, let expected, let actual):
            "\(file) has \(actual) bytes, expected \(expected); the download was deleted, pull again"
        case .interrupted(let file, let reason):
            "the download of \(file) kept failing (\(reason)); what arrived is kept and the next pull resumes it"
        }
    }
}

/// Downloads over AsyncHTTPClient: follows redirects (the Hub sends files to its CDN, and drops
/// the token when the host changes), resumes a `.partial` file with a range request, retries a
/// connection that drops, and checks the size and sha256 before the file takes its name.
final class Downloader: Sendable {
    let client: HTTPClient
    let token: String?
    /// Attempts in a row that may fail without receiving a byte before the download gives up.
    let attemptsWithoutProgress = 3

    init(token: String?, proxyFor host: String) {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .follow(max: 10, allowCycles: false),
            timeout: .init(connect: .seconds(10), read: .seconds(60)),
            proxy: Self.proxy(for: host))
        configuration.decompression = .disabled
        client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: configuration)
        self.token = token
    }

    func shutdown() async { try? await client.shutdown() }

    /// `https_proxy` / `http_proxy` (either case, `http://[user:pass@]host:port` or `socks5://host:port`),
    /// unless `no_proxy` lists the host; loopback addresses never go through a proxy.
    static func proxy(for host: String, environment: [String: String] = ProcessInfo.processInfo.environment) -> HTTPClient.Configuration.Proxy? {
        func value(_ name: String) -> String? {
            (environment[name.lowercased()] ?? environment[name.uppercased()]).flatMap { $0.isEmpty ? nil : $0 }
        }
        let lowered = host.lowercased()
        if ["localhost", "127.0.0.1", "::1", "[::1]"].contains(lowered) { return nil }
        if let noProxy = value("no_proxy") {
            for entry in noProxy.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) {
                let suffix = entry.hasPrefix(".") ? String(entry.dropFirst()) : entry
                if entry == "*" || lowered == suffix || lowered.hasSuffix("." + suffix) { return nil }
            }
        }
        guard let text = value("https_proxy") ?? value("http_proxy") ?? value("all_proxy"),
              let url = URL(string: text.contains("://") ? text : "http://" + text), let proxyHost = url.host else { return nil }
        if url.scheme?.hasPrefix("socks") == true { return .socksServer(host: proxyHost, port: url.port ?? 1080) }
        let authorization = url.user.map { HTTPClient.Authorization.basic(username: $0.removingPercentEncoding ?? $0,
                                                                            password: url.password?.removingPercentEncoding ?? "") }
        return .server(host: proxyHost, port: url.port ?? 80, authorization: authorization)
    }

    func request(_ url: URL, headers extra: [(String, String)] = []) -> HTTPClientRequest {
        var request = HTTPClientRequest(url: url.absoluteString)
        request.headers.add(name: "User-Agent", value: SwiftletVersion.product)
        if let token { request.headers.add(name: "Authorization", value: "Bearer \(token)") }
        for (name, value) in extra { request.headers.add(name: name, value: value) }
        return request
    }

    /// GET a small JSON document.
    func json(_ url: URL, what: String) async throws -> Any {
        let response: HTTPClientResponse
        do {
            response = try await client.execute(request(url, headers: [("Accept", "application/json")]), timeout: .seconds(30))
        } catch {
            throw DownloadError.unreachable(url: url.absoluteString, reason: "\(error)")
        }
        try check(response.status, url: url, what: what)
        let body = try await response.body.collect(upTo: 64 << 20)
        do {
            return try JSONSerialization.jsonObject(with: Data(body.readableBytesView))
        } catch {
            throw DownloadError.badResponse(url: url.absoluteString, problem: "not JSON")
        }
    }

    func check(_ status: HTTPResponseStatus, url: URL, what: String) throws {
        switch status.code {
        case 200..<300: return
        case 401: throw DownloadError.unauthorized(what: what, hadToken: token != nil)
        case 403: throw DownloadError.forbidden(what: what)
        case 404: throw DownloadError.notFound(what: what)
        default: throw DownloadError.status(Int(status.code), url: url.absoluteString)
        }
    }

    struct Downloaded: Sendable {
        let size: Int
        let sha256: String
    }

    /// Fetches `url` into `destination`, resuming `destination.partial` if an earlier pull left
    /// one. With `expectedSHA256`, a mismatch deletes the download and fails.
    func download(_ url: URL, to destination: URL, expectedSize: Int?, expectedSHA256: String?,
                  progress: ProgressReporter) async throws -> Downloaded {
        let fm = FileManager.default
        try fm.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        let partial = URL(fileURLWithPath: destination.path + ".partial")
        let name = destination.lastPathComponent
        if !fm.fileExists(atPath: partial.path) { _ = fm.createFile(atPath: partial.path, contents: nil) }
        guard let handle = FileHandle(forUpdatingAtPath: partial.path) else {
            throw DownloadError.badResponse(url: partial.path, problem: "cannot write the file")
        }
        defer { try? handle.close() }

        // What an earlier pull left is hashed once, then every new byte as it arrives.
        var hasher = SHA256()
        var have = Int(try handle.seekToEnd())
        if let expectedSize, have > expectedSize {
            try handle.truncate(atOffset: 0)
            have = 0
        }
        if have > 0 {
            try handle.seek(toOffset: 0)
            var read = 0
            while read < have, let chunk = try handle.read(upToCount: min(4 << 20, have - read)), !chunk.isEmpty {
                hasher.update(data: chunk)
                read += chunk.count
            }
            try handle.seek(toOffset: UInt64(have))
        }
        var total = expectedSize
        progress.start(done: have, total: total)
        var failures = 0
        var lastFailure = ""
        while total == nil || have < total! {
            var headers: [(String, String)] = []
            if have > 0 { headers.append(("Range", "bytes=\(have)-")) }
            let before = have
            do {
                let response = try await client.execute(request(url, headers: headers), timeout: .seconds(30))
                var complete = false
                switch response.status.code {
                case 206:
                    guard let range = response.headers.first(name: "Content-Range"), range.hasPrefix("bytes \(have)-") else {
                        throw DownloadError.badResponse(url: url.absoluteString, problem: "a range answer that does not start at byte \(have)")
                    }
                    if let length = range.split(separator: "/").last.flatMap({ Int($0) }) { total = total ?? length }
                case 200:
                    if have > 0 {
                        // The server ignored the range: start over.
                        try handle.truncate(atOffset: 0)
                        hasher = SHA256()
                        have = 0
                        progress.start(done: 0, total: total)
                    }
                    if let length = response.headers.first(name: "Content-Length").flatMap(Int.init) { total = total ?? length }
                    complete = total == nil
                case 416 where expectedSize == nil:
                    // Nothing beyond what we have: the partial file is the whole file.
                    total = have
                    continue
                default:
                    try check(response.status, url: url, what: name)
                    throw DownloadError.status(Int(response.status.code), url: url.absoluteString)
                }
                for try await buffer in response.body {
                    let data = Data(buffer.readableBytesView)
                    try handle.write(contentsOf: data)
                    hasher.update(data: data)
                    have += data.count
                    progress.update(done: have)
                }
                if complete { total = have }
                if let total, have < total {
                    throw DownloadError.interrupted(file: name, reason: "the connection closed after \(have) of \(total) bytes")
                }
            } catch let error as DownloadError {
                if case .interrupted(_, let reason) = error { lastFailure = reason } else { progress.finish(); throw error }
            } catch {
                lastFailure = "\(error)"
            }
            if let total, have >= total { break }
            failures = have > before ? 1 : failures + 1
            guard failures < attemptsWithoutProgress else {
                progress.finish()
                if have == 0 { throw DownloadError.unreachable(url: url.absoluteString, reason: lastFailure) }
                throw DownloadError.interrupted(file: name, reason: lastFailure)
            }
            progress.note("connection lost at \(have) bytes (\(lastFailure)); resuming")
            try await Task.sleep(nanoseconds: UInt64(250_000_000 << min(failures, 4)))
        }
        progress.finish()
        try handle.synchronize()

        let digest = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        if let expectedSize, have != expectedSize {
            try? fm.removeItem(at: partial)
            throw DownloadError.sizeMismatch(file: name, expected: expectedSize, actual: have)
        }
        if let expectedSHA256, digest != expectedSHA256.lowercased() {
            try? fm.removeItem(at: partial)
            throw DownloadError.checksumMismatch(file: name, expected: expectedSHA256.lowercased(), actual: digest)
        }
        if fm.fileExists(atPath: destination.path) { try fm.removeItem(at: destination) }
        try fm.moveItem(at: partial, to: destination)
        return Downloaded(size: have, sha256: digest)
    }
}

/// Blocks the calling (non-async) thread until `body` finishes: the commands other than `serve`
/// are synchronous, the HTTP client is not.
func waitFor<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let box = ResultBox<T>()
    let done = DispatchSemaphore(value: 0)
    Task {
        do { box.result = .success(try await body()) } catch { box.result = .failure(error) }
        done.signal()
    }
    done.wait()
    return try box.result!.get()
}

/// Hands a result from the task to the thread waiting on the semaphore (which orders the accesses).
private final class ResultBox<T>: @unchecked Sendable {
    var result: Result<T, any Error>?
}
