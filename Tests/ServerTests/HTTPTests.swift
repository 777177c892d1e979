import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Engine
@testable import Server
import TestSupport
import Testing

/// The HTTP layer without a model: health before loading, authentication, request validation.
@Suite(.serialized) struct HTTPTests {
    func makeServer(apiKey: String? = nil) -> OpenAIServer {
        var config = ServerConfiguration()
        config.apiKey = apiKey
        return OpenAIServer(configuration: config, state: ServerState(), metrics: ServerMetrics(),
                            logger: Logger(label: "test"))
    }

    /// Liveness and readiness apart: `/health` answers 200 as soon as the process listens (the
    /// body says how far loading got), `/ready` 503 until the model is loaded, and a load
    /// failure is reported by both.
    @Test func healthIsLiveWhileReadyWaitsForTheModel() async throws {
        let server = makeServer()
        let app = Application(router: server.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { r in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body).contains("loading"))
            }
            try await client.execute(uri: "/ready", method: .get) { r in
                #expect(r.status == .serviceUnavailable)
                #expect(String(buffer: r.body).contains("loading"))
            }
            try await client.execute(uri: "/v1/models", method: .get) { r in
                #expect(r.status == .serviceUnavailable)
                #expect(r.headers[.retryAfter] == "1")
            }
            try await client.execute(uri: "/metrics", method: .get) { r in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body).contains("swiftlet_model_loaded 0"))
            }
        }
        server.state.loadError = "no such file"
        try await app.test(.router) { client in
            try await client.execute(uri: "/health", method: .get) { r in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body).contains(#""status":"error""#))
                #expect(String(buffer: r.body).contains("no such file"))
            }
            try await client.execute(uri: "/ready", method: .get) { r in
                #expect(r.status == .serviceUnavailable)
                #expect(String(buffer: r.body).contains("no such file"))
            }
        }
    }

    /// Safe defaults: loopback only, no CORS headers (browsers on other origins cannot call the
    /// API), and a key file read without its line break.
    @Test func securityDefaults() async throws {
        #expect(ServerConfiguration().host == "127.0.0.1")
        let app = Application(router: makeServer().makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/models", method: .get, headers: [.origin: "https://evil.example"]) { r in
                #expect(r.headers[.accessControlAllowOrigin] == nil)
            }
            try await client.execute(uri: "/v1/chat/completions", method: .options, headers: [.origin: "https://evil.example"]) { r in
                #expect(r.headers[.accessControlAllowOrigin] == nil)
            }
        }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("key-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try " s3cret \nsecond line\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try ServerConfiguration.apiKey(fromFile: file) == "s3cret")
        try "\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: ServerConfigurationError.self) { try ServerConfiguration.apiKey(fromFile: file) }
        #expect(throws: ServerConfigurationError.self) { try ServerConfiguration.apiKey(fromFile: file + ".missing") }
    }

    @Test func aPIKeyIsRequiredOnEveryRouteButProbes() async throws {
        let app = Application(router: makeServer(apiKey: "k1").makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/models", method: .get) { r in
                #expect(r.status == .unauthorized)
                #expect(String(buffer: r.body).contains("invalid_api_key"))
            }
            try await client.execute(uri: "/v1/models", method: .get, headers: [.authorization: "Bearer k2"]) { r in
                #expect(r.status == .unauthorized)
            }
            try await client.execute(uri: "/v1/models", method: .get, headers: [.authorization: "Bearer k1"]) { r in
                #expect(r.status == .serviceUnavailable, "past authentication; the model is not loaded")
            }
            try await client.execute(uri: "/ready", method: .get) { r in
                #expect(r.status == .serviceUnavailable, "no key needed; the model is not loaded")
            }
            // routes outside /v1 are the API too (llama.cpp's /rerank alias)
            try await client.execute(uri: "/rerank", method: .post, body: ByteBuffer(string: "{}")) { r in
                #expect(r.status == .unauthorized)
            }
        }
    }

    @Test func requestValidationNamesTheField() throws {
        func param(_ json: String, chat: Bool = true) -> String? {
            do {
                _ = try CompletionRequest(body: Array(json.utf8), chat: chat)
                return nil
            } catch let e as APIError {
                #expect(e.status == 400)
                return e.param ?? "(none)"
            } catch {
                return "unexpected \(error)"
            }
        }
        let ok = #"{"model":"m","messages":[{"role":"user","content":"hi"}]"#
        #expect(param(ok + "}") == nil)
        #expect(param("{") == "(none)")
        #expect(param("[1]") == "(none)")
        #expect(param(#"{"messages":[{"role":"user","content":"hi"}]}"#) == "model")
        #expect(param(ok + #","temperature":"x"}"#) == "temperature")
        #expect(param(ok + #","temperature":3}"#) == "temperature")
        #expect(param(ok + #","top_p":0}"#) == "top_p")
        #expect(param(ok + #","max_tokens":0}"#) == "max_tokens")
        #expect(param(ok + #","max_tokens":1.5}"#) == "max_tokens")
        #expect(param(ok + #","seed":"s"}"#) == "seed")
        #expect(param(ok + #","stop":[1]}"#) == "stop")
        #expect(param(ok + #","n":0}"#) == "n")
        #expect(param(ok + #","stream":"yes"}"#) == "stream")
        #expect(param(ok + #","stream_options":{"include_usage":1}}"#) == "stream_options.include_usage")
        #expect(param(ok + #","logit_bias":{"5":500}}"#) == "logit_bias")
        #expect(param(ok + #","response_format":{"type":"json_schema"}}"#) == "response_format.json_schema")
        #expect(param(#"{"model":"m","messages":[{"role":"user"}]}"#) == "messages[0].content")
        #expect(param(#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#) == "messages[0].content[0]")
        #expect(param(#"{"model":"m"}"#, chat: false) == "prompt")
        #expect(param(#"{"model":"m","prompt":[-1]}"#, chat: false) == "prompt")
        #expect(param(#"{"model":"m","prompt":{}}"#, chat: false) == "prompt")
        #expect(param(#"{"model":"m","prompt":"x","logprobs":50}"#, chat: false) == "logprobs")

        let r = try CompletionRequest(body: Array((ok + #","max_completion_tokens":7,"temperature":0,"stop":"END","n":2,"logprobs":true,"top_logprobs":4,"seed":-1,"logit_bias":{"12":-100},"ignore_eos":true}"#).utf8), chat: true)
        #expect(r.maxTokens == 7)
        #expect(r.sampling.temperature == 0)
        #expect(r.stop == ["END"])
        #expect(r.n == 2)
        #expect(r.logprobs == 4)
        #expect(r.sampling.seed == UInt64.max)
        #expect(r.sampling.logitBias[12] == -100)
        #expect(r.ignoreEOS)
        #expect(param(ok + #","ignore_eos":"yes"}"#) == "ignore_eos")
    }

    /// Token counts stay tokens (`k` = 1024 tokens); sizes follow `ByteCount` (M = 10^6, MiB = 2^20).
    @Test func kVCacheSizeParsing() throws {
        #expect(try KVCacheSize(parsing: "8192") == .tokens(8192))
        #expect(try KVCacheSize(parsing: "8192t") == .tokens(8192))
        #expect(try KVCacheSize(parsing: "4k") == .tokens(4096))
        #expect(try KVCacheSize(parsing: "8k tokens") == .tokens(8192))
        #expect(try KVCacheSize(parsing: "512MB") == .bytes(512_000_000))
        #expect(try KVCacheSize(parsing: "512 M") == .bytes(512_000_000))
        #expect(try KVCacheSize(parsing: "1GiB") == .bytes(1 << 30))
        #expect(try KVCacheSize(parsing: "1.5gib") == .bytes(3 << 29))
        #expect(try KVCacheSize(parsing: "1TB") == .bytes(1_000_000_000_000))
        for bad in ["lots", "-5", "0", "0MB", "", "12XB", "99999999999999999999"] {
            #expect(throws: ByteCount.ParseError.self, "\(bad)") { try KVCacheSize(parsing: bad) }
        }
        let error = try #require(throws: ByteCount.ParseError.self) { try KVCacheSize(parsing: "12XB") }
        #expect(error.description.hasPrefix("--kv-cache: cannot read '12XB': expected a token count"))
        #expect(KVCacheSize.bytes(1 << 20).tokens(bytesPerToken: 1024) == 1024)
    }
}

/// `scripts/test_server_openai.py`: the official `openai` client against `swiftlet serve` on SmolLM2.
@Suite(.serialized) struct OpenAIClientTests {
    /// On both real models (SmolLM2-only checks report themselves as skipped on Gemma 3).
    @Test(arguments: ["smollm2", "gemma3"])
    func openAIClientEndToEnd(_ model: String) throws {
        guard let run = try runScriptOnBuiltBinary("scripts/test_server_openai.py", ["--model", model]) else { return }
        #expect(run.status == 0, "the openai-client tests failed on \(model):\n\(run.output)")
    }
}
