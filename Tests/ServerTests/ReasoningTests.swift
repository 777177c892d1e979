import Testing
@testable import Server

@Suite struct ReasoningSplitterTests {
    /// Feeds `text` in pieces of `size` characters and joins what comes out.
    static func split(_ text: String, size: Int, startsInside: Bool = false) -> (reasoning: String, content: String) {
        var splitter = ReasoningSplitter(startsInside: startsInside)
        var pieces: [ReasoningSplitter.Piece] = []
        var rest = Substring(text)
        while !rest.isEmpty {
            pieces += splitter.feed(String(rest.prefix(size)))
            rest = rest.dropFirst(size)
        }
        pieces += splitter.finish()
        var reasoning = "", content = ""
        for piece in pieces {
            switch piece {
            case .reasoning(let s): reasoning += s
            case .content(let s): content += s
            }
        }
        return (reasoning, content)
    }

    @Test(arguments: [1, 2, 3, 7, 1000])
    func splitsWhateverThePieceSize(_ size: Int) {
        var r = Self.split("<think>\nThe user wants 2+2.\n</think>\n\nIt is 4.", size: size)
        #expect(r.reasoning == "\nThe user wants 2+2.\n" && r.content == "It is 4.")
        // the prompt opened the block: everything up to the closing marker is thinking
        r = Self.split("Just 4 </thi", size: size, startsInside: true)
        #expect(r.reasoning == "Just 4 </thi" && r.content == "")
        r = Self.split("hmm</think>4", size: size, startsInside: true)
        #expect(r.reasoning == "hmm" && r.content == "4")
        // no thinking block: all content, a marker later on is left alone
        r = Self.split("It is 4. <think>not thinking</think>", size: size)
        #expect(r.reasoning == "" && r.content == "It is 4. <think>not thinking</think>")
        // a reply that is only a marker prefix is content
        r = Self.split("<thi", size: size)
        #expect(r.reasoning == "" && r.content == "<thi")
        // unclosed: all reasoning
        r = Self.split("  <think>still going", size: size)
        #expect(r.reasoning == "still going" && r.content == "")
    }

    @Test func promptThatOpensThinking() {
        #expect(ReasoningSplitter.promptOpensThinking("<|im_start|>assistant\n<think>\n"))
        #expect(!ReasoningSplitter.promptOpensThinking("<|im_start|>assistant\n<think>\n\n</think>\n\n"))
        #expect(!ReasoningSplitter.promptOpensThinking("<|im_start|>assistant\n"))
    }
}
