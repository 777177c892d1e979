import Engine
import Foundation
import FuzzDriver
import JSON

/// The JSON-schema → grammar compiler on arbitrary schemas, then the compiled grammar stepping
/// through a document. Input: the schema text, optionally a 0 byte and the document bytes.
/// A schema compiles or fails with a `JSONGrammarError`; every document prefix the grammar
/// accepts and calls complete is valid JSON.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let split = bytes.firstIndex(of: 0) ?? bytes.count
    let schemaText = String(decoding: bytes[..<split], as: UTF8.self)
    let document = split < bytes.count ? bytes[(split + 1)...] : []
    let grammar: JSONGrammar
    do {
        grammar = try JSONGrammar(schemaText: schemaText)
    } catch is JSONGrammarError {
        return 0
    } catch {
        fatalError("untyped schema error \(error)")
    }
    let constraint = GrammarConstraint(grammar: grammar)
    for byte in document {
        guard constraint.accept(bytes: [byte]) else { break }
        if constraint.isComplete, (try? JSONValue(parsing: constraint.bytes)) == nil {
            fatalError("the grammar calls an invalid document complete: \(String(reflecting: constraint.text))")
        }
    }
    return 0
}

exit(fuzz_driver_main(CommandLine.argc, CommandLine.unsafeArgv, fuzzOneInput))
