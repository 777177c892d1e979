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
        discussion: """
        With a PROMPT, answers it and exits; `swiftlet run "PROMPT"` alone asks the default model. Without, starts a \
        chat: /exit quits, /clear forgets the conversation, /system TEXT sets the system prompt; Ctrl-C stops an answer. \
        A model without a chat template (a base model) continues the text instead, stopping at a blank line.
        """)

    @Argument(help: "Path to a .gguf file, a model name (\(ModelCatalog.entries.map(\.name).joined(separator: ", ")), or a Hugging Face name USER/REPO[:QUANT]).")
    var model: String?
    @Argument(help: "A single message to answer; omit for an interactive chat.")
    var prompt: String?
    @Option(name: [.customShort("n"), .customLong("n-predict")], help: "Tokens per answer at most (default: 1024; 128 when completing text).")
    var maxTokens: Int?
    @Option(help: "System prompt.")
    var system: String?
    @Flag(help: "Chat through the architecture's built-in template even when the file has none.")
    var chat = false
    @OptionGroup var sampling: SamplingOptions
    @OptionGroup var speculative: SpeculativeOptions
    @OptionGroup var runtime: RuntimeOptions
    @OptionGroup var chatTemplate: ChatTemplateOptions
    @OptionGroup var lora: LoRAOptions
    @OptionGroup var cache: CacheTypeOptions

    /// Tokens per answer when a base model completes text: it has no end-of-turn to stop at.
    static let completionTokens = 128

    func validate() throws {
        if let maxTokens, maxTokens < 1 { throw ValidationError("--n-predict must be at least 1") }
        guard runtime.contextLength > 0 else { throw ValidationError("--ctx must be positive") }
        if let model, prompt != nil { try ModelLocator.validate(model) }
    }

    /// MODEL and PROMPT as given, except that a single argument that names no model is the prompt.
    func modelAndPrompt() -> (model: String, prompt: String?) {
        guard let model else { return (ModelCatalog.defaultModel, nil) }
        if prompt == nil && !ModelLocator.namesModel(model) {
            if !model.contains(where: \.isWhitespace) {
                printError("('\(model)' names no model; answering it as a prompt with \(ModelCatalog.defaultModel))")
            }
            return (ModelCatalog.defaultModel, model)
        }
        return (model, prompt)
    }

    func run() throws {
        let (model, prompt) = modelAndPrompt()
        let loaded = try LoadedModel(path: ModelLocator.resolve(model), memoryBudget: runtime.memoryBudget,
                                     chatTemplate: try chatTemplate.template(), adapters: lora.files(), cacheTypes: cache.types)
        let generator = try Generator(model: loaded, configuration: .singleSequence(contextLength: runtime.contextLength,
                                                                                     threads: runtime.threads),
                                      draftModel: try speculative.loadDraftModel(for: loaded))
        defer { generator.shutdownAndWait() }
        var chat = Conversation(model: loaded, generator: generator, system: system)
        chat.speculation = speculative.speculation
        if !loaded.hasChatTemplate && !self.chat && chatTemplate.chatTemplateFile == nil {
            chat.completesText = true
            printError("note: \(loaded.name) has no chat template (a base model?): continuing the text instead of chatting, "
                       + "up to \(maxTokens ?? Self.completionTokens) tokens or a blank line (--chat uses the built-in "
                       + "\(loaded.config.architecture) template anyway)")
        }
        let limit = maxTokens ?? (chat.completesText ? Self.completionTokens : 1024)
        installInterruptHandler()

        if let prompt {
            try chat.answer(prompt, maxTokens: limit, sampling: sampling)
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
                try chat.answer(input, maxTokens: limit, sampling: sampling)
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
    /// A base model: each input is text to continue (no template, no history), up to a blank line.
    var completesText = false
    var speculation: Speculation?

    init(model: LoadedModel, generator: Generator, system: String?) {
        self.model = model
        self.generator = generator
        self.system = system
    }

    mutating func clear() { messages = [] }

    mutating func answer(_ text: String, maxTokens: Int, sampling: SamplingOptions) throws {
        if completesText {
            let tokens = model.tokenizer.encode(text, addSpecial: true, parseSpecial: false)
            print(text, terminator: "")
            _ = try stream(tokens, sampling.generationOptions(maxTokens: maxTokens, extraStop: ["\n\n"], speculation: speculation))
            return
        }
        var turn = messages + [ChatMessage(role: "user", content: text)]
        if let system, !system.isEmpty { turn.insert(ChatMessage(role: "system", content: system), at: 0) }
        let tokens = model.promptTokens(for: try model.renderChat(turn))
        let result = try stream(tokens, sampling.generationOptions(maxTokens: maxTokens, speculation: speculation))
        messages.append(ChatMessage(role: "user", content: text))
        messages.append(ChatMessage(role: "assistant", content: result.text))
    }

    /// Prints the reply as it comes (Ctrl-C stops it), then the timings.
    private func stream(_ tokens: [TokenID], _ options: GenerationOptions) throws -> GenerationResult {
        try generator.validate(prompt: tokens)
        let result = try generator.generate(prompt: tokens, options: options) { piece in
            print(piece, terminator: "")
            fflush(nil)
            return interruptRequested == 0
        }
        print()
        fflush(nil)
        if result.finishReason == .cancelled { printError("(stopped)") }
        printError(result.timings.summary)
        return result
    }
}
