import Engine
import Foundation
import Hummingbird
import JSON
import NIOCore
import Tokenization

/// Anthropic's Messages API (`POST /v1/messages`, `POST /v1/messages/count_tokens`),
/// translated to a chat request and answered by the same pipeline as `/v1/chat/completions`.
enum AnthropicMessages {
    /// Whether `path` is one of these routes (their errors use Anthropic's shape).
    static func handles(_ path: String) -> Bool {
        path == "/v1/messages" || path.hasPrefix("/v1/messages/")
    }

    /// `{"type": "error", "error": {"type": ..., "message": ...}}`, the type following the status
    /// as Anthropic assigns them.
    static func errorJSON(_ e: APIError) -> JSONValue {
        let type = switch e.status {
        case 400: "invalid_request_error"
        case 401: "authentication_error"
        case 403: "permission_error"
        case 404: "not_found_error"
        case 413: "request_too_large"
        case 429: "rate_limit_error"
        case 503: "overloaded_error"
        case 400..<500: "invalid_request_error"
        default: "api_error"
        }
        return ["type": "error", "error": ["type": .string(type), "message": .string(e.message)]]
    }

    /// A Messages request as a chat request. `countOnly` (count_tokens) needs no `max_tokens`.
    static func parse(body: [UInt8], countOnly: Bool = false) throws -> CompletionRequest {
        let root = try requestObject(body)
        let f = Fields(root)
        guard let model = try f.string("model") else { throw APIError.invalid("model", "missing required field 'model'") }
        guard let messagesValue = f.value("messages") else {
            throw APIError.invalid("messages", "missing required field 'messages'")
        }
        var messages = try parseSystem(f.value("system"))
        messages += try parseMessages(messagesValue)
        // a trailing assistant turn is the start of the reply, which the model continues
        var prefill: String?
        if let last = messages.last, last.role == "assistant" {
            guard last.toolCalls == nil else {
                throw APIError.invalid("messages", "the last message cannot be an assistant tool_use: answer it with a user tool_result")
            }
            prefill = last.content ?? ""
            messages.removeLast()
        }
        guard messages.contains(where: { $0.role == "user" }) else {
            throw APIError.invalid("messages", "'messages' must hold at least one user message")
        }
        var r = CompletionRequest(model: model, messages: messages)
        r.replyPrefix = prefill ?? ""

        if let t = f.value("tools") { r.tools = try parseTools(t) }
        r.toolChoice = r.tools.isEmpty ? .none : .auto
        if let c = f.value("tool_choice") {
            (r.toolChoice, r.parallelToolCalls) = try parseToolChoice(c, tools: r.tools)
        }
        if prefill != nil && r.toolChoice.forcesCall {
            throw APIError.invalid("messages", "a trailing assistant message (prefill) cannot be combined with a forced tool_choice")
        }
        if countOnly { return r }

        guard let maxTokens = try f.int("max_tokens", in: 1...Int(Int32.max)) else {
            throw APIError.invalid("max_tokens", "missing required field 'max_tokens'")
        }
        r.maxTokens = maxTokens
        if let t = try f.double("temperature", in: 0...1) { r.sampling.temperature = Float(t) }
        if let p = try f.double("top_p", in: 0...1) {
            guard p > 0 else { throw APIError.invalid("top_p", "'top_p' must be greater than 0") }
            r.sampling.topP = Float(p)
        }
        if let k = try f.int("top_k", in: 0...Int(Int32.max)) { r.sampling.topK = k }
        if let stop = f.value("stop_sequences") {
            guard let items = stop.arrayValue else {
                throw APIError.invalid("stop_sequences", "'stop_sequences' must be an array of strings")
            }
            r.stop = try items.map {
                guard let s = $0.stringValue, !s.isEmpty else {
                    throw APIError.invalid("stop_sequences", "'stop_sequences' must hold non-empty strings")
                }
                return s
            }
        }
        if let s = try f.bool("stream") { r.stream = s }
        if let metadata = f.value("metadata"), metadata.objectValue == nil {
            throw APIError.invalid("metadata", "'metadata' must be an object")
        }
        return r
    }

    /// `system`: a string or text blocks, as the first (system) message.
    static func parseSystem(_ value: JSONValue?) throws -> [ChatMessage] {
        guard let value else { return [] }
        switch value {
        case .string(let s): return [.system(s)]
        case .array(let blocks):
            let text = try blocks.enumerated().map { i, block in
                guard block["type"]?.stringValue == "text", let t = block["text"]?.stringValue else {
                    throw APIError.invalid("system", "'system[\(i)]' must be a text block ({\"type\": \"text\", \"text\": ...})")
                }
                return t
            }.joined(separator: "\n")
            return [.system(text)]
        default: throw APIError.invalid("system", "'system' must be a string or an array of text blocks")
        }
    }

    /// `messages`: user and assistant turns of text, tool_use and tool_result blocks. A user
    /// turn's tool results become `tool` messages (the chat templates' shape), before its text.
    static func parseMessages(_ value: JSONValue) throws -> [ChatMessage] {
        guard let items = value.arrayValue, !items.isEmpty else {
            throw APIError.invalid("messages", "'messages' must be a non-empty array")
        }
        var out: [ChatMessage] = []
        var toolNames: [String: String] = [:]
        for (i, m) in items.enumerated() {
            let p = "messages[\(i)]"
            guard case .object = m else { throw APIError.invalid(p, "'\(p)' must be an object") }
            guard let role = m["role"]?.stringValue, role == "user" || role == "assistant" else {
                throw APIError.invalid("\(p).role", "'\(p).role' must be 'user' or 'assistant'")
            }
            let blocks: [JSONValue]
            switch m["content"] {
            case .string(let s)?: blocks = [["type": "text", "text": .string(s)]]
            case .array(let list)?: blocks = list
            default: throw APIError.invalid("\(p).content", "'\(p).content' must be a string or an array of content blocks")
            }
            var texts: [String] = []
            var calls: [ChatToolCall] = []
            for (j, block) in blocks.enumerated() {
                let q = "\(p).content[\(j)]"
                guard case .object = block, let type = block["type"]?.stringValue else {
                    throw APIError.invalid(q, "'\(q)' must be a content block with a 'type'")
                }
                switch (role, type) {
                case (_, "text"):
                    guard let t = block["text"]?.stringValue else { throw APIError.invalid(q, "'\(q).text' must be a string") }
                    texts.append(t)
                case ("assistant", "tool_use"):
                    guard let id = block["id"]?.stringValue, let name = block["name"]?.stringValue else {
                        throw APIError.invalid(q, "'\(q)' (tool_use) needs a string 'id' and 'name'")
                    }
                    let input = block["input"] ?? .object([:])
                    guard case .object = input else { throw APIError.invalid(q, "'\(q).input' must be an object") }
                    toolNames[id] = name
                    calls.append(ChatToolCall(id: id, name: name, arguments: .string(input.compactText)))
                case ("assistant", "thinking"), ("assistant", "redacted_thinking"):
                    continue // earlier reasoning is not shown to the model again
                case ("user", "tool_result"):
                    guard let id = block["tool_use_id"]?.stringValue else {
                        throw APIError.invalid(q, "'\(q).tool_use_id' must be a string (the id of the tool_use this answers)")
                    }
                    var result: String
                    switch block["content"] {
                    case nil, .null?: result = ""
                    case .string(let s)?: result = s
                    case .array(let parts)?:
                        result = try parts.enumerated().map { k, part in
                            guard part["type"]?.stringValue == "text", let t = part["text"]?.stringValue else {
                                throw APIError.invalid(q, "'\(q).content[\(k)]' must be a text block (this server reads text only)")
                            }
                            return t
                        }.joined(separator: "\n")
                    default: throw APIError.invalid(q, "'\(q).content' must be a string or an array of text blocks")
                    }
                    if block["is_error"]?.boolValue == true { result = "Error: " + result }
                    out.append(.tool(result, toolCallID: id, name: toolNames[id]))
                case (_, "image"), (_, "document"):
                    throw APIError.invalid(q, "'\(q)': \(type) blocks are not supported; this server reads text only")
                default:
                    throw APIError.invalid(q, "'\(q)': a \(role) message cannot hold a '\(type)' block")
                }
            }
            if role == "assistant" {
                out.append(.assistant(calls.isEmpty || !texts.isEmpty ? texts.joined() : nil,
                                      toolCalls: calls.isEmpty ? nil : calls))
            } else if !texts.isEmpty {
                out.append(.user(texts.joined(separator: "\n")))
            } else if blocks.isEmpty {
                throw APIError.invalid("\(p).content", "'\(p).content' must not be empty")
            }
        }
        return out
    }

    /// `tools`: `[{"name", "description", "input_schema"}]` (client tools only).
    static func parseTools(_ value: JSONValue) throws -> [ToolDefinition] {
        guard let items = value.arrayValue else { throw APIError.invalid("tools", "'tools' must be an array") }
        var seen = Set<String>()
        return try items.enumerated().map { i, tool in
            let p = "tools[\(i)]"
            guard case .object = tool else { throw APIError.invalid(p, "'\(p)' must be an object") }
            if let type = tool["type"]?.stringValue, type != "custom" {
                throw APIError.invalid("\(p).type", "'\(p).type' '\(type)' is not supported: only client tools (name, description, input_schema) are")
            }
            return try ToolDefinition.parse(tool, param: p, schemaKey: "input_schema", requiresSchema: true, seen: &seen)
        }
    }

    /// `tool_choice`: `{"type": "auto" | "any" | "tool" | "none", "name", "disable_parallel_tool_use"}`.
    static func parseToolChoice(_ value: JSONValue, tools: [ToolDefinition]) throws -> (ToolChoice, parallel: Bool) {
        let shape = "'tool_choice' must be {\"type\": \"auto\"}, {\"type\": \"any\"}, {\"type\": \"tool\", \"name\": ...} or {\"type\": \"none\"}"
        guard case .object = value, let type = value["type"]?.stringValue else { throw APIError.invalid("tool_choice", shape) }
        var parallel = true
        if let d = value["disable_parallel_tool_use"], d != .null {
            guard let b = d.boolValue else {
                throw APIError.invalid("tool_choice", "'tool_choice.disable_parallel_tool_use' must be a boolean")
            }
            parallel = !b
        }
        let choice: ToolChoice
        switch type {
        case "auto": choice = tools.isEmpty ? .none : .auto
        case "none": choice = .none
        case "any": choice = .required
        case "tool":
            guard let name = value["name"]?.stringValue else {
                throw APIError.invalid("tool_choice", "'tool_choice.name' is missing (the tool to use)")
            }
            guard tools.contains(where: { $0.name == name }) else {
                throw APIError.invalid("tool_choice", "'tool_choice' names the tool '\(name)', which is not in 'tools'")
            }
            choice = .function(name)
        default: throw APIError.invalid("tool_choice", shape)
        }
        if choice.forcesCall && tools.isEmpty { throw APIError.invalid("tool_choice", "'tool_choice' \(type) requires 'tools'") }
        return (choice, parallel)
    }

    /// Anthropic's tool ids start with `toolu_`.
    static func toolUseID(_ call: ParsedToolCall) -> String {
        "toolu_" + (call.id.hasPrefix("call_") ? String(call.id.dropFirst(5)) : call.id)
    }

    /// A `thinking` block; the signature (Anthropic's proof of origin) is empty.
    static func thinkingBlock(_ text: String) -> JSONValue {
        ["type": "thinking", "thinking": .string(text), "signature": ""]
    }

    static func toolUseBlock(_ call: ParsedToolCall) -> JSONValue {
        ["type": "tool_use", "id": .string(toolUseID(call)), "name": .string(call.name), "input": .arguments(call.arguments)]
    }

    /// `stop_reason` and `stop_sequence`.
    static func stopReason(_ outcome: ReplyOutcome) -> (JSONValue, JSONValue) {
        if outcome.hasCalls { return ("tool_use", .null) }
        if outcome.finish == .length { return ("max_tokens", .null) }
        if let s = outcome.stopSequence { return ("stop_sequence", .string(s)) }
        return ("end_turn", .null)
    }

    /// The non-streaming answer.
    static func message(_ reply: CollectedReply, ctx: OpenAIServer.ResponseContext) -> JSONValue {
        var content: [JSONValue] = []
        if !reply.thinking.isEmpty { content.append(thinkingBlock(reply.thinking)) }
        let text = reply.text
        if !text.isEmpty || reply.calls.isEmpty { content.append(["type": "text", "text": .string(text)]) }
        content += reply.calls.map(toolUseBlock)
        let (reason, sequence) = stopReason(reply.outcome)
        return messageObject(ctx: ctx, content: content, stopReason: reason, stopSequence: sequence,
                             outputTokens: reply.outcome.completionTokens)
    }

    static func messageObject(ctx: OpenAIServer.ResponseContext, content: [JSONValue], stopReason: JSONValue,
                              stopSequence: JSONValue, outputTokens: Int) -> JSONValue {
        ["id": .string(ctx.id), "type": "message", "role": "assistant", "model": .string(ctx.model),
         "content": .array(content), "stop_reason": stopReason, "stop_sequence": stopSequence,
         "usage": ["input_tokens": .number(JSONNumber(ctx.promptTokens)), "output_tokens": .number(JSONNumber(outputTokens))]]
    }
}

extension OpenAIServer {
    func anthropicMessages(_ request: Request, context: ServerRequestContext) async throws -> Response {
        let started = ContinuousClock.now
        _ = try loadedEngine()
        let parsed = try AnthropicMessages.parse(body: try await readBody(request))
        let engine = try await engine(for: parsed.model)
        let (handle, ctx) = try start(parsed, engine: engine, context: context, idPrefix: "msg_")
        let reader = ReplyReader(handle: handle, ctx: ctx, stop: parsed.stop)
        guard parsed.stream else {
            return try await collectReply(reader, handle: handle, started: started,
                                          render: { AnthropicMessages.message($0, ctx: ctx) },
                                          renderFailure: { AnthropicMessages.errorJSON(APIError(status: 500, message: $0)) })
        }
        try await reader.awaitFirstEvent()
        let metrics = self.metrics
        let body = ResponseBody { writer in
            var completed = false
            defer { if !completed { handle.cancel() } }
            func send(_ type: String, _ data: JSONObject) async throws {
                var data = data
                data["type"] = .string(type)
                try await writer.write(namedEvent(type, .object(data)))
            }
            let start = AnthropicMessages.messageObject(ctx: ctx, content: [], stopReason: .null, stopSequence: .null, outputTokens: 0)
            try await send("message_start", ["message": start])
            try await send("ping", [:])
            // the open content block: its index and type
            var index = 0
            var open: String?
            func closeBlock() async throws {
                guard open != nil else { return }
                try await send("content_block_stop", ["index": .number(JSONNumber(index))])
                index += 1
                open = nil
            }
            func openBlock(_ type: String, _ block: JSONValue) async throws {
                if open == type { return }
                try await closeBlock()
                try await send("content_block_start", ["index": .number(JSONNumber(index)), "content_block": block])
                open = type
            }
            func delta(_ delta: JSONValue) async throws {
                try await send("content_block_delta", ["index": .number(JSONNumber(index)), "delta": delta])
            }
            while let pieces = await reader.next() {
                for piece in pieces {
                    switch piece {
                    case .thinking(let text):
                        try await openBlock("thinking", AnthropicMessages.thinkingBlock(""))
                        try await delta(["type": "thinking_delta", "thinking": .string(text)])
                    case .text(let text):
                        try await openBlock("text", ["type": "text", "text": ""])
                        try await delta(["type": "text_delta", "text": .string(text)])
                    case .callStart(let call):
                        var block = AnthropicMessages.toolUseBlock(call).objectValue!
                        block["input"] = .object([:])
                        try await closeBlock()
                        try await openBlock("tool_use", .object(block))
                    case .arguments(let piece):
                        try await delta(["type": "input_json_delta", "partial_json": .string(piece)])
                    case .call:
                        try await closeBlock()
                    }
                }
            }
            try await closeBlock()
            if let outcome = reader.outcome {
                let (reason, sequence) = AnthropicMessages.stopReason(outcome)
                try await send("message_delta", ["delta": ["stop_reason": reason, "stop_sequence": sequence],
                                                 "usage": ["output_tokens": .number(JSONNumber(outcome.completionTokens))]])
                try await send("message_stop", [:])
            } else {
                let error = AnthropicMessages.errorJSON(APIError(status: 500, message: reader.failure ?? "generation failed"))
                try await writer.write(namedEvent("error", error))
            }
            completed = true
            metrics.requestFinished(.now - started)
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
    }

    /// `{"input_tokens": N}`: the prompt the same request would run, tools included.
    func anthropicCountTokens(_ request: Request) async throws -> Response {
        _ = try loadedEngine()
        let parsed = try AnthropicMessages.parse(body: try await readBody(request), countOnly: true)
        let engine = try await engine(for: parsed.model)
        let job = try prepare(parsed, engine: engine)
        return json(["input_tokens": .number(JSONNumber(job.promptTokens))])
    }
}
