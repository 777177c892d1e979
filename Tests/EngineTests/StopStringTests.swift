import Testing
@testable import Engine

@Suite struct StopStringTests {
    @Test func stopInsideOnePiece() {
        var m = StopStringMatcher(stopStrings: ["STOP"])
        #expect(m.feed("hello STOP world") == .init(text: "hello ", stop: "STOP"))
        #expect(m.isStopped)
        #expect(m.feed("more") == .init(text: "", stop: nil))
    }

    @Test func stopAcrossPieces() {
        var m = StopStringMatcher(stopStrings: ["</answer>"])
        #expect(m.feed("42</an") == .init(text: "42", stop: nil))
        #expect(m.heldBackCount == 4)
        #expect(m.feed("sw") == .init(text: "", stop: nil))
        #expect(m.feed("er> tail") == .init(text: "", stop: "</answer>"))
    }

    @Test func falseAlarmIsReleased() {
        var m = StopStringMatcher(stopStrings: ["<end>"])
        #expect(m.feed("a <e") == .init(text: "a ", stop: nil))
        #expect(m.feed("x") == .init(text: "<ex", stop: nil))
        #expect(m.feed("<") == .init(text: "", stop: nil))
        #expect(m.flush() == "<")
    }

    @Test func overlappingPrefixes() {
        // "aab" in "aaab": the held "aa" must shrink to "a" rather than be dropped.
        var m = StopStringMatcher(stopStrings: ["aab"])
        #expect(m.feed("xa") == .init(text: "x", stop: nil))
        #expect(m.feed("a") == .init(text: "", stop: nil))
        #expect(m.feed("a") == .init(text: "a", stop: nil))
        #expect(m.feed("b!") == .init(text: "", stop: "aab"))
    }

    @Test func earliestStopWins() {
        var m = StopStringMatcher(stopStrings: ["world", "lo w"])
        #expect(m.feed("hello world") == .init(text: "hel", stop: "lo w"))
    }

    @Test func utf8SplitAcrossRawBytes() {
        var m = StopStringMatcher(stopStrings: ["€!"])
        let euro: [UInt8] = [0xE2, 0x82, 0xAC]
        #expect(m.feed(bytes: [0x61, euro[0]]) == .init(text: "a", stop: nil))
        #expect(m.feed(bytes: [euro[1]]) == .init(text: "", stop: nil))
        #expect(m.feed(bytes: [euro[2]]) == .init(text: "", stop: nil))  // could be "€!"
        #expect(m.feed(bytes: Array("?".utf8)) == .init(text: "€?", stop: nil))
        var n = StopStringMatcher(stopStrings: ["x"])
        #expect(n.feed(bytes: [0xC3]) == .init(text: "", stop: nil))
        #expect(n.feed(bytes: [0xA9]) == .init(text: "é", stop: nil))
    }

    @Test func emptyStopListPassesEverythingThrough() {
        var m = StopStringMatcher(stopStrings: ["", ""])
        #expect(m.feed("anything") == .init(text: "anything", stop: nil))
        #expect(m.flush() == "")
    }

    @Test func randomSplitsGiveTheSameResult() {
        let stops = ["<|end|>", "\n\nUser:", "ééé"]
        let texts = [
            "The answer is 4.<|end|>garbage",
            "line\n\nUse\n\nUser: next",
            "no stop here <|en d|> \n\nUse",
            "accents éé ééé after",
        ]
        var rng = Xoshiro256StarStar(seed: 9)
        for text in texts {
            let bytes = Array(text.utf8)
            // Expected: everything before the earliest stop.
            var expectedText = text
            var expectedStop: String? = nil
            var earliest = bytes.count
            for s in stops {
                if let r = text.range(of: s) {
                    let offset = text.utf8.distance(from: text.startIndex, to: r.lowerBound)
                    if offset < earliest {
                        earliest = offset
                        expectedText = String(text[..<r.lowerBound])
                        expectedStop = s
                    }
                }
            }
            for _ in 0..<50 {
                var m = StopStringMatcher(stopStrings: stops)
                var out = ""
                var stop: String? = nil
                var i = 0
                while i < bytes.count && stop == nil {
                    let n = 1 + Int(rng.next() % 5)
                    let piece = bytes[i..<min(bytes.count, i + n)]
                    i += n
                    let r = m.feed(bytes: piece)
                    out += r.text
                    stop = r.stop
                }
                if stop == nil { out += m.flush() }
                #expect(out == expectedText)
                #expect(stop == expectedStop)
            }
        }
    }
}
