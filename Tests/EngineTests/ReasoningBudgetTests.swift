import Foundation
import Testing
import TestSupport
import Tokenization
@testable import Engine

@Suite struct ThinkingTrackerTests {
    @Test func followsMarkersSplitAcrossPieces() {
        var t = ThinkingTracker(budget: ReasoningBudget(tokens: 3))
        #expect(!t.inside)
        for piece in ["<th", "ink>", "a"] { t.observe(piece) }
        #expect(t.inside)
        t.countToken(); t.countToken()
        #expect(!t.exhausted)
        t.countToken()
        #expect(t.exhausted)
        for piece in ["b</", "think", ">done"] { t.observe(piece) }
        #expect(!t.inside && !t.exhausted)
        // a thinking block that opens and closes within one piece
        t.observe("x<think>y</think>z<think>")
        #expect(t.inside)
    }

    /// gpt-oss: the analysis message is the thinking, `<|end|>` ends it.
    @Test func followsTheHarmonyAnalysisChannel() {
        var t = ThinkingTracker(budget: .harmony(tokens: 1))
        for piece in ["<|channel|>final<|message|>Hi<|end|>", "<|start|>assistant<|chan", "nel|>analysis<|mess"] { t.observe(piece) }
        #expect(!t.inside)
        t.observe("age|>x")
        #expect(t.inside)
        t.countToken()
        #expect(t.exhausted)
        t.observe(ReasoningBudget.harmony(tokens: 1).forcedClosing)
        #expect(!t.inside, "the forced closing leaves the channel")
    }
}

/// The budget on the real SmolLM2, whose prompt is made to end inside a thinking block: the
/// engine writes the closing marker after exactly the budget's tokens and the reply goes on.
@Suite(.serialized) struct ReasoningBudgetTests {
    static let available = FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)

    func reply(budget: Int?) throws -> GenerationResult {
        let loaded = try RealModel.smollm2.load()
        let generator = try Generator(model: loaded, configuration: .singleSequence(contextLength: 256, threads: 2))
        defer { generator.shutdownAndWait() }
        let prompt = loaded.promptTokens(for: "<|im_start|>user\nWhat is 17 times 3?<|im_end|>\n<|im_start|>assistant\n<think>\n")
        var options = GenerationOptions(maxTokens: 40, sampling: .greedy)
        options.reasoningBudget = budget.map { ReasoningBudget(tokens: $0, startsInside: true) }
        return try generator.generate(prompt: prompt, options: options)
    }

    @Test(.enabled(if: available, "needs SmolLM2 (swiftlet pull smollm2)"), arguments: [0, 5])
    func closesThinkingAfterTheBudget(_ budget: Int) throws {
        let unlimited = try reply(budget: nil)
        let limited = try reply(budget: budget)
        let closing = "\n</think>\n\n"
        let loaded = try RealModel.smollm2.load()
        let forced = loaded.tokenizer.encode(closing, addSpecial: false, parseSpecial: true)
        // the first `budget` tokens are the model's own (greedy, as without a budget), then the marker
        #expect(Array(limited.tokens.prefix(budget)) == Array(unlimited.tokens.prefix(budget)))
        #expect(Array(limited.tokens[budget..<budget + forced.count]) == forced)
        let thinking = loaded.tokenizer.decode(Array(limited.tokens.prefix(budget)))
        #expect(limited.text.hasPrefix(thinking + closing))
        // and the reply goes on after it
        #expect(limited.tokens.count > budget + forced.count)
        #expect(!unlimited.text.prefix(thinking.count + closing.count).contains("</think>"))
    }

    /// gpt-oss's analysis channel, on SmolLM2 with harmony's markers as its prompt and reply
    /// text: after the budget the engine closes the analysis message and opens the final
    /// channel, and the model goes on in it.
    @Test(.enabled(if: available, "needs SmolLM2 (swiftlet pull smollm2)"))
    func endsTheHarmonyAnalysisChannelAfterTheBudget() throws {
        let budget = 6
        let loaded = try RealModel.smollm2.load()
        let generator = try Generator(model: loaded, configuration: .singleSequence(contextLength: 256, threads: 2))
        defer { generator.shutdownAndWait() }
        let prompt = loaded.promptTokens(for: "<|start|>user<|message|>What is 17 times 3?<|end|><|start|>assistant"
                                         + ReasoningBudget.analysisOpening)
        // the forced closing is some 20 tokens of text to SmolLM2
        var options = GenerationOptions(maxTokens: 48, sampling: .greedy)
        options.decodesSpecialTokens = true
        let unlimited = try generator.generate(prompt: prompt, options: options)
        options.reasoningBudget = .harmony(tokens: budget, startsInside: true)
        let limited = try generator.generate(prompt: prompt, options: options)
        let closing = ReasoningBudget.harmony(tokens: budget).forcedClosing
        let forced = loaded.tokenizer.encode(closing, addSpecial: false, parseSpecial: true)
        #expect(Array(limited.tokens.prefix(budget)) == Array(unlimited.tokens.prefix(budget)), "the model's own thinking first")
        #expect(Array(limited.tokens[budget..<budget + forced.count]) == forced)
        let thinking = loaded.tokenizer.decode(Array(limited.tokens.prefix(budget)), special: true)
        #expect(limited.text.hasPrefix(thinking + closing))
        #expect(!thinking.contains("<|end|>"), "the model had not ended its analysis itself")
        let answer = limited.text.dropFirst(thinking.count + closing.count)
        #expect(!answer.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty, "an answer follows on the final channel")
    }
}
