import Foundation
import JSON
import Testing

@Suite struct JSONParsingTests {
    @Test func keepsKeyOrderAndNumberText() throws {
        let v = try JSONValue(parsing: #" {"b": [1, 2.50, -3e2, true, null], "a": "x\n\u00e9\ud83d\ude00"} "#)
        #expect(v.compactText == "{\"b\":[1,2.50,-3e2,true,null],\"a\":\"x\\né😀\"}")
        #expect(v["a"]?.stringValue == "x\né😀")
        #expect(v.objectValue.map { Array($0.keys) } == ["b", "a"])
        let numbers = try #require(v["b"]?.arrayValue)
        #expect(numbers[0].intValue == 1)
        #expect(numbers[1].intValue == nil)
        #expect(numbers[1].doubleValue == 2.5)
        #expect(numbers[2].doubleValue == -300)
        #expect(numbers[3].boolValue == true)
    }

    @Test func rejectsInvalidText() {
        let bad = ["", "{", "[1,]", "01", "\"\\x\"", "{\"a\" 1}", "nul", "1 2", "{\"a\": }", "[1, 2", "1.", "-", "1e",
                   "\"\\ud800\"", "\"\\ud800\\u0041\"", "\"a\nb\"", "{'a': 1}", "NaN"]
        for text in bad {
            #expect(throws: JSONParseError.self, "\(text)") { try JSONValue(parsing: text) }
        }
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: [0x22, 0xFF, 0x22]) }
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        #expect(throws: JSONParseError.self) { try JSONValue(parsing: deep) }
    }

    /// As Python's json.loads: a repeated key keeps its first position and its last value.
    @Test func repeatedKeys() throws {
        let v = try JSONValue(parsing: #"{"a": 1, "b": 2, "a": 3}"#)
        #expect(v.compactText == #"{"a":3,"b":2}"#)
        #expect(v["a"]?.intValue == 3)
        let error = try #require(throws: JSONParseError.self) {
            try JSONValue(parsing: #"{"a": 1, "b": {"a": 2}, "a": 3}"#, allowingDuplicateKeys: false)
        }
        #expect(error.offset == 24 && error.message == #"repeated key "a""#)
        #expect(try JSONValue(parsing: #"{"a": {"a": 1}, "b": [{"a": 2}]}"#, allowingDuplicateKeys: false)["a"]?["a"] == 1)
    }

    @Test func numberText() {
        #expect(JSONNumber(text: "-0.5e+3")?.doubleValue == -500)
        for bad in ["", "+1", "01", ".5", "1.", "0x10", " 1", "NaN"] { #expect(JSONNumber(text: bad) == nil, "\(bad)") }
        #expect(JSONNumber(12).text == "12")
        #expect(JSONNumber(UInt8(255)).text == "255")
        #expect(JSONNumber(2.0).text == "2.0")
        #expect(JSONNumber(Float(0.1)).text == "0.1")
        #expect(JSONNumber(-9999 as Float).text == "-9999.0")
        #expect(JSONNumber(12).isInteger && !JSONNumber(2.0).isInteger)
        #expect(JSONNumber(text: "123456789012345678901234")?.intValue == nil)
        #expect(JSONNumber(Double.nan).doubleValue?.isNaN == true)
    }
}

@Suite struct JSONSerializationTests {
    /// `jsonString` is Python's `json.dumps(json.loads(text), ensure_ascii=False)`, as the
    /// chat templates' `tojson` needs it: numbers as Python re-writes them.
    @Test func writesLikePython() throws {
        let v = try JSONValue(parsing: #"{"z": 1, "a": [true, null, 1.5, "é\n"], "m": {}, "e": 1e-5, "u": "\ud83d\ude00", "f": 2.50, "n": -0}"#)
        #expect(v.jsonString() == #"{"z": 1, "a": [true, null, 1.5, "é\n"], "m": {}, "e": 1e-05, "u": "😀", "f": 2.5, "n": 0}"#)
        #expect(JSONValue.array([1, ["k": "v"]]).jsonString(indent: 2) == "[\n  1,\n  {\n    \"k\": \"v\"\n  }\n]")
        #expect(JSONValue.array([]).jsonString(indent: 2) == "[]")
    }

    @Test func formatOptions() {
        let v: JSONValue = ["b": "é😀", "a": [1, 2.5], "c": .null]
        var f = JSONFormat()
        f.sortKeys = true
        f.ensureASCII = true
        f.itemSeparator = ","
        f.keySeparator = "="
        #expect(v.jsonString(f) == #"{"a"=[1,2.5],"b"="\u00e9\ud83d\ude00","c"=null}"#)
        #expect(v.compactText == #"{"b":"é😀","a":[1,2.5],"c":null}"#)
    }

    @Test func escapesControlCharacters() {
        let s = "q\"b\\n\n\r\t\u{08}\u{0C}\u{01}\u{1F}\u{7F}/"
        #expect(JSONValue.encodeString(s) == #""q\"b\\n\n\r\t\b\f\u0001\u001f\#u{7F}/""#)
        #expect(JSONValue.string(s).compactText == JSONValue.encodeString(s))
    }

    /// Whatever the writer produces, the parser reads back to the same value.
    @Test func roundTrips() throws {
        let v: JSONValue = ["text": "a\u{0}b\"\\ 日本 😀", "list": [1, -2, 0.25, 1e300, true, false, .null, [:], []],
                            "nested": ["x": ["y": ["z": 1]]]]
        for format in [JSONFormat.compact, JSONFormat(), JSONFormat(indent: 4)] {
            #expect(try JSONValue(parsing: v.jsonString(format)) == v)
        }
        var ascii = JSONFormat()
        ascii.ensureASCII = true
        #expect(try JSONValue(parsing: v.jsonString(ascii)) == v)
        // and Foundation reads it too
        #expect((try? JSONSerialization.jsonObject(with: Data(v.compactText.utf8))) != nil)
    }

    @Test func floatReprMatchesPython() {
        #expect(pythonFloatRepr(1.0) == "1.0")
        #expect(pythonFloatRepr(0.1 + 0.2) == "0.30000000000000004")
        #expect(pythonFloatRepr(1e-5) == "1e-05")
        #expect(pythonFloatRepr(1e16) == "1e+16")
        #expect(pythonFloatRepr(123456789.0) == "123456789.0")
        #expect(pythonFloatRepr(-2.5) == "-2.5")
        #expect(pythonFloatRepr(.nan) == "nan" && pythonFloatRepr(.nan, json: true) == "NaN")
        #expect(pythonFloatRepr(-.infinity) == "-inf" && pythonFloatRepr(-.infinity, json: true) == "-Infinity")
    }

    /// Codable (JSONEncoder/JSONDecoder) keeps the kinds of values; key order follows the coder.
    @Test func codable() throws {
        let v: JSONValue = ["a": [1, 2.5, "s", true, .null]]
        let data = try JSONEncoder().encode(v)
        #expect(try JSONDecoder().decode(JSONValue.self, from: data) == v)
    }
}
