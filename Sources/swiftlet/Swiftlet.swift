import ArgumentParser
import Engine

@main
struct Swiftlet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftlet",
        abstract: "Run GGUF language models on your CPU.",
        version: SwiftletVersion.current,
        subcommands: [Run.self, Serve.self, Generate.self, Pull.self, List.self, Remove.self, Info.self, Tokenize.self, Perplexity.self,
                      Embed.self, Bench.self, Quantize.self, Upscale.self]
    )
}
