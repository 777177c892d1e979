import ArgumentParser
import Engine
import Foundation
import Server

extension EmbeddingPooling: ExpressibleByArgument {}
extension ReasoningFormat: ExpressibleByArgument {}

struct Embed: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the embedding of each text: one JSON array of floats per line, L2-normalized.",
        discussion: """
        The vectors are the model's final hidden states (after the output norm), pooled over the \
        text's tokens as the file's pooling_type says, else by their mean; --pooling overrides. \
        Special tokens are added (BOS, EOS as the model wants) and special-token text is parsed, \
        as llama-embedding does.
        """)

    @Argument(help: "Path to a .gguf file or a model name from the cache.")
    var model: String
    @Argument(help: "The texts to embed (at least one).")
    var texts: [String]
    @Option(help: "mean, cls or last (default: the model's pooling_type, else mean).")
    var pooling: EmbeddingPooling?
    @OptionGroup var runtime: RuntimeOptions

    func validate() throws {
        guard !texts.isEmpty else { throw ValidationError("give at least one text to embed") }
        try ModelLocator.validate(model)
    }

    func run() throws {
        let loaded = try LoadedModel(path: ModelLocator.resolve(model), memoryBudget: runtime.memoryBudget)
        let prompts = texts.map { loaded.tokenizer.encode($0, addSpecial: true, parseSpecial: true) }
        let generator = try Generator(model: loaded, configuration: .init(
            contextLength: runtime.contextLength, parallel: min(prompts.count, 8), maxQueue: prompts.count,
            threads: runtime.threads))
        defer { generator.shutdownAndWait() }
        let vectors = try generator.embed(prompts, pooling: pooling ?? EmbeddingPooling(file: loaded.file) ?? .fallback)
        for v in vectors {
            print("[" + v.map { "\($0)" }.joined(separator: ",") + "]")
        }
    }
}
