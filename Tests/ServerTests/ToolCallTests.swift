import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import TestSupport
import JSON
@testable import Engine
@testable import Server
import Testing
@testable import Tokenization

/// Parsing calls out of hand-written replies, for each template family, whole and streamed.
@Suite struct ToolCallParserTests {
    /// Feeds `pieces` one by one, then finishes; returns the joined content and the calls.
    func run(_ syntax: ToolCallSyntax, _ pieces: [String]) -> (content: String, calls: [ParsedToolCall], events: [ToolParseEvent]) {
        var counter = 0
        var parser = ToolCallStreamParser(syntax: syntax, makeID: { "call_fixed" })
        var events: [ToolParseEvent] = []
        for piece in pieces { events += parser.feed(piece) }
        events += parser.finish()
        var content = ""
        var calls: [ParsedToolCall] = []
        // each call: announced with its name, then its arguments in pieces that join to the whole
        var streamed: [Int: ParsedToolCall] = [:]
        for event in events {
            switch event {
            case .content(let text): content += text
            case .reasoning: Issue.record("reasoning from a \(syntax) parser")
            case .callStart(let index, let id, let name):
                #expect(index == counter && streamed[index] == nil)
                counter += 1
                streamed[index] = ParsedToolCall(id: id, name: name, arguments: "")
            case .callArguments(let index, let piece):
                #expect(streamed[index] != nil, "arguments after the call's start")
                streamed[index]?.arguments += piece
            case .call(let index, let call):
                #expect(streamed[index] == call, "the whole call is its streamed pieces")
                calls.append(call)
            }
        }
        #expect(calls.count == counter, "every announced call completes")
        return (content, calls, events)
    }

    /// Every split of `text` into two pieces gives the same result as the whole text.
    func expectSplitInvariant(_ syntax: ToolCallSyntax, _ text: String) {
        let whole = run(syntax, [text])
        for cut in 0...text.count {
            let i = text.index(text.startIndex, offsetBy: cut)
            let split = run(syntax, [String(text[..<i]), String(text[i...])])
            #expect(split.content == whole.content, "cut at \(cut)")
            #expect(split.calls == whole.calls, "cut at \(cut)")
        }
    }

    @Test func hermesCallsAndSurroundingText() {
        let reply = #"Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>"#
            + "\n" + #"<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>"#
        let r = run(.hermes, [reply])
        #expect(r.content == "Let me check.")
        #expect(r.calls.map(\.name) == ["get_weather", "get_time"])
        #expect(r.calls[0].arguments == #"{"city": "Paris"}"#, "as the model wrote them")
        #expect(r.calls[1].arguments == #"{"zone": "CET"}"#)
        expectSplitInvariant(.hermes, reply)
    }

    @Test func aMarkerSplitAcrossPiecesNeverReachesTheContent() {
        let pieces = ["Sure", " <tool", "_ca", "ll>\n{\"name\": \"f\", ", "\"arguments\": {}}\n</tool_", "call>"]
        var parser = ToolCallStreamParser(syntax: .hermes, makeID: { "call_x" })
        var streamed = ""
        for piece in pieces {
            for case .content(let text) in parser.feed(piece) { streamed += text }
            #expect(!streamed.contains("<"), "after \(piece)")
        }
        let rest = parser.finish()
        #expect(streamed == "Sure ")
        #expect(rest.isEmpty)
        #expect(parser.hasCalls)
    }

    @Test func aHeldBackPrefixThatIsNotAMarkerIsContentAfterAll() {
        let r = run(.hermes, ["a <tool", "s> b <", "tool_cal"])
        #expect(r.content == "a <tools> b <tool_cal")
        #expect(r.calls.isEmpty)
    }

    @Test func unparsableCallTextComesBackAsContent() {
        let r = run(.hermes, ["<tool_call>not json</tool_call>"])
        #expect(r.calls.isEmpty)
        #expect(r.content == "<tool_call>not json</tool_call>")
    }

    @Test func llama3BareJSONAndPythonTag() {
        let bare = #" {"name": "get_weather", "parameters": {"city": "Oslo"}}"#
        let r = run(.llama3, [bare])
        #expect(r.content == "")
        #expect(r.calls.map(\.name) == ["get_weather"])
        #expect(r.calls[0].arguments == #"{"city": "Oslo"}"#)
        expectSplitInvariant(.llama3, bare)

        let tagged = run(.llama3, [#"<|python_tag|>{"name": "f", "parameters": {"x": 1}}"#])
        #expect(tagged.calls.map(\.name) == ["f"])
        #expect(tagged.content == "")

        let plain = run(.llama3, ["The answer is 4."])
        #expect(plain.content == "The answer is 4.")
        #expect(plain.calls.isEmpty)
        let notACall = run(.llama3, [#"{"answer": 4}"#])
        #expect(notACall.content == #"{"answer": 4}"#)
        #expect(notACall.calls.isEmpty)
    }

    @Test func withoutParallelCallsOnlyTheFirstCounts() {
        var parser = ToolCallStreamParser(syntax: .mistral, allowsSeveralCalls: false, makeID: { "call_x" })
        let events = parser.feed(#"[TOOL_CALLS][{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]"#) + parser.finish()
        #expect(events == [.callStart(index: 0, id: "call_x", name: "a"), .callArguments(index: 0, "{}"),
                           .call(index: 0, ParsedToolCall(id: "call_x", name: "a", arguments: "{}"))])
    }

    @Test func mistralCallList() {
        let reply = #"[TOOL_CALLS][{"name": "a", "arguments": {"n": 1}}, {"name": "b", "arguments": {}}]"#
        let r = run(.mistral, [reply])
        #expect(r.content == "")
        #expect(r.calls.map(\.name) == ["a", "b"])
        #expect(r.calls[0].arguments == #"{"n": 1}"#)
        expectSplitInvariant(.mistral, reply)
    }

    @Test func genericJSONFallback() {
        let reply = #"{"tool_calls": [{"name": "search", "arguments": {"q": "swift"}}, {"name": "open", "arguments": "{\"id\":3}"}]}"#
        let r = run(.genericJSON, [reply])
        #expect(r.content == "")
        #expect(r.calls.map(\.name) == ["search", "open"])
        #expect(r.calls[0].arguments == #"{"q": "swift"}"#)
        #expect(r.calls[1].arguments == #"{"id":3}"#, "string arguments pass through as given")
        expectSplitInvariant(.genericJSON, reply)
        #expect(run(.genericJSON, ["Hello there"]).content == "Hello there")
    }

    @Test func argumentsStreamAsTheyAreWritten() {
        var parser = ToolCallStreamParser(syntax: .hermes, makeID: { "call_x" })
        #expect(parser.feed("<tool_call>\n{\"name\": \"get_we").isEmpty, "the name is not complete yet")
        #expect(parser.feed("ather\", \"arguments\": ") == [.callStart(index: 0, id: "call_x", name: "get_weather")])
        #expect(parser.feed("{\"city\": \"Pa") == [.callArguments(index: 0, #"{"city": "Pa"#)])
        #expect(parser.feed("ris\"}") == [.callArguments(index: 0, #"ris"}"#)])
        #expect(parser.feed("}\n</tool_") == [.call(index: 0, ParsedToolCall(id: "call_x", name: "get_weather",
                                                                              arguments: #"{"city": "Paris"}"#))])
        #expect(parser.feed("call>").isEmpty && parser.finish().isEmpty)
        // a call cut short (max_tokens) ends with what was written
        let cut = run(.mistral, [#"[{"name": "a", "arguments": {"n": 12"#])
        #expect(cut.calls.map(\.arguments) == [#"{"n": 12"#] && cut.content == "")
        // the arguments key may come first
        let late = run(.hermes, [#"<tool_call>{"arguments": {"x": [1, "]"]}, "name": "f"}</tool_call>"#])
        #expect(late.calls.map(\.arguments) == [#"{"x": [1, "]"]}"#])
    }

    @Test func syntaxDetectionFromTemplates() {
        #expect(ToolCallSyntax.detect(templateSource: "{{ '<tool_call>\\n' }}") == .hermes)
        #expect(ToolCallSyntax.detect(templateSource: "{{ '[TOOL_CALLS]' }}") == .mistral)
        #expect(ToolCallSyntax.detect(templateSource: "{{ '<|python_tag|>' }}") == .llama3)
        #expect(ToolCallSyntax.detect(templateSource: ChatTemplate.builtinSources["chatml"]) == .genericJSON)
        #expect(ToolCallSyntax.detect(templateSource: nil) == .genericJSON)
    }

    @Test func newIDsLookLikeOpenAIs() {
        let a = newToolCallID(), b = newToolCallID()
        #expect(a.hasPrefix("call_") && a.count == 29)
        #expect(a != b)
    }
}

/// Requests with tools: validation, prompts through templates, the forced-call grammars.
@Suite struct ToolRequestTests {
    static let weatherTool = #"{"type":"function","function":{"name":"get_weather","description":"Weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["C","F"]}},"required":["city","unit"]}}}"#

    func param(_ extra: String, messages: String = #"[{"role":"user","content":"hi"}]"#) -> String? {
        let json = #"{"model":"m","messages":"# + messages + extra + "}"
        do {
            _ = try CompletionRequest(body: Array(json.utf8), chat: true)
            return nil
        } catch let e as APIError {
            #expect(e.status == 400)
            return e.param ?? "(none)"
        } catch {
            return "unexpected \(error)"
        }
    }

    @Test func badToolInputNamesTheField() {
        let tools = #","tools":["# + Self.weatherTool + "]"
        #expect(param(tools) == nil)
        #expect(param(tools + #","tool_choice":"required","parallel_tool_calls":false"#) == nil)
        #expect(param(#","tools":{"type":"function"}"#) == "tools")
        #expect(param(#","tools":[{"type":"retrieval"}]"#) == "tools[0].type")
        #expect(param(#","tools":[{"type":"function"}]"#) == "tools[0].function")
        #expect(param(#","tools":[{"type":"function","function":{"description":"x"}}]"#) == "tools[0].function.name")
        #expect(param(#","tools":[{"type":"function","function":{"name":"has space"}}]"#) == "tools[0].function.name")
        #expect(param(#","tools":[{"type":"function","function":{"name":"f","parameters":[1]}}]"#) == "tools[0].function.parameters")
        #expect(param(#","tools":[{"type":"function","function":{"name":"f"}},{"type":"function","function":{"name":"f"}}]"#) == "tools[1].function.name")
        #expect(param(tools + #","tool_choice":"sometimes""#) == "tool_choice")
        #expect(param(tools + #","tool_choice":{"type":"function","function":{"name":"get_time"}}"#) == "tool_choice")
        #expect(param(#","tool_choice":"required""#) == "tool_choice")
        #expect(param(tools + #","parallel_tool_calls":"no""#) == "parallel_tool_calls")
        #expect(param("", messages: #"[{"role":"tool","content":"3"}]"#) == "messages[0].tool_call_id")
        #expect(param("", messages: #"[{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]"#) == "messages[0].tool_calls[0].id")
        #expect(param("", messages: #"[{"role":"assistant","tool_calls":[{"id":"c1","function":{"name":"f","arguments":5}}]}]"#) == "messages[0].tool_calls[0].function.arguments")
    }

    @Test func toolChoiceForms() throws {
        func choice(_ text: String) throws -> ToolChoice {
            let json = #"{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":["# + Self.weatherTool + "]" + text + "}"
            return try CompletionRequest(body: Array(json.utf8), chat: true).toolChoice
        }
        #expect(try choice("") == .auto)
        #expect(try choice(#","tool_choice":"none""#) == ToolChoice.none)
        #expect(try choice(#","tool_choice":"required""#) == .required)
        #expect(try choice(#","tool_choice":{"type":"function","function":{"name":"get_weather"}}"#) == .function("get_weather"))
    }

    static let conversation = #"""
        [{"role":"system","content":"Be brief."},
         {"role":"user","content":"Weather in Paris?"},
         {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"unit\":\"C\"}"}}]},
         {"role":"tool","tool_call_id":"call_1","name":"get_weather","content":"21 degrees"}]
        """#

    func request(_ extra: String = "") throws -> CompletionRequest {
        let json = #"{"model":"m","messages":"# + Self.conversation + #","tools":["# + Self.weatherTool + "]" + extra + "}"
        return try CompletionRequest(body: Array(json.utf8), chat: true)
    }

    /// A Qwen2.5-style template: tools in the system turn, calls as `<tool_call>` blocks with
    /// `arguments | tojson`, results wrapped in `<tool_response>`.
    static let hermesTemplate = """
        {%- if tools %}{{- '<|im_start|>system\\n' + (messages[0].content if messages[0].role == 'system' else '') + '\\n<tools>' }}\
        {%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}\
        {{- '\\n</tools>\\nReply with <tool_call></tool_call> blocks.<|im_end|>\\n' }}{%- endif %}
        {%- for message in messages %}
        {%- if message.role == 'user' %}{{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}
        {%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' + (message.content or '') }}
        {%- for tool_call in message.tool_calls %}{%- set tool_call = tool_call.function %}\
        {{- '<tool_call>\\n{"name": "' + tool_call.name + '", "arguments": ' + (tool_call.arguments | tojson) + '}\\n</tool_call>' }}\
        {%- endfor %}{{- '<|im_end|>\\n' }}
        {%- elif message.role == 'tool' %}{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}
        {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}
        """

    @Test func roundTripThroughAToolAwareTemplate() throws {
        let r = try request()
        guard case .chat(let messages) = r.input else { Issue.record("not a chat"); return }
        let plan = try ToolCallPlan(tools: r.tools, choice: r.toolChoice, parallel: true, messages: messages,
                                    templateSource: Self.hermesTemplate)
        #expect(plan.syntax == .hermes)
        #expect(plan.prefill == "" && plan.grammarTriggers == [.text("<tool_call>")], "auto: constrained from the marker on")
        let template = try ChatTemplate(source: Self.hermesTemplate)
        let prompt = try template.render(messages: plan.messages, addGenerationPrompt: true, tools: plan.templateTools)
        #expect(prompt.contains(#"{"type": "function", "function": {"name": "get_weather""#))
        // arguments arrive as OpenAI's string and are handed to `tojson` as an object
        #expect(prompt.contains(#"<tool_call>"# + "\n" + #"{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}"#))
        #expect(prompt.contains("<tool_response>\n21 degrees\n</tool_response>"))
        #expect(prompt.hasSuffix("<|im_start|>assistant\n"))

        let forced = try ToolCallPlan(tools: r.tools, choice: .required, parallel: true, messages: messages,
                                      templateSource: Self.hermesTemplate)
        #expect(forced.prefill == "<tool_call>\n")
        #expect(forced.grammar != nil)
    }

    /// Under auto every syntax is constrained once a call starts: Llama 3's bare JSON from its
    /// first byte, Mistral's list after its control token, harmony's header after the recipient.
    @Test func autoCallsAreConstrainedFromTheirStart() throws {
        let r = try request()
        guard case .chat(let messages) = r.input else { Issue.record("not a chat"); return }
        func plan(_ source: String, _ choice: ToolChoice = .auto) throws -> ToolCallPlan {
            try ToolCallPlan(tools: r.tools, choice: choice, parallel: true, messages: messages, templateSource: source)
        }
        let llama = try plan("{{ '<|python_tag|>' }}")
        #expect(llama.grammarTriggers == [.outputStart(#"{"name""#)] && llama.triggerMarker == "<|python_tag|>" && llama.grammar != nil)
        let mistral = try plan("{{ '[TOOL_CALLS]' }}")
        #expect(mistral.grammarTriggers.isEmpty && mistral.triggerMarker == "[TOOL_CALLS]" && mistral.grammar != nil)
        let generic = try plan("{{ messages }}")
        #expect(generic.grammarTriggers == [.outputStart(#"{"tool_calls""#)])
        let harmony = try plan("{{ '<|channel|>' }}")
        #expect(harmony.grammarTriggers == [.text(" to=functions")] && harmony.triggerMarker == nil)
        func accepts(_ grammar: JSONGrammar?, _ text: String) throws -> Bool {
            var recognizer = JSONRecognizer(grammar: try #require(grammar))
            return text.utf8.allSatisfy { recognizer.step($0) } && recognizer.canFinish
        }
        // the name, the rest of the header either way round, arguments of the function named
        let weather = #"{"city": "Oslo", "unit": "C"}"#
        #expect(try accepts(harmony.grammar, ".get_weather <|constrain|>json<|message|>" + weather))
        #expect(try accepts(harmony.grammar, ".get_weather<|channel|>commentary json<|message|>" + weather))
        #expect(try !accepts(harmony.grammar, ".get_time <|constrain|>json<|message|>" + weather), "not a function")
        #expect(try !accepts(harmony.grammar, #".get_weather <|constrain|>json<|message|>{"city": "Oslo"}"#))
        let named = try plan("{{ '<|channel|>' }}", .function("get_weather"))
        #expect(named.prefill == "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>")
        #expect(try accepts(named.grammar, weather), "a forced harmony call's grammar is the function's parameters")
        // required with two functions: the header is primed up to the recipient, the grammar does the rest
        let two = try ToolCallPlan(tools: r.tools + [ToolDefinition(name: "get_time", description: nil, parameters: nil)],
                                   choice: .required, parallel: true, messages: messages, templateSource: "{{ '<|channel|>' }}")
        #expect(two.prefill == "<|channel|>commentary to=functions" && two.grammarTriggers.isEmpty)
        #expect(try accepts(two.grammar, ".get_time <|constrain|>json<|message|>{}"))
        #expect(try accepts(two.grammar, ".get_weather <|constrain|>json<|message|>" + weather))
        #expect(try !accepts(two.grammar, ".get_time <|constrain|>json<|message|>" + weather), "get_time takes no arguments")
        #expect(try !accepts(two.grammar, ".get_time<|channel|>commentary json<|message|>{}"), "the channel is primed already")
    }

    @Test func roundTripThroughATemplateWithoutTools() throws {
        let r = try request()
        guard case .chat(let messages) = r.input else { Issue.record("not a chat"); return }
        let source = ChatTemplate.builtinSources["chatml"]!
        let plan = try ToolCallPlan(tools: r.tools, choice: .auto, parallel: true, messages: messages, templateSource: source)
        #expect(plan.syntax == .genericJSON)
        #expect(plan.templateTools == nil)
        let prompt = try ChatTemplate(source: source).render(messages: plan.messages, addGenerationPrompt: true)
        #expect(prompt.hasPrefix("<|im_start|>system\nBe brief.\n\nYou can call these functions:\n{\"name\":\"get_weather\""))
        #expect(prompt.contains(#"<|im_start|>assistant"# + "\n" + #"{"tool_calls":[{"name":"get_weather","arguments":{"city":"Paris","unit":"C"}}]}<|im_end|>"#))
        #expect(prompt.contains("<|im_start|>user\nResult of get_weather:\n21 degrees<|im_end|>"))
    }

    /// The forced-call grammar accepts a well-formed call and rejects a wrong name or bad arguments.
    @Test func forcedCallGrammarsFollowTheSyntax() throws {
        let r = try request()
        func accepts(_ syntax: ToolCallSyntax, _ text: String, choice: ToolChoice = .function("get_weather")) throws -> Bool {
            let tools = r.tools + [ToolDefinition(name: "get_time", description: nil, parameters: nil)]
            let callable = choice == .required ? tools : tools.filter { .function($0.name) == choice }
            let schema = ToolCallPlan.outputSchema(syntax: syntax, tools: callable, parallel: false)
            var recognizer = JSONRecognizer(grammar: try JSONGrammar(schema: schema))
            return text.utf8.allSatisfy { recognizer.step($0) } && recognizer.canFinish
        }
        #expect(try accepts(.hermes, #"{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}}"#))
        #expect(try !accepts(.hermes, #"{"name": "get_time", "arguments": {}}"#))
        #expect(try !accepts(.hermes, #"{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "K"}}"#))
        #expect(try !accepts(.hermes, #"{"name": "get_weather", "arguments": {"city": "Oslo"}}"#))
        #expect(try accepts(.llama3, #"{"name": "get_weather", "parameters": {"unit": "F", "city": "Rome"}}"#))
        #expect(try accepts(.mistral, #"[{"name": "get_weather", "arguments": {"city": "A", "unit": "C"}}]"#))
        #expect(try !accepts(.mistral, #"[{"name": "get_weather", "arguments": {"city": "A", "unit": "C"}}, {"name": "get_weather", "arguments": {"city": "B", "unit": "C"}}]"#),
                "parallel_tool_calls false: one call")
        #expect(try accepts(.genericJSON, #"{"tool_calls": [{"name": "get_weather", "arguments": {"city": "A", "unit": "C"}}]}"#))
        #expect(try accepts(.genericJSON, #"{"tool_calls": [{"name": "get_time", "arguments": {}}]}"#, choice: .required))
        #expect(try !accepts(.genericJSON, #"{"tool_calls": [{"name": "other", "arguments": {}}]}"#, choice: .required))
        // several functions: the name chosen first decides which parameters the arguments take
        #expect(try !accepts(.genericJSON, #"{"tool_calls": [{"name": "get_time", "arguments": {"city": "A"}}]}"#, choice: .required))
        #expect(try accepts(.hermes, #"{"name": "get_weather", "arguments": {"city": "A", "unit": "C"}}"#, choice: .required))
        #expect(try !accepts(.hermes, #"{"name": "get_weather", "arguments": {}}"#, choice: .required))
        #expect(try !accepts(.hermes, #"{"arguments": {}, "name": "get_time"}"#, choice: .required), "the name comes first")
        #expect(try !accepts(.genericJSON, #"{"tool_calls": [{"name": "get_time", "arguments": {"type": "object"}}]}"#, choice: .required))
    }
}

/// Tool calls served by SmolLM2 (a template without tool support: the generic JSON syntax).
/// The model is too small to choose calls well, so calls are forced through the grammar and
/// the tests check their structure.
@Suite(.serialized) struct ToolCallServerTests {
    static let weatherTool = #"""
        {"type":"function","function":{"name":"get_weather","description":"Current weather in a city",
         "parameters":{"type":"object","properties":{"city":{"type":"string","maxLength":30},"unit":{"enum":["celsius","fahrenheit"]}},"required":["city","unit"]}}}
        """#
    static let timeTool = #"""
        {"type":"function","function":{"name":"get_time","description":"Current time in a time zone",
         "parameters":{"type":"object","properties":{"zone":{"type":"string","maxLength":20}},"required":["zone"]}}}
        """#
    static let tools = "[" + weatherTool + "," + timeTool + "]"

    func withServer(chatTemplate: ChatTemplate? = nil, configuration: ServerConfiguration = ServerConfiguration(),
                    _ body: @Sendable (any TestClientProtocol) async throws -> Void) async throws {
        let model = try LoadedModel(path: TestSupport.smolLM2Path, chatTemplate: chatTemplate)
        let state = ServerState()
        let generator = try Generator(model: model, configuration: .init(contextLength: 2048, parallel: 2))
        state.engine = generator
        let server = OpenAIServer(configuration: configuration, state: state, metrics: ServerMetrics(),
                                  logger: Logger(label: "test"))
        let app = Application(router: server.makeRouter())
        try await app.test(.router, body)
        await generator.shutdown()
    }

    static func body(_ extra: String, tools: String = tools) -> ByteBuffer {
        ByteBuffer(string: bodyStart(extra, tools: tools) + "}")
    }

    /// The request without its closing brace.
    static func bodyStart(_ extra: String, tools: String = tools) -> String {
        #"{"model":"SmolLM2-135M-Instruct.Q4_1","messages":[{"role":"user","content":"What is the weather in Paris?"}],"tools":"#
            + tools + #","temperature":0,"max_tokens":160"# + extra
    }

    /// The arguments match get_weather's schema.
    static func expectWeatherArguments(_ text: String) throws {
        let arguments = try JSONValue(parsing: text)
        #expect(arguments.objectValue?.keys.sorted() == ["city", "unit"])
        #expect(arguments["city"]?.stringValue.map { $0.count <= 30 } == true)
        #expect(["celsius", "fahrenheit"].contains(arguments["unit"]?.stringValue ?? ""))
    }

    @Test func namedFunctionIsCalledWithValidArguments() async throws {
        try await withServer { client in
            let named = #","tool_choice":{"type":"function","function":{"name":"get_weather"}}"#
            try await client.execute(uri: "/v1/chat/completions", method: .post, headers: [.contentType: "application/json"],
                                     body: Self.body(named)) { r in
                #expect(r.status == .ok)
                let json = try JSONValue(parsing: String(buffer: r.body))
                let choice = try #require(json["choices"]?.arrayValue?.first)
                #expect(choice["finish_reason"] == "tool_calls")
                #expect(choice["message"]?["content"] == .null)
                let calls = try #require(choice["message"]?["tool_calls"]?.arrayValue)
                #expect(calls.count == 1, "a named function is called once")
                for call in calls {
                    #expect(call["type"] == "function")
                    #expect(call["id"]?.stringValue?.hasPrefix("call_") == true)
                    #expect(call["function"]?["name"] == "get_weather")
                    try Self.expectWeatherArguments(try #require(call["function"]?["arguments"]?.stringValue))
                }
            }
        }
    }

    @Test func requiredCallsStreamWithStableIndexesAndIDs() async throws {
        try await withServer { client in
            // one function: its schema constrains the arguments
            let weatherOnly = "[" + Self.weatherTool + "]"
            // the small model repeats calls until max_tokens when it may make several
            let required = #","tool_choice":"required","parallel_tool_calls":false,"stream":true"#
            try await client.execute(uri: "/v1/chat/completions", method: .post, headers: [.contentType: "application/json"],
                                     body: Self.body(required, tools: weatherOnly)) { r in
                #expect(r.status == .ok)
                var ids: [Int: String] = [:]
                var names: [Int: String] = [:]
                var arguments: [Int: String] = [:]
                var finish: [String] = []
                var content = ""
                for line in String(buffer: r.body).split(separator: "\n") where line.hasPrefix("data: {") {
                    let chunk = try JSONValue(parsing: String(line.dropFirst(6)))
                    guard let choice = chunk["choices"]?.arrayValue?.first else { continue }
                    if let reason = choice["finish_reason"]?.stringValue { finish.append(reason) }
                    let delta = choice["delta"]
                    content += delta?["content"]?.stringValue ?? ""
                    for call in delta?["tool_calls"]?.arrayValue ?? [] {
                        let index = try #require(call["index"]?.intValue)
                        if let id = call["id"]?.stringValue {
                            #expect(ids[index] == nil, "the id comes once per call")
                            ids[index] = id
                            names[index] = call["function"]?["name"]?.stringValue
                        } else {
                            #expect(ids[index] != nil, "the first chunk of a call carries its id")
                        }
                        arguments[index, default: ""] += call["function"]?["arguments"]?.stringValue ?? ""
                    }
                }
                #expect(content.isEmpty, "no call syntax in the content: \(content)")
                #expect(finish == ["tool_calls"])
                #expect(!ids.isEmpty)
                #expect(Set(ids.keys) == Set(0..<ids.count), "indexes count from 0")
                #expect(Set(ids.values).count == ids.count, "each call has its own id")
                for (index, name) in names {
                    #expect(["get_weather", "get_time"].contains(name))
                    let args = try JSONValue(parsing: arguments[index] ?? "")
                    #expect(args.objectValue != nil, "arguments are a JSON object")
                    if name == "get_weather" { try Self.expectWeatherArguments(arguments[index]!) }
                }
            }
        }
    }

    @Test func aConversationWithCallsAndResultsIsAnswered() async throws {
        try await withServer { client in
            let messages = #"""
                [{"role":"user","content":"What is the weather in Paris?"},
                 {"role":"assistant","content":null,"tool_calls":[{"id":"call_abc","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\",\"unit\":\"celsius\"}"}}]},
                 {"role":"tool","tool_call_id":"call_abc","content":"21 degrees, sunny"}]
                """#
            let body = #"{"model":"SmolLM2-135M-Instruct.Q4_1","messages":"# + messages + #","tools":"# + Self.tools
                + #","tool_choice":"none","temperature":0,"max_tokens":24}"#
            try await client.execute(uri: "/v1/chat/completions", method: .post, headers: [.contentType: "application/json"],
                                     body: ByteBuffer(string: body)) { r in
                #expect(r.status == .ok)
                let json = try JSONValue(parsing: String(buffer: r.body))
                let choice = try #require(json["choices"]?.arrayValue?.first)
                #expect(choice["message"]?["tool_calls"] == nil, "tool_choice none: no calls parsed")
                #expect(choice["message"]?["content"]?.stringValue != nil)
                #expect(["stop", "length"].contains(choice["finish_reason"]?.stringValue ?? ""))
            }
        }
    }

    /// gpt-oss's own template, from the template corpus.
    static func gptOssTemplate() throws -> ChatTemplate {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../TokenizationTests/Fixtures/templates/corpus.json")
        let entries = try #require(try JSONValue(parsing: String(contentsOf: corpus, encoding: .utf8))["templates"]?.arrayValue)
        return try ChatTemplate(source: try #require(entries.first { $0["name"] == "openai-gpt-oss-120b.jinja" }?["source"]?.stringValue))
    }

    /// gpt-oss's own template on SmolLM2: a forced call is the header in the prompt and the
    /// arguments the grammar makes the model write; it comes back as a call, streamed as start
    /// and argument pieces, with no content.
    @Test func harmonyCallsThroughTheGptOssTemplate() async throws {
        try await withServer(chatTemplate: try Self.gptOssTemplate()) { client in
            let named = #","tool_choice":{"type":"function","function":{"name":"get_weather"}}"#
            var whole = ""
            try await client.execute(uri: "/v1/chat/completions", method: .post, headers: [.contentType: "application/json"],
                                     body: Self.body(named)) { r in
                #expect(r.status == .ok)
                let choice = try #require(try JSONValue(parsing: String(buffer: r.body))["choices"]?.arrayValue?.first)
                #expect(choice["finish_reason"] == "tool_calls" && choice["message"]?["content"] == .null)
                let calls = try #require(choice["message"]?["tool_calls"]?.arrayValue)
                #expect(calls.count == 1 && calls[0]["function"]?["name"] == "get_weather")
                whole = try #require(calls[0]["function"]?["arguments"]?.stringValue)
                try Self.expectWeatherArguments(whole)
            }
            try await client.execute(uri: "/v1/chat/completions", method: .post, headers: [.contentType: "application/json"],
                                     body: Self.body(named + #","stream":true"#)) { r in
                var deltas: [JSONValue] = []
                for line in String(buffer: r.body).split(separator: "\n") where line.hasPrefix("data: {") {
                    let delta = try JSONValue(parsing: String(line.dropFirst(6)))["choices"]?.arrayValue?.first?["delta"]
                    #expect((delta?["content"]?.stringValue ?? "").isEmpty, "no call syntax in the content")
                    deltas += delta?["tool_calls"]?.arrayValue ?? []
                }
                #expect(deltas.first?["function"]?["name"] == "get_weather" && deltas.first?["id"]?.stringValue != nil)
                #expect(deltas.count > 2, "the arguments come in pieces")
                #expect(deltas.compactMap { $0["function"]?["arguments"]?.stringValue }.joined() == whole)
            }
        }
    }

    /// The arguments match get_time's schema.
    static func expectTimeArguments(_ text: String) throws {
        let arguments = try JSONValue(parsing: text)
        #expect(arguments.objectValue?.keys.sorted() == ["zone"])
        #expect(arguments["zone"]?.stringValue.map { $0.count <= 20 } == true)
    }

    /// One harmony reply, whole and streamed: the single call each makes (name, arguments), after
    /// checking the stream carries one call under one index and id, with no content. The two
    /// need not be the same call: the second request finds its prompt in the prefix cache, and
    /// its last prompt token computed alone rounds differently from the whole prompt batch,
    /// which can tip a near-tie (as in llama-server with `cache_prompt`).
    static func harmonyCalls(_ client: any TestClientProtocol, _ body: String) async throws -> [(name: String, arguments: String)] {
        var call: (name: String, arguments: String) = ("", "")
        var streamed: (name: String, arguments: String) = ("", "")
        try await client.execute(uri: "/v1/chat/completions", method: .post, headers: [.contentType: "application/json"],
                                 body: ByteBuffer(string: body + "}")) { r in
            #expect(r.status == .ok)
            let choice = try #require(try JSONValue(parsing: String(buffer: r.body))["choices"]?.arrayValue?.first)
            #expect(choice["finish_reason"] == "tool_calls" && choice["message"]?["content"] == .null, "\(choice)")
            let calls = try #require(choice["message"]?["tool_calls"]?.arrayValue)
            #expect(calls.count == 1)
            call = (try #require(calls.first?["function"]?["name"]?.stringValue),
                    try #require(calls.first?["function"]?["arguments"]?.stringValue))
        }
        try await client.execute(uri: "/v1/chat/completions", method: .post, headers: [.contentType: "application/json"],
                                 body: ByteBuffer(string: body + #","stream":true}"#)) { r in
            var deltas: [JSONValue] = []
            var finish: [String] = []
            for line in String(buffer: r.body).split(separator: "\n") where line.hasPrefix("data: {") {
                let choice = try JSONValue(parsing: String(line.dropFirst(6)))["choices"]?.arrayValue?.first
                #expect((choice?["delta"]?["content"]?.stringValue ?? "").isEmpty, "no harmony syntax in the content")
                deltas += choice?["delta"]?["tool_calls"]?.arrayValue ?? []
                if let reason = choice?["finish_reason"]?.stringValue { finish.append(reason) }
            }
            #expect(finish == ["tool_calls"])
            #expect(deltas.allSatisfy { $0["index"]?.intValue == 0 }, "one call, one index")
            #expect(deltas.compactMap { $0["id"]?.stringValue }.count == 1, "the id once, with the name")
            streamed = (try #require(deltas.first?["function"]?["name"]?.stringValue),
                        deltas.compactMap { $0["function"]?["arguments"]?.stringValue }.joined())
        }
        return [call, streamed]
    }

    /// Harmony calls of two functions on SmolLM2 through gpt-oss's template. SmolLM2 knows
    /// nothing of harmony: what it writes after the recipient is the grammar's doing. Under
    /// auto the history shows it calling a function that is no longer offered, with other
    /// arguments; it starts a call the same way (left alone it copies the old name and
    /// arguments), and the grammar makes it one of the offered functions with arguments that
    /// follow that function's schema. Under required the header
    /// is primed up to the recipient and the grammar picks up from there.
    @Test func harmonyCallsOfSeveralFunctionsAreConstrained() async throws {
        try await withServer(chatTemplate: try Self.gptOssTemplate()) { client in
            let history = #"""
                [{"role":"user","content":"What is the weather in Paris?"},
                 {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"location\":\"Paris\"}"}}]},
                 {"role":"tool","tool_call_id":"call_1","content":"21 degrees"},
                 {"role":"user","content":"What is the weather in Rome?"},
                 {"role":"assistant","content":null,"tool_calls":[{"id":"call_2","type":"function","function":{"name":"weather","arguments":"{\"location\":\"Rome\"}"}}]},
                 {"role":"tool","tool_call_id":"call_2","content":"25 degrees"},
                 {"role":"user","content":"What is the weather in Oslo?"}]
                """#
            let auto = #"{"model":"SmolLM2-135M-Instruct.Q4_1","messages":"# + history + #","tools":"# + Self.tools
                + #","temperature":0,"max_tokens":60"#
            let required = Self.bodyStart(#","tool_choice":"required""#)
            for body in [auto, required] {
                for call in try await Self.harmonyCalls(client, body) {
                    #expect(["get_weather", "get_time"].contains(call.name))
                    if call.name == "get_weather" { try Self.expectWeatherArguments(call.arguments) }
                    if call.name == "get_time" { try Self.expectTimeArguments(call.arguments) }
                }
            }
        }
    }

    /// `--reasoning-budget` on gpt-oss's analysis channel, through the Anthropic API with a
    /// prefill that opens the analysis message: after the budget the engine ends the message and
    /// opens the final channel, so the reply is a short thinking block and then text.
    @Test func theReasoningBudgetEndsHarmonyAnalysis() async throws {
        var configuration = ServerConfiguration()
        configuration.reasoningBudget = 4
        try await withServer(chatTemplate: try Self.gptOssTemplate(), configuration: configuration) { client in
            let body = #"{"model":"SmolLM2-135M-Instruct.Q4_1","max_tokens":48,"temperature":0,"messages":[{"role":"user","content":"What is 17 times 3?"},{"role":"assistant","content":"<|channel|>analysis<|message|>"}]}"#
            try await client.execute(uri: "/v1/messages", method: .post, headers: [.contentType: "application/json"],
                                     body: ByteBuffer(string: body)) { r in
                #expect(r.status == .ok)
                let blocks = try #require(try JSONValue(parsing: String(buffer: r.body))["content"]?.arrayValue)
                #expect(blocks.map { $0["type"]?.stringValue ?? "" } == ["thinking", "text"], "\(blocks)")
                let thinking = try #require(blocks.first?["thinking"]?.stringValue)
                let tokenizer = try LoadedModel(path: TestSupport.smolLM2Path).tokenizer
                #expect((1...4).contains(tokenizer.encode(thinking, addSpecial: false, parseSpecial: false).count),
                        "four tokens of thinking: \(thinking)")
                let text = try #require(blocks.last?["text"]?.stringValue)
                #expect(!text.isEmpty && !text.contains("<|"), "the final channel's answer, without markers: \(text)")
            }
        }
    }

    @Test func unknownFunctionInToolChoiceIsA400() async throws {
        try await withServer { client in
            let bad = #","tool_choice":{"type":"function","function":{"name":"launch"}}"#
            try await client.execute(uri: "/v1/chat/completions", method: .post, headers: [.contentType: "application/json"],
                                     body: Self.body(bad)) { r in
                #expect(r.status == .badRequest)
                let error = try JSONValue(parsing: String(buffer: r.body))["error"]
                #expect(error?["param"] == "tool_choice")
                #expect(error?["type"] == "invalid_request_error")
                #expect(error?["message"]?.stringValue?.contains("launch") == true)
            }
        }
    }
}

extension ToolCallParserTests {
    /// Decoded text leaves out control tokens such as Mistral's `[TOOL_CALLS]`.
    @Test func mistralCallsWithoutTheControlToken() {
        let r = run(.mistral, [#"[{"name": "a", "#, #""arguments": {"n": 2}}]"#])
        #expect(r.calls.map(\.name) == ["a"])
        #expect(r.content == "")
        #expect(run(.mistral, ["[1, 2] are numbers"]).content == "[1, 2] are numbers")
    }
}
