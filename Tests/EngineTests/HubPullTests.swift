import Engine
import Foundation
import GGUF
import Testing
import TestSupport

/// scripts/hub_standin.py on a free loopback port: the Hugging Face Hub's model-info, resolve
/// and CDN routes over a folder of repositories (ROOT/USER/REPO/FILES), with faults on request.
final class HubStandIn {
    let process = Process()
    let log: URL
    let port: Int
    var endpoint: String { "http://127.0.0.1:\(port)" }

    init(root: URL, options: [String] = []) throws {
        log = root.deletingLastPathComponent().appendingPathComponent("requests-\(UUID().uuidString).jsonl")
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", TestSupport.repositoryRoot().appendingPathComponent("scripts/hub_standin.py").path,
                             "--root", root.path, "--log", log.path] + options
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        var line = Data()
        while let byte = try out.fileHandleForReading.read(upToCount: 1), !byte.isEmpty, byte != Data("\n".utf8) {
            line.append(byte)
        }
        guard let port = Int(String(decoding: line, as: UTF8.self)) else {
            process.terminate()
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "the stand-in Hub did not start"])
        }
        self.port = port
    }

    deinit {
        // SIGKILL: a child started from a test thread inherits its blocked signals, SIGTERM among them.
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Every request so far, in order: method, path, range, authorized, user_agent.
    func requests() -> [[String: Any]] {
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    func downloads() -> [[String: Any]] { requests().filter { ($0["path"] as? String)?.hasPrefix("/cdn/") == true } }
}

/// A cache folder and a folder of repositories for one test.
struct HubFixture {
    let home: URL
    let repositories: URL

    init() throws {
        let dir = try TestSupport.scratchDirectory("hub")
        home = dir.appendingPathComponent("home")
        repositories = dir.appendingPathComponent("repositories")
        try FileManager.default.createDirectory(at: home, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: repositories, withIntermediateDirectories: true)
    }

    @discardableResult
    func add(_ source: String, to repository: String, as name: String) throws -> URL {
        let folder = repositories.appendingPathComponent(repository)
        let destination = folder.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: destination.deletingLastPathComponent(), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: source, toPath: destination.path)
        return destination
    }

    /// The variables `swiftlet` runs with: this cache, the stand-in as the Hub, no token or proxy
    /// from the machine.
    func environment(_ hub: HubStandIn?, _ extra: [String: String] = [:]) -> [String: String] {
        var environment = ["SWIFTLET_HOME": home.path, "HF_ENDPOINT": hub?.endpoint ?? "", "HF_TOKEN": ""]
        for name in ["https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"] {
            environment[name] = ""
        }
        return environment.merging(extra) { $1 }
    }

    func pull(_ arguments: [String], _ hub: HubStandIn?, _ extra: [String: String] = [:]) throws -> CommandLine.Result {
        try CommandLine.run(["pull"] + arguments, environment: environment(hub, extra))
    }

    func cacheFiles() -> [String] {
        let models = home.appendingPathComponent("models")
        return (FileManager.default.enumerator(atPath: models.path)?.allObjects as? [String] ?? []).filter {
            var isDirectory: ObjCBool = false
            return FileManager.default.fileExists(atPath: models.appendingPathComponent($0).path, isDirectory: &isDirectory)
                && !isDirectory.boolValue
        }.sorted()
    }
}

enum HubModels {
    static let template = "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"

    /// A small llama-architecture model with a chat template (about 1.5 MB).
    static func chat() throws -> String {
        try SyntheticGGUF(type: .q8_0, seed: 11, extraMetadata: ["tokenizer.chat_template": .string(template)]).write(name: "hub-chat")
    }

    /// The same shape without a chat template: a base model.
    static func base() throws -> String {
        try SyntheticGGUF(type: .q8_0, seed: 12).write(name: "hub-base")
    }

    static func sha256(_ path: String) throws -> String {
        try TestSupport.python(["-c", "import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())", path])
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Splits a GGUF as llama.cpp's gguf-split does: metadata in the first part, split.no /
    /// split.count / split.tensors.count in every part, the tensors shared out in order.
    static func split(_ path: String, parts: Int, into folder: URL, stem: String) throws -> [URL] {
        let file = try GGUFFile(path: path)
        let perPart = (file.tensors.count + parts - 1) / parts
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return try (0..<parts).map { k in
            var writer = GGUFWriter()
            if k == 0 { for key in file.metadataKeys { writer.set(key, file[key]!) } }
            writer.set("split.no", .uint16(UInt16(k)))
            writer.set("split.count", .uint16(UInt16(parts)))
            writer.set("split.tensors.count", .int32(Int32(file.tensors.count)))
            for tensor in file.tensors.dropFirst(k * perPart).prefix(perPart) {
                writer.addTensor(name: tensor.name, type: tensor.type, shape: tensor.shape, data: [UInt8](file.bytes(for: tensor)))
            }
            let url = folder.appendingPathComponent(String(format: "%@-%05d-of-%05d.gguf", stem, k + 1, parts))
            try writer.write(to: url.path)
            return url
        }
    }

    static func generate(_ model: String, _ fixture: HubFixture) throws -> [Int] {
        let r = try CommandLine.run(["generate", model, "ab", "-n", "6", "--temp", "0", "--ctx", "64", "-t", "2", "--json"],
                                    environment: fixture.environment(nil))
        #expect(r.status == 0, "\(r.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        return try #require(object?["tokens"] as? [Int])
    }
}

let python3Available = (try? TestSupport.python(["-c", "print(1)"])) != nil

/// `swiftlet pull` against the stand-in Hub: names, quantization choice, split files, resumed
/// and broken downloads, tokens, proxies; then `list`, `run` and `rm` on what was pulled.
@Suite(.serialized, .enabled(if: python3Available, "needs python3 for the stand-in Hub"))
struct HubPullTests {
    @Test func pullByHubNameThenListRunAndRemove() throws {
        let fixture = try HubFixture()
        let chat = try HubModels.chat()
        try fixture.add(chat, to: "alice/tiny-chat-GGUF", as: "tiny-chat-Q4_K_M.gguf")
        try fixture.add(try HubModels.base(), to: "alice/tiny-chat-GGUF", as: "tiny-chat-Q8_0.gguf")
        try Data("# tiny\n".utf8).write(to: fixture.repositories.appendingPathComponent("alice/tiny-chat-GGUF/README.md"))
        let hub = try HubStandIn(root: fixture.repositories)

        let pull = try fixture.pull(["hf.co/alice/tiny-chat-GGUF:Q4_K_M"], hub)
        #expect(pull.status == 0, "\(pull.stderr)")
        let path = pull.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(path.hasSuffix("models/hf.co/alice/tiny-chat-GGUF/tiny-chat-Q4_K_M.gguf"))
        #expect(try HubModels.sha256(path) == HubModels.sha256(chat))
        #expect(pull.stderr.contains("sha256 verified"))
        // The info route with blobs, then the file through resolve (pinned to the commit) and the CDN redirect.
        let paths = hub.requests().map { $0["path"] as? String ?? "" }
        #expect(paths.first?.hasPrefix("/api/models/alice/tiny-chat-GGUF/revision/main?blobs=true") == true)
        #expect(paths.contains { $0.hasPrefix("/alice/tiny-chat-GGUF/resolve/") && $0.hasSuffix("/tiny-chat-Q4_K_M.gguf") })
        #expect(hub.downloads().count == 1)
        #expect(hub.requests().allSatisfy { $0["user_agent"] as? String == SwiftletVersion.product })

        let list = try CommandLine.run(["list"], environment: fixture.environment(hub))
        let row = try #require(list.stdout.split(separator: "\n").first { $0.contains("hf.co/alice/tiny-chat-GGUF:Q4_K_M") })
        #expect(row.contains("llama") && row.contains("Q4_K_M") && row.contains("MiB") && row.contains(hub.endpoint + "/alice/tiny-chat-GGUF@"))

        // `run` by the same name (and by USER/REPO alone) uses the cache: no further requests.
        let before = hub.requests().count
        for name in ["hf.co/alice/tiny-chat-GGUF:Q4_K_M", "alice/tiny-chat-GGUF"] {
            let run = try CommandLine.run(["run", name, "ab", "-n", "4", "--temp", "0", "--ctx", "64", "-t", "2"],
                                          environment: fixture.environment(hub))
            #expect(run.status == 0, "\(run.stderr)")
            #expect(run.stderr.contains("generation: 4 tokens") || run.stderr.contains("generation:"))
            #expect(!run.stderr.contains("no chat template"))
        }
        #expect(hub.requests().count == before)

        // A second pull of the same model downloads nothing.
        let again = try fixture.pull(["alice/tiny-chat-GGUF:q4_k_m"], hub)
        #expect(again.status == 0 && again.stderr.contains("already in the cache"), "\(again.stderr)")
        #expect(hub.downloads().count == 1)

        let remove = try CommandLine.run(["rm", "hf.co/alice/tiny-chat-GGUF:Q4_K_M"], environment: fixture.environment(hub))
        #expect(remove.status == 0, "\(remove.stderr)")
        #expect(!FileManager.default.fileExists(atPath: path))
        #expect(fixture.cacheFiles().isEmpty, "\(fixture.cacheFiles())")
        let after = try CommandLine.run(["list"], environment: fixture.environment(hub))
        #expect(!after.stdout.contains("tiny-chat-GGUF"))
        let unknown = try CommandLine.run(["rm", "hf.co/alice/tiny-chat-GGUF:Q4_K_M"], environment: fixture.environment(hub))
        #expect(unknown.status != 0 && unknown.stderr.contains("no model named"))
    }

    /// No Q4_K_M: the closest label by bits per weight (Q5_K_M, split in three parts) is taken,
    /// its parts downloaded and opened together, generating exactly what the single file does.
    @Test func closestQuantizationAndSplitFiles() throws {
        let fixture = try HubFixture()
        let chat = try HubModels.chat()
        let repository = fixture.repositories.appendingPathComponent("carol/split-GGUF")
        let parts = try HubModels.split(chat, parts: 3, into: repository.appendingPathComponent("Q5_K_M"), stem: "split-Q5_K_M")
        try fixture.add(try HubModels.base(), to: "carol/split-GGUF", as: "split-Q8_0.gguf")
        try fixture.add(try HubModels.base(), to: "carol/split-GGUF", as: "mmproj-split-Q4_K_M.gguf")
        let hub = try HubStandIn(root: fixture.repositories)

        let pull = try fixture.pull(["carol/split-GGUF"], hub)
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stderr.contains("no Q4_K_M file; taking Q5_K_M, the closest"), "\(pull.stderr)")
        #expect(hub.downloads().count == 3)
        let first = pull.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(first.hasSuffix("Q5_K_M/split-Q5_K_M-00001-of-00003.gguf"))
        #expect(try GGUFFile(path: first).partPaths.count == 3)

        let info = try CommandLine.run(["info", "carol/split-GGUF:Q5_K_M"], environment: fixture.environment(hub))
        #expect(info.status == 0 && info.stdout.contains("3 parts"), "\(info.stderr)")
        #expect(try HubModels.generate("hf.co/carol/split-GGUF:Q5_K_M", fixture) == HubModels.generate(chat, fixture))
        #expect(try HubModels.generate(parts[0].path, fixture) == HubModels.generate(chat, fixture))

        // A split model missing a part names it instead of loading half a model.
        try FileManager.default.removeItem(at: parts[1])
        let broken = try CommandLine.run(["info", parts[0].path], environment: fixture.environment(nil))
        #expect(broken.status != 0 && broken.stderr.contains("part 2 of 3 is missing"), "\(broken.stderr)")
    }

    /// The connection drops half way through: the same pull resumes with a range request from the
    /// byte it reached (not from 0), and the file is complete and verified.
    @Test func droppedConnectionResumesWithARangeRequest() throws {
        let fixture = try HubFixture()
        let chat = try HubModels.chat()
        let size = try FileManager.default.attributesOfItem(atPath: chat)[.size] as! Int
        try fixture.add(chat, to: "dave/flaky", as: "flaky-Q4_K_M.gguf")
        let hub = try HubStandIn(root: fixture.repositories, options: ["--drop-after", "\(size / 2)"])
        let pull = try fixture.pull(["dave/flaky"], hub)
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(pull.stderr.contains("resuming"))
        let downloads = hub.downloads()
        #expect(downloads.count == 2)
        #expect(downloads.first?["range"] is NSNull)
        // From the byte the client had written: at most what the server sent before closing (the
        // HTTP client may drop a last buffered piece when it sees the early end), never from 0.
        let resumedAt = (downloads.last?["range"] as? String).flatMap { Int($0.dropFirst("bytes=".count).dropLast()) } ?? 0
        #expect((1...size / 2).contains(resumedAt), "\(downloads)")
        #expect(try HubModels.sha256(pull.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == HubModels.sha256(chat))
    }

    /// A pull killed earlier left `FILE.partial`: the next one asks only for the rest. A server
    /// that ignores the range sends everything again, and the file is still right.
    @Test func anInterruptedPullResumesInsteadOfRestarting() throws {
        for ignoreRange in [false, true] {
            let fixture = try HubFixture()
            let chat = try HubModels.chat()
            let bytes = try Data(contentsOf: URL(fileURLWithPath: chat))
            try fixture.add(chat, to: "erin/resume", as: "resume-Q4_K_M.gguf")
            let partial = fixture.home.appendingPathComponent("models/hf.co/erin/resume/resume-Q4_K_M.gguf.partial")
            try FileManager.default.createDirectory(at: partial.deletingLastPathComponent(), withIntermediateDirectories: true)
            let kept = bytes.count * 2 / 3
            try bytes.prefix(kept).write(to: partial)
            let hub = try HubStandIn(root: fixture.repositories, options: ignoreRange ? ["--ignore-range"] : [])
            let pull = try fixture.pull(["erin/resume:Q4_K_M"], hub)
            #expect(pull.status == 0, "\(pull.stderr)")
            #expect(hub.downloads().map { $0["range"] as? String } == ["bytes=\(kept)-"])
            #expect(try Data(contentsOf: URL(fileURLWithPath: pull.stdout.trimmingCharacters(in: .whitespacesAndNewlines))) == bytes)
            #expect(!FileManager.default.fileExists(atPath: partial.path))
        }
    }

    /// Bytes that do not match the Hub's sha256 are an error, and nothing is left in the cache.
    @Test func wrongChecksumIsAClearErrorAndLeavesNothing() throws {
        let fixture = try HubFixture()
        try fixture.add(try HubModels.chat(), to: "frank/corrupt", as: "corrupt-Q4_K_M.gguf")
        let hub = try HubStandIn(root: fixture.repositories, options: ["--corrupt"])
        let pull = try fixture.pull(["frank/corrupt"], hub)
        #expect(pull.status != 0)
        #expect(pull.stderr.contains("is corrupt: its sha256 is"), "\(pull.stderr)")
        #expect(fixture.cacheFiles().isEmpty, "\(fixture.cacheFiles())")
        let list = try CommandLine.run(["list"], environment: fixture.environment(hub))
        #expect(!list.stdout.contains("frank/corrupt"))
    }

    /// A gated repository: 401 without a token names HF_TOKEN; HF_TOKEN or --token gets in; a
    /// wrong token is reported as refused.
    @Test func gatedRepositoryNeedsAToken() throws {
        let fixture = try HubFixture()
        let chat = try HubModels.chat()
        try fixture.add(chat, to: "grace/gated", as: "gated-Q4_K_M.gguf")
        let hub = try HubStandIn(root: fixture.repositories, options: ["--token", "hf_secret"])
        let anonymous = try fixture.pull(["grace/gated"], hub)
        #expect(anonymous.status != 0)
        #expect(anonymous.stderr.contains("HF_TOKEN"), "\(anonymous.stderr)")
        let wrong = try fixture.pull(["grace/gated"], hub, ["HF_TOKEN": "hf_wrong"])
        #expect(wrong.status != 0 && wrong.stderr.contains("token was refused"), "\(wrong.stderr)")
        #expect(fixture.cacheFiles().isEmpty)

        let withEnvironment = try fixture.pull(["grace/gated"], hub, ["HF_TOKEN": "hf_secret"])
        #expect(withEnvironment.status == 0, "\(withEnvironment.stderr)")
        let remove = try CommandLine.run(["rm", "grace/gated"], environment: fixture.environment(hub))
        #expect(remove.status == 0, "\(remove.stderr)")
        let withOption = try fixture.pull(["grace/gated", "--token", "hf_secret"], hub)
        #expect(withOption.status == 0, "\(withOption.stderr)")
        #expect(try HubModels.sha256(withOption.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == HubModels.sha256(chat))
    }

    @Test func missingRepositoryOrModelFileIsAClearError() throws {
        let fixture = try HubFixture()
        try Data("no model here\n".utf8).write(to: try {
            let folder = fixture.repositories.appendingPathComponent("heidi/docs")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            return folder.appendingPathComponent("README.md")
        }())
        let hub = try HubStandIn(root: fixture.repositories)
        let missing = try fixture.pull(["hf.co/nobody/nothing:Q4_K_M"], hub)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("the repository nobody/nothing on 127.0.0.1 was not found (HTTP 404)"), "\(missing.stderr)")
        let empty = try fixture.pull(["heidi/docs"], hub)
        #expect(empty.status != 0 && empty.stderr.contains("holds no .gguf model file"), "\(empty.stderr)")
        let unreachable = try fixture.pull(["heidi/docs"], nil, ["HF_ENDPOINT": "http://127.0.0.1:9"])
        #expect(unreachable.status != 0 && unreachable.stderr.contains("cannot reach"), "\(unreachable.stderr)")
        #expect(fixture.cacheFiles().isEmpty)
    }

    /// A plain link to a .gguf file, and a Hub reached only through `https_proxy`.
    @Test func linkAndProxy() throws {
        let fixture = try HubFixture()
        let chat = try HubModels.chat()
        try fixture.add(chat, to: "ivan/linked", as: "linked-Q4_K_M.gguf")
        let hub = try HubStandIn(root: fixture.repositories)
        let link = "\(hub.endpoint)/cdn/ivan/linked/linked-Q4_K_M.gguf"
        let pull = try fixture.pull([link], hub)
        #expect(pull.status == 0, "\(pull.stderr)")
        #expect(try HubModels.sha256(pull.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) == HubModels.sha256(chat))
        let list = try CommandLine.run(["list"], environment: fixture.environment(hub))
        #expect(list.stdout.contains("127.0.0.1/cdn/ivan/linked/linked-Q4_K_M.gguf"))
        #expect(try HubModels.generate(link, fixture) == HubModels.generate(chat, fixture))

        // hub.invalid does not resolve: only the proxy (the stand-in's CONNECT tunnel) reaches it.
        let proxied = try fixture.pull(["ivan/linked"], hub, ["HF_ENDPOINT": "http://hub.invalid", "https_proxy": hub.endpoint])
        #expect(proxied.status == 0, "\(proxied.stderr)")
        #expect(hub.requests().contains { $0["method"] as? String == "CONNECT" && ($0["path"] as? String)?.hasPrefix("hub.invalid") == true })
    }

    /// `run USER/REPO PROMPT` pulls on first use; a base model (no chat template) is said to be one
    /// and continues the text with a modest limit instead of chatting.
    @Test func runPullsOnFirstUseAndCompletesWithABaseModel() throws {
        let fixture = try HubFixture()
        try fixture.add(try HubModels.base(), to: "judy/base-GGUF", as: "base-Q4_K_M.gguf")
        let hub = try HubStandIn(root: fixture.repositories)
        let run = try CommandLine.run(["run", "judy/base-GGUF", "ab", "--temp", "0", "--ctx", "256", "-t", "2"],
                                      environment: fixture.environment(hub))
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stderr.contains("sha256 verified"))
        #expect(run.stderr.contains("has no chat template (a base model?)"), "\(run.stderr)")
        let generated = try #require(run.stderr.split(separator: "\n").first { $0.contains("generation: ") })
        let count = Int(generated.components(separatedBy: "generation: ")[1].prefix { $0.isNumber }) ?? -1
        #expect((1...128).contains(count), "\(generated)")
        #expect(run.stdout.hasPrefix("ab"))
    }
}

/// Picking files from a repository listing, and reading model names.
@Suite struct QuantSelectionTests {
    func files(_ paths: [String]) -> [HubFile] { paths.map { HubFile(path: $0, size: 1, sha256: nil) } }

    @Test func labelsOfCommonFileNames() {
        #expect(QuantSelection.label(of: "Llama-3.2-1B-Instruct-Q4_K_M.gguf") == "Q4_K_M")
        #expect(QuantSelection.label(of: "qwen2.5-7b-instruct-q8_0-00001-of-00003.gguf") == "Q8_0")
        #expect(QuantSelection.label(of: "Qwen3-8B-UD-Q4_K_XL.gguf") == "Q4_K_XL")
        #expect(QuantSelection.label(of: "BF16/model-BF16-00002-of-00004.gguf") == "BF16")
        #expect(QuantSelection.label(of: "gemma-3-270m-it-IQ4_XS.gguf") == "IQ4_XS")
        #expect(QuantSelection.label(of: "model.gguf") == nil)
    }

    @Test func exactThenClosestThenLarger() throws {
        let repository = files(["m-Q2_K.gguf", "m-Q4_K_S.gguf", "m-Q5_K_S.gguf", "m-Q8_0.gguf", "mmproj-m-Q4_K_M.gguf", "README.md"])
        let exact = try QuantSelection.choose("q8_0", from: repository, repository: "r")
        #expect(exact.exact && exact.candidate.files.map(\.path) == ["m-Q8_0.gguf"])
        // Q4_K_M (4.89): Q4_K_S (4.58) is nearer than Q5_K_S (5.54); the projector is never a candidate.
        let closest = try QuantSelection.choose(nil, from: repository, repository: "r")
        #expect(!closest.exact && closest.candidate.label == "Q4_K_S")
        #expect(closest.available == ["Q2_K", "Q4_K_S", "Q5_K_S", "Q8_0"])
        // Q4_0 (4.5) and Q5_0 (5.5) are equally far from Q4_1 (5.0): the larger wins.
        let tie = try QuantSelection.choose("Q4_1", from: files(["a-Q4_0.gguf", "a-Q5_0.gguf"]), repository: "r")
        #expect(tie.candidate.label == "Q5_0")
    }

    @Test func splitPartsComeTogetherAndMustBeComplete() throws {
        let split = files(["Q6_K/m-Q6_K-00002-of-00002.gguf", "Q6_K/m-Q6_K-00001-of-00002.gguf", "m-Q2_K.gguf"])
        let choice = try QuantSelection.choose("Q6_K", from: split, repository: "r")
        #expect(choice.candidate.files.map(\.path) == ["Q6_K/m-Q6_K-00001-of-00002.gguf", "Q6_K/m-Q6_K-00002-of-00002.gguf"])
        #expect(throws: QuantSelection.SelectionError.incompleteSplit(first: "m-Q6_K-00001-of-00003.gguf", missing: [3])) {
            try QuantSelection.candidates(in: files(["m-Q6_K-00001-of-00003.gguf", "m-Q6_K-00002-of-00003.gguf"]))
        }
        #expect(throws: QuantSelection.SelectionError.noGGUF(repository: "r")) {
            try QuantSelection.choose(nil, from: files(["README.md", "mmproj-F16.gguf"]), repository: "r")
        }
    }

    @Test func modelNameForms() {
        #expect(RemoteModel(parsing: "hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M")
                == .hub(repository: "bartowski/Llama-3.2-1B-Instruct-GGUF", quant: "Q4_K_M"))
        #expect(RemoteModel(parsing: "huggingface.co/unsloth/gemma-3-270m-it-GGUF") == .hub(repository: "unsloth/gemma-3-270m-it-GGUF", quant: nil))
        #expect(RemoteModel(parsing: "ggml-org/gemma-3-1b-it-GGUF:q8_0") == .hub(repository: "ggml-org/gemma-3-1b-it-GGUF", quant: "Q8_0"))
        #expect(RemoteModel(parsing: "https://huggingface.co/Qwen/Qwen3-0.6B-GGUF") == .hub(repository: "Qwen/Qwen3-0.6B-GGUF", quant: nil))
        #expect(RemoteModel(parsing: "https://example.com/models/tiny.gguf") == .url(URL(string: "https://example.com/models/tiny.gguf")!))
        for notAModel in ["What is the capital of France?", "smollm2", "models/tiny.gguf", "a/b/c", "https://example.com/page", "yes/no maybe", "/x", "alice/..", "alice/../x"] {
            #expect(RemoteModel(parsing: notAModel) == nil, "\(notAModel)")
        }
    }
}
