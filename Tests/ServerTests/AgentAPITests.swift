import Foundation
import Hummingbird
import HummingbirdTesting
import HTTPTypes
import JSON
import Logging
import Engine
@testable import Server
import TestSupport
import Testing
import Tokenization

/// The Anthropic Messages and Responses request translations, their errors, and the output
/// they build, without a model.
@Suite struct AgentAPITests {
    /// The 400's param, nil when the body parses.
    func anthropicParam(_ json: String, countOnly: Bool = false) -> String? {
        do {
            _ = try AnthropicMessages.parse(body: Array(json.utf8), countOnly: countOnly)
            return nil
        } catch let e as APIError {
            #expect(e.status == 400)
            return e.param ?? "(none)"
        } catch {
            return "unexpected \(error)"
        }
    }

    func responsesParam(_ json: String) -> String? {
        do {
            _ = try ResponsesAPI.parse(body: Array(json.utf8))
            return nil
        } catch let e as APIError {
            #expect(e.status == 400)
            #expect(e.param.map { e.message.contains($0) } ?? true, "the message names the field: \(e.message)")
            return e.param ?? "(none)"
        } catch {
            return "unexpected \(error)"
        }
    }

    @Test func anthropicRequestTranslation() throws {
        let body = #"""
            {"model": "m", "max_tokens": 50, "system": [{"type": "text", "text": "Be brief."}],
             "temperature": 0.5, "top_p": 0.9, "top_k": 20, "stop_sequences": ["END"], "stream": true,
             "tools": [{"name": "get_weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
             "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
             "messages": [
               {"role": "user", "content": "Weather in Paris?"},
               {"role": "assistant", "content": [{"type": "text", "text": "Checking."},
                                                 {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "21C"}]},
                                            {"type": "text", "text": "Thanks"}]}]}
            """#
        let r = try AnthropicMessages.parse(body: Array(body.utf8))
        #expect(r.maxTokens == 50 && r.stop == ["END"] && r.stream)
        #expect(r.sampling.temperature == 0.5 && r.sampling.topP == 0.9 && r.sampling.topK == 20)
        #expect(r.tools.map(\.name) == ["get_weather"] && r.tools[0].parameters?["properties"]?["city"] != nil)
        #expect(r.toolChoice == .function("get_weather") && !r.parallelToolCalls)
        guard case .chat(let messages) = r.input else { Issue.record("not a chat request"); return }
        #expect(messages.map(\.role) == ["system", "user", "assistant", "tool", "user"])
        #expect(messages[0].content == "Be brief.")
        #expect(messages[2].content == "Checking.")
        #expect(messages[2].toolCalls == [ChatToolCall(id: "toolu_1", name: "get_weather", arguments: #"{"city":"Paris"}"#)])
        #expect(messages[3] == .tool("21C", toolCallID: "toolu_1", name: "get_weather"))
        #expect(messages[4].content == "Thanks")

        let choices: [(String, ToolChoice)] = [("auto", .auto), ("any", .required), ("none", .none)]
        for (type, expected) in choices {
            let json = #"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"\#(type)"}}"#
            #expect(try AnthropicMessages.parse(body: Array(json.utf8)).toolChoice == expected, "\(type)")
        }
        // a trailing assistant turn is the start of the reply
        let prefilled = try AnthropicMessages.parse(body: Array(#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"JSON please"},{"role":"assistant","content":"{\"a\":"}]}"#.utf8))
        #expect(prefilled.replyPrefix == #"{"a":"#)
        guard case .chat(let asked) = prefilled.input else { Issue.record("not a chat request"); return }
        #expect(asked == [.user("JSON please")])
        // count_tokens needs no max_tokens
        #expect(anthropicParam(#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#, countOnly: true) == nil)
    }

    @Test func anthropicBadRequestsNameTheField() {
        let hi = #""messages":[{"role":"user","content":"hi"}]"#
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi)}"#) == nil)
        #expect(anthropicParam(#"{"model":"m",\#(hi)}"#) == "max_tokens")
        #expect(anthropicParam(#"{"model":"m","max_tokens":0,\#(hi)}"#) == "max_tokens")
        #expect(anthropicParam(#"{"max_tokens":5,\#(hi)}"#) == "model")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5}"#) == "messages")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[]}"#) == "messages")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[{"role":"system","content":"hi"}]}"#) == "messages[0].role")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":5}]}"#) == "messages[0].content")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image","source":{}}]}]}"#) == "messages[0].content[0]")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_use","id":"a","name":"f"}]}]}"#) == "messages[0].content[0]")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}"#) == "messages[0].content[0]")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]}]}"#) == "messages")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[{"role":"assistant","content":"Sure"}]}"#) == "messages")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"{"}],"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"any"}}"#) == "messages")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"system":5}"#) == "system")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"temperature":1.5}"#) == "temperature")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"top_p":0}"#) == "top_p")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"stop_sequences":"END"}"#) == "stop_sequences")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"stream":"yes"}"#) == "stream")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"tools":[{"name":"f"}]}"#) == "tools[0].input_schema")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"tools":[{"name":"bad name","input_schema":{}}]}"#) == "tools[0].name")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#) == "tools[0].type")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"tool_choice":{"type":"any"}}"#) == "tool_choice")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"tool_choice":"auto"}"#) == "tool_choice")
        #expect(anthropicParam(#"{"model":"m","max_tokens":5,\#(hi),"tools":[{"name":"f","input_schema":{}}],"tool_choice":{"type":"tool","name":"g"}}"#) == "tool_choice")
    }

    @Test func anthropicErrorShapeAndAuth() async throws {
        let e = AnthropicMessages.errorJSON(APIError.invalid("max_tokens", "missing required field 'max_tokens'"))
        #expect(e == ["type": "error", "error": ["type": "invalid_request_error", "message": "missing required field 'max_tokens'"]])
        #expect(AnthropicMessages.errorJSON(APIError(status: 404, message: "x"))["error"]?["type"] == "not_found_error")
        #expect(AnthropicMessages.errorJSON(APIError(status: 500, message: "x"))["error"]?["type"] == "api_error")

        var config = ServerConfiguration()
        config.apiKey = "k1"
        let server = OpenAIServer(configuration: config, state: ServerState(), metrics: ServerMetrics(), logger: Logger(label: "test"))
        let app = Application(router: server.makeRouter())
        let body = ByteBuffer(string: #"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
        try await app.test(.router) { client in
            try await client.execute(uri: "/v1/messages", method: .post, headers: [HTTPField.Name("x-api-key")!: "k2"], body: body) { r in
                #expect(r.status == .unauthorized)
                let error = try JSONValue(parsing: Array(buffer: r.body))
                #expect(error["type"] == "error" && error["error"]?["type"] == "authentication_error")
            }
            try await client.execute(uri: "/v1/messages", method: .post, headers: [HTTPField.Name("x-api-key")!: "k1"], body: body) { r in
                #expect(r.status == .serviceUnavailable, "past authentication; the model is not loaded")
                let error = try JSONValue(parsing: Array(buffer: r.body))
                #expect(error["error"]?["type"] == "overloaded_error")
            }
            try await client.execute(uri: "/v1/models", method: .get, headers: [HTTPField.Name("x-api-key")!: "k1"]) { r in
                #expect(r.status == .serviceUnavailable)
            }
            // the OpenAI routes keep OpenAI's error shape
            try await client.execute(uri: "/v1/responses", method: .post, headers: [.authorization: "Bearer k2"], body: body) { r in
                #expect(r.status == .unauthorized)
                let error = try JSONValue(parsing: Array(buffer: r.body))
                #expect(error["error"]?["code"] == "invalid_api_key")
            }
        }
    }

    @Test func responsesRequestTranslation() throws {
        let body = #"""
            {"model": "m", "instructions": "Be brief.", "max_output_tokens": 40, "temperature": 0.2, "stream": true,
             "store": false, "parallel_tool_calls": false,
             "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true}],
             "tool_choice": {"type": "function", "name": "get_weather"},
             "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
             "input": [
               {"role": "user", "content": "Weather in Paris?"},
               {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
               {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
               {"type": "function_call", "call_id": "call_2", "name": "get_weather", "arguments": "{\"city\":\"Lyon\"}"},
               {"type": "reasoning", "summary": []},
               {"type": "function_call_output", "call_id": "call_1", "output": "21C"},
               {"role": "developer", "content": [{"type": "input_text", "text": "Answer now."}]}]}
            """#
        let (r, echo) = try ResponsesAPI.parse(body: Array(body.utf8))
        #expect(r.maxTokens == 40 && r.sampling.temperature == 0.2 && r.stream && !r.parallelToolCalls)
        #expect(r.tools.map(\.name) == ["get_weather"] && r.toolChoice == .function("get_weather"))
        #expect(r.responseFormat == ["type": "json_schema", "json_schema": ["schema": ["type": "object"]]])
        #expect(echo.instructions == "Be brief." && echo.maxOutputTokens == 40 && !echo.parallelToolCalls)
        guard case .chat(let messages) = r.input else { Issue.record("not a chat request"); return }
        #expect(messages.map(\.role) == ["system", "user", "assistant", "tool", "system"])
        #expect(messages[2].content == "Checking." && messages[2].toolCalls?.map(\.id) == ["call_1", "call_2"])
        #expect(messages[3] == .tool("21C", toolCallID: "call_1", name: "get_weather"))
        #expect(messages[4].content == "Answer now.")

        let (plain, _) = try ResponsesAPI.parse(body: Array(#"{"model":"m","input":"hi"}"#.utf8))
        guard case .chat(let one) = plain.input else { Issue.record("not a chat request"); return }
        #expect(one == [.user("hi")] && plain.toolChoice == .none && plain.maxTokens == nil)
    }

    @Test func responsesBadRequestsNameTheField() {
        #expect(responsesParam(#"{"model":"m","input":"hi"}"#) == nil)
        #expect(responsesParam(#"{"model":"m","input":"hi","previous_response_id":"resp_1"}"#) == "previous_response_id")
        #expect(responsesParam(#"{"model":"m","input":"hi","store":true}"#) == "store")
        #expect(responsesParam(#"{"model":"m","input":"hi","conversation":"c"}"#) == "conversation")
        #expect(responsesParam(#"{"input":"hi"}"#) == "model")
        #expect(responsesParam(#"{"model":"m"}"#) == "input")
        #expect(responsesParam(#"{"model":"m","input":5}"#) == "input")
        #expect(responsesParam(#"{"model":"m","input":[{"role":"tool","content":"x"}]}"#) == "input[0].role")
        #expect(responsesParam(#"{"model":"m","input":[{"role":"user","content":[{"type":"input_image","image_url":"x"}]}]}"#) == "input[0].content[0]")
        #expect(responsesParam(#"{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f","arguments":{}}]}"#) == "input[0].arguments")
        #expect(responsesParam(#"{"model":"m","input":[{"type":"function_call_output","output":"x"}]}"#) == "input[0].call_id")
        #expect(responsesParam(#"{"model":"m","input":[{"type":"item_reference","id":"x"}]}"#) == "input[0]")
        #expect(responsesParam(#"{"model":"m","input":[{"type":"computer_call"}]}"#) == "input[0].type")
        #expect(responsesParam(#"{"model":"m","input":"hi","max_output_tokens":0}"#) == "max_output_tokens")
        #expect(responsesParam(#"{"model":"m","input":"hi","temperature":3}"#) == "temperature")
        #expect(responsesParam(#"{"model":"m","input":"hi","tools":[{"type":"file_search"}]}"#) == "tools[0].type")
        #expect(responsesParam(#"{"model":"m","input":"hi","tools":[{"type":"function","function":{"name":"f"}}]}"#) == "tools[0].name")
        #expect(responsesParam(#"{"model":"m","input":"hi","tools":[{"type":"function","name":"f","parameters":[]}]}"#) == "tools[0].parameters")
        #expect(responsesParam(#"{"model":"m","input":"hi","tool_choice":"required"}"#) == "tool_choice")
        #expect(responsesParam(#"{"model":"m","input":"hi","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}"#) == "tool_choice")
        #expect(responsesParam(#"{"model":"m","input":"hi","text":{"format":{"type":"yaml"}}}"#) == "text.format.type")
    }

    /// Thinking, text, a call and more text make four items; each item's events are complete
    /// and in order, the call's arguments streamed in pieces.
    @Test func responsesOutputItemsAndEvents() {
        var builder = ResponsesAPI.OutputBuilder()
        let call = ParsedToolCall(id: "call_x", name: "f", arguments: #"{"a":1}"#)
        var events = builder.add(.thinking("Hm")) + builder.add(.thinking("m."))
        events += builder.add(.text("Hel")) + builder.add(.text("lo"))
        events += builder.add(.callStart(ParsedToolCall(id: "call_x", name: "f", arguments: "")))
        events += builder.add(.arguments(#"{"a""#)) + builder.add(.arguments(":1}")) + builder.add(.call(call))
        events += builder.add(.text("Bye"))
        events += builder.finish(status: "completed")
        #expect(events.map(\.type) == [
            "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
            "response.reasoning_text.delta", "response.reasoning_text.done", "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added", "response.content_part.added", "response.output_text.delta",
            "response.output_text.delta", "response.output_text.done", "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added", "response.function_call_arguments.delta", "response.function_call_arguments.delta",
            "response.function_call_arguments.done", "response.output_item.done",
            "response.output_item.added", "response.content_part.added", "response.output_text.delta",
            "response.output_text.done", "response.content_part.done", "response.output_item.done",
        ])
        #expect(events.map { $0.data["output_index"] } == [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3])
        #expect(builder.items.map { $0["type"] } == ["reasoning", "message", "function_call", "message"])
        #expect(builder.items[0]["content"] == [["type": "reasoning_text", "text": "Hmm."]])
        #expect(builder.items[1]["content"]?.arrayValue?[0]["text"] == "Hello")
        #expect(builder.items[2]["call_id"] == "call_x" && builder.items[2]["arguments"] == #"{"a":1}"#)

        var empty = ResponsesAPI.OutputBuilder()
        #expect(empty.finish(status: "incomplete").count == 5, "an empty reply is one empty message")
        #expect(empty.items.count == 1 && empty.items[0]["status"] == "incomplete")
        var thinkingOnly = ResponsesAPI.OutputBuilder()
        _ = thinkingOnly.add(.thinking("hm"))
        _ = thinkingOnly.finish(status: "incomplete")
        #expect(thinkingOnly.items.map { $0["type"] } == ["reasoning", "message"], "the answer's message is there, empty")
    }

    @Test func anthropicStopReasons() {
        func reason(_ finish: FinishReason, calls: Bool = false, sequence: String? = nil) -> JSONValue {
            AnthropicMessages.stopReason(ReplyOutcome(finish: finish, hasCalls: calls, stopSequence: sequence,
                                                      completionTokens: 1, cachedTokens: 0)).0
        }
        #expect(reason(.stop) == "end_turn")
        #expect(reason(.length) == "max_tokens")
        #expect(reason(.stop, sequence: "END") == "stop_sequence")
        #expect(reason(.stop, calls: true) == "tool_use")
        let call = ParsedToolCall(id: "call_abc", name: "f", arguments: #"{"a":[1]}"#)
        #expect(AnthropicMessages.toolUseBlock(call) == ["type": "tool_use", "id": "toolu_abc", "name": "f", "input": ["a": [1]]])
    }
}

/// `scripts/test_server_agent_apis.py`: the official `anthropic` client on /v1/messages and the
/// `openai` client's Responses API against `swiftlet serve` on SmolLM2.
@Suite(.serialized) struct AgentAPIClientTests {
    /// On both real models (SmolLM2-only checks report themselves as skipped on Gemma 3).
    @Test(arguments: ["smollm2", "gemma3"])
    func anthropicAndResponsesClientsEndToEnd(_ model: String) throws {
        guard let run = try runScriptOnBuiltBinary("scripts/test_server_agent_apis.py", ["--model", model]) else { return }
        #expect(run.status == 0, "the anthropic/openai client tests failed on \(model):\n\(run.output)")
    }
}
