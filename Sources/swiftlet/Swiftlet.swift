import ArgumentParser

@main
struct Swiftlet: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "swiftlet",
        abstract: "Run GGUF language models on your CPU.",
        subcommands: [Info.self, Tokenize.self]
    )
}
