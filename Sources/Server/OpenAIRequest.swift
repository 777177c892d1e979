import Engine
import Foundation
import JSON
import Tokenization

/// A request the API answers with an error: HTTP status, OpenAI error type, the offending
/// field (`param`) and an optional code.
public struct APIError: Error, CustomStringConvertible {
    public var status: Int
    public var message: String
    public var type: String
    public var param: String?
    public var code: String?
    public var headers: [(String, String)] = []

    public init(status: Int, message: String, type: String = "invalid_request_error", param: String? = nil,
                code: String? = nil) {
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
    }

    public var description: String { "\(status): \(message)" }

    static func invalid(_ param: String, _ message: String) -> APIError {
        APIError(status: 400, message: message, param: param)
    }

    var json: JSONValue {
        .object(["error": .object([
            "message": .string(message),
            "type": .string(type),
            "param": param.map { .string($0) } ?? .null,
            "code": code.map { .string($0) } ?? .null,
        ])])
    }
}

/// A request body that must be a JSON object (400 otherwise).
func requestObject(_ body: [UInt8]) throws -> JSONValue {
    let root: JSONValue
    do { root = try JSONValue(parsing: body) } catch {
        throw APIError(status: 400, message: "the request body is not valid JSON: \(error)")
    }
    guard case .object = root else { throw APIError(status: 400, message: "the request body must be a JSON object") }
    return root
}

/// What a completion request asks for, validated field by field.
public struct CompletionRequest: Sendable {
    public enum Input: Sendable {
        case chat([ChatMessage])
        /// One or more prompts, each text or token ids.
        case prompts([PromptInput])
    }

    public enum PromptInput: Sendable {
        case text(String)
        case tokens([TokenID])
    }

    public var model: String
    public var input: Input
    public var maxTokens: Int?
    public var sampling = SamplingParameters()
    public var stop: [String] = []
    public var n = 1
    public var stream = false
    public var includeUsage = false
    /// nil: no logprobs; k: top-k alternatives per token.
    public var logprobs: Int?
    public var responseFormat: JSONValue?
    /// llama.cpp's `ignore_eos`: end-of-generation tokens are never sampled (their logits get a
    /// bias of -inf), so only `max_tokens`, stop strings or the context end a completion.
    public var ignoreEOS = false
    /// Functions the model may call (chat only).
    public var tools: [ToolDefinition] = []
    public var toolChoice = ToolChoice.auto
    public var parallelToolCalls = true
    /// `speculative`: how this request drafts (nil: as the server's `--lookup` / `--draft` say).
    /// `{"lookup": N}` drafts by prompt lookup (0: no drafting); llama.cpp's `n_max`, `n_min`
    /// and `p_min` draft with the server's draft model.
    public var speculation: RequestedSpeculation?
    /// llama.cpp's `reasoning_format` (nil: the server's `--reasoning-format`).
    public var reasoningFormat: ReasoningFormat?
    /// llama.cpp's per-request `lora` (`[{"id", "scale"}]`), checked against the model's adapters
    /// when the request is prepared; nil: the server's current scales.
    public var lora: JSONValue?
    /// The start of the reply, written after the generation prompt (Anthropic's prefill: a
    /// trailing assistant turn the model continues); the reply leaves it out.
    public var replyPrefix = ""

    public var isChat: Bool { if case .chat = input { true } else { false } }

    /// Parses the JSON body of `/v1/chat/completions` (`chat` true) or `/v1/completions`.
    public init(body: [UInt8], chat: Bool) throws {
        let root = try requestObject(body)
        let f = Fields(root)

        guard let model = try f.string("model") else { throw APIError.invalid("model", "missing required field 'model'") }
        self.model = model

        if chat {
            guard let messages = root["messages"] else {
                throw APIError.invalid("messages", "missing required field 'messages'")
            }
            input = .chat(try Self.parseMessages(messages))
        } else {
            guard let prompt = root["prompt"] else { throw APIError.invalid("prompt", "missing required field 'prompt'") }
            input = .prompts(try Self.parsePrompt(prompt))
        }

        if let format = try f.string("reasoning_format") {
            // llama.cpp's "auto" and "deepseek-legacy" both extract a leading thinking block
            guard let parsed = ReasoningFormat(rawValue: format == "auto" || format == "deepseek-legacy" ? "deepseek" : format) else {
                throw APIError.invalid("reasoning_format", "'reasoning_format' must be 'none', 'deepseek' or 'auto', got '\(format)'")
            }
            reasoningFormat = parsed
        }
        if let m = try f.int("max_completion_tokens", in: 1...Int(Int32.max)) ?? f.int("max_tokens", in: 1...Int(Int32.max)) {
            maxTokens = m
        }
        if let t = try f.double("temperature", in: 0...2) { sampling.temperature = Float(t) }
        if let p = try f.double("top_p", in: 0...1) {
            guard p > 0 else { throw APIError.invalid("top_p", "'top_p' must be greater than 0") }
            sampling.topP = Float(p)
        }
        if let k = try f.int("top_k", in: -1...Int(Int32.max)) { sampling.topK = k }
        if let m = try f.double("min_p", in: 0...1) { sampling.minP = Float(m) }
        if let p = try f.double("presence_penalty", in: -2...2) { sampling.presencePenalty = Float(p) }
        if let p = try f.double("frequency_penalty", in: -2...2) { sampling.frequencyPenalty = Float(p) }
        if let p = try f.double("repeat_penalty", in: 0...10) { sampling.repeatPenalty = Float(p) }
        if sampling.presencePenalty != 0 || sampling.frequencyPenalty != 0 { sampling.repeatLastN = -1 }
        if let seed = root["seed"], seed != .null {
            guard case .number(let s) = seed, let v = Int64(s.text) else {
                throw APIError.invalid("seed", "'seed' must be an integer")
            }
            sampling.seed = UInt64(bitPattern: v)
        }
        if let bias = root["logit_bias"], bias != .null {
            guard case .object(let members) = bias else {
                throw APIError.invalid("logit_bias", "'logit_bias' must be an object mapping token ids to numbers")
            }
            for (key, value) in members {
                guard let id = TokenID(key), id >= 0 else {
                    throw APIError.invalid("logit_bias", "'logit_bias' key '\(key)' is not a token id")
                }
                guard let v = value.doubleValue, v >= -100, v <= 100 else {
                    throw APIError.invalid("logit_bias", "'logit_bias' value for token \(key) must be a number between -100 and 100")
                }
                sampling.logitBias[id] = Float(v)
            }
        }
        if let stop = root["stop"], stop != .null {
            switch stop {
            case .string(let s): self.stop = [s]
            case .array(let items):
                guard items.count <= 16 else { throw APIError.invalid("stop", "'stop' holds at most 16 strings") }
                self.stop = try items.map {
                    guard let s = $0.stringValue else { throw APIError.invalid("stop", "'stop' must be a string or an array of strings") }
                    return s
                }
            default: throw APIError.invalid("stop", "'stop' must be a string or an array of strings")
            }
            self.stop.removeAll { $0.isEmpty }
        }
        if let n = try f.int("n", in: 1...16) { self.n = n }
        if let e = try f.bool("ignore_eos") { ignoreEOS = e }
        if let speculative = f.value("speculative") {
            guard case .object = speculative else { throw APIError.invalid("speculative", "'speculative' must be an object") }
            let fields = Fields(speculative, prefix: "speculative.")
            let longest = PromptLookup.longestDraft
            if let lookup = try fields.int("lookup", in: 0...longest) {
                speculation = .lookup(lookup)
            } else {
                var settings = DraftModelSettings()
                settings.maxDraft = try fields.int("n_max", in: 1...longest) ?? settings.maxDraft
                settings.minDraft = try fields.int("n_min", in: 0...settings.maxDraft) ?? settings.minDraft
                settings.minProbability = try fields.double("p_min", in: 0...1).map(Float.init) ?? settings.minProbability
                speculation = .draftModel(settings)
            }
        }
        lora = f.value("lora")
        if let s = try f.bool("stream") { stream = s }
        if let options = root["stream_options"], options != .null {
            guard case .object = options else { throw APIError.invalid("stream_options", "'stream_options' must be an object") }
            if let u = options["include_usage"], u != .null {
                guard let b = u.boolValue else {
                    throw APIError.invalid("stream_options.include_usage", "'stream_options.include_usage' must be a boolean")
                }
                includeUsage = b
            }
        }
        if chat {
            let want = try f.bool("logprobs") ?? false
            let top = try f.int("top_logprobs", in: 0...20)
            if top != nil && !want {
                throw APIError.invalid("top_logprobs", "'top_logprobs' requires 'logprobs': true")
            }
            logprobs = want ? (top ?? 0) : nil
        } else {
            logprobs = try f.int("logprobs", in: 0...20)
        }
        if let format = root["response_format"], format != .null {
            guard case .object = format else {
                throw APIError.invalid("response_format", "'response_format' must be an object")
            }
            guard let type = format["type"]?.stringValue, ["text", "json_object", "json_schema"].contains(type) else {
                throw APIError.invalid("response_format.type", "'response_format.type' must be 'text', 'json_object' or 'json_schema'")
            }
            if type == "json_schema" && (format["json_schema"]?["schema"] ?? format["schema"]) == nil {
                throw APIError.invalid("response_format.json_schema", "'response_format.json_schema.schema' is missing")
            }
            responseFormat = format
        }
        if chat {
            if let t = f.value("tools") { tools = try Self.parseTools(t) }
            if let c = f.value("tool_choice") {
                toolChoice = try Self.parseToolChoice(c, tools: tools)
            } else if tools.isEmpty {
                toolChoice = .none
            }
            if let p = try f.bool("parallel_tool_calls") { parallelToolCalls = p }
        }
    }

    static func parseMessages(_ value: JSONValue) throws -> [ChatMessage] {
        guard let items = value.arrayValue, !items.isEmpty else {
            throw APIError.invalid("messages", "'messages' must be a non-empty array")
        }
        return try items.enumerated().map { i, m in
            let p = "messages[\(i)]"
            guard case .object = m else { throw APIError.invalid(p, "'\(p)' must be an object") }
            guard var role = m["role"]?.stringValue else { throw APIError.invalid("\(p).role", "'\(p).role' must be a string") }
            guard ["system", "developer", "user", "assistant", "tool"].contains(role) else {
                throw APIError.invalid("\(p).role", "'\(p).role' must be one of system, developer, user, assistant, tool")
            }
            if role == "developer" { role = "system" }
            var toolCalls: [ChatToolCall]?
            if role == "assistant", let calls = m["tool_calls"], calls != .null {
                toolCalls = try parseToolCalls(calls, param: "\(p).tool_calls")
            }
            var toolCallID: String?
            if role == "tool" {
                guard let id = m["tool_call_id"]?.stringValue else {
                    throw APIError.invalid("\(p).tool_call_id", "'\(p).tool_call_id' must be a string (the id of the call this answers)")
                }
                toolCallID = id
            }
            let content: String?
            switch m["content"] {
            case .string(let s): content = s
            case nil, .null:
                guard role == "assistant" else { throw APIError.invalid("\(p).content", "'\(p).content' is missing") }
                content = nil
            case .array(let parts):
                content = try parts.enumerated().map { j, part in
                    guard part["type"]?.stringValue == "text", let text = part["text"]?.stringValue else {
                        throw APIError.invalid("\(p).content[\(j)]", "'\(p).content[\(j)]' must be a text part ({\"type\": \"text\", \"text\": ...})")
                    }
                    return text
                }.joined()
            default: throw APIError.invalid("\(p).content", "'\(p).content' must be a string or an array of text parts")
            }
            return ChatMessage(role: role, content: content, name: m["name"]?.stringValue, toolCalls: toolCalls,
                               toolCallID: toolCallID)
        }
    }

    /// `prompt` (or `/v1/embeddings`' `input`, with its own limit): a string, token ids, or an
    /// array of either.
    static func parsePrompt(_ value: JSONValue, param: String = "prompt", limit: Int = 16) throws -> [PromptInput] {
        func tokens(_ items: [JSONValue], _ param: String) throws -> [TokenID] {
            try items.map {
                guard let v = $0.intValue, v >= 0, v <= Int(Int32.max) else {
                    throw APIError.invalid(param, "'\(param)' must hold token ids (non-negative integers)")
                }
                return TokenID(v)
            }
        }
        switch value {
        case .string(let s): return [.text(s)]
        case .array(let items):
            guard !items.isEmpty else { throw APIError.invalid(param, "'\(param)' must not be empty") }
            guard items.count <= limit else { throw APIError.invalid(param, "'\(param)' holds at most \(limit) items") }
            if items.allSatisfy({ if case .number = $0 { true } else { false } }) {
                return [.tokens(try tokens(items, param))]
            }
            return try items.enumerated().map { i, item in
                switch item {
                case .string(let s): return .text(s)
                case .array(let t): return .tokens(try tokens(t, "\(param)[\(i)]"))
                default: throw APIError.invalid("\(param)[\(i)]", "'\(param)[\(i)]' must be a string or an array of token ids")
                }
            }
        default: throw APIError.invalid(param, "'\(param)' must be a string, an array of strings or an array of token ids")
        }
    }
}

/// A request's `speculative` field.
public enum RequestedSpeculation: Sendable, Equatable {
    /// Prompt lookup drafting up to this many tokens (0: none).
    case lookup(Int)
    /// The server's draft model, with these settings.
    case draftModel(DraftModelSettings)
}

/// Typed access to optional top-level fields; wrong types are 400s naming the field.
struct Fields {
    let root: JSONValue
    /// Put before each key in error messages (the path of a nested object).
    let prefix: String
    init(_ root: JSONValue, prefix: String = "") {
        self.root = root
        self.prefix = prefix
    }

    func value(_ key: String) -> JSONValue? {
        guard let v = root[key], v != .null else { return nil }
        return v
    }

    func string(_ key: String) throws -> String? {
        guard let v = value(key) else { return nil }
        guard let s = v.stringValue else { throw APIError.invalid(prefix + key, "'\(prefix + key)' must be a string") }
        return s
    }

    func bool(_ key: String) throws -> Bool? {
        guard let v = value(key) else { return nil }
        guard let b = v.boolValue else { throw APIError.invalid(prefix + key, "'\(prefix + key)' must be a boolean") }
        return b
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard let v = value(key) else { return nil }
        guard case .number(let n) = v else { throw APIError.invalid(prefix + key, "'\(prefix + key)' must be an integer") }
        let text = n.text
        let number: Int?
        if let i = Int(text) { number = i } else if let d = Double(text), d.rounded() == d, abs(d) < 1e15 { number = Int(d) } else { number = nil }
        guard let i = number else { throw APIError.invalid(prefix + key, "'\(prefix + key)' must be an integer") }
        guard range.contains(i) else {
            throw APIError.invalid(prefix + key, "'\(prefix + key)' must be between \(range.lowerBound) and \(range.upperBound), got \(i)")
        }
        return i
    }

    func double(_ key: String, in range: ClosedRange<Double>) throws -> Double? {
        guard let v = value(key) else { return nil }
        guard let d = v.doubleValue, d.isFinite else { throw APIError.invalid(prefix + key, "'\(prefix + key)' must be a number") }
        guard range.contains(d) else {
            throw APIError.invalid(prefix + key, "'\(prefix + key)' must be between \(range.lowerBound) and \(range.upperBound), got \(d)")
        }
        return d
    }
}
