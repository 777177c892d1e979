import Engine
import Foundation
import Hummingbird
import HummingbirdTesting
import JSON
import Logging
import NIOCore
@testable import Server
import TestSupport
import Testing

/// llama-server's LoRA API on SmolLM2 with a random adapter: `GET/POST /lora-adapters` and a
/// completion's own `lora` scales.
@Suite(.serialized, .enabled(if: FileManager.default.fileExists(atPath: TestSupport.smolLM2Path),
                             "needs SmolLM2-135M-Instruct in the model cache"))
struct LoRAEndpointTests {
    static let adapter: Result<String, Error> = Result {
        let path = try TestSupport.scratchDirectory("lora-server").appendingPathComponent("adapter.gguf").path
        let script = TestSupport.repositoryRoot().appendingPathComponent("scripts/random_lora.py").path
        try TestSupport.python([script, TestSupport.smolLM2Path, path, "--seed", "3", "--strength", "0.3"])
        return path
    }

    static let modelName = URL(fileURLWithPath: TestSupport.smolLM2Path).deletingPathExtension().lastPathComponent

    static func request(_ client: any TestClientProtocol, _ method: HTTPRequest.Method, _ path: String,
                        _ body: String = "") async throws -> (Int, JSONValue) {
        try await client.execute(uri: path, method: method, body: ByteBuffer(string: body)) { r in
            (Int(r.status.code), try JSONValue(parsing: String(buffer: r.body)))
        }
    }

    /// A greedy completion's text, with `lora` as the request's field when given.
    static func complete(_ client: any TestClientProtocol, lora: String? = nil) async throws -> String {
        let field = lora.map { #", "lora": \#($0)"# } ?? ""
        let (status, body) = try await request(client, .post, "/v1/completions", #"""
            {"model": "\#(modelName)", "prompt": "My favourite recipe for pancakes:", "max_tokens": 12, "temperature": 0\#(field)}
            """#)
        #expect(status == 200, "\(body)")
        return body["choices"]?.arrayValue?.first?["text"]?.stringValue ?? ""
    }

    @Test func adaptersAreListedSetAndChosenPerRequest() async throws {
        let path = try Self.adapter.get()
        let model = try LoadedModel(path: TestSupport.smolLM2Path, adapters: [LoRAFile(path: path, scale: 1)])
        let state = ServerState()
        let generator = try Generator(model: model, configuration: .init(contextLength: 256, parallel: 2))
        state.engine = generator
        let server = OpenAIServer(configuration: ServerConfiguration(), state: state, metrics: ServerMetrics(),
                                  logger: Logger(label: "test"))
        try await Application(router: server.makeRouter()).test(.router) { client in
            var (status, list) = try await Self.request(client, .get, "/lora-adapters")
            #expect(status == 200)
            #expect(list.arrayValue?.first?["id"]?.intValue == 0 && list.arrayValue?.first?["path"]?.stringValue == path)
            #expect(list.arrayValue?.first?["scale"]?.doubleValue == 1 && list.arrayValue?.count == 1)

            let adapted = try await Self.complete(client)
            let off = try await Self.complete(client, lora: #"[{"id": 0, "scale": 0}]"#)
            #expect(adapted != off, "the adapter changes the completion")
            #expect(try await Self.complete(client, lora: #"[{"id": 0, "scale": 1}]"#) == adapted)
            #expect(try await Self.complete(client, lora: "[]") == adapted, "an empty list keeps the server's scales")

            // POST sets the scales of requests that name none; adapters left out get 0
            var answer: JSONValue
            (status, answer) = try await Self.request(client, .post, "/lora-adapters", "[]")
            #expect(status == 200 && answer["success"]?.boolValue == true)
            (_, list) = try await Self.request(client, .get, "/lora-adapters")
            #expect(list.arrayValue?.first?["scale"]?.doubleValue == 0)
            #expect(try await Self.complete(client) == off)
            (status, _) = try await Self.request(client, .post, "/lora-adapters", #"[{"id": 0, "scale": 1}]"#)
            #expect(status == 200)
            #expect(try await Self.complete(client) == adapted)

            for (body, param) in [(#"{"id": 0}"#, "body"), (#"[{"id": 1, "scale": 1}]"#, "body[0]"),
                                  (#"[{"id": 0, "scale": "x"}]"#, "body[0]"), ("not json", nil)] {
                (status, answer) = try await Self.request(client, .post, "/lora-adapters", body)
                #expect(status == 400, "\(body)")
                if let param { #expect(answer["error"]?["param"]?.stringValue == param, "\(body): \(answer)") }
            }
            (status, answer) = try await Self.request(client, .post, "/v1/completions",
                                                      #"{"model": "\#(Self.modelName)", "prompt": "Hi", "lora": [{"id": 7, "scale": 1}]}"#)
            #expect(status == 400 && answer["error"]?["param"]?.stringValue == "lora[0]", "\(answer)")
        }
        await generator.shutdown()
    }
}
