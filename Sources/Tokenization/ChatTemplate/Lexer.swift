import Foundation

/// A position in the template source (1-based line and column, in Unicode scalars).
struct SourcePos: Sendable, Equatable {
    var line: Int
    var column: Int
}

enum TokenKind: Equatable {
    case text(String)
    case outputBegin        // {{
    case outputEnd          // }}
    case statementBegin     // {%
    case statementEnd       // %}
    case name(String)
    case string(String)
    case int(Int)
    case float(Double)
    case op(String)
    case end
}

struct Token {
    var kind: TokenKind
    var pos: SourcePos
}

/// Splits template source into text and tag tokens, applying Jinja's whitespace rules as
/// transformers configures them: `trim_blocks` (drop the newline after a block or comment tag),
/// `lstrip_blocks` (drop spaces and tabs before a block or comment tag that starts a line),
/// `-` (strip all whitespace on that side), `+` (disable the two block options), newlines
/// normalised to `\n`, and one trailing newline of the template dropped.
struct Lexer {
    private let s: [Unicode.Scalar]
    private var i = 0
    private var lineStarts: [Int] = [0]
    private(set) var tokens: [Token] = []

    static let operators: [String] = [
        "//", "**", "==", "!=", "<=", ">=",
        "+", "-", "*", "/", "%", "~", "<", ">", "=", "|", ".", ",", ":", "(", ")", "[", "]", "{", "}",
    ]

    init(source: String) {
        s = Array(source.unicodeScalars)
        for (n, c) in s.enumerated() where c == "\n" { lineStarts.append(n + 1) }
    }

    func pos(_ offset: Int) -> SourcePos {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return SourcePos(line: lo + 1, column: offset - lineStarts[lo] + 1)
    }

    private func error(_ message: String, at offset: Int) -> ChatTemplateError {
        let p = pos(offset)
        return ChatTemplateError(kind: .syntax, message: message, line: p.line, column: p.column)
    }

    private func at(_ offset: Int, _ text: String) -> Bool {
        var k = offset
        for c in text.unicodeScalars {
            guard k < s.count, s[k] == c else { return false }
            k += 1
        }
        return true
    }

    private static func isSpace(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\n" || c == "\r" }

    mutating func tokenize() throws -> [Token] {
        var end = s.count
        if end > 0, s[end - 1] == "\n" { end -= 1; if end > 0, s[end - 1] == "\r" { end -= 1 } }
        else if end > 0, s[end - 1] == "\r" { end -= 1 }

        var textStart = 0
        var stripLeading = false     // previous tag ended with '-'
        var trimNewline = false      // previous tag was a block/comment (trim_blocks)
        while i < end {
            // Find the next tag opening.
            var k = i
            var found = -1
            while k + 1 < end {
                if s[k] == "{", s[k + 1] == "{" || s[k + 1] == "%" || s[k + 1] == "#" { found = k; break }
                k += 1
            }
            let tagStart = found >= 0 ? found : end
            let kind: Unicode.Scalar = found >= 0 ? s[found + 1] : " "
            let marker: Unicode.Scalar? = found >= 0 && found + 2 < end ? s[found + 2] : nil
            let stripBefore = found >= 0 && marker == "-"
            let lstrip = found >= 0 && (kind == "%" || kind == "#") && marker != "+" && !stripBefore

            // The text between the previous tag and this one.
            var a = textStart, b = tagStart
            if stripLeading {
                while a < b, Lexer.isSpace(s[a]) { a += 1 }
            } else if trimNewline {
                if a < b, s[a] == "\n" { a += 1 } else if a + 1 < b, s[a] == "\r", s[a + 1] == "\n" { a += 2 }
            }
            if stripBefore {
                while b > a, Lexer.isSpace(s[b - 1]) { b -= 1 }
            } else if lstrip {
                var c = tagStart
                while c > textStart, s[c - 1] == " " || s[c - 1] == "\t" { c -= 1 }
                if c == 0 || (c > 0 && s[c - 1] == "\n") || (c > 0 && s[c - 1] == "\r") { b = min(b, c) }
            }
            if a < b {
                var text = String(String.UnicodeScalarView(s[a..<b]))
                if text.contains("\r") {
                    text = text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
                }
                tokens.append(Token(kind: .text(text), pos: pos(a)))
            }
            if found < 0 { break }

            i = found + 2
            if marker == "-" || marker == "+" { i += 1 }
            stripLeading = false
            trimNewline = false
            switch kind {
            case "#":
                var k = i
                while k + 1 < s.count, !(s[k] == "#" && s[k + 1] == "}") { k += 1 }
                guard k + 1 < s.count else { throw error("unclosed comment", at: found) }
                let closeMarker = k > i ? s[k - 1] : nil
                if closeMarker == "-" { stripLeading = true } else if closeMarker != "+" { trimNewline = true }
                i = k + 2
            case "{":
                tokens.append(Token(kind: .outputBegin, pos: pos(found)))
                let closeMarker = try expressionTokens(close: "}}", opener: found)
                tokens.append(Token(kind: .outputEnd, pos: pos(i - 2)))
                if closeMarker == "-" { stripLeading = true }
            default:
                tokens.append(Token(kind: .statementBegin, pos: pos(found)))
                let first = tokens.count
                let closeMarker = try expressionTokens(close: "%}", opener: found)
                if closeMarker == "-" { stripLeading = true } else if closeMarker != "+" { trimNewline = true }
                tokens.append(Token(kind: .statementEnd, pos: pos(i - 2)))
                if tokens.count == first + 2, case .name("raw") = tokens[first].kind {
                    tokens.removeLast(3)
                    try rawBlock(opener: found, stripLeading: &stripLeading, trimNewline: &trimNewline, end: end)
                }
            }
            textStart = i
        }
        tokens.append(Token(kind: .end, pos: pos(end)))
        return tokens
    }

    /// `{% raw %}...{% endraw %}`: everything up to the matching end tag is text.
    private mutating func rawBlock(opener: Int, stripLeading: inout Bool, trimNewline: inout Bool, end: Int) throws {
        var contentStart = i
        if stripLeading { while contentStart < s.count, Lexer.isSpace(s[contentStart]) { contentStart += 1 } }
        else if trimNewline, contentStart < s.count, s[contentStart] == "\n" { contentStart += 1 }
        var k = contentStart
        while k + 1 < s.count {
            if s[k] == "{", s[k + 1] == "%" {
                var j = k + 2
                let strip = j < s.count && s[j] == "-"
                if j < s.count, s[j] == "-" || s[j] == "+" { j += 1 }
                while j < s.count, Lexer.isSpace(s[j]) { j += 1 }
                if at(j, "endraw") {
                    j += 6
                    while j < s.count, Lexer.isSpace(s[j]) { j += 1 }
                    var closeMarker: Unicode.Scalar? = nil
                    if j < s.count, s[j] == "-" || s[j] == "+" { closeMarker = s[j]; j += 1 }
                    if at(j, "%}") {
                        var b = k
                        if strip { while b > contentStart, Lexer.isSpace(s[b - 1]) { b -= 1 } }
                        if contentStart < b {
                            tokens.append(Token(kind: .text(String(String.UnicodeScalarView(s[contentStart..<b]))), pos: pos(contentStart)))
                        }
                        i = j + 2
                        stripLeading = closeMarker == "-"
                        trimNewline = closeMarker == nil
                        return
                    }
                }
            }
            k += 1
        }
        throw error("unclosed raw block (missing {% endraw %})", at: opener)
    }

    /// Tokens of an expression or statement up to `close` (`}}` or `%}`), outside brackets.
    /// Returns the whitespace marker before the closing delimiter (`-`, `+` or nil).
    @discardableResult
    private mutating func expressionTokens(close: String, opener: Int) throws -> Unicode.Scalar? {
        var depth: [Unicode.Scalar] = []
        let closeScalars = Array(close.unicodeScalars)
        while true {
            while i < s.count, Lexer.isSpace(s[i]) { i += 1 }
            guard i < s.count else {
                throw error(close == "}}" ? "unclosed '{{' (missing '}}')" : "unclosed '{%' (missing '%}')", at: opener)
            }
            if depth.isEmpty {
                if s[i] == closeScalars[0], i + 1 < s.count, s[i + 1] == closeScalars[1] { i += 2; return nil }
                if s[i] == "-" || s[i] == "+", i + 2 < s.count, s[i + 1] == closeScalars[0], s[i + 2] == closeScalars[1] {
                    i += 3
                    return s[i - 3]
                }
            }
            let start = i
            let c = s[i]
            if c == "_" || c.properties.isAlphabetic && c.isASCII {
                while i < s.count, s[i] == "_" || (s[i].isASCII && (s[i].properties.isAlphabetic || s[i].properties.numericType != nil)) { i += 1 }
                tokens.append(Token(kind: .name(String(String.UnicodeScalarView(s[start..<i]))), pos: pos(start)))
            } else if c.isASCII, c.properties.numericType != nil {
                try number(start)
            } else if c == "'" || c == "\"" {
                try stringLiteral(quote: c)
            } else {
                var matched: String? = nil
                for op in Lexer.operators where at(i, op) { matched = op; break }
                guard let op = matched else { throw error("unexpected character '\(Character(c))'", at: i) }
                if op == "(" || op == "[" || op == "{" { depth.append(c) }
                if op == ")" || op == "]" || op == "}" {
                    let want: Unicode.Scalar = op == ")" ? "(" : op == "]" ? "[" : "{"
                    guard depth.last == want else { throw error("unexpected '\(op)'", at: i) }
                    depth.removeLast()
                }
                i += op.unicodeScalars.count
                tokens.append(Token(kind: .op(op), pos: pos(start)))
            }
        }
    }

    private static func isDigit(_ c: Unicode.Scalar) -> Bool { c >= "0" && c <= "9" }

    private mutating func number(_ start: Int) throws {
        while i < s.count, Lexer.isDigit(s[i]) || s[i] == "_" { i += 1 }
        var isFloat = false
        if i + 1 < s.count, s[i] == ".", Lexer.isDigit(s[i + 1]) {
            isFloat = true
            i += 1
            while i < s.count, Lexer.isDigit(s[i]) || s[i] == "_" { i += 1 }
        }
        if i < s.count, s[i] == "e" || s[i] == "E" {
            var j = i + 1
            if j < s.count, s[j] == "+" || s[j] == "-" { j += 1 }
            if j < s.count, Lexer.isDigit(s[j]) {
                isFloat = true
                i = j
                while i < s.count, Lexer.isDigit(s[i]) { i += 1 }
            }
        }
        let text = String(String.UnicodeScalarView(s[start..<i])).replacingOccurrences(of: "_", with: "")
        if isFloat {
            guard let v = Double(text) else { throw error("invalid number '\(text)'", at: start) }
            tokens.append(Token(kind: .float(v), pos: pos(start)))
        } else {
            guard let v = Int(text) else { throw error("integer literal too large '\(text)'", at: start) }
            tokens.append(Token(kind: .int(v), pos: pos(start)))
        }
    }

    /// A Python-style string literal (Jinja decodes escapes like `unicode_escape`).
    private mutating func stringLiteral(quote: Unicode.Scalar) throws {
        let start = i
        i += 1
        var out = String.UnicodeScalarView()
        while true {
            guard i < s.count else { throw error("unterminated string literal", at: start) }
            let c = s[i]
            if c == quote { i += 1; break }
            if c != "\\" {
                if c == "\r" {
                    out.append("\n")
                    if i + 1 < s.count, s[i + 1] == "\n" { i += 1 }
                } else {
                    out.append(c)
                }
                i += 1
                continue
            }
            guard i + 1 < s.count else { throw error("unterminated string literal", at: start) }
            let e = s[i + 1]
            i += 2
            switch e {
            case "n": out.append("\n")
            case "t": out.append("\t")
            case "r": out.append("\r")
            case "\\": out.append("\\")
            case "'": out.append("'")
            case "\"": out.append("\"")
            case "a": out.append("\u{07}")
            case "b": out.append("\u{08}")
            case "f": out.append("\u{0C}")
            case "v": out.append("\u{0B}")
            case "\n": break
            case "0"..."7":
                var v = e.value - 48
                var n = 1
                while n < 3, i < s.count, s[i] >= "0", s[i] <= "7" { v = v * 8 + s[i].value - 48; i += 1; n += 1 }
                out.append(Unicode.Scalar(v) ?? "\u{FFFD}")
            case "x", "u", "U":
                let len = e == "x" ? 2 : e == "u" ? 4 : 8
                guard i + len <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[i..<i + len])), radix: 16),
                    let scalar = Unicode.Scalar(v)
                else { throw error("invalid \\\(e) escape in string literal", at: i - 2) }
                out.append(scalar)
                i += len
            default:
                out.append("\\")
                out.append(e)
            }
        }
        tokens.append(Token(kind: .string(String(out)), pos: pos(start)))
    }
}
