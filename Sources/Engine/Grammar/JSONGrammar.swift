import Foundation
import JSON

/// Errors from building a `JSONGrammar`.
public enum JSONGrammarError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidJSON(String)
    case unsupportedSchema(String)

    public var description: String {
        switch self {
        case .invalidJSON(let m): return "invalid JSON: \(m)"
        case .unsupportedSchema(let m): return "unsupported JSON schema: \(m)"
        }
    }
}

/// What the constrained output must be: any JSON object (`response_format: json_object`),
/// any JSON value, or a value matching a JSON schema (`response_format: json_schema`).
///
/// Supported schema subset (anything else is rejected with `.unsupportedSchema`, except the
/// annotation keywords listed as ignored):
/// - `type`: `string`, `number`, `integer`, `boolean`, `null`, `array`, `object`, or a list of
///   them (e.g. `["string", "null"]`); without `type`, `properties`/`required` imply an object
///   and `items` an array; `{}` and `true` allow any value.
/// - `object`: `properties`, `required`, `additionalProperties` (`true`, `false` or a schema).
///   Choice: when `properties` is given and `additionalProperties` is not, no other keys are
///   allowed (as OpenAI's strict mode requires); an object without `properties` allows any
///   keys. Properties may come in any order; `}` is allowed once every required one is present;
///   keys never repeat. Keys must be written the way `JSONValue.encodeString` writes the name
///   (the natural form: no gratuitous escapes). At most 64 properties per object.
/// - `array`: `items` (one schema), `minItems`, `maxItems`.
/// - `string`: `minLength`, `maxLength` (counted in Unicode scalars; an escape counts as one).
/// - `enum` / `const`: the value must be written as its compact JSON text (`JSONValue.compactText`
///   of the schema's value, numbers exactly as written in the schema). At most 64 values.
/// - `anyOf` / `oneOf` of objects that each pin one shared required property to a different
///   `const` (a tagged union, such as function calls told apart by `name`): that property must
///   come first, and its value selects the alternative that constrains the rest of the object.
///   Other alternatives are chosen by their first character (the first alternative that can
///   start with it wins), so they should start differently (e.g. an object vs. null).
/// - `allOf` with a single schema; `$ref` to `#`, `#/$defs/NAME` or `#/definitions/NAME`
///   (recursion allowed).
/// - `minimum` / `exclusiveMinimum` ≥ 0 forbid a minus sign; other numeric bounds are not
///   enforced.
/// - Ignored (not enforced): `title`, `description`, `default`, `examples`, `format`,
///   `pattern`, `maximum`, `multipleOf` and other assertions not listed above.
///
/// Output shape limits (to keep generations finite): at most `maxWhitespaceRun` consecutive
/// whitespace bytes between tokens, no whitespace after the top-level value, numbers at most
/// `maxNumberLength` bytes, containers nested at most `maxNestingDepth` deep, no `\u` escapes
/// for surrogates (`\uD800`–`\uDFFF`; raw UTF-8 is allowed instead), and strings must be valid
/// UTF-8 without raw control characters.
public struct JSONGrammar: Sendable {
    enum Node: Sendable {
        case any
        case string(minLength: Int, maxLength: Int?)
        /// `nonNegative`: `minimum`/`exclusiveMinimum` ≥ 0, so no minus sign.
        case number(integer: Bool, nonNegative: Bool)
        case object(ObjectSpec)
        case array(items: Int32, minItems: Int, maxItems: Int?)
        /// Exact byte strings (enum/const/true/false/null).
        case literals([[UInt8]])
        /// Alternatives, picked by first byte.
        case union([Int32])
        /// Plain text before a value, outside the JSON: one of `names`, then one of `separators`,
        /// then a value of `values[i]` for name i (see `JSONGrammar(named:separators:)`).
        case named(names: [[UInt8]], separators: [[UInt8]], values: [Int32])
    }

    struct ObjectSpec: Sendable {
        var names: [String] = []
        /// Names as they appear between the quotes in JSON text.
        var encodedNames: [[UInt8]] = []
        var values: [Int32] = []
        var requiredMask: UInt64 = 0
        /// Schema for keys not in `names`; nil forbids them.
        var additional: Int32? = nil
        /// A tagged union: `names` is the one discriminating property, its value a literal
        /// node; when option i of that literal is complete the object continues as the object
        /// node `variants[i]`, in which the discriminator is property `variantKeyIndex[i]`.
        var variants: [Int32] = []
        var variantKeyIndex: [Int] = []
        var allMask: UInt64 { names.count == 64 ? ~0 : (UInt64(1) << UInt64(names.count)) - 1 }
    }

    // Fixed nodes present in every grammar.
    static let anyNode: Int32 = 0
    static let anyObjectNode: Int32 = 1
    static let anyArrayNode: Int32 = 2
    static let anyStringNode: Int32 = 3
    static let anyNumberNode: Int32 = 4
    static let keywordNode: Int32 = 5  // true / false / null

    var nodes: [Node]
    var root: Int32

    /// Longest run of whitespace bytes allowed between tokens.
    public var maxWhitespaceRun: Int = 32
    /// Longest number literal, in bytes.
    public var maxNumberLength: Int = 32
    /// Deepest container nesting (the top-level object or array counts as 1).
    public var maxNestingDepth: Int = 32

    private init(nodes: [Node], root: Int32) {
        self.nodes = nodes
        self.root = root
    }

    static var baseNodes: [Node] {
        [
            .any,
            .object(ObjectSpec(additional: anyNode)),
            .array(items: anyNode, minItems: 0, maxItems: nil),
            .string(minLength: 0, maxLength: nil),
            .number(integer: false, nonNegative: false),
            .literals([Array("true".utf8), Array("false".utf8), Array("null".utf8)]),
        ]
    }

    /// Any JSON object: OpenAI's `response_format: {"type": "json_object"}`.
    public static var jsonObject: JSONGrammar { JSONGrammar(nodes: baseNodes, root: anyObjectNode) }

    /// Any JSON value.
    public static var anyJSON: JSONGrammar { JSONGrammar(nodes: baseNodes, root: anyNode) }

    /// A value matching `schema` (see the type's documentation for the supported subset).
    public init(schema: JSONValue) throws {
        var compiler = SchemaCompiler(rootSchema: schema, nodes: Self.baseNodes)
        let root = try compiler.compile(schema, depth: 0)
        self.init(nodes: compiler.nodes, root: root)
    }

    /// A document that is plain text naming one of `alternatives`, then one of `separators`,
    /// then a value matching that alternative's schema, with nothing between them: a name
    /// written outside the JSON picks the schema of what follows (gpt-oss writes a call's
    /// function name in the message header and the arguments after it). Names and separators
    /// are matched byte for byte; a name that another name extends must not be extended by a
    /// separator's first byte, and no separator may be a prefix of another. At most 64
    /// alternatives and 64 separators.
    public init(named alternatives: [(name: String, schema: JSONValue)], separators: [String]) throws {
        let names = alternatives.map { Array($0.name.utf8) }
        let ends = separators.map { Array($0.utf8) }
        guard !names.isEmpty, names.count <= 64 else { throw JSONGrammarError.unsupportedSchema("1 to 64 named alternatives") }
        guard (1...64).contains(ends.count) else { throw JSONGrammarError.unsupportedSchema("1 to 64 separators") }
        guard names.allSatisfy({ !$0.isEmpty }), ends.allSatisfy({ !$0.isEmpty }) else {
            throw JSONGrammarError.unsupportedSchema("an empty name or separator")
        }
        guard Set(names).count == names.count else { throw JSONGrammarError.unsupportedSchema("a name given twice") }
        for a in names {
            for b in names where b.count > a.count && b.starts(with: a) && ends.contains(where: { $0[0] == b[a.count] }) {
                throw JSONGrammarError.unsupportedSchema("the name \(String(decoding: b, as: UTF8.self)) continues \(String(decoding: a, as: UTF8.self)) with a separator's first byte")
            }
        }
        for a in ends {
            for b in ends where b != a && b.starts(with: a) {
                throw JSONGrammarError.unsupportedSchema("the separator \(String(decoding: a, as: UTF8.self)) is a prefix of another")
            }
        }
        var nodes = Self.baseNodes
        var values: [Int32] = []
        for alternative in alternatives {
            // each schema's own `$ref`s resolve against that schema
            var compiler = SchemaCompiler(rootSchema: alternative.schema, nodes: nodes)
            values.append(try compiler.compile(alternative.schema, depth: 0))
            nodes = compiler.nodes
        }
        nodes.append(.named(names: names, separators: ends, values: values))
        self.init(nodes: nodes, root: Int32(nodes.count - 1))
    }

    /// A value matching the JSON schema in `schemaText`.
    public init(schemaText: String) throws {
        let value: JSONValue
        do { value = try JSONValue(parsing: schemaText) } catch { throw JSONGrammarError.invalidJSON("\(error)") }
        try self.init(schema: value)
    }

    /// The grammar for an OpenAI `response_format` object: nil for `{"type": "text"}` (or no
    /// type), `.jsonObject` for `json_object`, and for `json_schema` the schema in
    /// `json_schema.schema` (a bare `schema` member is accepted too).
    public static func forResponseFormat(_ format: JSONValue) throws -> JSONGrammar? {
        switch format["type"]?.stringValue {
        case nil, "text": return nil
        case "json_object":
            if let schema = format["schema"] { return try JSONGrammar(schema: schema) }
            return .jsonObject
        case "json_schema":
            guard let schema = format["json_schema"]?["schema"] ?? format["schema"] else {
                throw JSONGrammarError.unsupportedSchema("json_schema without a schema")
            }
            return try JSONGrammar(schema: schema)
        case let other?:
            throw JSONGrammarError.unsupportedSchema("response_format type \(other)")
        }
    }
}

private struct SchemaCompiler {
    let rootSchema: JSONValue
    var nodes: [JSONGrammar.Node]
    var refs: [String: Int32] = [:]

    init(rootSchema: JSONValue, nodes: [JSONGrammar.Node]) {
        self.rootSchema = rootSchema
        self.nodes = nodes
    }

    mutating func add(_ node: JSONGrammar.Node) -> Int32 {
        nodes.append(node)
        return Int32(nodes.count - 1)
    }

    func unsupported(_ m: String) -> JSONGrammarError { .unsupportedSchema(m) }

    mutating func compile(_ schema: JSONValue, depth: Int) throws -> Int32 {
        guard depth < 200 else { throw unsupported("schema nested too deeply") }
        switch schema {
        case .bool(true): return JSONGrammar.anyNode
        case .bool(false): throw unsupported("false schema (matches nothing)")
        case .object: break
        default: throw unsupported("a schema must be an object or a boolean")
        }

        if let ref = schema["$ref"] {
            guard let path = ref.stringValue else { throw unsupported("$ref must be a string") }
            return try compileRef(path, depth: depth)
        }
        if let c = schema["const"] {
            return add(.literals([Array(c.compactText.utf8)]))
        }
        if let e = schema["enum"] {
            guard let values = e.arrayValue, !values.isEmpty else { throw unsupported("enum must be a non-empty array") }
            guard values.count <= 64 else { throw unsupported("enum with more than 64 values") }
            var seen = Set<[UInt8]>()
            let options = values.map { Array($0.compactText.utf8) }.filter { seen.insert($0).inserted }
            return add(.literals(options))
        }
        for key in ["anyOf", "oneOf"] {
            if let alternatives = schema[key] {
                guard let list = alternatives.arrayValue, !list.isEmpty else { throw unsupported("\(key) must be a non-empty array") }
                if let tagged = try compileTaggedUnion(list, depth: depth) { return tagged }
                let branches = try list.map { try compile($0, depth: depth + 1) }
                return branches.count == 1 ? branches[0] : add(.union(branches))
            }
        }
        if let all = schema["allOf"] {
            guard let list = all.arrayValue, list.count == 1 else { throw unsupported("allOf with more than one schema") }
            return try compile(list[0], depth: depth + 1)
        }
        if schema["prefixItems"] != nil { throw unsupported("prefixItems") }

        switch schema["type"] {
        case .string(let t)?:
            return try compileType(t, schema, depth: depth)
        case .array(let types)?:
            let names = try types.map { v -> String in
                guard let s = v.stringValue else { throw unsupported("type list must hold strings") }
                return s
            }
            guard !names.isEmpty else { throw unsupported("empty type list") }
            var branches: [Int32] = []
            for name in names { branches.append(try compileType(name, schema, depth: depth)) }
            return branches.count == 1 ? branches[0] : add(.union(branches))
        case nil:
            if schema["properties"] != nil || schema["required"] != nil || schema["additionalProperties"] != nil {
                return try compileType("object", schema, depth: depth)
            }
            if schema["items"] != nil || schema["minItems"] != nil || schema["maxItems"] != nil {
                return try compileType("array", schema, depth: depth)
            }
            if schema["minLength"] != nil || schema["maxLength"] != nil {
                return try compileType("string", schema, depth: depth)
            }
            return JSONGrammar.anyNode
        default:
            throw unsupported("type must be a string or a list of strings")
        }
    }

    /// Alternatives that are all objects requiring one property whose schema is a `const`,
    /// different in each: a node that reads that property first and then continues as the
    /// alternative its value names. Nil when the alternatives are not of that form.
    mutating func compileTaggedUnion(_ alternatives: [JSONValue], depth: Int) throws -> Int32? {
        guard alternatives.count >= 2, alternatives.count <= 64 else { return nil }
        func tag(_ schema: JSONValue, _ key: String) -> JSONValue? {
            guard schema["type"] == nil || schema["type"] == "object",
                  schema["required"]?.arrayValue?.contains(.string(key)) == true else { return nil }
            return schema["properties"]?[key]?["const"]
        }
        guard case .object(let firstProperties)? = alternatives[0]["properties"] else { return nil }
        let key = firstProperties.keys.first { key in
            let tags = alternatives.map { tag($0, key) }
            return tags.allSatisfy { $0 != nil } && Set(tags.map { $0!.compactText }).count == tags.count
        }
        guard let key else { return nil }
        var spec = JSONGrammar.ObjectSpec()
        spec.names = [key]
        spec.encodedNames = [Array(JSONValue.encodeString(key).utf8.dropFirst().dropLast())]
        spec.values = [add(.literals(alternatives.map { Array(tag($0, key)!.compactText.utf8) }))]
        spec.requiredMask = 1
        for alternative in alternatives {
            let variant = try compile(alternative, depth: depth + 1)
            guard case .object(let own) = nodes[Int(variant)], let index = own.names.firstIndex(of: key) else {
                throw unsupported("anyOf alternative tagged by \(key) is not an object")
            }
            spec.variants.append(variant)
            spec.variantKeyIndex.append(index)
        }
        return add(.object(spec))
    }

    mutating func compileRef(_ path: String, depth: Int) throws -> Int32 {
        if let known = refs[path] { return known }
        var target = rootSchema
        if path != "#" {
            let prefixes = ["#/$defs/", "#/definitions/"]
            guard let prefix = prefixes.first(where: { path.hasPrefix($0) }) else {
                throw unsupported("$ref \(path) (only #, #/$defs/NAME and #/definitions/NAME)")
            }
            let name = String(path.dropFirst(prefix.count))
                .replacingOccurrences(of: "~1", with: "/").replacingOccurrences(of: "~0", with: "~")
            let container = prefix == "#/$defs/" ? "$defs" : "definitions"
            guard let t = rootSchema[container]?[name] else { throw unsupported("$ref \(path) not found") }
            target = t
        }
        // A one-branch union forwards to the target and lets the target refer back to it.
        let slot = add(.union([]))
        refs[path] = slot
        let compiled = try compile(target, depth: depth + 1)
        guard compiled != slot else { throw unsupported("$ref \(path) refers to itself") }
        nodes[Int(slot)] = .union([compiled])
        return slot
    }

    func integer(_ schema: JSONValue, _ key: String) throws -> Int? {
        guard let v = schema[key] else { return nil }
        guard let d = v.doubleValue, d >= 0, d == d.rounded(), d < 1e9 else {
            throw unsupported("\(key) must be a non-negative integer")
        }
        return Int(d)
    }

    mutating func compileType(_ type: String, _ schema: JSONValue, depth: Int) throws -> Int32 {
        switch type {
        case "string":
            let minLength = try integer(schema, "minLength") ?? 0
            let maxLength = try integer(schema, "maxLength")
            if let maxLength, maxLength < minLength { throw unsupported("maxLength < minLength") }
            if minLength == 0 && maxLength == nil { return JSONGrammar.anyStringNode }
            return add(.string(minLength: minLength, maxLength: maxLength))
        case "number", "integer":
            // Of the numeric bounds only the sign is enforced: a minimum ≥ 0 rules out "-".
            let lower = [schema["minimum"], schema["exclusiveMinimum"]].compactMap { $0?.doubleValue }
            let nonNegative = lower.contains { $0 >= 0 }
            if type == "number" && !nonNegative { return JSONGrammar.anyNumberNode }
            return add(.number(integer: type == "integer", nonNegative: nonNegative))
        case "boolean":
            return add(.literals([Array("true".utf8), Array("false".utf8)]))
        case "null":
            return add(.literals([Array("null".utf8)]))
        case "array":
            let minItems = try integer(schema, "minItems") ?? 0
            let maxItems = try integer(schema, "maxItems")
            if let maxItems, maxItems < minItems { throw unsupported("maxItems < minItems") }
            var items = JSONGrammar.anyNode
            if let i = schema["items"] {
                if case .array = i { throw unsupported("items as a list (tuple validation)") }
                items = try compile(i, depth: depth + 1)
            }
            if items == JSONGrammar.anyNode && minItems == 0 && maxItems == nil { return JSONGrammar.anyArrayNode }
            return add(.array(items: items, minItems: minItems, maxItems: maxItems))
        case "object":
            var spec = JSONGrammar.ObjectSpec()
            let properties = schema["properties"]
            if let properties {
                guard case .object(let members) = properties else { throw unsupported("properties must be an object") }
                for (name, sub) in members where !spec.names.contains(name) {
                    spec.names.append(name)
                    spec.values.append(try compile(sub, depth: depth + 1))
                }
            }
            var required: [String] = []
            if let r = schema["required"] {
                guard let list = r.arrayValue else { throw unsupported("required must be an array") }
                for v in list {
                    guard let s = v.stringValue else { throw unsupported("required must hold strings") }
                    required.append(s)
                }
            }
            switch schema["additionalProperties"] {
            case nil: spec.additional = properties == nil ? JSONGrammar.anyNode : nil
            case .bool(true)?: spec.additional = JSONGrammar.anyNode
            case .bool(false)?: spec.additional = nil
            case let sub?: spec.additional = try compile(sub, depth: depth + 1)
            }
            for name in required where !spec.names.contains(name) {
                // A required key without a schema of its own: its value follows additionalProperties.
                guard let additional = spec.additional else {
                    throw unsupported("required property \(name) is not in properties and additionalProperties is false")
                }
                spec.names.append(name)
                spec.values.append(additional)
            }
            guard spec.names.count <= 64 else { throw unsupported("object with more than 64 properties") }
            for name in required {
                spec.requiredMask |= UInt64(1) << UInt64(spec.names.firstIndex(of: name)!)
            }
            spec.encodedNames = spec.names.map { Array(JSONValue.encodeString($0).utf8.dropFirst().dropLast()) }
            if spec.names.isEmpty && spec.additional == JSONGrammar.anyNode { return JSONGrammar.anyObjectNode }
            return add(.object(spec))
        default:
            throw unsupported("type \(type)")
        }
    }
}
