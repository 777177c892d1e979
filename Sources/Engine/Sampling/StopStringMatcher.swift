import Tokenization
/// Streaming stop-string detection.
///
/// Feed it the generated text piece by piece (as `String`s or as raw token bytes). Each call
/// returns the text that is safe to show now; a suffix that could still grow into a stop string
/// is held back until it either completes one (then it is dropped together with everything
/// after it) or stops matching (then it is released). Matching is on UTF-8 bytes, so stop
/// strings can straddle any piece boundary, including one inside a multi-byte character; raw
/// byte input that ends in the middle of a UTF-8 character is held back until the character
/// completes, so emitted text is never split inside a character.
///
///     var m = StopStringMatcher(stopStrings: ["</answer>"])
///     m.feed("42</an")   // .init(text: "42", stop: nil)
///     m.feed("swer> xx") // .init(text: "", stop: "</answer>")
public struct StopStringMatcher: Sendable {
    public struct Output: Sendable, Equatable {
        /// Text to emit now (everything before a stop string, when one was hit).
        public var text: String
        /// The stop string that was hit, if any. Once set, the matcher is `isStopped`.
        public var stop: String?

        public init(text: String, stop: String?) {
            self.text = text
            self.stop = stop
        }
    }

    public let stopStrings: [String]
    private let patterns: [[UInt8]]
    private var pending: [UInt8] = []
    /// The stop string that ended the stream, if any.
    public private(set) var matchedStop: String?

    public var isStopped: Bool { matchedStop != nil }

    /// Empty stop strings are ignored.
    public init(stopStrings: [String]) {
        let kept = stopStrings.filter { !$0.isEmpty }
        self.stopStrings = kept
        patterns = kept.map { Array($0.utf8) }
    }

    /// Number of bytes currently held back.
    public var heldBackCount: Int { pending.count }

    public mutating func feed(_ text: String) -> Output {
        feed(bytes: Array(text.utf8))
    }

    public mutating func feed(bytes: some Sequence<UInt8>) -> Output {
        guard matchedStop == nil else { return Output(text: "", stop: nil) }
        pending.append(contentsOf: bytes)

        // Earliest occurrence of any stop string (longest stop on a tie).
        var best: (start: Int, index: Int)? = nil
        for (k, pattern) in patterns.enumerated() {
            if let start = Self.firstOccurrence(of: pattern, in: pending) {
                if best == nil || start < best!.start
                    || (start == best!.start && pattern.count > patterns[best!.index].count) {
                    best = (start, k)
                }
            }
        }
        if let best {
            let text = String(decoding: pending[..<best.start], as: UTF8.self)
            pending.removeAll()
            matchedStop = stopStrings[best.index]
            return Output(text: text, stop: matchedStop)
        }

        // Hold back the longest suffix that is a proper prefix of some stop string…
        var hold = 0
        for pattern in patterns {
            let maxLength = min(pattern.count - 1, pending.count)
            if maxLength <= hold { continue }
            for length in stride(from: maxLength, to: hold, by: -1)
            where pending[(pending.count - length)...].elementsEqual(pattern[..<length]) {
                hold = length
                break
            }
        }
        // …and an unfinished UTF-8 character at the end.
        hold = max(hold, pending.count - StreamingDecoder.completePrefixLength(pending))
        let emitCount = pending.count - hold
        let text = String(decoding: pending[..<emitCount], as: UTF8.self)
        pending.removeFirst(emitCount)
        return Output(text: text, stop: nil)
    }

    /// Call at the end of generation: releases whatever was held back (a partial stop string
    /// that never completed). Invalid trailing bytes become U+FFFD.
    public mutating func flush() -> String {
        let text = String(decoding: pending, as: UTF8.self)
        pending.removeAll()
        return text
    }

    /// Forgets held text and any match.
    public mutating func reset() {
        pending.removeAll()
        matchedStop = nil
    }

    static func firstOccurrence(of pattern: [UInt8], in text: [UInt8]) -> Int? {
        guard !pattern.isEmpty, pattern.count <= text.count else { return nil }
        let first = pattern[0]
        var i = 0
        let last = text.count - pattern.count
        while i <= last {
            if text[i] == first {
                var j = 1
                while j < pattern.count && text[i + j] == pattern[j] { j += 1 }
                if j == pattern.count { return i }
            }
            i += 1
        }
        return nil
    }
}
