import Engine
import Foundation
import Hummingbird
import JSON
import NIOCore
import Tokenization

/// What the model said in one chat reply, as the Anthropic Messages and Responses APIs see
/// it: thinking, text and function calls, after the reasoning splitter and the tool parser
/// (one choice, index 0).
enum ReplyPiece: Sendable, Equatable {
    /// Thinking before the answer (a leading `<think>` block).
    case thinking(String)
    case text(String)
    /// A call begins: its id and name (`arguments` empty); its arguments follow.
    case callStart(ParsedToolCall)
    /// The next piece of the open call's arguments.
    case arguments(String)
    /// The call is complete (its arguments are the pieces joined).
    case call(ParsedToolCall)
}

/// How a reply ended.
struct ReplyOutcome: Sendable {
    var finish: FinishReason
    /// The reply called functions.
    var hasCalls: Bool
    /// The request's stop string that ended the reply (its text is not in the reply).
    var stopSequence: String?
    var completionTokens: Int
    var cachedTokens: Int
}

/// Reads one reply's generation events as text and calls, so the translated APIs share the
/// chat pipeline's tool parsing and only change the shapes they write.
final class ReplyReader: @unchecked Sendable {
    private let events: OpenAIServer.EventIterator
    private let handle: RequestHandle
    private var parser: ToolCallStreamParser?
    /// Splits off a leading thinking block, which these APIs return as thinking pieces.
    private var splitter: ReasoningSplitter?
    private let tokenizer: any Tokenizer
    /// The engine decodes control tokens into the text.
    private let special: Bool
    private let stop: [String]
    private var tokens: [TokenID] = []
    /// The text the engine let through (before the tool parser).
    private var rawText = ""
    private var first: GenerationEvent?
    private(set) var outcome: ReplyOutcome?
    /// A failure after the first event (the reply is cut short).
    private(set) var failure: String?

    init(handle: RequestHandle, ctx: OpenAIServer.ResponseContext, stop: [String]) {
        self.handle = handle
        events = OpenAIServer.EventIterator(handle.events)
        parser = ctx.makeToolParser()
        splitter = ctx.makeReasoningSplitter()
        tokenizer = ctx.tokenizer
        special = ctx.toolSyntax?.marksWithControlTokens ?? false
        self.stop = stop
    }

    /// Waits for the first event, so a failure before any token becomes an error status
    /// instead of a broken 200.
    func awaitFirstEvent() async throws {
        let handle = self.handle
        let event = await withTaskCancellationHandler { await events.next() } onCancel: { handle.cancel() }
        if case .failed(_, let message)? = event {
            handle.cancel()
            throw APIError(status: 500, message: message, type: "server_error")
        }
        first = event
    }

    /// The next pieces of the reply (possibly none while the parser holds text back); nil
    /// once the reply ended, with `outcome` (or `failure`) set.
    func next() async -> [ReplyPiece]? {
        guard outcome == nil, failure == nil else { return nil }
        let event: GenerationEvent?
        if let first {
            event = first
            self.first = nil
        } else {
            event = await events.next()
        }
        switch event {
        case .text(_, let text, let newTokens, _)?:
            tokens += newTokens
            rawText += text
            return split(splitter?.feed(text), or: text)
        case .finished(_, let reason, let usage)?:
            var rest = split(splitter?.finish(), or: "")
            if parser != nil { rest += pieces(parser!.finish()) }
            outcome = ReplyOutcome(finish: reason, hasCalls: parser?.hasCalls ?? false,
                                   stopSequence: reason == .stop ? matchedStopSequence() : nil,
                                   completionTokens: usage.completionTokens, cachedTokens: usage.cachedTokens)
            return rest
        case .failed(_, let message)?:
            failure = message
            return nil
        case .embedding?:
            return []
        case nil:
            // the stream ended without a finish: the request was cancelled
            failure = failure ?? "the request was cancelled"
            return nil
        }
    }

    /// Thinking pieces and the reply text after them (all of it reply without a splitter).
    private func split(_ pieces: [ReasoningSplitter.Piece]?, or text: String) -> [ReplyPiece] {
        guard let pieces else { return reply(text) }
        return pieces.flatMap { piece -> [ReplyPiece] in
            switch piece {
            case .reasoning(let r): [.thinking(r)]
            case .content(let c): reply(c)
            }
        }
    }

    /// Reply text through the tool parser, when there is one.
    private func reply(_ text: String) -> [ReplyPiece] {
        guard parser != nil else { return text.isEmpty ? [] : [.text(text)] }
        return pieces(parser!.feed(text))
    }

    private func pieces(_ events: [ToolParseEvent]) -> [ReplyPiece] {
        events.map {
            switch $0 {
            case .content(let text): .text(text)
            case .reasoning(let text): .thinking(text)
            case .callStart(_, let id, let name): .callStart(ParsedToolCall(id: id, name: name, arguments: ""))
            case .callArguments(_, let piece): .arguments(piece)
            case .call(_, let call): .call(call)
            }
        }
    }

    /// The engine drops a matched stop string from the text but keeps its tokens: the
    /// decoded tokens go on past the text with the stop string that ended the reply.
    private func matchedStopSequence() -> String? {
        guard !stop.isEmpty else { return nil }
        let decoded = Array(tokenizer.decode(tokens, special: special).utf8)
        let shown = Array(rawText.utf8)
        guard decoded.count > shown.count, decoded.starts(with: shown) else { return nil }
        let rest = String(decoding: decoded[shown.count...], as: UTF8.self)
        return stop.filter { rest.contains($0) }
            .min { rest.range(of: $0)!.lowerBound < rest.range(of: $1)!.lowerBound }
    }
}

/// The whole of a reply, for non-streaming answers.
struct CollectedReply: Sendable {
    var pieces: [ReplyPiece] = []
    var outcome: ReplyOutcome

    /// All the text, all the thinking, and the calls in order.
    var text: String {
        pieces.reduce(into: "") { if case .text(let t) = $1 { $0 += t } }
    }
    var thinking: String {
        pieces.reduce(into: "") { if case .thinking(let t) = $1 { $0 += t } }
    }
    var calls: [ParsedToolCall] {
        pieces.compactMap { if case .call(let c) = $0 { c } else { nil } }
    }
}

extension OpenAIServer {
    /// A non-streaming answer rendered by `render` once the reply is complete (`renderFailure`
    /// when generation failed midway). As with chat completions, a space is written about once
    /// a second while waiting so a client that hung up is noticed and its sequence cancelled.
    func collectReply(_ reader: ReplyReader, handle: RequestHandle, started: ContinuousClock.Instant,
                      render: @escaping @Sendable (CollectedReply) -> JSONValue,
                      renderFailure: @escaping @Sendable (String) -> JSONValue) async throws -> Response {
        try await reader.awaitFirstEvent()
        let metrics = self.metrics
        let body = ResponseBody { writer in
            var completed = false
            defer { if !completed { handle.cancel() } }
            var pieces: [ReplyPiece] = []
            var lastWrite = ContinuousClock.now
            while let more = await reader.next() {
                pieces += more
                if ContinuousClock.now - lastWrite > .seconds(1) {
                    try await writer.write(ByteBuffer(string: " "))
                    lastWrite = .now
                }
            }
            metrics.requestFinished(.now - started)
            let result: JSONValue
            if let outcome = reader.outcome {
                result = render(CollectedReply(pieces: pieces, outcome: outcome))
            } else {
                result = renderFailure(reader.failure ?? "generation failed")
            }
            try await writer.write(ByteBuffer(string: result.compactText))
            completed = true
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: body)
    }
}

/// A server-sent event with a name (`event:`) as the Anthropic and Responses streams use.
func namedEvent(_ name: String, _ data: JSONValue) -> ByteBuffer {
    ByteBuffer(string: "event: \(name)\ndata: \(data.compactText)\n\n")
}

extension JSONValue {
    /// A function call's arguments as an object (the tool parser already checked the JSON).
    static func arguments(_ text: String) -> JSONValue {
        if let value = try? JSONValue(parsing: text), case .object = value { return value }
        return .object([:])
    }
}

extension CompletionRequest {
    /// A chat request that a translating API fills in field by field.
    init(model: String, messages: [ChatMessage]) {
        self.model = model
        input = .chat(messages)
    }
}
