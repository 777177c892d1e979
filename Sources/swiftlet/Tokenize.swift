import ArgumentParser
import Foundation
import GGUF
import Tokenization

struct Tokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Split text into the model's tokens.",
        discussion: "Prints one line per token, `id -> 'piece'`, or with --ids a JSON array of the ids.")

    @Argument(help: "Path to a .gguf file or a model name from the cache.")
    var model: String

    @Argument(help: "The text to tokenize (or use --stdin).")
    var text: String?

    @Flag(help: "Read the text from standard input, verbatim.")
    var stdin = false

    @Flag(help: "Print only a JSON array of the token ids.")
    var ids = false

    @Flag(help: "Turn special-token text such as <|im_start|> into its single token.")
    var parseSpecial = false

    @Flag(help: "Do not add the BOS/EOS tokens the model's metadata asks for.")
    var noBos = false

    func validate() throws {
        if stdin && text != nil { throw ValidationError("give either TEXT or --stdin, not both") }
        if !stdin && text == nil { throw ValidationError("missing TEXT (or use --stdin)") }
        try ModelLocator.validate(model)
    }

    func run() throws {
        let input: String
        if stdin {
            input = String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self)
        } else {
            input = text ?? ""
        }
        let tokenizer = try loadTokenizer(from: GGUFFile(path: ModelLocator.resolve(model)))
        let tokens = tokenizer.encode(input, addSpecial: !noBos, parseSpecial: parseSpecial)
        if ids {
            print("[" + tokens.map(String.init).joined(separator: ", ") + "]")
        } else {
            for t in tokens {
                let piece = String(decoding: tokenizer.pieceBytes(t, special: true), as: UTF8.self)
                print("\(t) -> '\(piece)'")
            }
        }
    }
}
