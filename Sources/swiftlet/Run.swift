import ArgumentParser
import Engine
import Foundation
import Tokenization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Set by SIGINT; checked between tokens so Ctrl-C stops the answer, not the program.
nonisolated(unsafe) private var interruptRequested: sig_atomic_t = 0

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Chat with a model (default: SmolLM2, fetched on first use).",
        discussion: "With a PROMPT, answers it and exits. Without, starts a chat: /exit quits, /clear forgets the conversation, /system TEXT sets the system prompt; Ctrl-C stops an answer.")

    @Argument(help: "Path to a .gguf file or a model name (\(ModelCatalog.entries.map(\.name).joined(separator: ", "))).")
    var model: String = ModelCatalog.defaultModel
    @Argument(help: "A single message to answer; omit for an interactive chat.")
    var prompt: String?
    @Option(name: [.customShort("n"), .customLong("n-predict")], help: "Tokens per answer at most.")
    var maxTokens = 1024
    @Option(help: "System prompt.")
    var system: String?
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var chatTemplate: ChatTemplateOptions

    func run() throws {
        let loaded = try LoadedModel(path: ModelLocator.resolve(model), memoryBudget: runtime.memoryBudget,
                                     chatTemplate: try chatTemplate.template())
        let generator = try Generator(model: loaded, configuration: .singleSequence(contextLength: runtime.contextLength,
                                                                                     threads: runtime.threads))
        defer { generator.shutdownAndWait() }
        var chat = Conversation(model: loaded, generator: generator, system: system)
        installInterruptHandler()

        if let prompt {
            try chat.answer(prompt, maxTokens: maxTokens, sampling: sampling)
            return
        }
        printError("\(loaded.name) (\(loaded.config.architecture)), context \(runtime.contextLength). /exit quits, /clear forgets, /system TEXT sets the system prompt, Ctrl-C stops an answer.")
        while true {
            print("> ", terminator: "")
            fflush(nil)
            interruptRequested = 0
            guard let line = readLine() else { print(); break }
            let input = line.trimmingCharacters(in: .whitespaces)
            if input.isEmpty { continue }
            if input == "/exit" || input == "/quit" { break }
            if input == "/clear" { chat.clear(); printError("(conversation cleared)"); continue }
            if input.hasPrefix("/system") {
                chat.system = String(input.dropFirst("/system".count)).trimmingCharacters(in: .whitespaces)
                chat.clear()
                printError("(system prompt set; conversation cleared)")
                continue
            }
            do {
                try chat.answer(input, maxTokens: maxTokens, sampling: sampling)
            } catch {
                printError("error: \(error)")
            }
        }
    }

    private func installInterruptHandler() {
        var action = sigaction()
        #if canImport(Glibc)
        action.__sigaction_handler.sa_handler = { _ in interruptRequested = 1 }
        #else
        action.__sigaction_u.__sa_handler = { _ in interruptRequested = 1 }
        #endif
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0  // no SA_RESTART: Ctrl-C at the prompt ends readLine
        sigaction(SIGINT, &action, nil)
    }
}

/// A chat: the messages so far, rendered through the model's template on every turn; the
/// generator's prefix cache holds the conversation so far, so only the new turn is evaluated.
struct Conversation {
    let model: LoadedModel
    let generator: Generator
    var system: String?
    var messages: [ChatMessage] = []

    init(model: LoadedModel, generator: Generator, system: String?) {
        self.model = model
        self.generator = generator
        self.system = system
    }

    mutating func clear() { messages = [] }

    mutating func answer(_ text: String, maxTokens: Int, sampling: SamplingOptions) throws {
        var turn = messages + [ChatMessage(role: "user", content: text)]
        if let system, !system.isEmpty { turn.insert(ChatMessage(role: "system", content: system), at: 0) }
        let rendered = try model.renderChat(turn)
        let tokens = model.promptTokens(for: rendered)
        try generator.validate(prompt: tokens)
        let options = GenerationOptions(maxTokens: maxTokens, sampling: sampling.parameters, stop: sampling.stop)
        let result = try generator.generate(prompt: tokens, options: options) { piece in
            print(piece, terminator: "")
            fflush(nil)
            return interruptRequested == 0
        }
        print()
        fflush(nil)
        if result.finishReason == .cancelled { printError("(stopped)") }
        printError(result.timings.summary)
        messages.append(ChatMessage(role: "user", content: text))
        messages.append(ChatMessage(role: "assistant", content: result.text))
    }
}
