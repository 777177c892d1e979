import JSON

/// One message of a conversation, in the shape Hugging Face chat templates expect
/// (`{"role": ..., "content": ..., "tool_calls": [...], "tool_call_id": ..., "name": ...}`).
public struct ChatMessage: Sendable, Codable, Equatable {
    public var role: String
    /// Text content; nil renders as `none` (an assistant message that only calls tools).
    public var content: String?
    /// Multimodal content parts (`[{"type": "text", "text": ...}, {"type": "image"}]`); when
    /// set, templates see this list as `content` instead of the text.
    public var contentParts: [JSONValue]?
    public var name: String?
    public var toolCalls: [ChatToolCall]?
    public var toolCallID: String?
    /// The reasoning of a thinking model's earlier reply (`reasoning_content`, used by Qwen3
    /// and DeepSeek-R1 style templates).
    public var reasoningContent: String?

    public init(role: String, content: String?, name: String? = nil, toolCalls: [ChatToolCall]? = nil,
                toolCallID: String? = nil, contentParts: [JSONValue]? = nil, reasoningContent: String? = nil)
    {
        self.reasoningContent = reasoningContent
        self.role = role
        self.content = content
        self.name = name
        self.toolCalls = toolCalls
        self.toolCallID = toolCallID
        self.contentParts = contentParts
    }

    public static func system(_ text: String) -> ChatMessage { ChatMessage(role: "system", content: text) }
    public static func user(_ text: String) -> ChatMessage { ChatMessage(role: "user", content: text) }
    public static func assistant(_ text: String?, toolCalls: [ChatToolCall]? = nil) -> ChatMessage {
        ChatMessage(role: "assistant", content: text, toolCalls: toolCalls)
    }
    public static func tool(_ text: String, toolCallID: String? = nil, name: String? = nil) -> ChatMessage {
        ChatMessage(role: "tool", content: text, name: name, toolCallID: toolCallID)
    }

    enum CodingKeys: String, CodingKey {
        case role, content, name
        case contentParts = "content_parts"
        case toolCalls = "tool_calls"
        case toolCallID = "tool_call_id"
        case reasoningContent = "reasoning_content"
    }

    /// The message as the template sees it. Optional keys are present only when set, so
    /// `'tool_calls' in message` and `message.name is defined` behave as with Python dicts.
    public var templateValue: JSONValue {
        var o = JSONObject()
        o["role"] = .string(role)
        if let contentParts { o["content"] = .array(contentParts) } else { o["content"] = content.map { .string($0) } ?? .null }
        if let toolCalls { o["tool_calls"] = .array(toolCalls.map(\.templateValue)) }
        if let toolCallID { o["tool_call_id"] = .string(toolCallID) }
        if let name { o["name"] = .string(name) }
        if let reasoningContent { o["reasoning_content"] = .string(reasoningContent) }
        return .object(o)
    }

    /// Reads an OpenAI / Hugging Face style message object.
    public init(json: JSONValue) throws {
        guard case .object(let o) = json, case .string(let role)? = o["role"] else {
            throw JSONParseError(offset: 0, message: "a chat message needs a string \"role\"")
        }
        self.init(role: role, content: nil)
        switch o["content"] {
        case .string(let s)?: content = s
        case .array(let parts)?: contentParts = parts
        case nil, .null?: break
        case let other?: content = other.jsonString()
        }
        name = o["name"]?.stringValue
        toolCallID = o["tool_call_id"]?.stringValue
        reasoningContent = o["reasoning_content"]?.stringValue
        if case .array(let calls)? = o["tool_calls"] { toolCalls = try calls.map(ChatToolCall.init(json:)) }
    }
}

/// A function call made by the assistant.
public struct ChatToolCall: Sendable, Codable, Equatable {
    public var id: String?
    public var type: String
    public var name: String
    /// Usually an object; templates `tojson` it.
    public var arguments: JSONValue

    public init(id: String? = nil, type: String = "function", name: String, arguments: JSONValue) {
        self.id = id
        self.type = type
        self.name = name
        self.arguments = arguments
    }

    public var templateValue: JSONValue {
        var o = JSONObject()
        if let id { o["id"] = .string(id) }
        o["type"] = .string(type)
        o["function"] = ["name": .string(name), "arguments": arguments]
        return .object(o)
    }

    public init(json: JSONValue) throws {
        let function = json["function"] ?? json
        guard case .string(let name)? = function["name"] else {
            throw JSONParseError(offset: 0, message: "a tool call needs a function name")
        }
        self.init(id: json["id"]?.stringValue, type: json["type"]?.stringValue ?? "function", name: name,
                  arguments: function["arguments"] ?? .object(JSONObject()))
    }
}

/// A template that failed to parse or render. `line` and `column` (1-based, counted in
/// Unicode scalars) point into the template source.
public struct ChatTemplateError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        /// The template text is not valid (unclosed tag, unknown statement, bad expression).
        case syntax
        /// Evaluation failed (type error, unknown filter, limits exceeded).
        case render
        /// The template called `raise_exception(message)`.
        case raised
    }

    public let kind: Kind
    public let message: String
    public let line: Int
    public let column: Int

    public init(kind: Kind, message: String, line: Int, column: Int) {
        self.kind = kind
        self.message = message
        self.line = line
        self.column = column
    }

    public var description: String {
        "chat template \(kind.rawValue) error at line \(line), column \(column): \(message)"
    }
}
