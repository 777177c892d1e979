import Engine
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import TestSupport

/// The first five minutes: the version, a prompt without a model name, inputs checked before
/// anything is fetched, and base models.
@Suite(.serialized) struct FirstRunTests {
    @Test func versionIsReported() throws {
        let r = try CommandLine.run(["--version"])
        #expect(r.status == 0)
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == SwiftletVersion.current)
        #expect(SwiftletVersion.product == "swiftlet/" + SwiftletVersion.current)
    }

    /// `swiftlet run "PROMPT"`: one argument that names no model is the prompt for the default model.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: TestSupport.smolLM2Path), "needs SmolLM2 in the cache"))
    func onePromptArgumentAsksTheDefaultModel() throws {
        let r = try CommandLine.run(["run", "What is the capital of France?", "-n", "4", "--temp", "0", "--ctx", "256", "-t", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stderr.contains("neither a file nor a known model"))
        #expect(!r.stdout.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
        #expect(r.stderr.contains("generation: "))
        #expect(!r.stderr.contains("no chat template"))
    }

    /// Every input is checked before a model is fetched or loaded: with an empty cache, nothing
    /// is downloaded and the error names the bad input.
    @Test func inputsAreCheckedBeforeAnyDownload() throws {
        let home = try TestSupport.scratchDirectory("empty-home")
        let environment = ["SWIFTLET_HOME": home.path, "HF_ENDPOINT": "http://127.0.0.1:9"]
        let cases: [([String], String)] = [
            (["perplexity", "smollm2", "/nonexistent"], "text FILE '/nonexistent' does not exist"),
            (["perplexity", "smollm2", home.path], "is a directory"),
            (["perplexity", "smollm2", "--kl-divergence", "--kl-divergence-base", "/nonexistent.kld"], "does not exist"),
            (["quantize", "smollm2", "/nonexistent/dir/out.gguf", "Q4_0"], "the folder '/nonexistent/dir' does not exist"),
            (["quantize", "smollm2", home.appendingPathComponent("out.gguf").path, "Q9_9"], "unknown TYPE 'Q9_9'"),
            (["run", "smollm2", "hi", "-n", "0"], "--n-predict must be at least 1"),
            (["run", "no-such-model", "hi"], "neither a file nor a known model"),
            (["serve", "no-such-model"], "neither a file nor a known model"),
            (["serve", "smollm2", "--api-key-file", "/nonexistent.key"], "/nonexistent.key"),
            (["pull", "not a model"], "neither a file nor a known model"),
        ]
        for (arguments, message) in cases {
            let started = Date()
            let r = try CommandLine.run(arguments, environment: environment)
            #expect(r.status != 0, "\(arguments)")
            #expect(r.stderr.contains(message), "\(arguments): \(r.stderr)")
            #expect(Date().timeIntervalSince(started) < 10, "\(arguments) took too long: did it fetch something?")
        }
        let left = FileManager.default.enumerator(atPath: home.path)?.allObjects ?? []
        #expect(left.isEmpty, "the cache was touched: \(left)")
    }

    /// A base model without a chat template (Gemma 3 270M) is announced as one and continues the
    /// text with a modest limit, stopping at a blank line.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: TestSupport.gemma3Path), "needs Gemma 3 in the cache"))
    func baseModelCompletesTextInsteadOfChatting() throws {
        let r = try CommandLine.run(["run", TestSupport.gemma3Path, "The capital of France is", "--temp", "0", "--ctx", "256", "-t", "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stderr.contains("has no chat template (a base model?)"))
        let generated = try #require(r.stderr.split(separator: "\n").first { $0.contains("generation: ") })
        let count = Int(generated.components(separatedBy: "generation: ")[1].prefix { $0.isNumber }) ?? -1
        #expect((1...128).contains(count), "\(generated)")
        #expect(r.stdout.hasPrefix("The capital of France is"))
        #expect(!r.stdout.trimmingCharacters(in: .newlines).contains("\n\n"))
    }

    /// `serve`: the `Server` header and the /v1/models entries carry the version.
    @Test func serverReportsItsVersion() async throws {
        let model = try HubModels.chat()
        let process = Process()
        process.executableURL = CommandLine.binary
        process.arguments = ["serve", model, "--port", "0", "--ctx", "64", "--parallel", "1", "-t", "1"]
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        defer {
            // SIGKILL: a child started from a test thread inherits its blocked signals, SIGTERM among them.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // The "listening" log line names the port the system chose.
        var text = ""
        var port: Int?
        while port == nil, let chunk = try output.fileHandleForReading.read(upToCount: 1), !chunk.isEmpty {
            text += String(decoding: chunk, as: UTF8.self)
            if text.hasSuffix("\n"), let line = text.split(separator: "\n").last(where: { $0.contains("listening") }) {
                port = line.split(whereSeparator: { !$0.isNumber }).last.flatMap { Int($0) }
            }
        }
        let listening = try #require(port, "\(text)")
        var models: (Data, HTTPURLResponse)?
        for _ in 0..<100 {
            let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(listening)/v1/models")!)
            if let http = response as? HTTPURLResponse, http.statusCode == 200 { models = (data, http); break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        let (data, response) = try #require(models)
        #expect(response.value(forHTTPHeaderField: "Server") == "swiftlet/" + SwiftletVersion.current)
        let object = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        let entries = try #require(object?["data"] as? [[String: Any]])
        #expect(entries.first?["version"] as? String == SwiftletVersion.current)
    }
}
