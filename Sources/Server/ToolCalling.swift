import Engine
import Foundation
import JSON
import Tokenization

/// A function the model may call (`tools[i]` of a chat request).
public struct ToolDefinition: Sendable, Equatable {
    public var name: String
    public var description: String?
    /// JSON schema of the arguments object; nil when the request gave none (no arguments).
    public var parameters: JSONValue?

    /// `{"type": "function", "function": {...}}`, the shape chat templates receive.
    public var templateValue: JSONValue {
        var function: JSONObject = ["name": .string(name)]
        if let description { function["description"] = .string(description) }
        function["parameters"] = parameters ?? ["type": "object", "properties": .object([:])]
        return ["type": "function", "function": .object(function)]
    }
}

/// 1 to 64 ASCII letters, digits, underscores or dashes (OpenAI's and Anthropic's rule).
func isValidToolName(_ name: String) -> Bool {
    (1...64).contains(name.count) && name.unicodeScalars.allSatisfy {
        ($0.isASCII && CharacterSet.alphanumerics.contains($0)) || $0 == "_" || $0 == "-"
    }
}

extension ToolDefinition {
    /// One function's name, description and schema from `object` (an Anthropic or Responses
    /// tool, or OpenAI's `function` member), every error naming the field under `p`; a name
    /// already in `seen` is refused. `requiresSchema`: the schema must be there (Anthropic's
    /// `input_schema`); otherwise it may be left out (any arguments). `nameHint` follows a
    /// missing name's message.
    static func parse(_ object: JSONValue, param p: String, schemaKey: String, requiresSchema: Bool = false,
                      nameHint: String = "", seen: inout Set<String>) throws -> ToolDefinition {
        guard let name = object["name"]?.stringValue else {
            throw APIError.invalid("\(p).name", "'\(p).name' is missing" + nameHint)
        }
        guard isValidToolName(name) else {
            throw APIError.invalid("\(p).name", "'\(p).name' must be 1 to 64 letters, digits, underscores or dashes, got '\(name)'")
        }
        guard seen.insert(name).inserted else {
            throw APIError.invalid("\(p).name", "'\(p).name': the function '\(name)' is defined twice")
        }
        var description: String?
        if let d = object["description"], d != .null {
            guard let s = d.stringValue else { throw APIError.invalid("\(p).description", "'\(p).description' must be a string") }
            description = s
        }
        var parameters: JSONValue?
        if let schema = object[schemaKey], schema != .null {
            guard case .object = schema else {
                throw APIError.invalid("\(p).\(schemaKey)", "'\(p).\(schemaKey)' must be a JSON schema object")
            }
            parameters = schema
        } else if requiresSchema {
            throw APIError.invalid("\(p).\(schemaKey)", "'\(p).\(schemaKey)' must be a JSON schema object")
        }
        return ToolDefinition(name: name, description: description, parameters: parameters)
    }
}

/// `tool_choice`.
public enum ToolChoice: Sendable, Equatable {
    case none, auto, required
    case function(String)

    /// The reply must be calls (and is constrained to the call syntax).
    var forcesCall: Bool {
        switch self {
        case .required, .function: true
        case .none, .auto: false
        }
    }
}

extension CompletionRequest {
    static func parseTools(_ value: JSONValue) throws -> [ToolDefinition] {
        guard let items = value.arrayValue else { throw APIError.invalid("tools", "'tools' must be an array") }
        var seen = Set<String>()
        return try items.enumerated().map { i, tool in
            let p = "tools[\(i)]"
            guard case .object = tool else { throw APIError.invalid(p, "'\(p)' must be an object") }
            guard tool["type"]?.stringValue == "function" else {
                throw APIError.invalid("\(p).type", "'\(p).type' must be 'function'")
            }
            guard let function = tool["function"], case .object = function else {
                throw APIError.invalid("\(p).function", "'\(p).function' must be an object")
            }
            return try ToolDefinition.parse(function, param: "\(p).function", schemaKey: "parameters", seen: &seen)
        }
    }

    static func parseToolChoice(_ value: JSONValue, tools: [ToolDefinition]) throws -> ToolChoice {
        let choice: ToolChoice
        switch value {
        case .string("none"): choice = .none
        case .string("auto"): choice = .auto
        case .string("required"): choice = .required
        case .object:
            guard value["type"]?.stringValue == "function", let name = value["function"]?["name"]?.stringValue else {
                throw APIError.invalid("tool_choice",
                                       "'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}")
            }
            guard tools.contains(where: { $0.name == name }) else {
                throw APIError.invalid("tool_choice", "'tool_choice' names the function '\(name)', which is not in 'tools'")
            }
            choice = .function(name)
        default:
            throw APIError.invalid("tool_choice",
                                   "'tool_choice' must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": {\"name\": ...}}")
        }
        if choice.forcesCall && tools.isEmpty {
            throw APIError.invalid("tool_choice", "'tool_choice' requires 'tools'")
        }
        return choice
    }

    /// `messages[i].tool_calls`: `[{"id", "type": "function", "function": {"name", "arguments": "<JSON text>"}}]`.
    static func parseToolCalls(_ value: JSONValue, param p: String) throws -> [ChatToolCall] {
        guard let items = value.arrayValue else { throw APIError.invalid(p, "'\(p)' must be an array") }
        return try items.enumerated().map { j, call in
            let q = "\(p)[\(j)]"
            guard case .object = call else { throw APIError.invalid(q, "'\(q)' must be an object") }
            guard let id = call["id"]?.stringValue else { throw APIError.invalid("\(q).id", "'\(q).id' must be a string") }
            guard let function = call["function"], case .object = function,
                  let name = function["name"]?.stringValue else {
                throw APIError.invalid("\(q).function", "'\(q).function' must be an object with a string 'name'")
            }
            let arguments: JSONValue
            switch function["arguments"] {
            case .string(let s)?: arguments = .string(s)
            case .object(let o)?: arguments = .string(JSONValue.object(o).compactText)
            case nil, .null?: arguments = .string("{}")
            default: throw APIError.invalid("\(q).function.arguments", "'\(q).function.arguments' must be a string of JSON")
            }
            return ChatToolCall(id: id, name: name, arguments: arguments)
        }
    }
}

/// How one chat request's tools turn into a prompt, a grammar and a parser.
struct ToolCallPlan {
    let syntax: ToolCallSyntax
    /// Text appended after the generation prompt: the opening marker when a call is forced.
    let prefill: String
    let grammar: JSONGrammar?
    /// With `tool_choice` auto: what starts a call, from where `grammar` constrains it (none:
    /// the grammar applies from the start, or auto calls are only parsed).
    let grammarTriggers: [GrammarTrigger]
    /// With `tool_choice` auto: a marker that starts a call, a trigger as the token it is when
    /// the vocabulary has it as one (a control token, which the text may not show).
    let triggerMarker: String?
    let messages: [ChatMessage]
    /// The `tools` template variable (nil when the server described them in the system prompt).
    let templateTools: [JSONValue]?

    init(tools: [ToolDefinition], choice: ToolChoice, parallel: Bool, messages: [ChatMessage],
         templateSource: String?) throws {
        syntax = ToolCallSyntax.detect(templateSource: templateSource)
        let offered = choice == .none ? [] : tools
        if syntax == .genericJSON {
            self.messages = Self.genericMessages(messages, tools: offered)
            templateTools = nil
        } else {
            let objectArguments = Self.templateWantsObjectArguments(templateSource ?? "")
            self.messages = messages.map { Self.templateMessage($0, objectArguments: objectArguments) }
            templateTools = offered.isEmpty ? nil : offered.map(\.templateValue)
        }
        guard choice.forcesCall else {
            prefill = ""
            // Once a call starts, the grammar constrains it to the end of the call. A schema
            // the grammar cannot express leaves auto parse-only rather than failing.
            var triggers: [GrammarTrigger] = []
            var marker: String?
            switch syntax {
            case .hermes: triggers = [.text("<tool_call>")]
            case .llama3: triggers = [.outputStart(#"{"name""#)]; marker = "<|python_tag|>"
            case .mistral: marker = "[TOOL_CALLS]"
            case .genericJSON: triggers = [.outputStart(#"{"tool_calls""#)]
            // the recipient in a header: the function's name, the rest of the header, the arguments
            case .harmony: triggers = [.text(Self.harmonyRecipient)]
            }
            if choice == .auto, !tools.isEmpty, !triggers.isEmpty || marker != nil,
               let lazy = try? (syntax == .harmony ? Self.harmonyCallGrammar(tools, headerEnds: Self.harmonyHeaderEnds)
                   : JSONGrammar(schema: Self.outputSchema(syntax: syntax, tools: tools, parallel: parallel))) {
                grammar = lazy
                grammarTriggers = triggers
                triggerMarker = marker
            } else {
                grammar = nil
                grammarTriggers = []
                triggerMarker = nil
            }
            return
        }
        grammarTriggers = []
        triggerMarker = nil
        let callable = choice == .required ? tools : tools.filter { .function($0.name) == choice }
        if syntax == .harmony {
            // The header is primed up to the recipient. One function: the whole header, and the
            // grammar constrains the arguments; several: the grammar makes the model name one
            // of them, end the header and write arguments that follow that function's parameters.
            do {
                if callable.count == 1 {
                    prefill = "<|channel|>commentary to=functions.\(callable[0].name) <|constrain|>json<|message|>"
                    grammar = try JSONGrammar(schema: callable[0].templateValue["function"]!["parameters"]!)
                } else {
                    prefill = "<|channel|>commentary" + Self.harmonyRecipient
                    grammar = try Self.harmonyCallGrammar(callable, headerEnds: [Self.harmonyHeaderEnds[0]])
                }
            } catch {
                throw APIError.invalid("tools", "cannot constrain the arguments to the function's 'parameters': \(error)")
            }
            return
        }
        // a named function is called once, as with OpenAI
        let schema = Self.outputSchema(syntax: syntax, tools: callable, parallel: parallel && choice == .required)
        do { grammar = try JSONGrammar(schema: schema) } catch {
            throw APIError.invalid("tools", "cannot constrain the arguments to the function's 'parameters': \(error)")
        }
        switch syntax {
        case .hermes: prefill = "<tool_call>\n"
        case .mistral: prefill = "[TOOL_CALLS]"
        case .llama3, .genericJSON, .harmony: prefill = ""
        }
    }

    /// What addresses a harmony message to a function: the text before the function's name.
    static let harmonyRecipient = " to=functions"

    /// How a harmony header goes on after the recipient's name up to the arguments: the
    /// channel came first (`<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>`),
    /// or the recipient (`<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>`,
    /// as the template writes earlier calls).
    static let harmonyHeaderEnds = [" <|constrain|>json<|message|>", "<|channel|>commentary <|constrain|>json<|message|>",
                                    "<|channel|>commentary json<|message|>"]

    /// A harmony call after `harmonyRecipient`: `.NAME`, one of `headerEnds`, and arguments
    /// following the parameters of the function named.
    static func harmonyCallGrammar(_ tools: [ToolDefinition], headerEnds: [String]) throws -> JSONGrammar {
        try JSONGrammar(named: tools.map { (name: "." + $0.name, schema: $0.templateValue["function"]!["parameters"]!) },
                        separators: headerEnds)
    }

    /// Templates that `tojson` or iterate the arguments want an object, as Hugging Face
    /// examples pass them; others get OpenAI's JSON string unchanged.
    static func templateWantsObjectArguments(_ source: String) -> Bool {
        let compact = source.replacingOccurrences(of: " ", with: "")
        return compact.contains("arguments|tojson") || compact.contains("arguments.items()")
            || compact.contains("argumentsismapping")
    }

    static func templateMessage(_ message: ChatMessage, objectArguments: Bool) -> ChatMessage {
        guard objectArguments, let calls = message.toolCalls else { return message }
        var m = message
        m.toolCalls = calls.map { call in
            var c = call
            if case .string(let text) = call.arguments, let value = try? JSONValue(parsing: text), case .object = value {
                c.arguments = value
            }
            return c
        }
        return m
    }

    /// For templates that know nothing of tools: the tool list and the reply format go into the
    /// system prompt, earlier calls into the assistant text and results into user turns (so
    /// role checks of such templates still pass).
    static func genericMessages(_ messages: [ChatMessage], tools: [ToolDefinition]) -> [ChatMessage] {
        var out: [ChatMessage] = messages.map { message in
            var m = message
            if let calls = message.toolCalls, !calls.isEmpty {
                let list: [JSONValue] = calls.map { call in
                    var arguments = call.arguments
                    if case .string(let text) = arguments, let v = try? JSONValue(parsing: text) { arguments = v }
                    return ["name": .string(call.name), "arguments": arguments]
                }
                let json = JSONValue.object(["tool_calls": .array(list)]).compactText
                m.content = [message.content, json].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: "\n")
                m.toolCalls = nil
            }
            if message.role == "tool" {
                let label = message.name ?? message.toolCallID ?? "a function"
                m = ChatMessage(role: "user", content: "Result of \(label):\n\(message.content ?? "")")
            }
            return m
        }
        guard !tools.isEmpty else { return out }
        let prompt = genericToolPrompt(tools)
        if let first = out.first, first.role == "system" {
            out[0].content = (first.content.map { $0 + "\n\n" } ?? "") + prompt
        } else {
            out.insert(.system(prompt), at: 0)
        }
        return out
    }

    static func genericToolPrompt(_ tools: [ToolDefinition]) -> String {
        let list = tools.map { $0.templateValue["function"]!.compactText }.joined(separator: "\n")
        return """
            You can call these functions:
            \(list)
            To call functions, reply with only a JSON object of this form and nothing else: \
            {"tool_calls": [{"name": "<function name>", "arguments": {<argument name>: <value>, ...}}]}
            Otherwise, reply normally.
            """
    }

    /// The JSON (after `prefill`) the constrained reply must be: calls of `tools`. Each call is
    /// `{"name": ..., <arguments key>: ...}`, the arguments following the parameters of the
    /// function the name chose (the calls are a tagged union on `name`, which comes first).
    static func outputSchema(syntax: ToolCallSyntax, tools: [ToolDefinition], parallel: Bool) -> JSONValue {
        let calls: [JSONValue] = tools.map { tool in
            [
                "type": "object",
                "properties": .object(["name": ["const": .string(tool.name)],
                                       syntax.argumentsKey: tool.templateValue["function"]!["parameters"]!]),
                "required": ["name", .string(syntax.argumentsKey)],
                "additionalProperties": false,
            ]
        }
        let call: JSONValue = calls.count == 1 ? calls[0] : ["anyOf": .array(calls)]
        var list: JSONObject = ["type": "array", "items": call, "minItems": 1]
        if !parallel { list["maxItems"] = 1 }
        switch syntax {
        case .hermes, .llama3, .harmony: return call
        case .mistral: return .object(list)
        case .genericJSON:
            return ["type": "object", "properties": ["tool_calls": .object(list)], "required": ["tool_calls"],
                    "additionalProperties": false]
        }
    }
}
