import Testing
@testable import Server

/// gpt-oss replies (OpenAI harmony) read by their channels, whole and in pieces of any size.
@Suite struct HarmonyParserTests {
    struct Read: Equatable {
        var reasoning = "", content = ""
        var calls: [ParsedToolCall] = []
    }

    /// Feeds `text` in pieces of `size` characters; checks each call streams as start, pieces, whole.
    static func read(_ text: String, size: Int, splitsReasoning: Bool = true, parallel: Bool = true,
                     prefill: String = "") -> Read {
        var parser = ToolCallStreamParser(syntax: .harmony, allowsSeveralCalls: parallel, splitsReasoning: splitsReasoning,
                                          makeID: { "call_h" })
        var events = parser.feed(prefill)
        var rest = Substring(text)
        while !rest.isEmpty {
            events += parser.feed(String(rest.prefix(size)))
            rest = rest.dropFirst(size)
        }
        events += parser.finish()
        var r = Read()
        var open: [Int: ParsedToolCall] = [:]
        for event in events {
            switch event {
            case .reasoning(let s): r.reasoning += s
            case .content(let s): r.content += s
            case .callStart(let index, let id, let name): open[index] = ParsedToolCall(id: id, name: name, arguments: "")
            case .callArguments(let index, let piece): open[index]?.arguments += piece
            case .call(let index, let call):
                #expect(open[index] == call, "the whole call is its streamed pieces")
                r.calls.append(call)
            }
        }
        return r
    }

    static let answer = "<|channel|>analysis<|message|>User asks 2+2. Simple.<|end|><|start|>assistant<|channel|>final<|message|>It is 4."
    static let call = "<|channel|>analysis<|message|>Need the weather tool.<|end|>"
        + "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}"

    @Test(arguments: [1, 2, 5, 11, 1000])
    func channelsWhateverThePieceSize(_ size: Int) {
        var r = Self.read(Self.answer, size: size)
        #expect(r == Read(reasoning: "User asks 2+2. Simple.", content: "It is 4."))
        r = Self.read(Self.call, size: size)
        #expect(r.reasoning == "Need the weather tool." && r.content == "")
        #expect(r.calls == [ParsedToolCall(id: "call_h", name: "get_weather", arguments: #"{"city": "Paris"}"#)])
        // the recipient before the channel, as the template writes earlier calls
        r = Self.read("<|start|>assistant to=functions.get_time<|channel|>commentary json<|message|>{}", size: size)
        #expect(r.calls.map(\.name) == ["get_time"] && r.calls[0].arguments == "{}")
        // the reply continues the prompt's `<|start|>assistant` with the recipient, as earlier calls are written
        r = Self.read(" to=functions.get_time<|channel|>commentary json<|message|>{\"zone\": \"CET\"}", size: size)
        #expect(r.calls.map(\.name) == ["get_time"] && r.calls[0].arguments == #"{"zone": "CET"}"# && r.content == "")
        #expect(Self.read("today", size: size) == Read(content: "today"), "text that only starts like a recipient")
        #expect(Self.read("<|message|>Hi", size: size) == Read(content: "Hi"), "the primed header ended at once")
        // two calls, each ended by <|call|> in the text; without parallel calls only the first
        let two = Self.call + "<|call|><|start|>assistant<|channel|>commentary to=functions.get_time <|constrain|>json<|message|>{\"zone\": \"CET\"}<|call|>"
        #expect(Self.read(two, size: size).calls.map(\.name) == ["get_weather", "get_time"])
        #expect(Self.read(two, size: size, parallel: false).calls.map(\.name) == ["get_weather"])
        // plain text without channels is content; a lone marker prefix too
        #expect(Self.read("Just text, <| not a marker.", size: size) == Read(content: "Just text, <| not a marker."))
        // reasoning_format none: the analysis message stays in the content, markers and all
        r = Self.read(Self.answer, size: size, splitsReasoning: false)
        #expect(r.reasoning == "" && r.content == "<|channel|>analysis<|message|>User asks 2+2. Simple.<|end|>It is 4.")
        // a forced call: the header is the prefill, the reply only the arguments
        r = Self.read(#"{"city": "Oslo"}"#, size: size,
                      prefill: "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>")
        #expect(r.calls.map(\.arguments) == [#"{"city": "Oslo"}"#] && r.content == "")
    }

    /// A forced call's header is primed before the reply, where events are dropped: the call
    /// is announced with its first piece.
    @Test func aPrimedCallIsAnnouncedWithItsArguments() {
        var parser = ToolCallStreamParser(syntax: .harmony, makeID: { "call_h" })
        #expect(parser.feed("<|channel|>commentary to=functions.f <|constrain|>json<|message|>").isEmpty)
        #expect(parser.feed("{}") == [.callStart(index: 0, id: "call_h", name: "f"), .callArguments(index: 0, "{}")])
        #expect(parser.finish() == [.call(index: 0, ParsedToolCall(id: "call_h", name: "f", arguments: "{}"))])
    }

    @Test func markersNeverReachTheContentMidStream() {
        var parser = ToolCallStreamParser(syntax: .harmony, makeID: { "call_h" })
        var content = ""
        for piece in ["<|chan", "nel|>final<|mess", "age|>Hi", " there<|", "end|>"] {
            for case .content(let text) in parser.feed(piece) { content += text }
            #expect(!content.contains("<|"), "after \(piece)")
        }
        for case .content(let text) in parser.finish() { content += text }
        #expect(content == "Hi there")
    }

    @Test func detection() {
        #expect(ToolCallSyntax.detect(templateSource: "{{- '<|start|>assistant<|channel|>final<|message|>' }}") == .harmony)
    }
}
