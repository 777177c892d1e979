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
    /// gpt-oss (OpenAI harmony): messages on channels, `<|channel|>analysis<|message|>…<|end|>`
    /// thinking, `<|channel|>final<|message|>…` the answer, and
    /// `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}` a call.
    case harmony

    /// The syntax a chat template teaches its model (nil template: generic).
    public static func detect(templateSource source: String?) -> ToolCallSyntax {
        guard let source else { return .genericJSON }
        if source.contains("<|channel|>") { return .harmony }
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
        case .genericJSON, .harmony: nil
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
        case .hermes, .harmony: nil
        }
    }

    /// Its markers are control tokens (which plain decoding leaves out): replies are decoded
    /// with them.
    var marksWithControlTokens: Bool { self == .harmony || self == .mistral || self == .llama3 }

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
    /// Thinking (harmony's analysis channel).
    case reasoning(String)
    /// A call begins (its name is known); `index` counts the calls of this reply from 0.
    case callStart(index: Int, id: String, name: String)
    /// The next piece of call `index`'s arguments, as the model wrote it.
    case callArguments(index: Int, String)
    /// Call `index` is complete: its arguments are its `callArguments` pieces joined.
    case call(index: Int, ParsedToolCall)
}

/// Splits a reply, piece by piece as it streams, into plain text and function calls.
///
/// Text that could still turn into call syntax (a prefix of the opening marker, a reply that
/// starts like a bare JSON call) is held back until it is decided, so no marker ever reaches
/// the content. A call is announced once its name is known, its arguments follow piece by
/// piece as they are written, and it is reported whole when it closes. Call text that turns
/// out not to be a call (before any call in it was announced) is given back as content.
public struct ToolCallStreamParser: Sendable {
    public let syntax: ToolCallSyntax
    private enum Mode: Sendable { case start, text, inCall, bareJSON }
    private var mode = Mode.start
    private var pending = ""
    /// The call text read so far (after the opening marker, if any).
    private var body: [UInt8] = []
    /// The open body's calls, by their place in the body.
    private var open: [Int: OpenCall] = [:]
    /// Places in the body of calls dropped (`parallel_tool_calls: false`).
    private var dropped: Set<Int> = []
    private var callCount = 0
    /// `parallel_tool_calls: false`: calls after the first are dropped.
    private let allowsSeveralCalls: Bool
    private let makeID: @Sendable () -> String

    private struct OpenCall: Sendable {
        var index: Int
        var call: ParsedToolCall
        /// Where in the body the arguments sent so far end (nil: none sent).
        var sentUpTo: Int?
        var complete = false
    }

    /// The harmony syntax has a parser of its own.
    private var harmony: HarmonyStreamParser?

    /// `splitsReasoning`: harmony's analysis channel is reasoning (else content, markers and all).
    public init(syntax: ToolCallSyntax, allowsSeveralCalls: Bool = true, splitsReasoning: Bool = true,
                makeID: @escaping @Sendable () -> String = newToolCallID) {
        self.syntax = syntax
        self.allowsSeveralCalls = allowsSeveralCalls
        self.makeID = makeID
        if syntax == .harmony {
            harmony = HarmonyStreamParser(splitsReasoning: splitsReasoning, allowsSeveralCalls: allowsSeveralCalls, makeID: makeID)
        }
    }

    public var hasCalls: Bool { callCount > 0 || (harmony?.callCount ?? 0) > 0 }

    public mutating func feed(_ text: String) -> [ToolParseEvent] {
        if harmony != nil { return harmony!.feed(text) }
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
                    pending = String(start)
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
            case .inCall, .bareJSON:
                if mode == .inCall, let closing = syntax.closingMarker {
                    if let range = pending.range(of: closing) {
                        body += Array(pending[..<range.lowerBound].utf8)
                        pending = String(pending[range.upperBound...])
                        closeBody(ToolCallBody(body), closing: closing, into: &events)
                        continue
                    }
                    let held = Self.longestSuffixThatIsPrefix(of: closing, in: pending)
                    body += Array(pending.dropLast(held).utf8)
                    pending = String(pending.suffix(held))
                    advance(ToolCallBody(body), into: &events)
                    return events
                }
                body += Array(pending.utf8)
                pending = ""
                let layout = ToolCallBody(body)
                advance(layout, into: &events)
                if let end = layout.end {
                    // the calls are complete: what follows is text again
                    pending = String(decoding: body[end...], as: UTF8.self)
                    body.removeSubrange(end...)
                    closeBody(layout, closing: "", into: &events)
                    continue
                }
                if layout.malformed && open.isEmpty {
                    closeBody(layout, closing: "", into: &events)
                    continue
                }
                return events
            }
        }
    }

    /// Decides whatever is still held back, at the end of the reply.
    public mutating func finish() -> [ToolParseEvent] {
        if harmony != nil { return harmony!.finish() }
        var events: [ToolParseEvent] = []
        switch mode {
        case .start, .text:
            emitContent(pending, into: &events)
        case .inCall, .bareJSON:
            body += Array(pending.utf8)
            closeBody(ToolCallBody(body), closing: "", into: &events)
        }
        pending = ""
        mode = .text
        return events
    }

    /// Announces the calls whose names are known and sends the arguments written since.
    private mutating func advance(_ layout: ToolCallBody, into events: inout [ToolParseEvent]) {
        for (place, found) in layout.calls.enumerated() where !dropped.contains(place) {
            if open[place] == nil {
                guard let name = found.name, found.hasArguments || found.closed else { continue }
                guard allowsSeveralCalls || callCount == 0 else {
                    dropped.insert(place)
                    continue
                }
                let call = ParsedToolCall(id: makeID(), name: name, arguments: "")
                open[place] = OpenCall(index: callCount, call: call, sentUpTo: nil)
                events.append(.callStart(index: callCount, id: call.id, name: name))
                callCount += 1
            }
            guard var entry = open[place], !entry.complete else { continue }
            var piece = ""
            if let start = found.argumentsStart {
                let from = entry.sentUpTo ?? start
                if body[start] == UInt8(ascii: "\"") {
                    // arguments given as a string of JSON: sent whole, decoded, once complete
                    if let end = found.argumentsEnd, entry.sentUpTo == nil,
                       case .string(let text)? = try? JSONValue(parsing: String(decoding: body[start..<end], as: UTF8.self)) {
                        piece = text
                        entry.sentUpTo = end
                    }
                } else {
                    let end = found.argumentsEnd ?? body.count
                    if from < end {
                        piece = String(decoding: body[from..<end], as: UTF8.self)
                        entry.sentUpTo = end
                    }
                }
            } else if found.closed {
                piece = "{}"  // a call without arguments
            }
            if !piece.isEmpty {
                entry.call.arguments += piece
                events.append(.callArguments(index: entry.index, piece))
            }
            if found.closed {
                entry.complete = true
                events.append(.call(index: entry.index, entry.call))
            }
            open[place] = entry
        }
    }

    /// The body ended (closing marker, end of its JSON, or of the reply): its calls are
    /// complete, cut short ones with what was written; a body with no call is content.
    private mutating func closeBody(_ layout: ToolCallBody, closing: String, into events: inout [ToolParseEvent]) {
        advance(layout, into: &events)
        if open.isEmpty {
            let raw = (syntax.openingMarker.map { mode == .inCall ? $0 : "" } ?? "")
                + String(decoding: body, as: UTF8.self) + closing
            emitContent(raw, into: &events)
        }
        for place in open.keys.sorted() where !open[place]!.complete {
            events.append(.call(index: open[place]!.index, open[place]!.call))
        }
        body = []
        open = [:]
        dropped = []
        mode = .text
    }

    private mutating func emitContent(_ text: String, into events: inout [ToolParseEvent]) {
        // The whitespace that separates consecutive calls is not part of the reply.
        let text = callCount > 0 ? String(text.drop(while: \.isWhitespace)) : text
        guard !text.isEmpty else { return }
        events.append(.content(text))
    }

    static func longestSuffixThatIsPrefix(of marker: String, in text: String) -> Int {
        let limit = min(marker.count - 1, text.count)
        guard limit > 0 else { return 0 }
        for length in stride(from: limit, to: 0, by: -1) where marker.hasPrefix(text.suffix(length)) {
            return length
        }
        return 0
    }
}

/// An OpenAI-style call id: `call_` and 24 random letters and digits.
public func newToolCallID() -> String {
    let alphabet = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
    var g = SystemRandomNumberGenerator()
    return "call_" + String((0..<24).map { _ in alphabet[Int(g.next() % UInt64(alphabet.count))] })
}
