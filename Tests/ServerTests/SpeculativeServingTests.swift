import Engine
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
@testable import Server
import TestSupport
import Testing

/// Speculative decoding over HTTP: prompt lookup or a draft model, per request (`speculative`)
/// or as the server's default (`--lookup`, `--draft`), the same completion as without it, and the
/// drafts counted on `/metrics`.
@Suite(.serialized) struct SpeculativeServingTests {
    static let modelPresent = FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)

    /// A server over SmolLM2 with `speculation` as its default, its engine (two sequences, ctx
    /// 512, drafting with the model at `draftModelPath` if given) and its metrics.
    static func makeServer(speculation: Speculation, draftModelPath: String? = nil) throws
        -> (OpenAIServer, Generator, ServerMetrics) {
        let metrics = ServerMetrics()
        var config = ServerConfiguration()
        config.speculation = speculation
        let server = OpenAIServer(configuration: config, state: ServerState(), metrics: metrics, logger: Logger(label: "test"))
        let model = try LoadedModel(path: TestSupport.smolLM2Path)
        let draft = try draftModelPath.map { try DraftModel(LoadedModel(path: $0), for: model) }
        let engine = try Generator(model: model, configuration: .init(contextLength: 512, parallel: 2),
                                   observer: ServerObserver(metrics: metrics, logger: Logger(label: "test")),
                                   draftModel: draft)
        server.state.engine = engine
        metrics.engineLoaded(engine)
        return (server, engine, metrics)
    }

    /// The first choice's message content of a chat completion.
    static func content(_ r: TestResponse) throws -> String {
        let object = try JSONSerialization.jsonObject(with: Data(buffer: r.body)) as! [String: Any]
        let message = (object["choices"] as! [[String: Any]])[0]["message"] as! [String: Any]
        return message["content"] as! String
    }

    @Test func speculativeFieldIsValidated() throws {
        func param(_ extra: String) -> String? {
            let json = #"{"model":"m","messages":[{"role":"user","content":"hi"}]"# + extra + "}"
            do {
                _ = try CompletionRequest(body: Array(json.utf8), chat: true)
                return nil
            } catch let e as APIError {
                return e.param
            } catch {
                return "unexpected \(error)"
            }
        }
        #expect(param(#","speculative":{"lookup":8}"#) == nil)
        #expect(param(#","speculative":8"#) == "speculative")
        #expect(param(#","speculative":{"lookup":"8"}"#) == "speculative.lookup")
        #expect(param(#","speculative":{"lookup":-1}"#) == "speculative.lookup")
        #expect(param(#","speculative":{"lookup":\#(PromptLookup.longestDraft + 1)}"#) == "speculative.lookup")
        #expect(param(#","speculative":{"n_max":0}"#) == "speculative.n_max")
        #expect(param(#","speculative":{"n_max":4,"n_min":5}"#) == "speculative.n_min")
        #expect(param(#","speculative":{"p_min":1.5}"#) == "speculative.p_min")
        let r = try CompletionRequest(body: Array(#"{"model":"m","prompt":"x","speculative":{"lookup":0}}"#.utf8), chat: false)
        #expect(r.speculation == .lookup(0))
        let d = try CompletionRequest(body: Array(#"{"model":"m","prompt":"x","speculative":{"n_max":5,"p_min":0.5}}"#.utf8), chat: false)
        #expect(d.speculation == .draftModel(DraftModelSettings(maxDraft: 5, minDraft: 0, minProbability: 0.5)))
    }

    @Test(.enabled(if: modelPresent, "needs SmolLM2 in the model cache (swiftlet pull smollm2)"))
    func lookupPerRequestAndByDefaultGivesTheSameTextAndCountsDrafts() async throws {
        let (server, engine, metrics) = try Self.makeServer(speculation: .lookup(PromptLookup(maxDraft: 6)))
        let model = engine.model
        let app = Application(router: server.makeRouter())
        let passage = "The old mill stood beside the stream for two hundred years. Every spring the stream rose over its banks."
        @Sendable func body(_ speculative: String) -> ByteBuffer {
            ByteBuffer(string: #"{"model":"\#(model.name)","temperature":0,"max_tokens":40,"messages":[{"role":"user","content":"Repeat exactly: \#(passage)"}]\#(speculative)}"#)
        }
        @Sendable func drafted() -> (Double, Double) {
            let m = PrometheusText(metrics.render())
            return (m.value("swiftlet_draft_tokens_total") ?? -1, m.value("swiftlet_draft_tokens_accepted_total") ?? -1)
        }
        try await app.test(.router) { client in
            var plain = ""
            try await client.execute(uri: "/v1/chat/completions", method: .post, body: body(#","speculative":{"lookup":0}"#)) { r in
                #expect(r.status == .ok)
                plain = try Self.content(r)
            }
            #expect(drafted() == (0, 0))
            try await client.execute(uri: "/v1/chat/completions", method: .post, body: body("")) { r in
                #expect(r.status == .ok)
                let text = try Self.content(r)
                #expect(text == plain)
            }
            let (afterDefault, acceptedDefault) = drafted()
            #expect(afterDefault > 0 && acceptedDefault > 0 && acceptedDefault <= afterDefault)
            try await client.execute(uri: "/v1/chat/completions", method: .post, body: body(#","speculative":{"lookup":12}"#)) { r in
                #expect(r.status == .ok)
                let text = try Self.content(r)
                #expect(text == plain)
            }
            #expect(drafted().0 > afterDefault)
        }
        await engine.shutdown()
    }

    /// With `--draft`: requests draft with the draft model by default and by `n_max`; a server
    /// without one refuses `n_max` by name.
    @Test(.enabled(if: modelPresent, "needs SmolLM2 in the model cache (swiftlet pull smollm2)"))
    func draftModelByDefaultAndPerRequest() async throws {
        // the model drafts for itself: what the drafts are does not change the text, only how many stand
        let (server, engine, metrics) = try Self.makeServer(speculation: .draftModel(DraftModelSettings(maxDraft: 4)),
                                                            draftModelPath: TestSupport.smolLM2Path)
        let model = engine.model
        let app = Application(router: server.makeRouter())
        @Sendable func body(_ speculative: String) -> ByteBuffer {
            ByteBuffer(string: #"{"model":"\#(model.name)","temperature":0,"max_tokens":24,"messages":[{"role":"user","content":"Name three colours."}]\#(speculative)}"#)
        }
        try await app.test(.router) { client in
            var texts: [String] = []
            for speculative in [#","speculative":{"lookup":0}"#, "", #","speculative":{"n_max":8,"p_min":0}"#] {
                try await client.execute(uri: "/v1/chat/completions", method: .post, body: body(speculative)) { r in
                    #expect(r.status == .ok)
                    texts.append(try Self.content(r))
                }
            }
            #expect(texts.count == 3 && Set(texts).count == 1, "\(texts)")
        }
        let m = PrometheusText(metrics.render())
        #expect((m.value("swiftlet_draft_tokens_accepted_total") ?? 0) > 0)
        await engine.shutdown()

        let plain = try Generator(model: model, configuration: .init(contextLength: 512, parallel: 1))
        server.state.engine = plain
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/chat/completions", method: .post, body: body(#","speculative":{"n_max":8}"#)) { r in
                #expect(r.status == .badRequest)
                #expect(String(buffer: r.body).contains(#""param":"speculative""#))
            }
            // the server's default draft model does not apply to an engine without one
            try await client.execute(uri: "/v1/chat/completions", method: .post, body: body("")) { r in
                #expect(r.status == .ok)
            }
        }
        await plain.shutdown()
    }
}
