import Engine
import Foundation
import Kernels
import Models
import TestSupport
import Tokenization
import Testing

/// The generation core on the real SmolLM2 and on a synthetic Mamba model (release build
/// recommended).
@Suite(.serialized) struct GeneratorTests {
    func model() throws -> LoadedModel { try RealModel.smollm2.load() }

    let prompts = [
        "The capital of France is", "Once upon a time, a small robot", "def fibonacci(n):",
        "The three primary colors are", "In 1969, astronauts", "Water boils at",
        "My favourite recipe for pancakes:", "The quick brown fox",
    ]

    struct Outcome: Equatable, Sendable {
        var text: String
        var tokens: [TokenID]
        var finish: FinishReason
        var completionTokens: Int
        var cachedTokens: Int
    }

    static func collect(_ handle: RequestHandle) async -> [Outcome] {
        var texts: [Int: String] = [:]
        var tokens: [Int: [TokenID]] = [:]
        var out: [Int: Outcome] = [:]
        for await event in handle.events {
            switch event {
            case .text(let i, let t, let newTokens, _):
                texts[i, default: ""] += t
                tokens[i, default: []] += newTokens
            case .finished(let i, let reason, let usage):
                out[i] = Outcome(text: texts[i, default: ""], tokens: tokens[i, default: []], finish: reason,
                                 completionTokens: usage.completionTokens, cachedTokens: usage.cachedTokens)
            case .failed(_, let m): Issue.record(Comment(rawValue: m))
            case .embedding(let i, _): Issue.record("unexpected embedding for sequence \(i)")
            }
        }
        return out.keys.sorted().map { out[$0]! }
    }

    func tokens(_ m: LoadedModel, _ text: String) -> [TokenID] { m.tokenizer.encode(text, addSpecial: true, parseSpecial: true) }

    /// Greedy decoding written out directly over a contiguous cache: the reference the paged,
    /// batched loop must reproduce token for token.
    static func contiguousGreedy(_ model: any LanguageModel, endOfGeneration: Set<TokenID>, prompt: [TokenID],
                                 maxTokens: Int, cacheTypes: KVCacheTypes = .f16) throws -> [TokenID] {
        let cache = model.makeCache(capacity: 512, types: cacheTypes)
        let pool = ThreadPool(threads: 2)
        var logits = try model.forward([BatchSequence(tokens: prompt, cache: cache)], pool: pool)[0]
        var out: [TokenID] = []
        while out.count < maxTokens {
            let token = TokenID(logits.indices.max { logits[$0] < logits[$1] }!)
            if endOfGeneration.contains(token) { break }
            out.append(token)
            logits = try model.forward([BatchSequence(tokens: [token], cache: cache)], pool: pool)[0]
        }
        return out
    }

    @Test func pagedGeneratorMatchesAContiguousGreedyLoop() async throws {
        let m = try model()
        let prompt = tokens(m, prompts[0])
        let reference = try Self.contiguousGreedy(m.model, endOfGeneration: m.tokenizer.endOfGenerationTokens,
                                                  prompt: prompt, maxTokens: 24)
        let generator = try Generator(model: m, configuration: .init(contextLength: 512, parallel: 1, blockSize: 16))
        let out = await Self.collect(try generator.submit([SequenceSpec(prompt: prompt)], options: GenerationOptions(maxTokens: 24)))
        #expect(out.first?.tokens == reference)
        #expect(out.first?.text == m.tokenizer.decode(reference))
        #expect(out.first?.completionTokens == reference.count)
        await generator.shutdown()
    }

    @Test func concurrentGreedyRequestsEqualSoloRuns() async throws {
        let m = try model()
        let options = GenerationOptions(maxTokens: 32)
        // Alone: one at a time, one sequence per forward pass; small prefill chunks.
        let solo = try Generator(model: m, configuration: .init(contextLength: 512, parallel: 1, maxBatchTokens: 7))
        var alone: [Outcome] = []
        for p in prompts {
            alone += await Self.collect(try solo.submit([SequenceSpec(prompt: tokens(m, p))], options: options))
        }
        await solo.shutdown()
        // Together: all eight in flight, batched in every step.
        let batched = try Generator(model: m, configuration: .init(contextLength: 512, parallel: 8, maxBatchTokens: 64))
        let handles = try prompts.map { try batched.submit([SequenceSpec(prompt: tokens(m, $0))], options: options) }
        var together: [Outcome] = []
        await withTaskGroup(of: (Int, [Outcome]).self) { group in
            for (i, h) in handles.enumerated() { group.addTask { (i, await Self.collect(h)) } }
            var results: [(Int, [Outcome])] = []
            for await r in group { results.append(r) }
            together = results.sorted { $0.0 < $1.0 }.flatMap(\.1)
        }
        #expect(together.count == 8)
        for (i, (a, b)) in zip(alone, together).enumerated() {
            #expect(a.tokens == b.tokens, "prompt \(i): batched output differs from the solo run")
            #expect(a.text == b.text)
        }
        #expect(batched.currentSnapshot.steps > 0)
        #expect(batched.currentSnapshot.blocksUsed == 0)
        await batched.shutdown()
    }

    @Test func prefixCacheHitGivesTheSameOutput() async throws {
        let m = try model()
        let generator = try Generator(model: m, configuration: .init(contextLength: 1024, parallel: 2))
        let system = String(repeating: "You are a careful assistant who answers briefly and precisely. ", count: 12)
        let prompt = try m.promptTokens(for: m.renderChat([.system(system), .user("Name a fruit.")]))
        let first = await Self.collect(try generator.submit([SequenceSpec(prompt: prompt)], options: GenerationOptions(maxTokens: 12)))
        let second = await Self.collect(try generator.submit([SequenceSpec(prompt: prompt)], options: GenerationOptions(maxTokens: 12)))
        #expect(first.first?.cachedTokens == 0)
        #expect(second.first?.cachedTokens == min(prompt.count - 1, prompt.count / 16 * 16), "every full block of the prompt comes from the cache")
        #expect(first == second.map { var o = $0; o.cachedTokens = 0; return o })
        #expect(generator.currentSnapshot.prefixHitTokens > 0)
        await generator.shutdown()
    }

    @Test func cancelFreesBlocksAndNSequencesDiffer() async throws {
        let m = try model()
        let generator = try Generator(model: m, configuration: .init(contextLength: 512, parallel: 4))
        let handle = try generator.submit([SequenceSpec(prompt: tokens(m, prompts[1]))], options: GenerationOptions(maxTokens: 400))
        var iterator = handle.events.makeAsyncIterator()
        _ = await iterator.next()
        _ = await iterator.next()  // sent in the second step, after the first step's snapshot
        #expect(generator.currentSnapshot.blocksUsed > 0)
        handle.cancel()
        while await iterator.next() != nil {}
        #expect(generator.currentSnapshot.blocksUsed == 0)
        #expect(generator.outstandingSequences == 0)

        var sampling = SamplingParameters(temperature: 1.0, topK: 0, topP: 1, minP: 0)
        sampling.seed = 7
        let specs = [SequenceSpec(prompt: tokens(m, prompts[1]), seed: 1), SequenceSpec(prompt: tokens(m, prompts[1]), seed: 2)]
        let two = await Self.collect(try generator.submit(specs, options: GenerationOptions(maxTokens: 16, sampling: sampling)))
        #expect(two.count == 2)
        #expect(two[0].text != two[1].text, "different seeds, different samples")
        await generator.shutdown()
    }

    /// The blocking call the CLI uses: same tokens as the stream, text handed out piece by
    /// piece, timings filled in, and a false from `onText` cancels.
    @Test func blockingGenerateMatchesTheStreamAndCancels() async throws {
        let m = try model()
        let generator = try Generator(model: m, configuration: .singleSequence(contextLength: 512))
        defer { generator.shutdownAndWait() }
        let prompt = tokens(m, prompts[2])
        let streamed = await Self.collect(try generator.submit([SequenceSpec(prompt: prompt)], options: GenerationOptions(maxTokens: 20)))
        var pieces: [String] = []
        let result = try generator.generate(prompt: prompt, options: GenerationOptions(maxTokens: 20)) {
            pieces.append($0)
            return true
        }
        #expect(result.tokens == streamed.first?.tokens)
        #expect(result.text == streamed.first?.text)
        #expect(pieces.joined() == result.text)
        #expect(result.finishReason == .length && result.tokens.count == 20)
        #expect(result.timings.generatedTokens == 20)
        #expect(result.timings.promptTokens + result.usage.cachedTokens == prompt.count)
        #expect(result.timings.timeToFirstToken > 0 && result.timings.generationSeconds > 0)

        var calls = 0
        let stopped = try generator.generate(prompt: tokens(m, prompts[1]), options: GenerationOptions(maxTokens: 200)) { _ in
            calls += 1
            return calls < 3
        }
        #expect(stopped.finishReason == .cancelled)
        #expect(stopped.tokens.count < 200)
        #expect(generator.currentSnapshot.blocksUsed == 0)
    }

    @Test func badPromptsAreClearErrors() throws {
        let m = try model()
        let generator = try Generator(model: m, configuration: .singleSequence(contextLength: 16))
        defer { generator.shutdownAndWait() }
        let options = GenerationOptions(maxTokens: 4)
        #expect(throws: EngineError.emptyPrompt) { try generator.generate(prompt: [], options: options) }
        let vocabularySize = m.config.vocabularySize
        #expect(throws: EngineError.tokenOutOfRange(token: vocabularySize, vocabularySize: vocabularySize)) {
            try generator.generate(prompt: [1, TokenID(vocabularySize)], options: options)
        }
        let long = [TokenID](repeating: 42, count: 16)
        #expect(throws: EngineError.promptTooLong(tokens: 16, context: 16)) {
            try generator.generate(prompt: long, options: options)
        }
        #expect(throws: EngineError.promptTooLong(tokens: 16, context: 16)) {
            try generator.submit([SequenceSpec(prompt: long)], options: options)
        }
        // A prompt that fills all but one position still gets its one token.
        let result = try generator.generate(prompt: Array(long.prefix(15)), options: options)
        #expect(result.finishReason == .length || result.finishReason == .stop)
        #expect(result.tokens.count <= 1)
        #expect(generator.outstandingSequences == 0)
    }

    /// NaN logits stop the sequence with the position, for the blocking call (the CLI exits
    /// non-zero) and for a stream (the server answers 500), and the generator keeps serving.
    @Test func nonFiniteLogitsStopTheSequenceWithAnError() async throws {
        let path = try SyntheticGGUF(vocabulary: 64, poisonedToken: 20).write(name: "poisoned")
        let m = try LoadedModel(path: path)
        let generator = try Generator(model: m, configuration: .init(contextLength: 64, parallel: 2))
        #expect(throws: EngineError.generationFailed(EngineError.nonFiniteLogits(position: 3).description)) {
            try generator.generate(prompt: [5, 20, 7, 9], options: GenerationOptions(maxTokens: 4))
        }
        var failures: [String] = []
        let handle = try generator.submit([SequenceSpec(prompt: [5, 20, 7, 9])], options: GenerationOptions(maxTokens: 4))
        for await event in handle.events { if case .failed(_, let message) = event { failures.append(message) } }
        #expect(failures == [EngineError.nonFiniteLogits(position: 3).description])
        let healthy = try generator.generate(prompt: [5, 6, 7, 9], options: GenerationOptions(maxTokens: 4))
        #expect(healthy.tokens.count == 4 || healthy.finishReason == .stop)
        #expect(generator.currentSnapshot.blocksUsed == 0)
        await generator.shutdown()
    }

    @Test func submittingAfterShutdownIsRefused() async throws {
        let m = try model()
        let generator = try Generator(model: m, configuration: .singleSequence(contextLength: 64))
        await generator.shutdown()
        #expect(throws: SubmitError.self) {
            try generator.submit([SequenceSpec(prompt: tokens(m, prompts[0]))], options: GenerationOptions(maxTokens: 4))
        }
    }
}

/// A recurrent model has no KV blocks: the generator gives each sequence its own state.
@Suite struct RecurrentGeneratorTests {
    /// scripts/synthetic_models.py's Mamba model and its numpy reference.
    static let mamba: Result<(path: String, prompt: [TokenID], greedy: [TokenID]), Error> = Result {
        let out = TestSupport.scratchRoot.appendingPathComponent("synthetic-mamba")
        let script = TestSupport.repositoryRoot().appendingPathComponent("scripts/synthetic_models.py").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", script, out.path, "mamba"]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey: "synthetic_models.py failed (needs numpy and gguf)"])
        }
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("mamba-f32.json"))) as! [String: Any]
        return (out.appendingPathComponent("mamba-f32.gguf").path,
                (json["prompt"] as! [Int]).map(TokenID.init), (json["greedy"] as! [Int]).map(TokenID.init))
    }

    @Test func mambaThroughTheGeneratorFollowsTheNumpyReference() async throws {
        let (path, prompt, greedy) = try Self.mamba.get()
        let m = try LoadedModel(path: path)
        #expect(!(m.model is any AttentionModel))
        let generator = try Generator(model: m, configuration: .init(contextLength: 64, parallel: 2, maxBatchTokens: 5))
        #expect(generator.blockCount == 0 && generator.kvCacheBytes == 0)
        let options = GenerationOptions(maxTokens: greedy.count)
        let alone = try generator.generate(prompt: prompt, options: options)
        #expect(alone.tokens == Array(greedy.prefix(alone.tokens.count)))
        #expect(alone.tokens.count == greedy.count || alone.finishReason == .stop)

        // Two sequences in the same steps, each with its own state, give the same tokens.
        let other = Array(prompt.reversed())
        let otherAlone = try generator.generate(prompt: other, options: options)
        let together = await GeneratorTests.collect(try generator.submit([SequenceSpec(prompt: prompt), SequenceSpec(prompt: other)],
                                                                         options: options))
        #expect(together.map(\.tokens) == [alone.tokens, otherAlone.tokens])
        await generator.shutdown()
    }
}

/// A hybrid model (LFM2: attention and short-convolution layers) keeps a state of each
/// sequence's own too, its KV cache inside it: chunked prompts, several sequences per step and
/// sequences coming and going must give what one sequence run alone over one state gives.
@Suite(.serialized) struct HybridGeneratorTests {
    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason))
    func lfm2ThroughTheGeneratorEqualsAContiguousGreedyLoop() async throws {
        let m = try LoadedModel(path: try LlamaArchModels.directory.get().appendingPathComponent("lfm2-dense.gguf").path)
        #expect(!(m.model is any AttentionModel))
        let prompts = ["The quick brown fox jumps over the lazy dog", "Once upon a time, a small robot"].map {
            m.tokenizer.encode($0, addSpecial: true, parseSpecial: true)
        }
        let maxTokens = 16
        let references = try prompts.map {
            try GeneratorTests.contiguousGreedy(m.model, endOfGeneration: m.tokenizer.endOfGenerationTokens, prompt: $0,
                                                maxTokens: maxTokens)
        }
        #expect(references.allSatisfy { $0.count > 4 }, "the comparison needs generated tokens: \(references)")
        // Batches of at most 5 tokens: each prompt's convolution windows and KV cache carry over
        // between its chunks, and the two sequences share steps.
        let generator = try Generator(model: m, configuration: .init(contextLength: 64, parallel: 2, maxBatchTokens: 5))
        #expect(generator.blockCount == 0 && generator.kvCacheBytes == 0)
        let options = GenerationOptions(maxTokens: maxTokens)
        let alone = try generator.generate(prompt: prompts[0], options: options)
        #expect(alone.tokens == references[0])
        let together = await GeneratorTests.collect(try generator.submit(prompts.map { SequenceSpec(prompt: $0) }, options: options))
        #expect(together.map(\.tokens) == references)
        // A finished sequence's state is not reused by the next one.
        #expect(try generator.generate(prompt: prompts[1], options: options).tokens == references[1])
        await generator.shutdown()
    }
}
