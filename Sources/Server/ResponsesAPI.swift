import Engine
import Foundation
import Hummingbird
import JSON
import NIOCore
import Tokenization

/// OpenAI's Responses API (`POST /v1/responses`), stateless: the whole conversation comes in
/// `input`, is translated to a chat request and answered by the chat pipeline.
enum ResponsesAPI {
    /// Request fields a response object repeats back.
    struct Echo: Sendable {
        var instructions: JSONValue = .null
        var maxOutputTokens: JSONValue = .null
        var temperature: JSONValue = .null
        var topP: JSONValue = .null
        var tools: JSONValue = .array([])
        var toolChoice: JSONValue = "auto"
        var parallelToolCalls = true
        var textFormat: JSONValue = ["type": "text"]
    }

    static func parse(body: [UInt8]) throws -> (CompletionRequest, Echo) {
        let root = try requestObject(body)
        let f = Fields(root)
        let stateless = "this server keeps no responses (the Responses API is served statelessly); send the whole conversation in 'input'"
        if f.value("previous_response_id") != nil {
            throw APIError.invalid("previous_response_id", "'previous_response_id' is not supported: \(stateless)")
        }
        if f.value("conversation") != nil {
            throw APIError.invalid("conversation", "'conversation' is not supported: \(stateless)")
        }
        if try f.bool("store") == true {
            throw APIError.invalid("store", "'store': true is not supported: \(stateless), and leave out 'store' or set it to false")
        }
        if try f.bool("background") == true {
            throw APIError.invalid("background", "'background': true is not supported: \(stateless)")
        }
        guard let model = try f.string("model") else { throw APIError.invalid("model", "missing required field 'model'") }
        guard let input = f.value("input") else { throw APIError.invalid("input", "missing required field 'input'") }
        var echo = Echo()
        var messages: [ChatMessage] = []
        if let instructions = try f.string("instructions") {
            messages.append(.system(instructions))
            echo.instructions = .string(instructions)
        }
        messages += try parseInput(input)
        var r = CompletionRequest(model: model, messages: messages)

        if let t = f.value("tools") {
            r.tools = try parseTools(t)
            echo.tools = t
        }
        r.toolChoice = r.tools.isEmpty ? .none : .auto
        if let c = f.value("tool_choice") {
            r.toolChoice = try parseToolChoice(c, tools: r.tools)
            echo.toolChoice = c
        }
        if let p = try f.bool("parallel_tool_calls") { r.parallelToolCalls = p }
        echo.parallelToolCalls = r.parallelToolCalls
        if let m = try f.int("max_output_tokens", in: 1...Int(Int32.max)) {
            r.maxTokens = m
            echo.maxOutputTokens = .number(JSONNumber(m))
        }
        if let t = try f.double("temperature", in: 0...2) {
            r.sampling.temperature = Float(t)
            echo.temperature = .number(JSONNumber(t))
        }
        if let p = try f.double("top_p", in: 0...1) {
            guard p > 0 else { throw APIError.invalid("top_p", "'top_p' must be greater than 0") }
            r.sampling.topP = Float(p)
            echo.topP = .number(JSONNumber(p))
        }
        if let s = try f.bool("stream") { r.stream = s }
        if let text = f.value("text"), let format = text["format"], format != .null {
            r.responseFormat = try parseTextFormat(format)
            echo.textFormat = format
        }
        return (r, echo)
    }

    /// `input`: a string (one user message) or items: messages, function calls and their outputs.
    static func parseInput(_ value: JSONValue) throws -> [ChatMessage] {
        if case .string(let s) = value { return [.user(s)] }
        guard let items = value.arrayValue, !items.isEmpty else {
            throw APIError.invalid("input", "'input' must be a string or a non-empty array of items")
        }
        var out: [ChatMessage] = []
        var callNames: [String: String] = [:]
        for (i, item) in items.enumerated() {
            let p = "input[\(i)]"
            guard case .object = item else { throw APIError.invalid(p, "'\(p)' must be an object") }
            let type = item["type"]?.stringValue ?? (item["role"] != nil ? "message" : "")
            switch type {
            case "message":
                guard var role = item["role"]?.stringValue, ["user", "assistant", "system", "developer"].contains(role) else {
                    throw APIError.invalid("\(p).role", "'\(p).role' must be one of user, assistant, system, developer")
                }
                if role == "developer" { role = "system" }
                let text = try parseContent(item["content"], param: "\(p).content")
                out.append(ChatMessage(role: role, content: text))
            case "function_call":
                guard let callID = item["call_id"]?.stringValue, let name = item["name"]?.stringValue else {
                    throw APIError.invalid(p, "'\(p)' (function_call) needs a string 'call_id' and 'name'")
                }
                guard let arguments = item["arguments"]?.stringValue else {
                    throw APIError.invalid("\(p).arguments", "'\(p).arguments' must be a string of JSON")
                }
                callNames[callID] = name
                let call = ChatToolCall(id: callID, name: name, arguments: .string(arguments))
                // calls right after an assistant message (or each other) belong to that turn
                if let last = out.last, last.role == "assistant" {
                    out[out.count - 1].toolCalls = (last.toolCalls ?? []) + [call]
                } else {
                    out.append(.assistant(nil, toolCalls: [call]))
                }
            case "function_call_output":
                guard let callID = item["call_id"]?.stringValue else {
                    throw APIError.invalid("\(p).call_id", "'\(p).call_id' must be a string (the call this answers)")
                }
                let output = try parseContent(item["output"], param: "\(p).output")
                out.append(.tool(output, toolCallID: callID, name: callNames[callID]))
            case "reasoning":
                continue // earlier reasoning is not shown to the model again
            case "item_reference":
                throw APIError.invalid(p, "'\(p)': item references are not supported; this server keeps no items, send them whole")
            default:
                throw APIError.invalid("\(p).type", "'\(p).type' must be message, function_call or function_call_output, got '\(type)'")
            }
        }
        return out
    }

    /// A message's content or a call's output: a string or text parts.
    static func parseContent(_ value: JSONValue?, param p: String) throws -> String {
        switch value {
        case .string(let s)?: return s
        case .array(let parts)?:
            return try parts.enumerated().map { j, part in
                let type = part["type"]?.stringValue ?? ""
                guard ["input_text", "output_text", "text"].contains(type), let text = part["text"]?.stringValue else {
                    if type == "refusal", let text = part["refusal"]?.stringValue { return text }
                    throw APIError.invalid("\(p)[\(j)]", "'\(p)[\(j)]' must be a text part (input_text or output_text); this server reads text only")
                }
                return text
            }.joined()
        default: throw APIError.invalid(p, "'\(p)' must be a string or an array of text parts")
        }
    }

    /// `tools`: `[{"type": "function", "name", "description", "parameters", "strict"}]`.
    static func parseTools(_ value: JSONValue) throws -> [ToolDefinition] {
        guard let items = value.arrayValue else { throw APIError.invalid("tools", "'tools' must be an array") }
        var seen = Set<String>()
        return try items.enumerated().map { i, tool in
            let p = "tools[\(i)]"
            guard case .object = tool else { throw APIError.invalid(p, "'\(p)' must be an object") }
            guard let type = tool["type"]?.stringValue, type == "function" else {
                throw APIError.invalid("\(p).type", "'\(p).type' must be 'function' (built-in tools are not supported)")
            }
            return try ToolDefinition.parse(tool, param: p, schemaKey: "parameters",
                                            nameHint: " (function tools here are flat: name, description and parameters at the top level)",
                                            seen: &seen)
        }
    }

    /// `tool_choice`: "none", "auto", "required" or `{"type": "function", "name"}`.
    static func parseToolChoice(_ value: JSONValue, tools: [ToolDefinition]) throws -> ToolChoice {
        let shape = "'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", \"name\": ...}"
        let choice: ToolChoice
        switch value {
        case .string("none"): choice = .none
        case .string("auto"): choice = tools.isEmpty ? .none : .auto
        case .string("required"): choice = .required
        case .object:
            guard value["type"]?.stringValue == "function", let name = value["name"]?.stringValue else {
                throw APIError.invalid("tool_choice", shape)
            }
            guard tools.contains(where: { $0.name == name }) else {
                throw APIError.invalid("tool_choice", "'tool_choice' names the function '\(name)', which is not in 'tools'")
            }
            choice = .function(name)
        default: throw APIError.invalid("tool_choice", shape)
        }
        if choice.forcesCall && tools.isEmpty { throw APIError.invalid("tool_choice", "'tool_choice' requires 'tools'") }
        return choice
    }

    /// `text.format` as the chat pipeline's `response_format`.
    static func parseTextFormat(_ format: JSONValue) throws -> JSONValue? {
        switch format["type"]?.stringValue {
        case "text": return nil
        case "json_object": return ["type": "json_object"]
        case "json_schema":
            guard let schema = format["schema"], case .object = schema else {
                throw APIError.invalid("text.format.schema", "'text.format.schema' must be a JSON schema object")
            }
            return ["type": "json_schema", "json_schema": ["schema": schema]]
        default:
            throw APIError.invalid("text.format.type", "'text.format.type' must be 'text', 'json_object' or 'json_schema'")
        }
    }

    /// The response object; `usage` nil while in progress.
    static func responseObject(ctx: OpenAIServer.ResponseContext, echo: Echo, status: String, output: [JSONValue],
                               outcome: ReplyOutcome?, error: String? = nil) -> JSONValue {
        var usage: JSONValue = .null
        if let outcome {
            usage = [
                "input_tokens": .number(JSONNumber(ctx.promptTokens)),
                "input_tokens_details": ["cached_tokens": .number(JSONNumber(outcome.cachedTokens))],
                "output_tokens": .number(JSONNumber(outcome.completionTokens)),
                "output_tokens_details": ["reasoning_tokens": 0],
                "total_tokens": .number(JSONNumber(ctx.promptTokens + outcome.completionTokens)),
            ]
        }
        let incomplete: JSONValue = status == "incomplete" ? ["reason": "max_output_tokens"] : .null
        return [
            "id": .string(ctx.id), "object": "response", "created_at": .number(JSONNumber(ctx.created)),
            "status": .string(status),
            "error": error.map { ["code": "server_error", "message": .string($0)] } ?? .null,
            "incomplete_details": incomplete, "instructions": echo.instructions,
            "max_output_tokens": echo.maxOutputTokens, "model": .string(ctx.model), "output": .array(output),
            "parallel_tool_calls": .bool(echo.parallelToolCalls), "previous_response_id": .null,
            "temperature": echo.temperature, "top_p": echo.topP, "tool_choice": echo.toolChoice, "tools": echo.tools,
            "text": ["format": echo.textFormat], "truncation": "disabled", "store": false, "metadata": .object([:]),
            "usage": usage,
        ]
    }

    static func status(_ outcome: ReplyOutcome) -> String {
        outcome.finish == .length && !outcome.hasCalls ? "incomplete" : "completed"
    }

    /// Turns reply pieces into output items, and the streaming events that build them: thinking
    /// goes into a reasoning item, text into a message item until a function call (its own
    /// item, its arguments streamed as they come) interrupts it.
    struct OutputBuilder {
        typealias Event = (type: String, data: JSONObject)
        private(set) var items: [JSONValue] = []
        private var message: (id: String, text: String)?
        private var reasoning: (id: String, text: String)?
        private var call: (id: String, call: ParsedToolCall)?

        mutating func add(_ piece: ReplyPiece) -> [Event] {
            switch piece {
            case .thinking(let text):
                var events = reasoning == nil ? closeMessage(status: "completed") + openReasoning() : []
                reasoning!.text += text
                events.append(("response.reasoning_text.delta", partFields(reasoning!.id, ["delta": .string(text)])))
                return events
            case .text(let text):
                var events = message == nil ? closeReasoning() + openMessage() : []
                message!.text += text
                events.append(("response.output_text.delta",
                               partFields(message!.id, ["delta": .string(text), "logprobs": .array([])])))
                return events
            case .callStart(let started):
                let events = closeReasoning() + closeMessage(status: "completed")
                let id = "fc_" + randomID()
                call = (id, started)
                return events + [("response.output_item.added",
                                  ["output_index": outputIndex, "item": callItem("in_progress")])]
            case .arguments(let piece):
                guard call != nil else { return [] }
                call!.call.arguments += piece
                return [("response.function_call_arguments.delta",
                         ["item_id": .string(call!.id), "output_index": outputIndex, "delta": .string(piece)])]
            case .call(let complete):
                guard let open = call else { return [] }
                call!.call.arguments = complete.arguments
                let done = callItem("completed")
                let events: [Event] = [
                    ("response.function_call_arguments.done",
                     ["item_id": .string(open.id), "output_index": outputIndex, "name": .string(complete.name),
                      "arguments": .string(complete.arguments)]),
                    ("response.output_item.done", ["output_index": outputIndex, "item": done]),
                ]
                items.append(done)
                call = nil
                return events
            }
        }

        private var outputIndex: JSONValue { .number(JSONNumber(items.count)) }

        private func callItem(_ status: String) -> JSONValue {
            ["type": "function_call", "id": .string(call!.id), "call_id": .string(call!.call.id),
             "name": .string(call!.call.name), "arguments": .string(call!.call.arguments), "status": .string(status)]
        }

        private mutating func openReasoning() -> [Event] {
            let id = "rs_" + randomID()
            reasoning = (id, "")
            return [("response.output_item.added", ["output_index": outputIndex, "item": Self.reasoningItem(id, nil, "in_progress")]),
                    ("response.content_part.added", partFields(id, ["part": Self.reasoningPart("")]))]
        }

        private mutating func closeReasoning() -> [Event] {
            guard case let (id, text)? = reasoning else { return [] }
            let item = Self.reasoningItem(id, text, "completed")
            let events: [Event] = [
                ("response.reasoning_text.done", partFields(id, ["text": .string(text)])),
                ("response.content_part.done", partFields(id, ["part": Self.reasoningPart(text)])),
                ("response.output_item.done", ["output_index": outputIndex, "item": item]),
            ]
            items.append(item)
            reasoning = nil
            return events
        }

        static func reasoningPart(_ text: String) -> JSONValue { ["type": "reasoning_text", "text": .string(text)] }

        static func reasoningItem(_ id: String, _ text: String?, _ status: String) -> JSONValue {
            ["type": "reasoning", "id": .string(id), "summary": .array([]),
             "content": .array(text.map { [reasoningPart($0)] } ?? []), "status": .string(status)]
        }

        /// Closes the open message; a reply with no output at all gets an empty message.
        mutating func finish(status: String) -> [Event] {
            var events = closeReasoning()
            if items.allSatisfy({ $0["type"] == "reasoning" }) && message == nil { events += openMessage() }
            return events + closeMessage(status: status)
        }

        private mutating func openMessage() -> [Event] {
            let id = "msg_" + randomID()
            message = (id, "")
            let index = JSONValue.number(JSONNumber(items.count))
            let item: JSONValue = ["type": "message", "id": .string(id), "status": "in_progress", "role": "assistant",
                                   "content": .array([])]
            return [("response.output_item.added", ["output_index": index, "item": item]),
                    ("response.content_part.added", partFields(id, ["part": Self.textPart("")]))]
        }

        private mutating func closeMessage(status: String) -> [Event] {
            guard let message else { return [] }
            let events: [Event] = [
                ("response.output_text.done", partFields(message.id, ["text": .string(message.text), "logprobs": .array([])])),
                ("response.content_part.done", partFields(message.id, ["part": Self.textPart(message.text)])),
            ]
            let item: JSONValue = ["type": "message", "id": .string(message.id), "status": .string(status), "role": "assistant",
                                   "content": [Self.textPart(message.text)]]
            let done: Event = ("response.output_item.done", ["output_index": .number(JSONNumber(items.count)), "item": item])
            items.append(item)
            self.message = nil
            return events + [done]
        }

        /// Fields that locate the open item's (message or reasoning) content part.
        private func partFields(_ id: String, _ extra: JSONObject) -> JSONObject {
            var fields: JSONObject = ["item_id": .string(id), "output_index": outputIndex, "content_index": 0]
            for (k, v) in extra { fields[k] = v }
            return fields
        }

        static func textPart(_ text: String) -> JSONValue {
            ["type": "output_text", "text": .string(text), "annotations": .array([])]
        }
    }
}

extension OpenAIServer {
    func responses(_ request: Request, context: ServerRequestContext) async throws -> Response {
        let started = ContinuousClock.now
        _ = try loadedEngine()
        let (parsed, echo) = try ResponsesAPI.parse(body: try await readBody(request))
        let engine = try await engine(for: parsed.model)
        let run: (RequestHandle, ResponseContext)
        do { run = try start(parsed, engine: engine, context: context, idPrefix: "resp_") } catch var e as APIError {
            if e.param == "messages" { e.param = "input" } // the conversation came as `input`
            throw e
        }
        let (handle, ctx) = run
        let reader = ReplyReader(handle: handle, ctx: ctx, stop: parsed.stop)
        guard parsed.stream else {
            return try await collectReply(reader, handle: handle, started: started, render: { reply in
                var builder = ResponsesAPI.OutputBuilder()
                for piece in reply.pieces { _ = builder.add(piece) }
                let status = ResponsesAPI.status(reply.outcome)
                _ = builder.finish(status: status)
                return ResponsesAPI.responseObject(ctx: ctx, echo: echo, status: status, output: builder.items,
                                                   outcome: reply.outcome)
            }, renderFailure: { APIError(status: 500, message: $0, type: "server_error").json })
        }
        try await reader.awaitFirstEvent()
        let metrics = self.metrics
        let body = ResponseBody { writer in
            var completed = false
            defer { if !completed { handle.cancel() } }
            var sequence = 0
            func send(_ type: String, _ data: JSONObject) async throws {
                var data = data
                data["type"] = .string(type)
                data["sequence_number"] = .number(JSONNumber(sequence))
                sequence += 1
                try await writer.write(namedEvent(type, .object(data)))
            }
            let initial = ResponsesAPI.responseObject(ctx: ctx, echo: echo, status: "in_progress", output: [], outcome: nil)
            try await send("response.created", ["response": initial])
            try await send("response.in_progress", ["response": initial])
            var builder = ResponsesAPI.OutputBuilder()
            while let pieces = await reader.next() {
                for piece in pieces {
                    for event in builder.add(piece) { try await send(event.type, event.data) }
                }
            }
            if let outcome = reader.outcome {
                let status = ResponsesAPI.status(outcome)
                for event in builder.finish(status: status) { try await send(event.type, event.data) }
                let final = ResponsesAPI.responseObject(ctx: ctx, echo: echo, status: status, output: builder.items, outcome: outcome)
                try await send(status == "completed" ? "response.completed" : "response.incomplete", ["response": final])
            } else {
                let failed = ResponsesAPI.responseObject(ctx: ctx, echo: echo, status: "failed", output: builder.items,
                                                         outcome: nil, error: reader.failure ?? "generation failed")
                try await send("response.failed", ["response": failed])
            }
            completed = true
            metrics.requestFinished(.now - started)
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }
}
