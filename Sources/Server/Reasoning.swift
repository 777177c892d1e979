import Foundation

/// Where a chat reply's thinking goes (`--reasoning-format`, or a request's `reasoning_format`).
public enum ReasoningFormat: String, Sendable, CaseIterable {
    /// Left in `content`, markers and all.
    case none
    /// A leading `<think>…</think>` block goes to `reasoning_content` (DeepSeek's API shape,
    /// which Qwen3 and the R1 distills use), the rest to `content`.
    case deepseek
}

/// Splits a reply, piece by piece as it streams, into reasoning and content: a thinking block
/// at the start of the reply (or the whole reply up to the closing marker when the prompt
/// already opened it) is reasoning, everything after it content. Text that could still be a
/// marker is held back until it is decided, so markers never reach either side.
public struct ReasoningSplitter: Sendable {
    public enum Piece: Sendable, Equatable {
        case reasoning(String)
        case content(String)
    }

    let opening: String
    let closing: String
    private enum Mode: Sendable { case start, reasoning, afterReasoning, content }
    private var mode: Mode
    private var pending = ""

    /// `startsInside`: the generation prompt ended with the opening marker.
    public init(startsInside: Bool = false, opening: String = "<think>", closing: String = "</think>") {
        self.opening = opening
        self.closing = closing
        mode = startsInside ? .reasoning : .start
    }

    /// Whether a rendered prompt leaves the model inside a thinking block: it ends with the
    /// opening marker (and whitespace) after the last closing one.
    public static func promptOpensThinking(_ prompt: String, opening: String = "<think>", closing: String = "</think>") -> Bool {
        let trimmed = prompt.trimmingCharacters(in: .whitespacesAndNewlines)
        return trimmed.hasSuffix(opening)
    }

    public mutating func feed(_ text: String) -> [Piece] {
        pending += text
        var pieces: [Piece] = []
        while true {
            switch mode {
            case .start:
                let start = pending.drop(while: \.isWhitespace)
                if start.isEmpty { return pieces }
                if opening.hasPrefix(start) && start.count < opening.count { return pieces }  // maybe the marker
                if start.hasPrefix(opening) {
                    pending = String(start.dropFirst(opening.count))
                    mode = .reasoning
                } else {
                    mode = .content
                }
            case .reasoning:
                if let range = pending.range(of: closing) {
                    append(.reasoning(String(pending[..<range.lowerBound])), to: &pieces)
                    pending = String(pending[range.upperBound...])
                    mode = .afterReasoning
                    continue
                }
                let held = ToolCallStreamParser.longestSuffixThatIsPrefix(of: closing, in: pending)
                append(.reasoning(String(pending.dropLast(held))), to: &pieces)
                pending = String(pending.suffix(held))
                return pieces
            case .afterReasoning:
                // the blank lines between the thinking block and the answer belong to neither
                pending = String(pending.drop(while: \.isWhitespace))
                if pending.isEmpty { return pieces }
                mode = .content
            case .content:
                append(.content(pending), to: &pieces)
                pending = ""
                return pieces
            }
        }
    }

    /// Whatever is still held back, at the end of the reply: an unclosed thinking block is
    /// reasoning; a lone marker prefix is content.
    public mutating func finish() -> [Piece] {
        var pieces: [Piece] = []
        switch mode {
        case .reasoning: append(.reasoning(pending), to: &pieces)
        case .start, .content: append(.content(pending), to: &pieces)
        case .afterReasoning: break
        }
        pending = ""
        mode = .content
        return pieces
    }

    private func append(_ piece: Piece, to pieces: inout [Piece]) {
        switch piece {
        case .reasoning(let s) where s.isEmpty, .content(let s) where s.isEmpty: return
        default: pieces.append(piece)
        }
    }
}
