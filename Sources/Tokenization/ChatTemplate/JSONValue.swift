/// A JSON value whose objects keep their key order, as Python dicts do. Chat templates
/// serialise tools and tool-call arguments with `tojson`, and the model saw them in the order
/// they were written, so the order must survive.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }
}

/// An insertion-ordered string-keyed map.
public struct JSONObject: Sendable, Equatable, Sequence {
    public private(set) var keys: [String] = []
    private var storage: [String: JSONValue] = [:]

    public init() {}

    public init(_ pairs: [(String, JSONValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    public var count: Int { keys.count }

    public subscript(key: String) -> JSONValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }

    public func makeIterator() -> AnyIterator<(key: String, value: JSONValue)> {
        var i = 0
        return AnyIterator {
            guard i < keys.count else { return nil }
            defer { i += 1 }
            return (keys[i], storage[keys[i]]!)
        }
    }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) { self = .object(JSONObject(elements)) }
}

// MARK: - Parsing

public struct JSONParseError: Error, Sendable, CustomStringConvertible {
    public let offset: Int
    public let message: String
    public var description: String { "JSON error at byte \(offset): \(message)" }
}

extension JSONValue {
    /// Parses JSON text, keeping object key order.
    public init(parsing text: String) throws {
        var p = JSONTextParser(bytes: Array(text.utf8))
        p.skipSpace()
        let v = try p.value(depth: 0)
        p.skipSpace()
        guard p.i == p.bytes.count else { throw p.fail("unexpected trailing characters") }
        self = v
    }
}

private struct JSONTextParser {
    let bytes: [UInt8]
    var i = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    func fail(_ message: String) -> JSONParseError { JSONParseError(offset: i, message: message) }

    mutating func skipSpace() {
        while i < bytes.count, [0x20, 0x09, 0x0A, 0x0D].contains(bytes[i]) { i += 1 }
    }

    mutating func literal(_ word: String, _ v: JSONValue) throws -> JSONValue {
        let w = Array(word.utf8)
        guard i + w.count <= bytes.count, Array(bytes[i..<i + w.count]) == w else { throw fail("invalid literal") }
        i += w.count
        return v
    }

    mutating func value(depth: Int) throws -> JSONValue {
        guard depth < 512 else { throw fail("nesting too deep") }
        guard i < bytes.count else { throw fail("unexpected end of input") }
        switch bytes[i] {
        case UInt8(ascii: "n"): return try literal("null", .null)
        case UInt8(ascii: "t"): return try literal("true", .bool(true))
        case UInt8(ascii: "f"): return try literal("false", .bool(false))
        case UInt8(ascii: "\""): return .string(try string())
        case UInt8(ascii: "["):
            i += 1
            var items: [JSONValue] = []
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
            while true {
                skipSpace()
                items.append(try value(depth: depth + 1))
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated array") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "]") { i += 1; return .array(items) }
                throw fail("expected ',' or ']'")
            }
        case UInt8(ascii: "{"):
            i += 1
            var obj = JSONObject()
            skipSpace()
            if i < bytes.count, bytes[i] == UInt8(ascii: "}") { i += 1; return .object(obj) }
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: "\"") else { throw fail("expected a string key") }
                let key = try string()
                skipSpace()
                guard i < bytes.count, bytes[i] == UInt8(ascii: ":") else { throw fail("expected ':'") }
                i += 1
                skipSpace()
                obj[key] = try value(depth: depth + 1)
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated object") }
                if bytes[i] == UInt8(ascii: ",") { i += 1; continue }
                if bytes[i] == UInt8(ascii: "}") { i += 1; return .object(obj) }
                throw fail("expected ',' or '}'")
            }
        default:
            return try number()
        }
    }

    mutating func number() throws -> JSONValue {
        let start = i
        var isFloat = false
        if i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
        while i < bytes.count {
            let c = bytes[i]
            if c >= 0x30 && c <= 0x39 { i += 1 }
            else if c == UInt8(ascii: ".") || c == UInt8(ascii: "e") || c == UInt8(ascii: "E")
                || ((c == UInt8(ascii: "+") || c == UInt8(ascii: "-")) && isFloat) { isFloat = true; i += 1 }
            else { break }
        }
        let text = String(decoding: bytes[start..<i], as: UTF8.self)
        if !isFloat, let v = Int(text) { return .int(v) }
        if let v = Double(text), !text.isEmpty, text != "-" { return .double(v) }
        i = start
        throw fail("invalid value")
    }

    mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count, let v = UInt32(String(decoding: bytes[i..<i + 4], as: UTF8.self), radix: 16)
        else { throw fail("invalid \\u escape") }
        i += 4
        return v
    }

    mutating func string() throws -> String {
        i += 1  // opening quote
        var out: [UInt8] = []
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            i += 1
            if c == UInt8(ascii: "\"") { break }
            if c != UInt8(ascii: "\\") { out.append(c); continue }
            guard i < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "/"), UInt8(ascii: "\\"), UInt8(ascii: "\""): out.append(e)
            case UInt8(ascii: "u"):
                var code = try hex4()
                if code >= 0xD800 && code < 0xDC00, i + 1 < bytes.count, bytes[i] == UInt8(ascii: "\\"),
                    bytes[i + 1] == UInt8(ascii: "u")
                {
                    i += 2
                    let low = try hex4()
                    code = 0x10000 + ((code - 0xD800) << 10) + (low &- 0xDC00)
                }
                let scalar = Unicode.Scalar(code) ?? "\u{FFFD}"
                out.append(contentsOf: Array(String(Character(scalar)).utf8))
            default: throw fail("invalid escape")
            }
        }
        return String(decoding: out, as: UTF8.self)
    }
}

// MARK: - Serialisation (Python json.dumps(ensure_ascii=False) style)

extension JSONValue {
    /// Serialises like Python's `json.dumps(value, ensure_ascii=False, indent=indent)`, which is
    /// what transformers' `tojson` filter does: `", "` / `": "` separators without indent, `","`
    /// and newlines with it.
    public func jsonString(indent: Int? = nil) -> String {
        jsonString(JSONFormat(indent: indent))
    }

    func jsonString(_ format: JSONFormat) -> String {
        var out = ""
        JSONValue.write(self, format, level: 0, into: &out)
        return out
    }

    static func write(_ v: JSONValue, _ f: JSONFormat, level: Int, into out: inout String) {
        func newline(_ level: Int) {
            if let indent = f.indent { out += "\n" + String(repeating: " ", count: indent * level) }
        }
        switch v {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let n): out += String(n)
        case .double(let d): out += pythonFloatRepr(d, json: true)
        case .string(let s): writeJSONString(s, ensureASCII: f.ensureASCII, into: &out)
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
            if obj.count == 0 { out += "{}"; return }
            out += "{"
            var pairs = Array(obj)
            if f.sortKeys { pairs.sort { $0.key.unicodeScalars.lexicographicallyPrecedes($1.key.unicodeScalars) } }
            for (n, (k, item)) in pairs.enumerated() {
                if n > 0 { out += f.itemSeparator }
                newline(level + 1)
                writeJSONString(k, ensureASCII: f.ensureASCII, into: &out)
                out += f.keySeparator
                write(item, f, level: level + 1, into: &out)
            }
            newline(level)
            out += "}"
        }
    }
}

/// Options of Python's `json.dumps` that transformers' `tojson` exposes.
struct JSONFormat {
    var indent: Int?
    var itemSeparator: String
    var keySeparator = ": "
    var sortKeys = false
    var ensureASCII = false

    init(indent: Int? = nil) {
        self.indent = indent
        itemSeparator = indent == nil ? ", " : ","
    }
}

func writeJSONString(_ s: String, ensureASCII: Bool = false, into out: inout String) {
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

/// Python's `repr(float)` (shortest round-trip digits, exponent outside 1e-4 ..< 1e16).
func pythonFloatRepr(_ d: Double, json: Bool = false) -> String {
    if d.isNaN { return json ? "NaN" : "nan" }
    if d.isInfinite { return d < 0 ? (json ? "-Infinity" : "-inf") : (json ? "Infinity" : "inf") }
    // Swift's description already uses shortest round-trip digits and the same switch to
    // exponent notation as Python for most magnitudes; normalise the remaining differences.
    var s = d.description
    if let e = s.firstIndex(where: { $0 == "e" || $0 == "E" }) {
        var mantissa = String(s[..<e])
        var exponent = String(s[s.index(after: e)...])
        if mantissa.hasSuffix(".0") { mantissa.removeLast(2) }
        var sign = "+"
        if exponent.hasPrefix("-") { sign = "-"; exponent.removeFirst() } else if exponent.hasPrefix("+") { exponent.removeFirst() }
        if exponent.count < 2 { exponent = "0" + exponent }
        s = mantissa + "e" + sign + exponent
    } else if !s.contains(".") {
        s += ".0"
    }
    return s
}

// MARK: - Codable (key order follows the decoder; use `init(parsing:)` where order matters)

extension JSONValue: Codable {
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        if let c = try? decoder.container(keyedBy: AnyKey.self) {
            var obj = JSONObject()
            for k in c.allKeys { obj[k.stringValue] = try c.decode(JSONValue.self, forKey: k) }
            self = .object(obj)
            return
        }
        if var c = try? decoder.unkeyedContainer() {
            var items: [JSONValue] = []
            while !c.isAtEnd { items.append(try c.decode(JSONValue.self)) }
            self = .array(items)
            return
        }
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Int.self) { self = .int(n) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else { self = .string(try c.decode(String.self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        switch self {
        case .object(let obj):
            var c = encoder.container(keyedBy: AnyKey.self)
            for (k, v) in obj { try c.encode(v, forKey: AnyKey(stringValue: k)) }
        case .array(let items):
            var c = encoder.unkeyedContainer()
            for v in items { try c.encode(v) }
        case .null:
            var c = encoder.singleValueContainer()
            try c.encodeNil()
        case .bool(let b):
            var c = encoder.singleValueContainer()
            try c.encode(b)
        case .int(let n):
            var c = encoder.singleValueContainer()
            try c.encode(n)
        case .double(let d):
            var c = encoder.singleValueContainer()
            try c.encode(d)
        case .string(let s):
            var c = encoder.singleValueContainer()
            try c.encode(s)
        }
    }
}
