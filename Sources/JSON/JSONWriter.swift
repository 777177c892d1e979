/// How `JSONValue.jsonString(_:)` lays out its text: the options of Python's `json.dumps`
/// that transformers' `tojson` filter exposes, plus how numbers are written.
public struct JSONFormat: Sendable {
    public enum Numbers: Sendable {
        /// Each number's text as parsed or constructed (`2.50` stays `2.50`).
        case asWritten
        /// As Python writes the value `json.loads` reads: integers as integers, everything
        /// else as `repr(float)` (`2.50` → `2.5`, `1e-5` → `1e-05`).
        case python
    }

    public var indent: Int?
    public var itemSeparator: String
    public var keySeparator: String
    public var sortKeys = false
    /// Non-ASCII characters as `\uXXXX` escapes (surrogate pairs beyond the BMP).
    public var ensureASCII = false
    public var numbers: Numbers

    /// `json.dumps(value, ensure_ascii=False, indent=indent)`: `", "` / `": "` separators
    /// without indent, `","` and newlines with it.
    public init(indent: Int? = nil) {
        self.indent = indent
        itemSeparator = indent == nil ? ", " : ","
        keySeparator = ": "
        numbers = .python
    }

    /// No whitespace at all, numbers as written: the form a grammar-constrained model must
    /// produce for a schema's `enum`/`const`, and the server's response bodies.
    public static let compact: JSONFormat = {
        var f = JSONFormat()
        f.itemSeparator = ","
        f.keySeparator = ":"
        f.numbers = .asWritten
        return f
    }()
}

extension JSONValue {
    /// Compact JSON text (`JSONFormat.compact`): no whitespace, strings escaped minimally
    /// (`"`, `\`, control characters; everything else as raw UTF-8), numbers as written.
    public var compactText: String { jsonString(.compact) }

    /// Serialises like Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, which
    /// is what transformers' `tojson` filter does.
    public func jsonString(indent: Int? = nil) -> String {
        jsonString(JSONFormat(indent: indent))
    }

    public func jsonString(_ format: JSONFormat) -> String {
        var out = ""
        Self.write(self, format, level: 0, into: &out)
        return out
    }

    /// `s` as a JSON string literal, quotes included (escaped as `compactText` escapes it).
    public static func encodeString(_ s: String) -> String {
        var out = ""
        writeString(s, ensureASCII: false, into: &out)
        return out
    }

    static func write(_ v: JSONValue, _ f: JSONFormat, level: Int, into out: inout String) {
        func newline(_ level: Int) {
            if let indent = f.indent { out += "\n" + String(repeating: " ", count: indent * level) }
        }
        switch v {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n):
            switch f.numbers {
            case .asWritten: out += n.text
            case .python:
                if n.isInteger, let i = n.intValue { out += String(i) } else { out += pythonFloatRepr(n.doubleValue ?? .nan, json: true) }
            }
        case .string(let s): writeString(s, ensureASCII: f.ensureASCII, into: &out)
        case .array(let items):
            if items.isEmpty { out += "[]"; return }
            out += "["
            for (n, item) in items.enumerated() {
                if n > 0 { out += f.itemSeparator }
                newline(level + 1)
                write(item, f, level: level + 1, into: &out)
            }
            newline(level)
            out += "]"
        case .object(let obj):
            if obj.isEmpty { out += "{}"; return }
            out += "{"
            var pairs = Array(obj)
            if f.sortKeys { pairs.sort { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) } }
            for (n, (k, item)) in pairs.enumerated() {
                if n > 0 { out += f.itemSeparator }
                newline(level + 1)
                writeString(k, ensureASCII: f.ensureASCII, into: &out)
                out += f.keySeparator
                write(item, f, level: level + 1, into: &out)
            }
            newline(level)
            out += "}"
        }
    }

    static func writeString(_ s: String, ensureASCII: Bool, into out: inout String) {
        func hex4(_ v: UInt32) {
            let h = String(v, radix: 16)
            out += "\\u" + String(repeating: "0", count: 4 - h.count) + h
        }
        out += "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            default:
                if u.value < 0x20 || (ensureASCII && u.value > 0x7E) {
                    if u.value > 0xFFFF {
                        let v = u.value - 0x10000
                        hex4(0xD800 + (v >> 10))
                        hex4(0xDC00 + (v & 0x3FF))
                    } else {
                        hex4(u.value)
                    }
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        out += "\""
    }
}
