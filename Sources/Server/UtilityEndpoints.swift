import Engine
import Foundation
import Hummingbird
import JSON
import NIOCore
import Tokenization

/// llama.cpp's utility endpoints, in its request and response shapes: `/tokenize`,
/// `/detokenize` and `/apply-template`. They use the loaded model's vocabulary and chat template
/// but run no inference.
extension OpenAIServer {
    static let utilityPaths: Set<String> = ["/tokenize", "/detokenize", "/apply-template"]

    func addUtilityRoutes(to router: Router<ServerRequestContext>) {
        router.post("/tokenize") { request, _ in try await tokenize(request) }
        router.post("/detokenize") { request, _ in try await detokenize(request) }
        router.post("/apply-template") { request, _ in try await applyTemplate(request) }
    }

    /// The request body as a JSON object.
    func jsonBody(_ request: Request) async throws -> JSONValue {
        try requestObject(try await readBody(request))
    }

    /// `{content, add_special = false, parse_special = true, with_pieces = false}` → `{tokens}`:
    /// ids, or `{id, piece}` objects whose piece is a string when it is valid UTF-8 and its byte
    /// values otherwise. `content` may also mix strings and token ids (`["text", 42, ...]`);
    /// `add_special` then applies to the first string only, as in llama.cpp.
    func tokenize(_ request: Request) async throws -> Response {
        let root = try await jsonBody(request)
        let tokenizer = try loadedEngine().model.tokenizer
        let f = Fields(root)
        let addSpecial = try f.bool("add_special") ?? false
        let parseSpecial = try f.bool("parse_special") ?? true
        let withPieces = try f.bool("with_pieces") ?? false
        guard let content = f.value("content") else { throw APIError.invalid("content", "missing required field 'content'") }
        let parts: [JSONValue]
        switch content {
        case .string: parts = [content]
        case .array(let items): parts = items
        default: throw APIError.invalid("content", "'content' must be a string or an array of strings and token ids")
        }
        var tokens: [TokenID] = []
        var firstText = true
        for (i, part) in parts.enumerated() {
            switch part {
            case .string(let text):
                tokens += tokenizer.encode(text, addSpecial: addSpecial && firstText, parseSpecial: parseSpecial)
                firstText = false
            case .number:
                tokens.append(try tokenID(part, param: "content[\(i)]", vocabularySize: tokenizer.vocabularySize))
            default:
                throw APIError.invalid("content[\(i)]", "'content[\(i)]' must be a string or a token id")
            }
        }
        let items: [JSONValue] = tokens.map { token in
            let id = JSONValue.number(JSONNumber(Int(token)))
            guard withPieces else { return id }
            let bytes = tokenizer.pieceBytes(token, special: true)
            let piece: JSONValue = String(validating: bytes, as: UTF8.self).map { .string($0) }
                ?? .array(bytes.map { .number(JSONNumber(Int($0))) })
            return .object(["id": id, "piece": piece])
        }
        return json(.object(["tokens": .array(items)]))
    }

    /// `{tokens}` → `{content}`: the tokens' text with special tokens written out (as llama.cpp
    /// does); bytes that are not valid UTF-8 become U+FFFD.
    func detokenize(_ request: Request) async throws -> Response {
        let root = try await jsonBody(request)
        let tokenizer = try loadedEngine().model.tokenizer
        var tokens: [TokenID] = []
        if let value = Fields(root).value("tokens") {
            guard case .array(let items) = value else { throw APIError.invalid("tokens", "'tokens' must be an array of token ids") }
            tokens = try items.enumerated().map { i, item in
                try tokenID(item, param: "tokens[\(i)]", vocabularySize: tokenizer.vocabularySize)
            }
        }
        return json(.object(["content": .string(tokenizer.decode(tokens, special: true))]))
    }

    func tokenID(_ value: JSONValue, param: String, vocabularySize: Int) throws -> TokenID {
        guard let id = value.intValue else { throw APIError.invalid(param, "'\(param)' must be a token id (an integer)") }
        guard id >= 0, id < vocabularySize else {
            throw APIError.invalid(param, "token id \(id) is outside the vocabulary (\(vocabularySize) tokens)")
        }
        return TokenID(id)
    }

    /// `{messages, tools?, tool_choice?, parallel_tool_calls?}` → `{prompt}`: exactly the text
    /// `/v1/chat/completions` would give the model for this conversation, without generating.
    func applyTemplate(_ request: Request) async throws -> Response {
        let root = try await jsonBody(request)
        let model = try loadedEngine().model
        guard let rawMessages = root["messages"] else { throw APIError.invalid("messages", "missing required field 'messages'") }
        let messages = try CompletionRequest.parseMessages(rawMessages)
        let f = Fields(root)
        var tools: [ToolDefinition] = []
        var choice = ToolChoice.none
        if let t = f.value("tools") {
            tools = try CompletionRequest.parseTools(t)
            choice = .auto
        }
        if let c = f.value("tool_choice") { choice = try CompletionRequest.parseToolChoice(c, tools: tools) }
        let parallel = try f.bool("parallel_tool_calls") ?? true
        let (prompt, _) = try renderChatPrompt(messages, tools: tools, choice: choice, parallel: parallel, model: model)
        return json(.object(["prompt": .string(prompt)]))
    }

    /// The chat prompt for `messages` (with the tool plan when tools are offered or the history
    /// holds calls); the template's failures are 400s naming `messages`.
    func renderChatPrompt(_ messages: [ChatMessage], tools: [ToolDefinition], choice: ToolChoice, parallel: Bool,
                          model: LoadedModel) throws -> (String, ToolCallPlan?) {
        // A message without content (an assistant turn that only calls tools) reaches the
        // template as "", as llama.cpp passes it: many templates (Qwen3, gpt-oss, Phi-3.5, ...)
        // search or concatenate the content and fail on none.
        let messages = messages.map { m in
            var m = m
            if m.content == nil && m.contentParts == nil { m.content = "" }
            return m
        }
        var toolPlan: ToolCallPlan?
        let history = messages.contains { $0.toolCalls != nil || $0.role == "tool" }
        if !tools.isEmpty || history {
            toolPlan = try ToolCallPlan(tools: tools, choice: choice, parallel: parallel,
                                        messages: messages, templateSource: model.chatTemplate?.source)
        }
        do {
            let rendered = try model.renderChat(toolPlan?.messages ?? messages, tools: toolPlan?.templateTools)
            return (rendered + (toolPlan?.prefill ?? ""), toolPlan)
        } catch {
            throw APIError.invalid("messages", "the chat template could not render 'messages': \(error)")
        }
    }
}
