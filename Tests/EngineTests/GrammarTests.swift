import Foundation
import JSON
import Testing
import Tokenization
@testable import Engine

/// A tiny byte-level vocabulary: token 0 is EOS, token 1 a control token with no bytes, then
/// printable ASCII, whitespace, multi-byte JSON-ish pieces, raw UTF-8 fragments (including
/// byte-fallback tokens that split characters and a few invalid bytes).
struct FakeTokenizer: Tokenizer {
    let pieces: [[UInt8]]

    init(extraPieces: [String] = []) {
        var p: [[UInt8]] = [Array("</s>".utf8), []]
        for b in UInt8(0x20)...UInt8(0x7E) { p.append([b]) }
        p += [[0x0A], [0x09], [0x0D]]
        let words = [
            "{\"", "\":", "\",", "\"}", "\"]", "\",\n", "\": \"", "{}", "[]", "},", "],", "}}", "]}", " {", "{\n  \"",
            "true", "false", "null", "nu", "ll", "tr", "ue", "fa", "lse", "12", "3.5", "-0", "e+", "E-", "00", ".0",
            "  ", "    ", "\n  ", "\n", "é", "日本", "€", "😀", "hello world", " the", "ing", "\\n", "\\u00", "\\u", "\\\"",
            "\\", "\"name", "name\"", "age", "tags", "\"a\"", "\"b\"", "person", "\"kind\":\"person\"", ":\"", "\":[",
            "\"}]", "1,", "0,", "2]", ",\"", "ab", "city", "zip", "\"value\":", "children", "\":{", "\"}}",
        ] + extraPieces
        for w in words { p.append(Array(w.utf8)) }
        // Raw bytes: parts of "é" (C3 A9), "日" (E6 97 A5), "😀" (F0 9F 98 80); invalid C0, FF, ED A0.
        for b: UInt8 in [0xC3, 0xA9, 0xE6, 0x97, 0xA5, 0xF0, 0x9F, 0x98, 0x80, 0xC0, 0xFF, 0xED, 0xA0] { p.append([b]) }
        pieces = p
    }

    var vocabularySize: Int { pieces.count }
    var bosToken: TokenID? { 1 }
    var eosToken: TokenID? { 0 }
    var endOfGenerationTokens: Set<TokenID> { [0] }
    var addsBOS: Bool { false }

    /// Greedy longest match (only used for convenience in tests).
    func encode(_ text: String, addSpecial: Bool, parseSpecial: Bool) -> [TokenID] {
        let bytes = Array(text.utf8)
        var out: [TokenID] = []
        var i = 0
        while i < bytes.count {
            var best = -1
            var bestLength = 0
            for (t, p) in pieces.enumerated() where t >= 2 && p.count > bestLength && i + p.count <= bytes.count {
                if Array(bytes[i..<(i + p.count)]) == p {
                    best = t
                    bestLength = p.count
                }
            }
            precondition(best >= 0, "untokenizable byte")
            out.append(TokenID(best))
            i += bestLength
        }
        return out
    }

    func pieceBytes(_ token: TokenID) -> [UInt8] { Int(token) == 0 ? Array("</s>".utf8) : pieces[Int(token)] }
    func tokenText(_ token: TokenID) -> String { String(decoding: pieces[Int(token)], as: UTF8.self) }
}

// MARK: - A small JSON-schema validator for checking outputs (independent of the recognizer)

/// A constrained output as the validator reads it: keys must not repeat.
func parseOutput(_ text: String) throws -> JSONValue {
    try JSONValue(parsing: text, allowingDuplicateKeys: false)
}

func validate(_ v: JSONValue, against s: JSONValue, root: JSONValue) -> Bool {
    if case .bool(let b) = s { return b }
    if let ref = s["$ref"]?.stringValue {
        if ref == "#" { return validate(v, against: root, root: root) }
        let name = ref.components(separatedBy: "/").last!
        let defs = root["$defs"] ?? root["definitions"]
        return validate(v, against: defs![name]!, root: root)
    }
    if let c = s["const"], c.compactText != v.compactText { return false }
    if let e = s["enum"]?.arrayValue, !e.contains(where: { $0.compactText == v.compactText }) { return false }
    if let any = s["anyOf"]?.arrayValue ?? s["oneOf"]?.arrayValue {
        if !any.contains(where: { validate(v, against: $0, root: root) }) { return false }
    }
    var types: [String] = []
    if let t = s["type"]?.stringValue { types = [t] }
    if let ts = s["type"]?.arrayValue { types = ts.compactMap(\.stringValue) }
    if !types.isEmpty {
        let ok = types.contains { t in
            switch (t, v) {
            case ("string", .string), ("boolean", .bool), ("null", .null), ("object", .object), ("array", .array): return true
            case ("number", .number): return true
            case ("integer", .number(let n)): return n.isInteger
            default: return false
            }
        }
        if !ok { return false }
    }
    if let minimum = s["minimum"]?.doubleValue, let d = v.doubleValue, d < minimum { return false }
    switch v {
    case .string(let str):
        let n = str.unicodeScalars.count
        if let lo = s["minLength"]?.intValue, n < lo { return false }
        if let hi = s["maxLength"]?.intValue, n > hi { return false }
    case .array(let items):
        if let lo = s["minItems"]?.intValue, items.count < lo { return false }
        if let hi = s["maxItems"]?.intValue, items.count > hi { return false }
        if let itemSchema = s["items"], !items.allSatisfy({ validate($0, against: itemSchema, root: root) }) { return false }
    case .object(let members):
        // (a repeated key is an error of the parse: see `parseOutput`)
        var props = JSONObject()
        if case .object(let p)? = s["properties"] { props = p }
        let keys = members.map(\.key)
        for r in s["required"]?.arrayValue ?? [] where !keys.contains(r.stringValue!) { return false }
        for m in members {
            if let sub = props.first(where: { $0.key == m.key })?.value {
                if !validate(m.value, against: sub, root: root) { return false }
            } else {
                let additional = s["additionalProperties"] ?? (s["properties"] == nil ? .bool(true) : .bool(false))
                if !validate(m.value, against: additional, root: root) { return false }
            }
        }
    default: break
    }
    return true
}

// MARK: - Helpers

private func accepts(_ grammar: JSONGrammar, _ text: String) -> (accepted: Bool, complete: Bool) {
    let c = GrammarConstraint(grammar: grammar)
    let ok = c.accept(bytes: Array(text.utf8))
    return (ok, ok && c.isComplete)
}

/// `.a` takes `{"city": string ≤ 5}`, `.ab` `{"zip": integer}`, `.n` a number; the header ends
/// with ` <|m|>` or `<|c|>x<|m|>`.
func namedGrammar() throws -> JSONGrammar {
    try JSONGrammar(named: [
        (name: ".a", schema: try JSONValue(parsing: #"{"type":"object","properties":{"city":{"type":"string","maxLength":5}},"required":["city"]}"#)),
        (name: ".ab", schema: try JSONValue(parsing: #"{"type":"object","properties":{"zip":{"type":"integer"}},"required":["zip"]}"#)),
        (name: ".n", schema: ["type": "number"]),
    ], separators: [" <|m|>", "<|c|>x<|m|>"])
}

private func isValid(_ grammar: JSONGrammar, _ text: String) -> Bool {
    let r = accepts(grammar, text)
    return r.accepted && r.complete
}

/// Greedy decoding with random logits under the constraint. Returns the text, or nil if no
/// end token came within `maxSteps`.
private func randomGreedyDecode(
    _ constraint: GrammarConstraint, tokenizer: FakeTokenizer, seed: UInt64, maxSteps: Int = 3000
) -> String? {
    var rng = Xoshiro256StarStar(seed: seed)
    var sampler = Sampler(parameters: .greedy)
    for _ in 0..<maxSteps {
        var logits = (0..<tokenizer.vocabularySize).map { _ in Float(rng.nextUnitDouble() * 10) }
        constraint.apply(to: &logits)
        let token = sampler.sample(logits: logits, history: [])
        #expect(constraint.accept(token: token), "sampled a token the mask allowed but accept refused")
        if constraint.isFinished { return constraint.text }
    }
    return nil
}

let personSchema = #"""
{
  "type": "object",
  "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 12},
    "age": {"type": "integer", "minimum": 0},
    "email": {"type": ["string", "null"]},
    "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "minItems": 1, "maxItems": 3},
    "kind": {"const": "person"},
    "address": {
      "type": "object",
      "properties": {"city": {"type": "string"}, "zip": {"type": "string", "maxLength": 5}},
      "required": ["city"]
    },
    "score": {"type": "number"},
    "ok": {"type": "boolean"}
  },
  "required": ["name", "age", "tags", "kind"]
}
"""#

/// Function calls told apart by their name, each with its own arguments.
let callsSchema = #"""
{
  "type": "array", "minItems": 1, "maxItems": 3,
  "items": {"anyOf": [
    {"type": "object", "required": ["name", "arguments"], "additionalProperties": false, "properties": {
      "name": {"const": "a"},
      "arguments": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 5}}, "required": ["city"]}}},
    {"type": "object", "required": ["name", "arguments"], "properties": {
      "name": {"const": "b"},
      "arguments": {"type": "object", "properties": {"zip": {"type": "integer"}, "children": {"type": "boolean"}},
                    "required": ["zip"]}}}
  ]}
}
"""#

let treeSchema = #"""
{
  "$defs": {
    "node": {
      "type": "object",
      "properties": {
        "value": {"type": "integer"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}
      },
      "required": ["value"]
    }
  },
  "anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]
}
"""#

@Suite struct GrammarRecognizerTests {
    @Test func jsonObjectModeAcceptsValidDocuments() throws {
        let docs = [
            "{}",
            #"{"a":1}"#,
            #"{ "a" : [1, 2.5e-3, -0, 0.25E+10, true, false, null, "x\n\u00e9\"\\\/"], "b": {"c": {}, "d": []} }"#,
            "{\"日本\": \"€😀é\", \"\": \"\"}",
            "{\n  \"nested\": [[[]], [{}], {\"x\": [-12.5]}]\n}",
        ]
        for doc in docs {
            #expect(isValid(.jsonObject, doc), "\(doc)")
            #expect((try? JSONSerialization.jsonObject(with: Data(doc.utf8))) != nil)
        }
    }

    @Test func jsonObjectModeRejectsInvalidDocuments() {
        let bad = [
            "[]", "1", "\"s\"", #"{"a":}"#, #"{"a":01}"#, #"{"a":1,}"#, "{'a':1}", #"{"a":tru}"#, #"{"a":1} "#,
            #"{"a":"\x"}"#, #"{"a":"\uD800"}"#, #"{"a":"\u12G4"}"#, #"{"a":1.}"#, #"{"a":-}"#, #"{"a":1e}"#,
            #"{"a" 1}"#, #"{"a":1 "b":2}"#, #"{a:1}"#, "{\"a\":\"\n\"}", #"{"a":[1,]}"#, #"{"a":[,1]}"#,
            "{}}", #"{"a":nulll}"#, #"{"a":1}{}"#,
        ]
        for doc in bad { #expect(!isValid(.jsonObject, doc), "\(doc)") }
        // Bytes: invalid UTF-8 inside strings.
        for bytes: [UInt8] in [[0xC0, 0x80], [0xFF], [0xED, 0xA0, 0x80], [0xE2, 0x82], [0xF4, 0x90, 0x80, 0x80], [0x80]] {
            let c = GrammarConstraint(grammar: .jsonObject)
            let ok = c.accept(bytes: Array("{\"a\":\"".utf8) + bytes + Array("\"}".utf8))
            #expect(!ok, "\(bytes)")
        }
    }

    @Test func prefixesAreAcceptedButIncomplete() {
        let doc = #"{"a": [1, {"b": "c"}], "d": -2.5}"#
        let c = GrammarConstraint(grammar: .jsonObject)
        for (i, b) in doc.utf8.enumerated() {
            #expect(c.accept(bytes: [b]))
            #expect(c.isComplete == (i == doc.utf8.count - 1))
        }
        #expect(c.isTerminal)
        #expect(!c.accept(bytes: Array(" ".utf8)))
    }

    @Test func anyValueTopLevel() {
        for doc in ["1", "-0.5e3", "\"s\"", "true", "null", "[1,[2]]", "{}"] {
            #expect(isValid(.anyJSON, doc), "\(doc)")
        }
        // A top-level number is complete but not terminal: more digits may follow.
        let c = GrammarConstraint(grammar: .anyJSON)
        c.accept(bytes: Array("12".utf8))
        #expect(c.isComplete && !c.isTerminal)
    }

    @Test func whitespaceRunIsLimited() {
        var g = JSONGrammar.jsonObject
        g.maxWhitespaceRun = 4
        #expect(isValid(g, "{    \"a\":1}"))
        #expect(!accepts(g, "{     \"a\":1}").accepted)
    }

    @Test func nestingDepthIsLimited() {
        var g = JSONGrammar.jsonObject
        g.maxNestingDepth = 3
        #expect(isValid(g, #"{"a":[{"b":1}]}"#))
        #expect(!accepts(g, #"{"a":[{"b":[]}]}"#).accepted)
        // Other values remain possible at the limit: no dead end.
        #expect(isValid(g, #"{"a":[{"b":"deep enough"}]}"#))
    }

    @Test func numbersAreLengthLimitedWithoutDeadEnds() {
        var g = JSONGrammar.jsonObject
        g.maxNumberLength = 4
        #expect(isValid(g, #"{"a":1234}"#))
        #expect(!accepts(g, #"{"a":12345}"#).accepted)
        #expect(!accepts(g, #"{"a":123."#).accepted)  // no room for a fraction digit
        #expect(isValid(g, #"{"a":12.5}"#))
    }
}

@Suite struct JSONSchemaTests {
    @Test func personSchemaAcceptsValidInstances() throws {
        let g = try JSONGrammar(schemaText: personSchema)
        let good = [
            #"{"name":"Bob","age":42,"tags":["a","c"],"kind":"person"}"#,
            #"{ "kind": "person", "tags": ["b"], "age": 7, "name": "日本€", "email": null }"#,
            #"{"name":"Al","age":0,"tags":["a","b","c"],"kind":"person","email":"x@y","address":{"city":"Oslo","zip":"0150"},"score":-1.5e3,"ok":false}"#,
        ]
        let schema = try JSONValue(parsing: personSchema)
        for doc in good {
            #expect(isValid(g, doc), "\(doc)")
            #expect(validate(try parseOutput(doc), against: schema, root: schema))
        }
    }

    @Test func personSchemaRejectsInvalidInstances() throws {
        let g = try JSONGrammar(schemaText: personSchema)
        let bad = [
            #"{"name":"Bob","age":42,"tags":["a"]}"#,  // missing kind
            #"{"name":"Bob","age":"42","tags":["a"],"kind":"person"}"#,  // age type
            #"{"name":"Bob","age":4.5,"tags":["a"],"kind":"person"}"#,  // integer
            #"{"name":"Bob","age":-4,"tags":["a"],"kind":"person"}"#,  // minimum 0
            #"{"name":"Bob","age":1,"tags":[],"kind":"person"}"#,  // minItems
            #"{"name":"Bob","age":1,"tags":["a","b","c","a"],"kind":"person"}"#,  // maxItems
            #"{"name":"Bob","age":1,"tags":["d"],"kind":"person"}"#,  // enum
            #"{"name":"","age":1,"tags":["a"],"kind":"person"}"#,  // minLength
            #"{"name":"abcdefghijklm","age":1,"tags":["a"],"kind":"person"}"#,  // maxLength
            #"{"name":"Bob","age":1,"tags":["a"],"kind":"robot"}"#,  // const
            #"{"name":"Bob","age":1,"tags":["a"],"kind":"person","extra":1}"#,  // no additional properties
            #"{"name":"Bob","name":"Bob","age":1,"tags":["a"],"kind":"person"}"#,  // repeated key
            #"{"name":"Bob","age":1,"tags":["a"],"kind":"person","address":{"zip":"1"}}"#,  // nested required
            #"{"name":"Bob","age":1,"tags":["a"],"kind":"person","ok":1}"#,  // boolean
            #"{"nam":"Bob","age":1,"tags":["a"],"kind":"person"}"#,  // key prefix only
            #"["a"]"#,
        ]
        for doc in bad { #expect(!isValid(g, doc), "\(doc)") }
    }

    @Test func refsAndAnyOf() throws {
        let g = try JSONGrammar(schemaText: treeSchema)
        #expect(isValid(g, "null"))
        #expect(isValid(g, #"{"value":1,"children":[{"value":2},{"value":3,"children":[]}]}"#))
        #expect(!isValid(g, #"{"value":1,"children":[{"value":2},{"value":3},{"value":4}]}"#))
        #expect(!isValid(g, #"{"children":[]}"#))
        #expect(!isValid(g, "1"))
    }

    @Test func taggedUnionConstrainsByTheChosenAlternative() throws {
        let g = try JSONGrammar(schemaText: callsSchema)
        #expect(isValid(g, #"[{"name":"a","arguments":{"city":"Oslo"}}]"#))
        #expect(isValid(g, #"[{"name": "b", "arguments": {"zip": 12}}, {"name":"a","arguments":{"city":""}}]"#))
        #expect(!isValid(g, #"[{"name":"a","arguments":{"zip":12}}]"#), "b's parameters under a's name")
        #expect(!isValid(g, #"[{"name":"b","arguments":{"city":"Oslo"}}]"#), "a's parameters under b's name")
        #expect(!isValid(g, #"[{"name":"a","arguments":{"city":"Bergen"}}]"#), "a's maxLength")
        #expect(!isValid(g, #"[{"arguments":{"zip":1},"name":"b"}]"#), "the tag comes first")
        #expect(!isValid(g, #"[{"name":"c","arguments":{}}]"#))
        #expect(!isValid(g, #"[{"name":"a","name":"a","arguments":{"city":"x"}}]"#))
        // without a shared const property the alternatives are picked by their first byte
        let plain = try JSONGrammar(schemaText: #"{"anyOf":[{"type":"object","properties":{"x":{"type":"integer"}}},{"type":"string"}]}"#)
        #expect(isValid(plain, #"{"x":1}"#) && isValid(plain, #""s""#) && !isValid(plain, #"{"y":1}"#))
    }

    /// A name in plain text picks the schema of the value after it (a gpt-oss call header).
    @Test func namedValuesFollowTheSchemaTheirNamePicks() throws {
        let g = try namedGrammar()
        #expect(isValid(g, #".a <|m|>{"city":"Oslo"}"#))
        #expect(isValid(g, #".ab<|c|>x<|m|>{"zip": 12}"#), "a name that extends another")
        #expect(isValid(g, ".n <|m|>7"), "a number as the whole value")
        #expect(!isValid(g, #".a <|m|>{"zip":12}"#), "ab's schema under a's name")
        #expect(!isValid(g, #".ab <|m|>{"city":"Oslo"}"#), "a's schema under ab's name")
        #expect(!isValid(g, #".c <|m|>{}"#), "not a name")
        #expect(!isValid(g, #" .a <|m|>{"city":"x"}"#) && !isValid(g, #".a  <|m|>{"city":"x"}"#)
                && !isValid(g, #".a <|m|> {"city":"x"}"#), "no whitespace but the separator's own")
        #expect(!isValid(g, #".a <|m|>{"city":"x"} "#), "nothing after the value")
        #expect(!isValid(g, ".a <|m|>") && !isValid(g, ".a") && !isValid(g, ".n <|m|>7."), "incomplete")
        #expect(throws: JSONGrammarError.self) {
            try JSONGrammar(named: [(name: "a", schema: true), (name: "a b", schema: true)], separators: [" "])
        }
        #expect(throws: JSONGrammarError.self) {
            try JSONGrammar(named: [(name: "a", schema: true)], separators: ["<", "<|"])
        }
    }

    @Test func additionalPropertiesChoices() throws {
        // properties without additionalProperties: closed. With true or a schema: open.
        let closed = try JSONGrammar(schemaText: #"{"properties":{"a":{"type":"integer"}}}"#)
        #expect(isValid(closed, #"{"a":1}"#) && isValid(closed, "{}"))
        #expect(!isValid(closed, #"{"b":1}"#))
        let open = try JSONGrammar(schemaText: #"{"properties":{"a":{"type":"integer"}},"additionalProperties":{"type":"string"}}"#)
        #expect(isValid(open, #"{"a":1,"ab":"x","b":"y"}"#))
        #expect(!isValid(open, #"{"b":1}"#))
        #expect(!isValid(open, #"{"a":1,"a":2}"#))
        #expect(!isValid(open, #"{"a":"x"}"#))
        let free = try JSONGrammar(schemaText: #"{"type":"object"}"#)
        #expect(isValid(free, #"{"anything":[1,{"x":null}]}"#))
    }

    @Test func nonNegativeNumbers() throws {
        let g = try JSONGrammar(schemaText: #"{"type":"integer","minimum":0}"#)
        #expect(isValid(g, "5") && isValid(g, "0") && !isValid(g, "-5"))
        let n = try JSONGrammar(schemaText: #"{"type":"number","minimum":2.5}"#)
        #expect(isValid(n, "3.5") && !isValid(n, "-3.5"))
        let any = try JSONGrammar(schemaText: #"{"type":"number","minimum":-1}"#)
        #expect(isValid(any, "-0.5"))
    }

    @Test func enumsOfMixedValues() throws {
        let g = try JSONGrammar(schemaText: #"{"enum":[1, 12, "1", null, [1,2], {"k":true}]}"#)
        for doc in ["1", "12", "\"1\"", "null", "[1,2]", #"{"k":true}"#] { #expect(isValid(g, doc), "\(doc)") }
        for doc in ["2", "123", "\"12\"", "[1, 2]", "true"] { #expect(!isValid(g, doc), "\(doc)") }
        // Inside an object the number option "1" ends at the comma.
        let obj = try JSONGrammar(schemaText: #"{"properties":{"n":{"enum":[1,12]},"m":{"type":"null"}},"required":["n","m"]}"#)
        #expect(isValid(obj, #"{"n":1,"m":null}"#))
        #expect(isValid(obj, #"{"n":12,"m":null}"#))
    }

    @Test func responseFormat() throws {
        #expect(try JSONGrammar.forResponseFormat(JSONValue(parsing: #"{"type":"text"}"#)) == nil)
        let object = try #require(try JSONGrammar.forResponseFormat(JSONValue(parsing: #"{"type":"json_object"}"#)))
        #expect(isValid(object, "{}") && !isValid(object, "[]"))
        let schema = try #require(try JSONGrammar.forResponseFormat(JSONValue(parsing: """
            {"type":"json_schema","json_schema":{"name":"x","strict":true,
             "schema":{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false}}}
            """)))
        #expect(isValid(schema, #"{"ok":true}"#) && !isValid(schema, "{}"))
    }

    @Test func unsupportedSchemasThrow() {
        for s in [
            #"{"type":"tuple"}"#, #"{"allOf":[{},{}]}"#, #"{"$ref":"http://x"}"#, #"{"items":[{}]}"#,
            #"{"prefixItems":[{}]}"#, #"{"required":["x"],"properties":{},"additionalProperties":false}"#, "false", "3",
        ] {
            #expect(throws: JSONGrammarError.self) { try JSONGrammar(schemaText: s) }
        }
        #expect(throws: JSONGrammarError.self) { try JSONGrammar(schemaText: "{") }
    }
}

@Suite struct GrammarConstraintTests {
    let tokenizer = FakeTokenizer()

    @Test func trieMaskMatchesBruteForce() throws {
        let vocab = TokenVocabulary(tokenizer: tokenizer)
        let schemaGrammar = try JSONGrammar(schemaText: personSchema)
        let cases: [(JSONGrammar, String)] = [
            (.jsonObject, #"{"a": [1, {"b": "c\u00e9"}], "d": -2.5e+3, "e": tru"#),
            (.anyJSON, "12"),
            (schemaGrammar, #"{"name":"hello world!","email":"hello world","#),
            (schemaGrammar, #"{"name":"Bo","age":42,"tags":["a","c"],"kind":"person","address":{"city":"X"}}"#),
            (try JSONGrammar(schemaText: callsSchema), #"[{"name":"b","arguments":{"zip":1}},{"name": "a", "arguments": {"city":"x"}}]"#),
            (try namedGrammar(), #".ab<|c|>x<|m|>{"zip":12}"#),
            (try namedGrammar(), ".n <|m|>-1.5e+3"),
        ]
        for (grammar, doc) in cases {
            let c = GrammarConstraint(grammar: grammar, vocabulary: vocab)
            let bytes = Array(doc.utf8)
            for i in 0...bytes.count {
                if i > 0 { #expect(c.accept(bytes: [bytes[i - 1]])) }
                let mask = c.allowedTokenMask()
                for t in 0..<tokenizer.vocabularySize {
                    let id = TokenID(t)
                    let expected: Bool
                    if tokenizer.endOfGenerationTokens.contains(id) {
                        expected = c.isComplete
                    } else {
                        let piece = tokenizer.pieceBytes(id)
                        expected = !piece.isEmpty && c.allows(bytes: piece)
                    }
                    if mask.contains(id) != expected {
                        Issue.record("token \(t) \(tokenizer.tokenText(id).debugDescription) after \(String(decoding: bytes[..<i], as: UTF8.self).debugDescription): mask \(mask.contains(id)), expected \(expected)")
                    }
                }
                #expect(!mask.isEmpty, "dead end after \(i) bytes")
            }
        }
    }

    @Test func applySetsDisallowedLogitsToMinusInfinity() {
        let c = GrammarConstraint(grammar: .jsonObject)
        var logits = [Float](repeating: 1, count: tokenizer.vocabularySize + 5)  // padded output layer
        c.apply(to: &logits, tokenizer: tokenizer)
        let allowed = logits.indices.filter { logits[$0] > -.infinity }.map { tokenizer.tokenText(TokenID($0)) }
        #expect(Set(allowed) == ["{", "{\"", "{}", " {", "{\n  \"", " ", "\n", "\t", "\r", "  ", "    ", "\n  "])
        #expect(!c.accept(token: 0))  // EOS before the document is complete
        #expect(c.accept(token: tokenizer.encode("{}", addSpecial: false, parseSpecial: false)[0]))
        #expect(c.isComplete && c.isTerminal)
        #expect(c.allowedTokenMask(tokenizer: tokenizer).tokens == [0])
        #expect(c.accept(token: 0) && c.isFinished)
    }

    @Test func greedyRandomDecodingYieldsValidJSONObjects() throws {
        var g = JSONGrammar.jsonObject
        g.maxNestingDepth = 6
        let vocab = TokenVocabulary(tokenizer: tokenizer)
        for seed in 0..<25 {
            let c = GrammarConstraint(grammar: g, vocabulary: vocab)
            let text = try #require(randomGreedyDecode(c, tokenizer: tokenizer, seed: UInt64(seed)), "seed \(seed) did not finish")
            let parsed = try JSONSerialization.jsonObject(with: Data(text.utf8))
            #expect(parsed is [String: Any], "\(text)")
            _ = try parseOutput(text)
        }
    }

    @Test(arguments: [personSchema, treeSchema, callsSchema])
    func greedyRandomDecodingMatchesTheSchema(schemaText: String) throws {
        let schema = try JSONValue(parsing: schemaText)
        let g = try JSONGrammar(schema: schema)
        let vocab = TokenVocabulary(tokenizer: tokenizer)
        for seed in 0..<25 {
            let c = GrammarConstraint(grammar: g, vocabulary: vocab)
            let text = try #require(randomGreedyDecode(c, tokenizer: tokenizer, seed: UInt64(seed)), "seed \(seed) did not finish")
            #expect((try? JSONSerialization.jsonObject(with: Data(text.utf8), options: [.fragmentsAllowed])) != nil, "\(text)")
            let value = try parseOutput(text)
            #expect(validate(value, against: schema, root: schema), "\(text)")
        }
    }

    @Test func sampledDecodingWithTheDefaultChain() throws {
        // The full sampler (top-k/top-p/min-p/temperature) on masked logits never picks a
        // disallowed token.
        let schema = try JSONValue(parsing: personSchema)
        let c = GrammarConstraint(grammar: try JSONGrammar(schema: schema), vocabulary: TokenVocabulary(tokenizer: tokenizer))
        var sampler = Sampler(parameters: SamplingParameters(seed: 3))
        var rng = Xoshiro256StarStar(seed: 4)
        var history: [TokenID] = []
        for _ in 0..<3000 where !c.isFinished {
            var logits = (0..<tokenizer.vocabularySize).map { _ in Float(rng.nextUnitDouble() * 3) }
            let token = logits.withUnsafeMutableBufferPointer { sampler.sample(logits: $0, history: history, constraint: c) }
            #expect(c.accept(token: token))
            history.append(token)
        }
        #expect(c.isFinished)
        #expect(validate(try parseOutput(c.text), against: schema, root: schema), "\(c.text)")
    }

    @Test func trieHoldsEveryTokenOnce() {
        let vocab = TokenVocabulary(tokenizer: tokenizer)
        var found: [TokenID: [UInt8]] = [:]
        func visit(_ trie: TokenTrie, _ node: Int, _ prefix: [UInt8]) {
            for i in Int(trie.terminalStart[node])..<Int(trie.terminalStart[node + 1]) {
                #expect(found[trie.terminalTokens[i]] == nil)
                found[trie.terminalTokens[i]] = prefix
            }
            let start = Int(trie.edgeStart[node])
            for e in start..<(start + Int(trie.edgeCount[node])) {
                if e > start { #expect(trie.edgeByte[e - 1] < trie.edgeByte[e]) }
                visit(trie, Int(trie.edgeChild[e]), prefix + [trie.edgeByte[e]])
            }
        }
        visit(vocab.trie, 0, [])
        #expect(found.count == tokenizer.vocabularySize - 2)  // not EOS, not the empty control token
        for (t, bytes) in found { #expect(bytes == tokenizer.pieceBytes(t)) }
        #expect(vocab.endOfGeneration == [0])
    }

    @Test func plainStringContent() {
        #expect(TokenVocabulary.isPlainStringContent(Array("hello world {}[]:,'".utf8)))
        #expect(TokenVocabulary.isPlainStringContent(Array("é日本😀\u{7F}".utf8)))
        #expect(!TokenVocabulary.isPlainStringContent(Array("a\"".utf8)))
        #expect(!TokenVocabulary.isPlainStringContent(Array("a\\n".utf8)))
        #expect(!TokenVocabulary.isPlainStringContent(Array("a\n".utf8)))  // raw newline
        for bytes: [UInt8] in [[0xC3], [0xA9], [0xE0, 0x80, 0x80], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF]] {
            #expect(!TokenVocabulary.isPlainStringContent(bytes))
        }
    }
}
