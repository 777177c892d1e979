import Foundation
import GGUF
import TestSupport
import Testing
@testable import Tokenization

/// The real models' tokenizers, loaded once per test process. A missing model is an error
/// (the tests fail, they do not skip).
enum TestModels {
    struct Missing: Error, CustomStringConvertible {
        let path: String
        var description: String { "model file not found at \(path) (run `swiftlet pull` or .ci/run to fetch it)" }
    }

    static func load(_ path: String) throws -> any Tokenizer {
        guard FileManager.default.fileExists(atPath: path) else { throw Missing(path: path) }
        return try loadTokenizer(from: GGUFFile(path: path))
    }

    static let smolLM2Result: Result<any Tokenizer, any Error> = Result { try load(TestSupport.smolLM2Path) }
    static let gemma3Result: Result<any Tokenizer, any Error> = Result { try load(TestSupport.gemma3Path) }

    static func smolLM2() throws -> any Tokenizer { try smolLM2Result.get() }
    static func gemma3() throws -> any Tokenizer { try gemma3Result.get() }
}

/// One `tokenize` case of a `shared/reference/*.json` file.
struct ReferenceCase: CustomStringConvertible {
    let text: String
    let parseSpecial: Bool
    let addBOSDefault: Bool
    let tokens: [TokenID]

    var description: String {
        "\(String(reflecting: text)) parse_special=\(parseSpecial)"
    }

    static func load(_ name: String) throws -> [ReferenceCase] {
        let json = try TestSupport.reference(name)
        let cases = try #require(json["tokenize"] as? [[String: Any]], "\(name).json has no tokenize array")
        return try cases.map { c in
            ReferenceCase(
                text: try #require(c["text"] as? String),
                parseSpecial: try #require(c["parse_special"] as? Bool),
                addBOSDefault: (c["add_bos_default"] as? Bool) ?? true,
                tokens: try #require(c["tokens"] as? [Int]).map(TokenID.init))
        }
    }
}
