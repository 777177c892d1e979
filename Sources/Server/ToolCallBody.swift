import JSON

/// Where the function calls are in the JSON text of a call, read as far as it has been
/// generated: each call's name and the byte range of its arguments, so the arguments can be
/// streamed as the model writes them.
///
/// The shapes read: a call object `{"name": ..., "arguments" | "parameters": ...}` (also inside
/// `{"function": {...}}`), a list of call objects, and `{"tool_calls": [call objects]}`.
struct ToolCallBody {
    struct Call {
        var name: String?
        /// The arguments' key was read (its value may not have begun).
        var hasArguments = false
        /// Where the arguments value starts (after the key's colon and whitespace).
        var argumentsStart: Int?
        /// Just past the arguments value, once it is complete.
        var argumentsEnd: Int?
        /// The call object is closed.
        var closed = false
    }

    private(set) var calls: [Call] = []
    /// Just past the top-level value, once it is complete.
    private(set) var end: Int?
    /// The text so far cannot be the start of calls in one of the shapes.
    private(set) var malformed = false

    private let bytes: [UInt8]
    private var i = 0

    /// Reads `bytes`, which may stop anywhere.
    init(_ bytes: [UInt8]) {
        self.bytes = bytes
        do {
            skipWhitespace()
            guard i < bytes.count else { return }
            switch bytes[i] {
            case UInt8(ascii: "{"): if try callObject(top: true) { end = i }
            case UInt8(ascii: "["): if try callList() { end = i }
            default: malformed = true
            }
        } catch {
            malformed = true
        }
    }

    private struct Malformed: Error {}

    private mutating func skipWhitespace() {
        while i < bytes.count, [0x20, 0x0A, 0x0D, 0x09].contains(bytes[i]) { i += 1 }
    }

    /// At `[`: call objects up to `]`. False when the text ends first.
    private mutating func callList() throws -> Bool {
        i += 1
        skipWhitespace()
        if i < bytes.count, bytes[i] == UInt8(ascii: "]") { i += 1; return true }
        while true {
            skipWhitespace()
            guard i < bytes.count else { return false }
            guard bytes[i] == UInt8(ascii: "{") else { throw Malformed() }
            guard try callObject(top: false) else { return false }
            skipWhitespace()
            guard i < bytes.count else { return false }
            switch bytes[i] {
            case UInt8(ascii: ","): i += 1
            case UInt8(ascii: "]"): i += 1; return true
            default: throw Malformed()
            }
        }
    }

    /// At `{`: one call (or, at the top, a `tool_calls` holder). False when the text ends first.
    private mutating func callObject(top: Bool) throws -> Bool {
        let index = calls.count
        calls.append(Call())
        i += 1
        while true {
            skipWhitespace()
            guard i < bytes.count else { return false }
            if bytes[i] == UInt8(ascii: "}") { break }
            if bytes[i] == UInt8(ascii: ",") { i += 1; skipWhitespace(); guard i < bytes.count else { return false } }
            guard bytes[i] == UInt8(ascii: "\"") else { throw Malformed() }
            let keyStart = i
            guard try skipString() else { return false }
            let key = try decodeString(keyStart..<i)
            skipWhitespace()
            guard i < bytes.count else { return false }
            guard bytes[i] == UInt8(ascii: ":") else { throw Malformed() }
            i += 1
            if key == "arguments" || key == "parameters" { calls[index].hasArguments = true }
            skipWhitespace()
            guard i < bytes.count else { return false }
            let valueStart = i
            switch key {
            case "name" where bytes[i] == UInt8(ascii: "\""):
                guard try skipString() else { return false }
                calls[index].name = try decodeString(valueStart..<i)
            case "arguments", "parameters":
                calls[index].argumentsStart = valueStart
                guard try skipValue() else { return false }
                calls[index].argumentsEnd = i
            case "function" where bytes[i] == UInt8(ascii: "{"):
                // the call is the inner object: this one stays nameless
                guard try callObject(top: false) else { return false }
            case "tool_calls" where top && bytes[i] == UInt8(ascii: "["):
                guard try callList() else { return false }
            default:
                guard try skipValue() else { return false }
            }
        }
        i += 1
        calls[index].closed = true
        return true
    }

    private func decodeString(_ range: Range<Int>) throws -> String {
        guard case .string(let s)? = try? JSONValue(parsing: String(decoding: bytes[range], as: UTF8.self)) else {
            throw Malformed()
        }
        return s
    }

    /// At `"`: past the closing quote. False when the text ends first.
    private mutating func skipString() throws -> Bool {
        i += 1
        while i < bytes.count {
            switch bytes[i] {
            case UInt8(ascii: "\\"): i += 2
            case UInt8(ascii: "\""): i += 1; return true
            default: i += 1
            }
        }
        i = bytes.count
        return false
    }

    /// Any JSON value: past its end. False when the text ends first (a number or literal
    /// ends only at the byte after it).
    private mutating func skipValue() throws -> Bool {
        guard i < bytes.count else { return false }
        switch bytes[i] {
        case UInt8(ascii: "\""): return try skipString()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            var depth = 0
            while i < bytes.count {
                switch bytes[i] {
                case UInt8(ascii: "\""):
                    guard try skipString() else { return false }
                    continue
                case UInt8(ascii: "{"), UInt8(ascii: "["): depth += 1
                case UInt8(ascii: "}"), UInt8(ascii: "]"):
                    depth -= 1
                    if depth == 0 { i += 1; return true }
                default: break
                }
                i += 1
            }
            return false
        default:
            let start = i
            while i < bytes.count, !",}] \n\r\t".utf8.contains(bytes[i]) { i += 1 }
            guard i > start else { throw Malformed() }
            return i < bytes.count
        }
    }
}
