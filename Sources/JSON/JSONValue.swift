import OrderedCollections

/// A parsed or constructed JSON document: objects keep their key order (as Python dicts do,
/// and as a chat template or a schema author wrote them), and numbers keep their literal text
/// (a JSON schema's `enum`/`const` values are matched byte for byte).
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// The value of `key` in an object, nil otherwise.
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// A number written as an integer (no fraction or exponent) that fits in `Int`.
    public var intValue: Int? {
        if case .number(let n) = self { return n.intValue }
        return nil
    }

    public var doubleValue: Double? {
        if case .number(let n) = self { return n.doubleValue }
        return nil
    }
}

/// Object members in insertion order. A key given twice (in parsed text or by assignment)
/// keeps its first position and its last value, as with Python's `json.loads`.
public typealias JSONObject = OrderedDictionary<String, JSONValue>

/// A JSON number as text: as written in parsed input, or as the initializers render a Swift
/// number. `intValue` and `doubleValue` read it.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
    /// Valid JSON number text, except for non-finite doubles, which are written as Python's
    /// `json.dumps` writes them (`NaN`, `Infinity`, `-Infinity`).
    public let text: String

    /// `text` if it is a JSON number (RFC 8259 grammar, no surrounding space), nil otherwise.
    public init?(text: String) {
        var scanner = JSONScanner(bytes: Array(text.utf8))
        guard (try? scanner.number()) != nil, scanner.i == scanner.bytes.count else { return nil }
        self.text = text
    }

    /// Number text the parser has already checked.
    init(validated text: String) { self.text = text }

    public init<T: BinaryInteger>(_ value: T) { text = String(value) }

    /// Python's `repr(float)` digits: shortest text that reads back as `value`, so an integral
    /// value keeps its `.0` and stays a float for the chat templates.
    public init(_ value: Double) { text = pythonFloatRepr(value, json: true) }

    /// Swift's shortest text that reads back as `value` as a `Float` (finite values only are
    /// valid JSON).
    public init(_ value: Float) {
        text = value.isNaN ? "NaN" : value.isInfinite ? (value < 0 ? "-Infinity" : "Infinity") : "\(value)"
    }

    /// Written without fraction or exponent (`12`, `-0`), whether or not it fits in `Int`.
    public var isInteger: Bool {
        !text.isEmpty && text.utf8.allSatisfy { $0 == UInt8(ascii: "-") || ($0 >= 0x30 && $0 <= 0x39) }
    }

    /// The value of an integer-written number that fits in `Int`; nil for `2.0` or `1e3`.
    public var intValue: Int? { Int(text) }

    public var doubleValue: Double? {
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default: return Double(text)
        }
    }

    public var description: String { text }
}

extension JSONNumber: ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral {
    public init(integerLiteral value: Int) { self.init(value) }
    public init(floatLiteral value: Double) { self.init(value) }
}

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral,
    ExpressibleByFloatLiteral, ExpressibleByStringLiteral, ExpressibleByArrayLiteral,
    ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int) { self = .number(JSONNumber(value)) }
    public init(floatLiteral value: Double) { self = .number(JSONNumber(value)) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        var o = JSONObject()
        for (k, v) in elements { o[k] = v }
        self = .object(o)
    }
}

/// Python's `repr(float)` (shortest round-trip digits, exponent outside 1e-4 ..< 1e16);
/// `json`: non-finite values as `json.dumps` writes them (`NaN`, `Infinity`) instead of
/// `nan`, `inf`.
public func pythonFloatRepr(_ d: Double, json: Bool = false) -> String {
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
        else if let n = try? c.decode(Int.self) { self = .number(JSONNumber(n)) }
        else if let d = try? c.decode(Double.self) { self = .number(JSONNumber(d)) }
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
        case .number(let n):
            var c = encoder.singleValueContainer()
            if n.isInteger, let i = n.intValue { try c.encode(i) } else { try c.encode(n.doubleValue ?? .nan) }
        case .string(let s):
            var c = encoder.singleValueContainer()
            try c.encode(s)
        }
    }
}
