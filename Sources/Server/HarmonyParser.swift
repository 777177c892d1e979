/// Reads a gpt-oss reply (OpenAI's harmony format) as it streams. The reply is a series of
/// messages, each a header up to `<|message|>` and a body up to `<|end|>` (or the next
/// header, or the end of the reply, where `<|call|>` and `<|return|>` end generation):
///
///     <|channel|>analysis<|message|>thinking<|end|>
///     <|start|>assistant<|channel|>final<|message|>the answer
///     <|start|>assistant<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{"arguments"}
///
/// Bodies of the analysis channel are reasoning, a body addressed `to=functions.NAME` is a
/// call of NAME with the body as its arguments, every other body is content. The prompt ends
/// with `<|start|>assistant`, so a reply may also start in that header with its recipient
/// (` to=functions.NAME<|channel|>commentary json<|message|>`, as the template writes earlier
/// calls). Text that could still be a marker is held back, so markers never reach the content.
struct HarmonyStreamParser: Sendable {
    private enum Body: Sendable {
        case reasoning, content
        /// The analysis channel, left in the content markers and all (`reasoning_format: none`).
        case rawReasoning
        /// A call; it is announced with its first piece (a forced call's header is primed
        /// before the reply, where events are not sent).
        case call(index: Int, ParsedToolCall)
        /// A call past the first without parallel calls.
        case dropped
    }
    private enum Mode: Sendable {
        /// Between messages: a header may come, or plain text.
        case expectingHeader
        case header
        case body(Body)
        /// Text outside the message structure.
        case plain
    }

    static let headerStarts = ["<|start|>", "<|channel|>"]
    /// What may also start the reply's first header: the recipient after the primed role, or
    /// the header's end at once.
    static let replyHeaderStarts = headerStarts + ["to=", message]
    static let bodyEnds = ["<|end|>", "<|call|>", "<|return|>"]
    static let message = "<|message|>"
    /// Longest header read before the text is taken as plain instead.
    static let maxHeaderLength = 256

    private var mode = Mode.expectingHeader
    /// Nothing of the reply is decided yet: it may continue the primed header.
    private var atReplyStart = true
    private var pending = ""
    /// The open call's arguments so far, and whether its start was reported.
    private var arguments = ""
    private var announced = false
    private(set) var callCount = 0
    private let splitsReasoning: Bool
    private let allowsSeveralCalls: Bool
    private let makeID: @Sendable () -> String

    init(splitsReasoning: Bool, allowsSeveralCalls: Bool, makeID: @escaping @Sendable () -> String) {
        self.splitsReasoning = splitsReasoning
        self.allowsSeveralCalls = allowsSeveralCalls
        self.makeID = makeID
    }

    mutating func feed(_ text: String) -> [ToolParseEvent] {
        pending += text
        var events: [ToolParseEvent] = []
        while true {
            switch mode {
            case .expectingHeader:
                let start = pending.drop(while: \.isWhitespace)
                if start.isEmpty { return events }
                let starts = atReplyStart ? Self.replyHeaderStarts : Self.headerStarts
                if starts.contains(where: { $0.hasPrefix(start) && start.count < $0.count }) { return events }
                pending = String(start)
                atReplyStart = false
                mode = starts.contains(where: { start.hasPrefix($0) }) ? .header : .plain
            case .header:
                guard let range = pending.range(of: Self.message) else {
                    if pending.count > Self.maxHeaderLength { mode = .plain; continue }
                    return events
                }
                let header = String(pending[..<range.lowerBound])
                pending = String(pending[range.upperBound...])
                mode = .body(openBody(header: header, into: &events))
            case .body(let body):
                let ends = Self.bodyEnds + Self.headerStarts
                if case let (range, marker)? = Self.firstMarker(ends, in: pending) {
                    emit(String(pending[..<range.lowerBound]), body: body, into: &events)
                    let ended = Self.bodyEnds.contains(marker)
                    if case .rawReasoning = body, ended { events.append(.content(marker)) }
                    pending = String(pending[(ended ? range.upperBound : range.lowerBound)...])
                    close(body, into: &events)
                    mode = .expectingHeader
                    continue
                }
                let held = ends.map { ToolCallStreamParser.longestSuffixThatIsPrefix(of: $0, in: pending) }.max() ?? 0
                emit(String(pending.dropLast(held)), body: body, into: &events)
                pending = String(pending.suffix(held))
                return events
            case .plain:
                if case let (range, _)? = Self.firstMarker(Self.headerStarts, in: pending) {
                    emit(String(pending[..<range.lowerBound]), body: .content, into: &events)
                    pending = String(pending[range.lowerBound...])
                    mode = .header
                    continue
                }
                let held = Self.headerStarts.map { ToolCallStreamParser.longestSuffixThatIsPrefix(of: $0, in: pending) }.max() ?? 0
                emit(String(pending.dropLast(held)), body: .content, into: &events)
                pending = String(pending.suffix(held))
                return events
            }
        }
    }

    /// Whatever is held back, at the end of the reply: an open body ends here (a call's
    /// `<|call|>` ends generation); an unfinished header is dropped.
    mutating func finish() -> [ToolParseEvent] {
        var events: [ToolParseEvent] = []
        switch mode {
        case .body(let body):
            emit(pending, body: body, into: &events)
            close(body, into: &events)
        case .plain, .expectingHeader:
            emit(pending, body: .content, into: &events)
        case .header:
            break
        }
        pending = ""
        mode = .expectingHeader
        return events
    }

    /// What a header opens: `<|channel|>NAME` names the channel, `to=RECIPIENT` the addressee.
    private mutating func openBody(header: String, into events: inout [ToolParseEvent]) -> Body {
        let channel = Self.field(after: "<|channel|>", in: header)
        if let recipient = Self.field(after: "to=", in: header), recipient.hasPrefix("functions.") {
            guard allowsSeveralCalls || callCount == 0 else { return .dropped }
            let call = ParsedToolCall(id: makeID(), name: String(recipient.dropFirst("functions.".count)), arguments: "")
            callCount += 1
            announced = false
            return .call(index: callCount - 1, call)
        }
        guard channel == "analysis" else { return .content }
        guard splitsReasoning else {
            events.append(.content(header + Self.message))
            return .rawReasoning
        }
        return .reasoning
    }

    private mutating func emit(_ text: String, body: Body, into events: inout [ToolParseEvent]) {
        guard !text.isEmpty else { return }
        switch body {
        case .reasoning: events.append(.reasoning(text))
        case .content, .rawReasoning: events.append(.content(text))
        case .call(let index, let call):
            announce(index, call, into: &events)
            arguments += text
            events.append(.callArguments(index: index, text))
        case .dropped: break
        }
    }

    /// Ends a body; a call is reported whole with the arguments its pieces carried.
    private mutating func close(_ body: Body, into events: inout [ToolParseEvent]) {
        guard case .call(let index, var call) = body else { return }
        announce(index, call, into: &events)
        call.arguments = arguments
        arguments = ""
        events.append(.call(index: index, call))
    }

    private mutating func announce(_ index: Int, _ call: ParsedToolCall, into events: inout [ToolParseEvent]) {
        guard !announced else { return }
        announced = true
        events.append(.callStart(index: index, id: call.id, name: call.name))
    }

    /// The word after `marker` in a header, up to whitespace or the next marker.
    static func field(after marker: String, in header: String) -> String? {
        guard let range = header.range(of: marker) else { return nil }
        let rest = header[range.upperBound...]
        let end = rest.firstIndex { $0.isWhitespace || $0 == "<" } ?? rest.endIndex
        let word = rest[..<end]
        return word.isEmpty ? nil : String(word)
    }

    /// The earliest of `markers` in `text`.
    static func firstMarker(_ markers: [String], in text: String) -> (Range<String.Index>, String)? {
        markers.compactMap { m in text.range(of: m).map { ($0, m) } }.min { $0.0.lowerBound < $1.0.lowerBound }
    }
}
