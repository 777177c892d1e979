import Foundation
import JSON

/// An insertion-ordered dictionary of template values (Python dicts keep insertion order).
/// Keys are strings, numbers, booleans or none, as in Python: `{0: 'a'}[0]` is found, `'0'` is not.
struct ValueDict {
    /// Python's key identity: `1`, `1.0` and `True` are the same key.
    enum Key: Hashable {
        case none
        case int(Int)
        case double(Double)
        case string(String)

        init(_ v: Value) throws {
            switch v {
            case .none: self = .none
            case .bool(let b): self = .int(b ? 1 : 0)
            case .int(let n): self = .int(n)
            case .double(let d): self = Int(exactly: d).map { .int($0) } ?? .double(d)
            case .string(let s): self = .string(s)
            default: throw ValueError("unhashable type: '\(v.typeName)'")
            }
        }
    }

    private var order: [Key] = []
    /// Each key's first-inserted spelling (Python keeps it) and its value.
    private var storage: [Key: (key: Value, value: Value)] = [:]

    init() {}

    var count: Int { order.count }

    subscript(key: String) -> Value? {
        get { storage[.string(key)]?.value }
        set { set(.string(key), Value.string(key), newValue) }
    }

    /// Lookup with any value as the key; unhashable keys are simply absent.
    func lookup(_ key: Value) -> Value? {
        guard let k = try? Key(key) else { return nil }
        return storage[k]?.value
    }

    mutating func insert(_ key: Value, _ value: Value) throws {
        set(try Key(key), key, value)
    }

    private mutating func set(_ k: Key, _ key: Value, _ value: Value?) {
        if let value {
            if let existing = storage[k] {
                storage[k] = (existing.key, value)
            } else {
                storage[k] = (key, value)
                order.append(k)
            }
        } else if storage.removeValue(forKey: k) != nil {
            order.removeAll { $0 == k }
        }
    }

    var keys: [Value] { order.map { storage[$0]!.key } }
    var pairs: [(Value, Value)] { order.map { storage[$0]! } }
    var values: [Value] { order.map { storage[$0]!.value } }
}

/// The object `namespace()` returns: attributes can be assigned from inner scopes.
final class Namespace {
    var attributes = ValueDict()
}

/// What Jinja's `map`, `select`, `reject`, `selectattr`, `rejectattr`, `unique`, `items`,
/// `batch` and (on lists) `reverse` return: a Python generator. It is used up by iteration, is
/// always true, and has no length, index or JSON form, so a template that forgets `| list`
/// fails here as it does under transformers.
final class PyGenerator {
    private let items: [Value]
    private var position = 0

    init(_ items: [Value]) { self.items = items }

    /// The items not consumed yet; afterwards the generator is exhausted.
    func drain() -> [Value] {
        defer { position = items.count }
        return Array(items[position...])
    }

    func next() -> Value? {
        guard position < items.count else { return nil }
        defer { position += 1 }
        return items[position]
    }
}

/// A runtime value, with Python / Jinja semantics.
indirect enum Value {
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    /// A string jinja2 treats as `Markup` (from `safe` or `escape`): only `+` tells it apart.
    case markup(String)
    case array([Value])
    case generator(PyGenerator)
    case dict(ValueDict)
    case namespace(Namespace)
    case macro(MacroDefinition)
    case caller(body: [Node], parameters: [(String, Expr?)], scopes: [[String: Value]])
    case builtin(String)
    case method(Value, String)

    init(_ json: JSONValue) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .number(let n):
            // as Python's json.loads: integer text is an int, anything else a float
            if n.isInteger, let i = n.intValue { self = .int(i) } else { self = .double(n.doubleValue ?? .nan) }
        case .string(let s): self = .string(s)
        case .array(let items): self = .array(items.map(Value.init))
        case .object(let o):
            var d = ValueDict()
            for (k, v) in o { d[k] = Value(v) }
            self = .dict(d)
        }
    }

    var isUndefined: Bool {
        if case .undefined = self { return true }
        return false
    }

    var isNone: Bool {
        if case .none = self { return true }
        return false
    }

    var isMarkup: Bool {
        if case .markup = self { return true }
        return false
    }

    /// Markup as an ordinary string; other values unchanged.
    var plain: Value {
        if case .markup(let s) = self { return .string(s) }
        return self
    }

    var isString: Bool {
        if case .string = self { return true }
        return false
    }

    var typeName: String {
        switch self {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .double: return "float"
        case .string: return "str"
        case .markup: return "Markup"
        case .array: return "list"
        case .generator: return "generator"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .macro, .caller: return "Macro"
        case .builtin, .method: return "function"
        }
    }

    var truthy: Bool {
        switch self {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let n): return n != 0
        case .double(let d): return d != 0
        case .string(let s), .markup(let s): return !s.isEmpty
        case .array(let a): return !a.isEmpty
        case .dict(let d): return d.count > 0
        default: return true
        }
    }

    /// Python `str(value)`; undefined renders empty.
    var str: String {
        switch self {
        case .undefined: return ""
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let n): return String(n)
        case .double(let d): return pythonFloatRepr(d)
        case .string(let s), .markup(let s): return s
        case .array(let items): return "[" + items.map(\.repr).joined(separator: ", ") + "]"
        case .dict(let d): return "{" + d.pairs.map { $0.0.repr + ": " + $0.1.repr }.joined(separator: ", ") + "}"
        case .namespace(let ns): return "<Namespace " + Value.dict(ns.attributes).str + ">"
        case .generator: return "<generator object>"
        case .macro(let m): return "<Macro '\(m.name)'>"
        case .caller: return "<Macro 'caller'>"
        case .builtin(let n): return "<built-in function \(n)>"
        case .method(_, let n): return "<built-in method \(n)>"
        }
    }

    /// Python `repr(value)`.
    var repr: String {
        switch self {
        case .string(let s): return pythonStringRepr(s)
        case .undefined: return "Undefined"
        default: return str
        }
    }

    /// As JSON for `tojson`; undefined values, macros and functions are not serialisable.
    func json() throws -> JSONValue {
        switch self {
        case .none: return .null
        case .bool(let b): return .bool(b)
        case .int(let n): return .number(JSONNumber(n))
        case .double(let d): return .number(JSONNumber(d))
        case .string(let s), .markup(let s): return .string(s)
        case .array(let items): return .array(try items.map { try $0.json() })
        case .dict(let d):
            var o = JSONObject()
            // as Python's json.dumps: number, boolean and none keys become their JSON text
            for (k, v) in d.pairs { o[k.isString ? k.str : try k.json().compactText] = try v.json() }
            return .object(o)
        case .namespace(let ns): return try Value.dict(ns.attributes).json()
        default: throw ValueError("Object of type \(typeName) is not JSON serializable")
        }
    }

    /// Numeric view (bool counts as a number, as in Python).
    var number: Double? {
        switch self {
        case .int(let n): return Double(n)
        case .double(let d): return d
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    var intValue: Int? {
        switch self {
        case .int(let n): return n
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }
}

/// A failure inside a value operation; the interpreter adds the source position.
struct ValueError: Error {
    let message: String
    init(_ message: String) { self.message = message }
}

func pythonStringRepr(_ s: String) -> String {
    let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
    var out = String(quote)
    for u in s.unicodeScalars {
        switch u {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if Character(u) == quote { out += "\\" + String(quote) }
            else if u.value < 0x20 || u.value == 0x7F {
                let h = String(u.value, radix: 16)
                out += "\\x" + (h.count < 2 ? "0" : "") + h
            } else { out.unicodeScalars.append(u) }
        }
    }
    out.append(quote)
    return out
}

// MARK: - Python semantics

func pyEqual(_ a: Value, _ b: Value) -> Bool {
    switch (a, b) {
    case (.string(let x), .string(let y)): return x == y
    case (.none, .none), (.undefined, .undefined): return true
    case (.array(let x), .array(let y)):
        return x.count == y.count && zip(x, y).allSatisfy { pyEqual($0, $1) }
    case (.dict(let x), .dict(let y)):
        guard x.count == y.count else { return false }
        for (k, v) in x.pairs {
            guard let w = y.lookup(k), pyEqual(v, w) else { return false }
        }
        return true
    case (.namespace(let x), .namespace(let y)): return x === y
    case (.generator(let x), .generator(let y)): return x === y
    default:
        if let x = a.intValue, let y = b.intValue { return x == y }
        if let x = a.number, let y = b.number { return x == y }
        return false
    }
}

/// Python ordering (`<`); nil when the types do not compare.
func pyLess(_ a: Value, _ b: Value) -> Bool? {
    switch (a, b) {
    case (.string(let x), .string(let y)):
        return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars)
    case (.array(let x), .array(let y)):
        for (u, v) in zip(x, y) where !pyEqual(u, v) { return pyLess(u, v) }
        return x.count < y.count
    default:
        if let x = a.intValue, let y = b.intValue { return x < y }
        if let x = a.number, let y = b.number { return x < y }
        return nil
    }
}

/// Python `str.isspace()` characters.
func isPythonSpace(_ u: Unicode.Scalar) -> Bool {
    u.properties.isWhitespace || (u.value >= 0x1C && u.value <= 0x1F)
}

func pyStrip(_ s: String, chars: String?, leading: Bool, trailing: Bool) -> String {
    let set = chars.map { Set($0.unicodeScalars) }
    let strip: (Unicode.Scalar) -> Bool = { u in set.map { $0.contains(u) } ?? isPythonSpace(u) }
    var scalars = Substring(s).unicodeScalars[...]
    if leading { while let f = scalars.first, strip(f) { scalars.removeFirst() } }
    if trailing { while let l = scalars.last, strip(l) { scalars.removeLast() } }
    return String(String.UnicodeScalarView(scalars))
}

func pyUpper(_ s: String) -> String { s.uppercased() }
func pyLower(_ s: String) -> String { s.lowercased() }

func pyCapitalize(_ s: String) -> String {
    guard let f = s.first else { return s }
    return String(f).uppercased() + s.dropFirst().lowercased()
}

/// Python `str.title()`: a cased character after an uncased one starts a word.
func pyTitle(_ s: String) -> String {
    var out = ""
    var previousCased = false
    for ch in s {
        let cased = ch.isCased
        if cased { out += previousCased ? ch.lowercased() : ch.uppercased() } else { out.append(ch) }
        previousCased = cased
    }
    return out
}

/// Jinja's `title` filter: words start after whitespace, `-`, `(`, `{`, `[` or `<`.
func jinjaTitle(_ s: String) -> String {
    var out = ""
    var atStart = true
    for ch in s {
        if ch.isWhitespace || "-({[<".contains(ch) {
            out.append(ch)
            atStart = true
        } else {
            out += atStart ? ch.uppercased() : ch.lowercased()
            atStart = false
        }
    }
    return out
}

func pySplit(_ s: String, sep: String?, maxSplit: Int) throws -> [String] {
    var parts: [String] = []
    let scalars = Array(s.unicodeScalars)
    if let sep {
        let sepScalars = Array(sep.unicodeScalars)
        guard !sepScalars.isEmpty else { throw ValueError("empty separator") }
        var start = 0, i = 0
        while i + sepScalars.count <= scalars.count {
            if (maxSplit < 0 || parts.count < maxSplit), Array(scalars[i..<i + sepScalars.count]) == sepScalars {
                parts.append(String(String.UnicodeScalarView(scalars[start..<i])))
                i += sepScalars.count
                start = i
            } else {
                i += 1
            }
        }
        parts.append(String(String.UnicodeScalarView(scalars[start...])))
        return parts
    }
    var i = 0
    while i < scalars.count {
        while i < scalars.count, isPythonSpace(scalars[i]) { i += 1 }
        guard i < scalars.count else { break }
        if maxSplit >= 0, parts.count == maxSplit {
            var end = scalars.count
            while end > i, isPythonSpace(scalars[end - 1]) { end -= 1 }
            parts.append(String(String.UnicodeScalarView(scalars[i..<end])))
            break
        }
        let start = i
        while i < scalars.count, !isPythonSpace(scalars[i]) { i += 1 }
        parts.append(String(String.UnicodeScalarView(scalars[start..<i])))
    }
    return parts
}

func pyReplace(_ s: String, _ old: String, _ new: String, count: Int) -> String {
    if count < 0 { return old.isEmpty ? pyReplaceEmpty(s, new, count: -1) : s.replacingOccurrences(of: old, with: new) }
    if old.isEmpty { return pyReplaceEmpty(s, new, count: count) }
    var out = ""
    var rest = Substring(s)
    var n = 0
    while n < count, let r = rest.range(of: old) {
        out += rest[..<r.lowerBound] + new
        rest = rest[r.upperBound...]
        n += 1
    }
    return out + rest
}

private func pyReplaceEmpty(_ s: String, _ new: String, count: Int) -> String {
    var out = ""
    var n = 0
    for u in s.unicodeScalars {
        if count < 0 || n < count { out += new; n += 1 }
        out.unicodeScalars.append(u)
    }
    if count < 0 || n < count { out += new }
    return out
}

/// Python slice index resolution (`slice.indices`).
func sliceIndices(count: Int, start: Int?, stop: Int?, step: Int) -> [Int] {
    var result: [Int] = []
    if step > 0 {
        var lo = start ?? 0
        var hi = stop ?? count
        if lo < 0 { lo = max(lo + count, 0) } else { lo = min(lo, count) }
        if hi < 0 { hi = max(hi + count, 0) } else { hi = min(hi, count) }
        var i = lo
        while i < hi {
            result.append(i)
            let (next, overflow) = i.addingReportingOverflow(step)
            if overflow { break }
            i = next
        }
    } else {
        var lo = start ?? (count - 1)
        var hi = stop ?? -1
        if let s = start { lo = s < 0 ? max(s + count, -1) : min(s, count - 1) }
        if let s = stop { hi = s < 0 ? max(s + count, -1) : min(s, count - 1) }
        var i = lo
        while i > hi {
            result.append(i)
            let (next, overflow) = i.addingReportingOverflow(step)
            if overflow { break }
            i = next
        }
    }
    return result
}

/// Python `%`-formatting for `%s`, `%d`, `%i`, `%r`, `%f` and `%%` (the `format` filter).
func percentFormat(_ format: String, _ args: [Value]) throws -> String {
    var out = ""
    var k = 0
    var it = format.makeIterator()
    while let c = it.next() {
        guard c == "%" else { out.append(c); continue }
        guard let spec = it.next() else { throw ValueError("incomplete format") }
        if spec == "%" { out.append("%"); continue }
        guard k < args.count else { throw ValueError("not enough arguments for format string") }
        let a = args[k]
        k += 1
        switch spec {
        case "s": out += a.str
        case "r": out += a.repr
        case "d", "i":
            guard let n = a.number else { throw ValueError("%\(spec) format: a number is required, not \(a.typeName)") }
            guard let k = Int(exactly: n.rounded(.towardZero)) else { throw ValueError("%\(spec) format: number out of range") }
            out += String(k)
        case "f":
            guard let n = a.number else { throw ValueError("%f format: a number is required, not \(a.typeName)") }
            out += String(format: "%f", n)
        default: throw ValueError("unsupported format character '\(spec)'")
        }
    }
    return out
}

/// Python `str.format` with `{}`, `{0}`, `{name}` and `{{` / `}}` (no format specs).
func braceFormat(_ format: String, _ args: [Value], _ named: [String: Value]) throws -> String {
    var out = ""
    var auto = 0
    let chars = Array(format)
    var i = 0
    while i < chars.count {
        let c = chars[i]
        if c == "{" {
            if i + 1 < chars.count, chars[i + 1] == "{" { out.append("{"); i += 2; continue }
            guard let close = chars[i...].firstIndex(of: "}") else { throw ValueError("Single '{' encountered in format string") }
            var field = String(chars[(i + 1)..<close])
            if let colon = field.firstIndex(of: ":") { field = String(field[..<colon]) }
            let v: Value
            if field.isEmpty {
                guard auto < args.count else { throw ValueError("Replacement index \(auto) out of range") }
                v = args[auto]
                auto += 1
            } else if let n = Int(field) {
                guard n < args.count else { throw ValueError("Replacement index \(n) out of range") }
                v = args[n]
            } else {
                guard let w = named[field] else { throw ValueError("KeyError: '\(field)'") }
                v = w
            }
            out += v.str
            i = close + 1
        } else if c == "}" {
            guard i + 1 < chars.count, chars[i + 1] == "}" else { throw ValueError("Single '}' encountered in format string") }
            out.append("}")
            i += 2
        } else {
            out.append(c)
            i += 1
        }
    }
    return out
}

/// `strftime` for the directives chat templates use (`%d %b %Y` and friends), local time.
func strftime(_ format: String, _ date: Date) -> String {
    var cal = Calendar(identifier: .gregorian)
    cal.timeZone = TimeZone.current
    let c = cal.dateComponents([.year, .month, .day, .hour, .minute, .second, .weekday], from: date)
    let dayOfYear = cal.ordinality(of: .day, in: .year, for: date) ?? 1
    let months = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                  "October", "November", "December"]
    let days = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    func pad(_ n: Int, _ w: Int = 2) -> String {
        let s = String(n)
        return String(repeating: "0", count: max(0, w - s.count)) + s
    }
    var out = ""
    var it = Array(format.unicodeScalars).makeIterator()
    while let ch = it.next() {
        guard ch == "%" else { out.unicodeScalars.append(ch); continue }
        guard var d = it.next() else { out += "%"; break }
        var noPad = false
        if d == "-", let n = it.next() { noPad = true; d = n }
        let month = (c.month ?? 1) - 1, weekday = (c.weekday ?? 1) - 1
        let hour = c.hour ?? 0
        func num(_ n: Int, _ w: Int = 2) -> String { noPad ? String(n) : pad(n, w) }
        switch d {
        case "Y": out += String(c.year ?? 0)
        case "y": out += num((c.year ?? 0) % 100)
        case "m": out += num(month + 1)
        case "d": out += num(c.day ?? 1)
        case "e": out += noPad ? String(c.day ?? 1) : (c.day ?? 1 < 10 ? " " : "") + String(c.day ?? 1)
        case "H": out += num(hour)
        case "I": out += num(hour % 12 == 0 ? 12 : hour % 12)
        case "M": out += num(c.minute ?? 0)
        case "S": out += num(c.second ?? 0)
        case "p": out += hour < 12 ? "AM" : "PM"
        case "b", "h": out += String(months[month].prefix(3))
        case "B": out += months[month]
        case "a": out += String(days[weekday].prefix(3))
        case "A": out += days[weekday]
        case "j": out += num(dayOfYear, 3)
        case "%": out += "%"
        default: out += "%" + String(d)
        }
    }
    return out
}

/// jinja2's `escape`: `& < > " '` as HTML entities.
func htmlEscape(_ s: String) -> String {
    var out = ""
    for ch in s.unicodeScalars {
        switch ch {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&#34;"
        case "'": out += "&#39;"
        default: out.unicodeScalars.append(ch)
        }
    }
    return out
}
