import ArgumentParser
import Engine
import Foundation
import Kernels
import Models
import Tokenization

/// Sampler and decoding flags shared by `generate` and `run` (llama.cpp's names and defaults).
struct SamplingOptions: ParsableArguments {
    @Option(name: .customLong("temp"), help: "Temperature; 0 is greedy.")
    var temperature: Float = 0.8
    @Option(name: .customLong("top-k"), help: "Keep the K most likely tokens (0 = off).")
    var topK: Int = 40
    @Option(name: .customLong("top-p"), help: "Nucleus sampling threshold (1 = off).")
    var topP: Float = 0.95
    @Option(name: .customLong("min-p"), help: "Drop tokens below P × the top probability (0 = off).")
    var minP: Float = 0.05
    @Option(name: .customLong("repeat-penalty"), help: "Penalty for repeating recent tokens (1 = off).")
    var repeatPenalty: Float = 1.0
    @Option(name: .customLong("repeat-last-n"), help: "How many recent tokens the repeat penalty looks at.")
    var repeatLastN: Int = 64
    @Option(name: .customLong("frequency-penalty"))
    var frequencyPenalty: Float = 0
    @Option(name: .customLong("presence-penalty"))
    var presencePenalty: Float = 0
    @Option(help: "Random seed (same seed and settings give the same output).")
    var seed: UInt64?
    @Option(name: .customLong("stop"), help: "Stop when this text is generated (repeatable).")
    var stop: [String] = []

    /// What to generate: at most `maxTokens`, stopping at `--stop` and `extraStop`.
    func generationOptions(maxTokens: Int, extraStop: [String] = [], speculation: Speculation?) -> GenerationOptions {
        var options = GenerationOptions(maxTokens: maxTokens, sampling: parameters, stop: stop + extraStop)
        options.speculation = speculation
        return options
    }

    var parameters: SamplingParameters {
        var p = SamplingParameters()
        p.temperature = temperature
        p.topK = topK
        p.topP = topP
        p.minP = minP
        p.repeatPenalty = repeatPenalty
        p.repeatLastN = repeatLastN
        p.frequencyPenalty = frequencyPenalty
        p.presencePenalty = presencePenalty
        p.seed = seed
        return p
    }
}

/// Speculative decoding flags shared by `run`, `generate` and `serve` (llama.cpp's names).
struct SpeculativeOptions: ParsableArguments {
    @Option(name: .customLong("lookup"), help: ArgumentHelp(
        "Speculative decoding by prompt lookup: draft up to N tokens from earlier text (0 = off).",
        discussion: "When the last tokens occurred before in the prompt or the output, the tokens that followed them are "
            + "checked by the model in one pass. The output is the same as without it; text that repeats its prompt "
            + "(edits, quotes, code) comes faster."))
    var lookup = 0
    @Option(name: .customLong("draft"), help: "Speculative decoding with a draft model: a smaller model with the same vocabulary.")
    var draft: String?
    @Option(name: .customLong("draft-max"), help: "Most tokens the draft model drafts per step.")
    var draftMax = 16
    @Option(name: .customLong("draft-min"), help: "Fewest drafted tokens worth verifying.")
    var draftMin = 0
    @Option(name: .customLong("draft-p-min"), help: "The draft model stops at a token it gives less probability than this.")
    var draftPMin: Float = 0.75

    func validate() throws {
        guard (0...PromptLookup.longestDraft).contains(lookup) else {
            throw ValidationError("--lookup must be 0 (off) or the most tokens to draft, at most \(PromptLookup.longestDraft)")
        }
        guard lookup == 0 || draft == nil else { throw ValidationError("give --lookup or --draft, not both") }
        guard (1...PromptLookup.longestDraft).contains(draftMax) else {
            throw ValidationError("--draft-max must be between 1 and \(PromptLookup.longestDraft)")
        }
        guard (0...draftMax).contains(draftMin) else { throw ValidationError("--draft-min must be between 0 and --draft-max") }
        guard (0...1).contains(draftPMin) else { throw ValidationError("--draft-p-min must be between 0 and 1") }
        if let draft { try ModelLocator.validate(draft) }
    }

    /// The draft model (`--draft`), checked against `target`; nil without one.
    func loadDraftModel(for target: LoadedModel) throws -> DraftModel? {
        guard let draft else { return nil }
        return try DraftModel(try LoadedModel(path: ModelLocator.resolve(draft)), for: target)
    }

    var draftSettings: DraftModelSettings {
        DraftModelSettings(maxDraft: draftMax, minDraft: draftMin, minProbability: draftPMin)
    }

    /// What the flags ask for: a draft model's drafts, prompt lookup's, or none.
    var speculation: Speculation? {
        if draft != nil { return .draftModel(draftSettings) }
        return PromptLookup.drafting(upTo: lookup).map { .lookup($0) }
    }
}

/// Context and threads, shared by the commands that run a model.
struct RuntimeOptions: ParsableArguments {
    @Option(name: .customLong("ctx"), help: "Context length in tokens (KV cache size).")
    var contextLength: Int = 2048
    @Option(name: [.customShort("t"), .customLong("threads")], help: "Threads (default: all cores).")
    var threads: Int?
    @Option(name: .customLong("mem-budget"), help: memBudgetHelp)
    var memBudget: String?

    /// `--mem-budget` in bytes (after `validate`).
    var memoryBudget: Int? { try? parseMemBudget(memBudget) }

    func validate() throws { _ = try parseMemBudget(memBudget) }
}

/// The help of `--mem-budget`, which `run`, `generate`, `serve` and `bench` share.
let memBudgetHelp = ArgumentHelp(
    "Keep resident weights under SIZE; dropped pages are re-read from the page cache.",
    discussion: "SIZE is bytes, or a number with a unit: K, M, G, T (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 32MB, 1.5GiB.",
    valueName: "SIZE")

/// `--mem-budget SIZE` in bytes (nil when not given); unreadable text is a usage error that
/// names the option and the text.
func parseMemBudget(_ text: String?) throws -> Int? {
    guard let text else { return nil }
    do { return try ByteCount.parse(text, option: "--mem-budget") } catch { throw ValidationError("\(error)") }
}

/// A usage error unless `path` is a readable regular file (checked before any download or load).
func requireReadableFile(_ path: String, what: String) throws {
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
        throw ValidationError("\(what) '\(path)' does not exist")
    }
    guard !isDirectory.boolValue else { throw ValidationError("\(what) '\(path)' is a directory") }
    guard FileManager.default.isReadableFile(atPath: path) else { throw ValidationError("\(what) '\(path)' is not readable") }
}

/// A usage error unless `path` can be created or overwritten: its folder exists and is writable.
func requireWritableFile(_ path: String, what: String) throws {
    let folder = URL(fileURLWithPath: path).deletingLastPathComponent().path
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: folder, isDirectory: &isDirectory), isDirectory.boolValue else {
        throw ValidationError("\(what) '\(path)': the folder '\(folder)' does not exist")
    }
    guard FileManager.default.isWritableFile(atPath: folder) else { throw ValidationError("\(what) '\(path)': cannot write in '\(folder)'") }
}

/// `--chat-template-file`, shared by `serve`, `run` and `generate`: a Jinja chat template used
/// instead of the one in the GGUF. Read and parsed in `validate`, so a missing file or a broken
/// template is reported before the model loads.
struct ChatTemplateOptions: ParsableArguments {
    @Option(name: .customLong("chat-template-file"),
            help: ArgumentHelp("Use the Jinja chat template in FILE instead of the model's own.", valueName: "FILE"))
    var chatTemplateFile: String?

    func validate() throws { _ = try template() }

    /// The parsed template; nil without the option.
    func template() throws -> ChatTemplate? {
        guard let path = chatTemplateFile else { return nil }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("--chat-template-file: cannot read '\(path)'")
        }
        guard let source = String(data: data, encoding: .utf8) else {
            throw ValidationError("--chat-template-file: '\(path)' is not UTF-8 text")
        }
        do { return try ChatTemplate(source: source) } catch {
            throw ValidationError("--chat-template-file: '\(path)' is not a valid template: \(error)")
        }
    }
}

extension KVCacheType: ExpressibleByArgument {}

/// KV cache element types (llama.cpp's `-ctk/-ctv`), shared by the commands that run a model.
struct CacheTypeOptions: ParsableArguments {
    @Option(name: [.customLong("cache-type-k"), .customLong("ctk", withSingleDash: true)],
            help: ArgumentHelp("Key cache type: \(KVCacheType.allCases.map(\.rawValue).joined(separator: ", ")).",
                               discussion: "q8_0 stores 34 bytes per 32 elements (53 % of f16), q4_0 18 (28 %); both cost what they cost in llama.cpp."))
    var key: KVCacheType = .f16
    @Option(name: [.customLong("cache-type-v"), .customLong("ctv", withSingleDash: true)],
            help: "Value cache type: \(KVCacheType.allCases.map(\.rawValue).joined(separator: ", ")).")
    var value: KVCacheType = .f16

    var types: KVCacheTypes { KVCacheTypes(key: key, value: value) }
}
