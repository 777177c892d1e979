import Foundation
import FuzzDriver
import JSON

/// The JSON parser on arbitrary bytes: a value or a `JSONParseError`, never a crash or a hang;
/// a parsed value, written back out with its numbers as written, parses to the same value (the
/// Python `json.dumps` form, which rewrites numbers as Python would, is only written).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    for allowingDuplicateKeys in [true, false] {
        let value: JSONValue
        do {
            value = try JSONValue(parsing: bytes, allowingDuplicateKeys: allowingDuplicateKeys)
        } catch is JSONParseError {
            continue
        } catch {
            fatalError("untyped parse error \(error)")
        }
        var indented = JSONFormat(indent: 2)
        indented.numbers = .asWritten
        _ = value.jsonString(indent: 2)
        for text in [value.compactText, value.jsonString(indented)] {
            guard let again = try? JSONValue(parsing: text) else { fatalError("written value does not parse: \(text)") }
            guard again == value else { fatalError("round trip changed the value: \(text)") }
        }
    }
    return 0
}

exit(fuzz_driver_main(CommandLine.argc, CommandLine.unsafeArgv, fuzzOneInput))
