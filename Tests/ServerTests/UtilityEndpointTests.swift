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
import Tokenization

/// `/tokenize`, `/detokenize` and `/apply-template` (llama.cpp's shapes) without a model.
@Suite struct UtilityEndpointTests {
    @Test func needTheModelAndTheAPIKey() async throws {
        var config = ServerConfiguration()
        config.apiKey = "k1"
        let server = OpenAIServer(configuration: config, state: ServerState(), metrics: ServerMetrics(),
                                  logger: Logger(label: "test"))
        let app = Application(router: server.makeRouter())
        try await app.test(.router) { client in
            for path in ["/tokenize", "/detokenize", "/apply-template"] {
                try await client.execute(uri: path, method: .post, body: ByteBuffer(string: "{}")) { r in
                    #expect(r.status == .unauthorized, "\(path)")
                }
                try await client.execute(uri: path, method: .post, headers: [.authorization: "Bearer k1"],
                                         body: ByteBuffer(string: "{}")) { r in
                    #expect(r.status == .serviceUnavailable, "\(path): past authentication; the model is not loaded")
                }
            }
        }
    }
}

/// The same endpoints on SmolLM2.
@Suite(.serialized, .enabled(if: FileManager.default.fileExists(atPath: TestSupport.smolLM2Path),
                             "needs SmolLM2-135M-Instruct in the model cache"))
struct UtilityEndpointModelTests {
    func withServer(chatTemplate: ChatTemplate? = nil,
                    _ body: @Sendable (any TestClientProtocol, LoadedModel) async throws -> Void) async throws {
        let model = try LoadedModel(path: TestSupport.smolLM2Path, chatTemplate: chatTemplate)
        let state = ServerState()
        let generator = try Generator(model: model, configuration: .init(contextLength: 512, parallel: 1))
        state.engine = generator
        let server = OpenAIServer(configuration: ServerConfiguration(), state: state, metrics: ServerMetrics(),
                                  logger: Logger(label: "test"))
        let app = Application(router: server.makeRouter())
        try await app.test(.router) { client in try await body(client, model) }
        await generator.shutdown()
    }

    /// POSTs `body` and returns the status and the parsed JSON answer.
    static func post(_ client: any TestClientProtocol, _ path: String, _ body: String) async throws -> (Int, JSONValue) {
        try await client.execute(uri: path, method: .post, body: ByteBuffer(string: body)) { r in
            (Int(r.status.code), try JSONValue(parsing: String(buffer: r.body)))
        }
    }

    static func ids(_ value: JSONValue?) -> [TokenID] {
        value?.arrayValue?.compactMap { $0.intValue.map(TokenID.init) } ?? []
    }

    @Test func tokenizeAndDetokenize() async throws {
        try await withServer { client, model in
            let tokenizer = model.tokenizer
            let text = "Hello world! <|im_start|> Grüße 🇩🇪"
            var (status, answer) = try await Self.post(client, "/tokenize", #"{"content": "\#(text)"}"#)
            #expect(status == 200)
            let tokens = Self.ids(answer["tokens"])
            #expect(tokens == tokenizer.encode(text, addSpecial: false, parseSpecial: true))
            #expect(tokens.contains(try #require(tokenizer.encode("<|im_start|>", addSpecial: false, parseSpecial: true).first)))

            (_, answer) = try await Self.post(client, "/tokenize", #"{"content": "<|im_start|>", "parse_special": false}"#)
            #expect(Self.ids(answer["tokens"]).count > 1, "special-token text as plain text")

            // pieces: text when valid UTF-8, byte values otherwise; together they are the text
            (status, answer) = try await Self.post(client, "/tokenize", #"{"content": "\#(text)", "with_pieces": true}"#)
            #expect(status == 200)
            let items = try #require(answer["tokens"]?.arrayValue)
            #expect(items.compactMap { $0["id"]?.intValue.map(TokenID.init) } == tokens)
            var bytes: [UInt8] = []
            var sawBytes = false
            for item in items {
                switch item["piece"] {
                case .string(let s)?: bytes += Array(s.utf8)
                case .array(let values)?:
                    sawBytes = true
                    bytes += values.compactMap { $0.intValue.map(UInt8.init) }
                default: Issue.record("piece of \(item) is neither text nor bytes")
                }
            }
            #expect(String(decoding: bytes, as: UTF8.self) == text)
            #expect(sawBytes, "the flag's bytes are split across tokens that are not UTF-8 on their own")

            // add_special and mixed content (strings and ids), as llama.cpp's tokenize_mixed
            (_, answer) = try await Self.post(client, "/tokenize", #"{"content": ["Hi", 42, " there"], "add_special": true}"#)
            #expect(Self.ids(answer["tokens"]) == tokenizer.encode("Hi", addSpecial: true, parseSpecial: true) + [42]
                + tokenizer.encode(" there", addSpecial: false, parseSpecial: true))

            (status, answer) = try await Self.post(client, "/detokenize", #"{"tokens": [\#(tokens.map(String.init).joined(separator: ","))]}"#)
            #expect(status == 200)
            #expect(answer["content"]?.stringValue == text)
            (_, answer) = try await Self.post(client, "/detokenize", "{}")
            #expect(answer["content"]?.stringValue == "")
        }
    }

    @Test func badRequestsNameTheField() async throws {
        try await withServer { client, model in
            let size = model.tokenizer.vocabularySize
            for (path, body, param) in [
                ("/tokenize", "{}", "content"),
                ("/tokenize", #"{"content": 5}"#, "content"),
                ("/tokenize", #"{"content": ["a", -1]}"#, "content[1]"),
                ("/tokenize", #"{"content": "a", "with_pieces": "yes"}"#, "with_pieces"),
                ("/detokenize", #"{"tokens": [1, \#(size)]}"#, "tokens[1]"),
                ("/detokenize", #"{"tokens": "1"}"#, "tokens"),
                ("/apply-template", "{}", "messages"),
                ("/apply-template", #"{"messages": [{"role": "wizard", "content": "x"}]}"#, "messages[0].role"),
                ("/apply-template", #"{"messages": [{"role": "user", "content": "x"}], "tools": 3}"#, "tools"),
            ] {
                let (status, answer) = try await Self.post(client, path, body)
                #expect(status == 400, "\(path) \(body)")
                #expect(answer["error"]?["param"]?.stringValue == param, "\(path) \(body): \(answer)")
            }
            let (status, _) = try await Self.post(client, "/tokenize", "not json")
            #expect(status == 400)
        }
    }

    @Test func applyTemplateGivesTheChatPrompt() async throws {
        try await withServer { client, model in
            let messages = #"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]"#
            var (status, answer) = try await Self.post(client, "/apply-template", #"{"messages": \#(messages)}"#)
            #expect(status == 200)
            let expected = try model.renderChat([.system("Be brief."), .user("Hi")])
            #expect(answer["prompt"]?.stringValue == expected)
            #expect(expected.hasSuffix("<|im_start|>assistant\n"))

            // with tools, the prompt describes them as a chat completion's would
            let tools = #"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]"#
            (status, answer) = try await Self.post(client, "/apply-template", #"{"messages": \#(messages), "tools": \#(tools)}"#)
            #expect(status == 200)
            #expect(answer["prompt"]?.stringValue?.contains("get_weather") == true)
        }
    }

    /// An assistant turn that only calls tools (`content: null`) reaches the template with empty
    /// content, as llama.cpp passes it, so templates that search the content (Qwen3's
    /// `'</think>' in content`) render the history.
    @Test func callOnlyTurnsHaveEmptyContent() async throws {
        let template = try ChatTemplate(source: """
            {% for m in messages %}{% if '</think>' in m.content %}!{% endif %}{{ m.role }}:{{ m.content }}\
            {% if m.tool_calls %}<tool_call>{{ m.tool_calls[0].function.name }}</tool_call>{% endif %}|{% endfor %}
            """)
        try await withServer(chatTemplate: template) { client, _ in
            let messages = #"""
                [{"role": "user", "content": "Weather?"},
                 {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
                 {"role": "tool", "tool_call_id": "c1", "content": "21C"}]
                """#
            let (status, answer) = try await Self.post(client, "/apply-template", #"{"messages": \#(messages)}"#)
            #expect(status == 200, "\(answer)")
            #expect(answer["prompt"]?.stringValue == "user:Weather?|assistant:<tool_call>get_weather</tool_call>|tool:21C|")
        }
    }

    /// `--chat-template-file` replaces the GGUF's template (the server's LoadedModel takes it).
    @Test func aTemplateFromFileReplacesTheModelsOwn() async throws {
        let template = try ChatTemplate(source: "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}")
        try await withServer(chatTemplate: template) { client, _ in
            let (status, answer) = try await Self.post(client, "/apply-template",
                                                       #"{"messages": [{"role": "user", "content": "Hi"}]}"#)
            #expect(status == 200)
            #expect(answer["prompt"]?.stringValue == "[user] Hi\n[assistant] ")
        }
    }
}
