import Foundation
import JSON

/// How a model writes function calls, detected from its chat template.
public enum ToolCallSyntax: String, Sendable, Equatable {
    /// Hermes / Qwen: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call.
    case hermes
    /// Llama 3.x: a bare `{"name": ..., "parameters": {...}}` (optionally after `<|python_tag|>`).
    case llama3
    /// Mistral: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.
    case mistral
    /// Templates without a known syntax: the server describes the tools in the system prompt
    /// and asks for `{"tool_calls": [{"name": ..., "arguments": {...}}]}`.
    case genericJSON

    /// The syntax a chat template teaches its model (nil template: generic).
    public static func detect(templateSource source: String?) -> ToolCallSyntax {
        guard let source else { return .genericJSON }
        if source.contains("<tool_call>") { return .hermes }
        if source.contains("[TOOL_CALLS]") { return .mistral }
        if source.contains("<|python_tag|>") || source.contains("\"parameters\": dictionary") { return .llama3 }
        return .genericJSON
    }

    /// Text that opens a call (everything after it, up to `closingMarker` or the end, is the call).
    var openingMarker: String? {
        switch self {
        case .hermes: "<tool_call>"
        case .mistral: "[TOOL_CALLS]"
        case .llama3: "<|python_tag|>"
        case .genericJSON: nil
        }
    }

    var closingMarker: String? { self == .hermes ? "</tool_call>" : nil }

    /// The character a reply starts with when it is calls without a marker: Llama 3 and the
    /// generic syntax have none, and the Mistral and Llama markers are control tokens, which
    /// the decoded text leaves out.
    var bareCallOpener: Character? {
        switch self {
        case .llama3, .genericJSON: "{"
        case .mistral: "["
        case .hermes: nil
        }
    }

    /// The key holding a call's arguments in this syntax.
    var argumentsKey: String { self == .llama3 ? "parameters" : "arguments" }
}

/// One function call found in the model's output.
public struct ParsedToolCall: Sendable, Equatable {
    public var id: String
    public var name: String
    /// The arguments as JSON text (OpenAI's `function.arguments` is a string).
    public var arguments: String
}

/// What the parser decided about a stretch of output.
public enum ToolParseEvent: Sendable, Equatable {
    /// Plain reply text (no call syntax in it).
    case content(String)
    /// A complete call; `index` counts the calls of this reply from 0.
    case call(index: Int, ParsedToolCall)
}

/// Splits a reply, piece by piece as it streams, into plain text and function calls.
///
/// Text that could still turn into call syntax (a prefix of the opening marker, a reply that
/// starts like a bare JSON call) is held back until it is decided, so no marker ever reaches
/// the content. A call is reported once it is complete; call text that does not parse as a
/// call is given back as content.
public struct ToolCallStreamParser: Sendable {
    public let syntax: ToolCallSyntax
    private enum Mode: Sendable { case start, text, inCall, bareJSON }
    private var mode = Mode.start
    private var pending = ""
    private var callCount = 0
    /// `parallel_tool_calls: false`: calls after the first are dropped.
    private let allowsSeveralCalls: Bool
    private let makeID: @Sendable () -> String

    public init(syntax: ToolCallSyntax, allowsSeveralCalls: Bool = true,
                makeID: @escaping @Sendable () -> String = newToolCallID) {
        self.syntax = syntax
        self.allowsSeveralCalls = allowsSeveralCalls
        self.makeID = makeID
    }

    public var hasCalls: Bool { callCount > 0 }

    public mutating func feed(_ text: String) -> [ToolParseEvent] {
        pending += text
        var events: [ToolParseEvent] = []
        while true {
            switch mode {
            case .start:
                let start = pending.drop(while: \.isWhitespace)
                guard let first = start.first else { return events }
                if let marker = syntax.openingMarker, marker.hasPrefix(start) || start.hasPrefix(marker) {
                    // the marker itself, or perhaps its beginning ("[" of "[TOOL_CALLS]")
                    guard start.count >= marker.count else { return events }
                    mode = .text
                } else if first == syntax.bareCallOpener {
                    mode = .bareJSON
                } else {
                    mode = .text
                }
            case .text:
                guard let marker = syntax.openingMarker else {
                    emitContent(pending, into: &events)
                    pending = ""
                    return events
                }
                if let range = pending.range(of: marker) {
                    emitContent(String(pending[..<range.lowerBound]), into: &events)
                    pending = String(pending[range.upperBound...])
                    mode = .inCall
                    continue
                }
                // Keep back the longest tail that could be the start of the marker.
                let held = Self.longestSuffixThatIsPrefix(of: marker, in: pending)
                emitContent(String(pending.dropLast(held)), into: &events)
                pending = String(pending.suffix(held))
                return events
            case .inCall:
                guard let closing = syntax.closingMarker, let range = pending.range(of: closing) else { return events }
                let body = String(pending[..<range.lowerBound])
                pending = String(pending[range.upperBound...])
                mode = .text
                emitCalls(body, raw: (syntax.openingMarker ?? "") + body + closing, into: &events)
            case .bareJSON:
                return events
            }
        }
    }

    /// Decides whatever is still held back, at the end of the reply.
    public mutating func finish() -> [ToolParseEvent] {
        var events: [ToolParseEvent] = []
        let rest = pending
        pending = ""
        switch mode {
        case .start, .text: emitContent(rest, into: &events)
        case .inCall: emitCalls(rest, raw: (syntax.openingMarker ?? "") + rest, into: &events)
        case .bareJSON: emitCalls(rest, raw: rest, into: &events)
        }
        mode = .text
        return events
    }

    private mutating func emitContent(_ text: String, into events: inout [ToolParseEvent]) {
        // The whitespace that separates consecutive calls is not part of the reply.
        let text = callCount > 0 ? String(text.drop(while: \.isWhitespace)) : text
        guard !text.isEmpty else { return }
        events.append(.content(text))
    }

    private mutating func emitCalls(_ body: String, raw: String, into events: inout [ToolParseEvent]) {
        guard let calls = Self.parseCalls(body) else {
            emitContent(raw, into: &events)
            return
        }
        for (name, arguments) in calls where allowsSeveralCalls || callCount == 0 {
            events.append(.call(index: callCount, ParsedToolCall(id: makeID(), name: name, arguments: arguments)))
            callCount += 1
        }
    }

    static func longestSuffixThatIsPrefix(of marker: String, in text: String) -> Int {
        let limit = min(marker.count - 1, text.count)
        guard limit > 0 else { return 0 }
        for length in stride(from: limit, to: 0, by: -1) where marker.hasPrefix(text.suffix(length)) {
            return length
        }
        return 0
    }

    /// The calls in a JSON text: `{"name", "arguments"|"parameters"}`, a list of those, or
    /// `{"tool_calls": [...]}`; nil when the text is anything else.
    static func parseCalls(_ text: String) -> [(name: String, arguments: String)]? {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let value = try? JSONValue(parsing: trimmed) else { return nil }
        let items: [JSONValue]
        switch value {
        case .array(let list): items = list
        case .object(let o):
            if case .array(let list)? = o["tool_calls"], o.count == 1 { items = list } else { items = [value] }
        default: return nil
        }
        guard !items.isEmpty else { return nil }
        var calls: [(String, String)] = []
        for item in items {
            let call = item["function"].flatMap { $0.objectValue != nil ? $0 : nil } ?? item
            guard case .string(let name)? = call["name"], !name.isEmpty else { return nil }
            switch call["arguments"] ?? call["parameters"] {
            case nil, .null?: calls.append((name, "{}"))
            case .string(let s)?: calls.append((name, s))
            case .object(let o)?: calls.append((name, JSONValue.object(o).compactText))
            default: return nil
            }
        }
        return calls
    }
}

/// An OpenAI-style call id: `call_` and 24 random letters and digits.
public func newToolCallID() -> String {
    let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    var g = SystemRandomNumberGenerator()
    return "call_" + String((0..<24).map { _ in alphabet[Int(g.next() % UInt64(alphabet.count))] })
}
