import Engine
import Foundation
import Kernels
import Models
import TestSupport
import Testing
import Tokenization

/// Prompt-lookup speculative decoding: drafts verified in one pass must leave the output
/// exactly as plain decoding makes it — greedy or sampled, alone or batched — while drafts are
/// actually accepted on text that repeats its prompt.
@Suite(.serialized) struct SpeculativeDecodingTests {
    @Test func lookupProposesWhatFollowedTheLongestRecentMatch() {
        let lookup = PromptLookup(maxDraft: 3, ngramMax: 3, ngramMin: 2)
        // suffix [7, 8] occurred twice; the most recent earlier occurrence is followed by 9, 1
        #expect(lookup.draft(after: [7, 8, 5, 5, 7, 8, 9, 1, 7, 8], limit: 10) == [9, 1, 7])
        // the 3-gram [2, 7, 8] wins over the more recent 2-gram match
        #expect(lookup.draft(after: [2, 7, 8, 4, 6, 7, 8, 5, 2, 7, 8], limit: 10) == [4, 6, 7])
        #expect(lookup.draft(after: [7, 8, 5, 5, 7, 8], limit: 1) == [5])
        #expect(lookup.draft(after: [7, 8, 5, 5, 7, 8], limit: 0) == [])
        #expect(lookup.draft(after: [1, 2, 3, 4], limit: 5) == [])
        #expect(lookup.draft(after: [1], limit: 5) == [])
        // a repeated token: the match may overlap the suffix, never be it
        #expect(lookup.draft(after: [3, 3, 3], limit: 5) == [3])
        #expect(PromptLookup.drafting(upTo: 0) == nil)
        #expect(PromptLookup.drafting(upTo: 1000)?.maxDraft == PromptLookup.longestDraft)
    }

    /// A prompt that asks for a text back with a small change: most of the answer is in it.
    static let editPrompt = """
    <|im_start|>user
    Repeat this paragraph exactly, but write "river" instead of "stream":
    The old mill stood beside the stream for two hundred years. Every spring the stream rose \
    over its banks and the miller moved his sacks of flour to the upper floor, and every summer \
    children fished from the wooden bridge that crossed the stream below the wheel.<|im_end|>
    <|im_start|>assistant

    """

    static func prompt(_ model: LoadedModel) -> [TokenID] {
        if model.config.architecture == "gemma3" {
            let text = try! model.renderChat([ChatMessage(role: "user", content: "Repeat this paragraph exactly: The old mill stood beside the stream for two hundred years. Every spring the stream rose over its banks and the miller moved his sacks of flour to the upper floor.")])
            return model.promptTokens(for: text)
        }
        return model.tokenizer.encode(editPrompt, addSpecial: true, parseSpecial: true)
    }

    static func generate(_ model: LoadedModel, prompt: [TokenID], options: GenerationOptions) throws -> GenerationResult {
        let generator = try Generator(model: model, configuration: .singleSequence(contextLength: 512, threads: 2))
        defer { generator.shutdownAndWait() }
        return try generator.generate(prompt: prompt, options: options)
    }

    @Test(arguments: RealModel.allCases)
    func greedyOutputIsPlainDecodingsAndDraftsAreAccepted(_ real: RealModel) throws {
        let model = try real.load()
        let prompt = Self.prompt(model)
        let plain = try Self.generate(model, prompt: prompt, options: GenerationOptions(maxTokens: 64))
        var options = GenerationOptions(maxTokens: 64)
        options.speculation = .lookup(PromptLookup(maxDraft: 8))
        let drafted = try Self.generate(model, prompt: prompt, options: options)
        #expect(drafted.tokens == plain.tokens, "lookup changed the greedy output:\n\(plain.text)\n---\n\(drafted.text)")
        #expect(drafted.text == plain.text)
        #expect(drafted.finishReason == plain.finishReason)
        #expect(plain.timings.draftTokens == 0)
        // the answer repeats the prompt: drafts are proposed and most of the repeated text is accepted
        #expect(drafted.timings.draftTokens > 0)
        #expect(drafted.timings.acceptedDraftTokens >= drafted.tokens.count / 4,
                "accepted \(drafted.timings.acceptedDraftTokens) of \(drafted.timings.draftTokens) drafted for \(drafted.tokens.count) tokens")
    }

    /// Each token is drawn from the same distribution with the same random draw as plain
    /// decoding (a drafted token only stands if it is the one drawn), so a seeded sampled run is
    /// the same token for token — the output distribution is unchanged.
    @Test func sampledOutputWithASeedIsPlainDecodings() throws {
        let model = try RealModel.smollm2.load()
        let prompt = Self.prompt(model)
        for seed: UInt64 in [1, 2, 3, 4] {
            var sampling = SamplingParameters()
            sampling.temperature = 0.7
            sampling.seed = seed
            var options = GenerationOptions(maxTokens: 40, sampling: sampling)
            let plain = try Self.generate(model, prompt: prompt, options: options)
            options.speculation = .lookup(PromptLookup(maxDraft: 6))
            let drafted = try Self.generate(model, prompt: prompt, options: options)
            #expect(drafted.tokens == plain.tokens, "seed \(seed)")
            #expect(drafted.timings.draftTokens > 0, "seed \(seed)")
        }
    }

    /// A drafting sequence batched with plain ones: each equals its solo run, and every block
    /// a rejected draft took is back in the pool at the end.
    @Test func batchedWithOtherSequencesEachEqualsItsSoloRun() async throws {
        let model = try RealModel.smollm2.load()
        let edit = Self.prompt(model)
        let story = model.tokenizer.encode("Once upon a time, a small robot", addSpecial: true, parseSpecial: false)
        var lookup = GenerationOptions(maxTokens: 48)
        lookup.speculation = .lookup(PromptLookup(maxDraft: 8))
        let plainOptions = GenerationOptions(maxTokens: 48)
        let soloEdit = try Self.generate(model, prompt: edit, options: lookup).tokens
        let soloStory = try Self.generate(model, prompt: story, options: plainOptions).tokens

        let generator = try Generator(model: model, configuration: .init(contextLength: 512, parallel: 3, blockSize: 16,
                                                                          threads: 2))
        async let a = GeneratorTests.collect(try generator.submit([SequenceSpec(prompt: edit)], options: lookup))
        async let b = GeneratorTests.collect(try generator.submit([SequenceSpec(prompt: story)], options: plainOptions))
        async let c = GeneratorTests.collect(try generator.submit([SequenceSpec(prompt: story)], options: lookup))
        let (outA, outB, outC) = try await (a, b, c)
        #expect(outA.first?.tokens == soloEdit)
        #expect(outB.first?.tokens == soloStory)
        #expect(outC.first?.tokens == soloStory)
        let snapshot = generator.currentSnapshot
        #expect(snapshot.blocksUsed == 0, "blocks held after every sequence finished")
        await generator.shutdown()
    }

    /// Drafts stop at the token budget and the context: the last tokens of a nearly full
    /// context and of `maxTokens` come out as without drafting.
    @Test func draftsRespectMaxTokensAndTheContextEnd() throws {
        let model = try RealModel.smollm2.load()
        let prompt = Self.prompt(model)
        for maxTokens in [1, 2, 5] {
            var options = GenerationOptions(maxTokens: maxTokens)
            let plain = try Self.generate(model, prompt: prompt, options: options)
            options.speculation = .lookup(PromptLookup(maxDraft: 16))
            let drafted = try Self.generate(model, prompt: prompt, options: options)
            #expect(drafted.tokens == plain.tokens)
            #expect(drafted.tokens.count <= maxTokens)
        }
        // a context that ends a few tokens after the prompt
        let context = prompt.count + 6
        let generator = try Generator(model: model, configuration: .singleSequence(contextLength: context, threads: 2))
        defer { generator.shutdownAndWait() }
        var options = GenerationOptions(maxTokens: 100)
        let plain = try generator.generate(prompt: prompt, options: options)
        options.speculation = .lookup(PromptLookup(maxDraft: 16))
        let drafted = try generator.generate(prompt: prompt, options: options)
        #expect(drafted.tokens == plain.tokens)
        #expect(drafted.finishReason == .length)
    }

    /// A draft model (here each model drafting for itself, loaded a second time: its drafts are
    /// computed with other rounding than the verification, so some are rejected) leaves greedy
    /// and seeded output as plain decoding makes it.
    @Test(arguments: RealModel.allCases)
    func draftModelOutputIsPlainDecodings(_ real: RealModel) throws {
        let model = try real.load()
        let draft = try DraftModel(LoadedModel(path: real.path), for: model)
        let prompt = model.tokenizer.encode("The three primary colors are", addSpecial: true, parseSpecial: false)
        var seeded = SamplingParameters()
        seeded.seed = 7
        for sampling in [SamplingParameters.greedy, seeded] {
            var options = GenerationOptions(maxTokens: 40, sampling: sampling)
            let plain = try Self.generate(model, prompt: prompt, options: options)
            options.speculation = .draftModel(DraftModelSettings(maxDraft: 6, minDraft: 2, minProbability: 0))
            let generator = try Generator(model: model, configuration: .singleSequence(contextLength: 512, threads: 2),
                                          draftModel: draft)
            defer { generator.shutdownAndWait() }
            let drafted = try generator.generate(prompt: prompt, options: options)
            #expect(drafted.tokens == plain.tokens, "temperature \(sampling.temperature)")
            #expect(drafted.timings.draftTokens > 0)
            if sampling.temperature == 0 {
                #expect(drafted.timings.acceptedDraftTokens * 2 > drafted.timings.draftTokens, "a model drafting for itself")
            }
        }
    }

    @Test func draftModelMustShareTheVocabularyAndBeLoaded() throws {
        let smol = try RealModel.smollm2.load(), gemma = try RealModel.gemma3.load()
        let refusal = #expect(throws: EngineError.self) { try DraftModel(gemma, for: smol) }
        #expect(refusal?.description.contains("vocabulary") == true, "\(String(describing: refusal))")
        let generator = try Generator(model: smol, configuration: .singleSequence(contextLength: 128, threads: 1))
        defer { generator.shutdownAndWait() }
        var options = GenerationOptions(maxTokens: 4)
        options.speculation = .draftModel(DraftModelSettings())
        #expect(throws: EngineError.noDraftModel) {
            try generator.generate(prompt: [1, 2, 3], options: options)
        }
    }

    /// The verification pass's rows against single-token decode passes at the same positions,
    /// past 256 cached tokens (where a decode's attention takes llama.cpp's split-KV kernel).
    @Test(arguments: RealModel.allCases)
    func verificationRowsEqualDecodeSteps(_ real: RealModel) throws {
        let model = try real.load().model
        let pool = ThreadPool(threads: 2)
        let prompt = (0..<300).map { TokenID(100 + ($0 * 37) % 5000) }
        let next: [TokenID] = [400, 401, 402, 403]
        let plain = model.makeCache(capacity: 512), verified = model.makeCache(capacity: 512)
        _ = try model.forward([BatchSequence(tokens: prompt, cache: plain)], pool: pool)
        _ = try model.forward([BatchSequence(tokens: prompt, cache: verified)], pool: pool)
        let decoded = try next.map { try model.forward([BatchSequence(tokens: [$0], cache: plain)], pool: pool)[0] }
        let rows = try model.forward([BatchSequence(tokens: next, cache: verified, allLogits: true, asDecodes: true)], pool: pool)
        for (i, (a, b)) in zip(decoded, rows).enumerated() {
            let largest = zip(a, b).map { abs($0 - $1) }.max() ?? .infinity
            #expect(a.count == b.count && largest == 0, "row \(i): largest difference \(largest)")
        }
    }
}
