import Engine
import Foundation
import Kernels
import Models
@testable import Server
import TestSupport
import Tokenization
import Testing

/// The engine on the real SmolLM2 (release build recommended).
@Suite(.serialized) struct InferenceEngineTests {
    nonisolated(unsafe) static var loaded: LoadedModel?

    func model() throws -> LoadedModel {
        if let m = Self.loaded { return m }
        let path = TestSupport.smolLM2Path
        guard FileManager.default.fileExists(atPath: path) else {
            Issue.record("SmolLM2 is missing at \(path): run `swiftlet pull smollm2` (scripts/test does)")
            throw CocoaError(.fileNoSuchFile)
        }
        let m = try LoadedModel(path: path)
        Self.loaded = m
        return m
    }

    let prompts = [
        "The capital of France is", "Once upon a time, a small robot", "def fibonacci(n):",
        "The three primary colors are", "In 1969, astronauts", "Water boils at",
        "My favourite recipe for pancakes:", "The quick brown fox",
    ]

    struct Outcome: Equatable, Sendable {
        var text: String
        var finish: FinishReason
        var completionTokens: Int
        var cachedTokens: Int
    }

    func collect(_ handle: RequestHandle) async -> [Outcome] { await Self.collect(handle) }

    static func collect(_ handle: RequestHandle) async -> [Outcome] {
        var texts: [Int: String] = [:]
        var out: [Int: Outcome] = [:]
        for await event in handle.events {
            switch event {
            case .text(let i, let t, _): texts[i, default: ""] += t
            case .finished(let i, let reason, let usage):
                out[i] = Outcome(text: texts[i, default: ""], finish: reason, completionTokens: usage.completionTokens,
                                 cachedTokens: usage.cachedTokens)
            case .failed(_, let m): Issue.record(Comment(rawValue: m))
            }
        }
        return out.keys.sorted().map { out[$0]! }
    }

    func tokens(_ m: LoadedModel, _ text: String) -> [TokenID] { m.tokenizer.encode(text, addSpecial: true, parseSpecial: true) }

    @Test func pagedEngineMatchesTheContiguousCache() async throws {
        let m = try model()
        let session = try GenerationSession(model: m, contextLength: 512, pool: ThreadPool())
        let reference = try session.generate(prompt: tokens(m, prompts[0]), maxTokens: 24, sampling: .greedy)
        let engine = try InferenceEngine(model: m, configuration: .init(contextLength: 512, parallel: 1, blockSize: 16))
        let out = await collect(try engine.submit([SequenceSpec(prompt: tokens(m, prompts[0]))],
                                                  options: GenerationOptions(maxTokens: 24)))
        #expect(out.first?.text == reference.text)
        #expect(out.first?.completionTokens == reference.tokens.count)
        await engine.shutdown()
    }

    @Test func concurrentGreedyRequestsEqualSoloRuns() async throws {
        let m = try model()
        let options = GenerationOptions(maxTokens: 32)
        // Alone: one at a time, one sequence per forward pass; small prefill chunks.
        let solo = try InferenceEngine(model: m, configuration: .init(contextLength: 512, parallel: 1, maxBatchTokens: 7))
        var alone: [Outcome] = []
        for p in prompts {
            alone += await collect(try solo.submit([SequenceSpec(prompt: tokens(m, p))], options: options))
        }
        await solo.shutdown()
        // Together: all eight in flight, batched in every step.
        let batched = try InferenceEngine(model: m, configuration: .init(contextLength: 512, parallel: 8, maxBatchTokens: 64))
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
            #expect(a.text == b.text, "prompt \(i): batched output differs from the solo run")
            #expect(a.completionTokens == b.completionTokens)
        }
        #expect(batched.currentSnapshot.steps > 0)
        #expect(batched.currentSnapshot.blocksUsed == 0)
        await batched.shutdown()
    }

    @Test func prefixCacheHitGivesTheSameOutput() async throws {
        let m = try model()
        let engine = try InferenceEngine(model: m, configuration: .init(contextLength: 1024, parallel: 2))
        let system = String(repeating: "You are a careful assistant who answers briefly and precisely. ", count: 12)
        let prompt = try m.promptTokens(for: m.renderChat([.system(system), .user("Name a fruit.")]))
        let first = await collect(try engine.submit([SequenceSpec(prompt: prompt)], options: GenerationOptions(maxTokens: 12)))
        let second = await collect(try engine.submit([SequenceSpec(prompt: prompt)], options: GenerationOptions(maxTokens: 12)))
        #expect(first.first?.cachedTokens == 0)
        #expect(second.first?.cachedTokens == min(prompt.count - 1, prompt.count / 16 * 16), "every full block of the prompt comes from the cache")
        #expect(first == second.map { var o = $0; o.cachedTokens = 0; return o })
        #expect(engine.currentSnapshot.prefixHitTokens > 0)
        await engine.shutdown()
    }

    @Test func cancelFreesBlocksAndNSequencesDiffer() async throws {
        let m = try model()
        let engine = try InferenceEngine(model: m, configuration: .init(contextLength: 512, parallel: 4))
        let handle = try engine.submit([SequenceSpec(prompt: tokens(m, prompts[1]))], options: GenerationOptions(maxTokens: 400))
        var iterator = handle.events.makeAsyncIterator()
        _ = await iterator.next()
        _ = await iterator.next()  // yielded in the second step, after the first step's snapshot
        #expect(engine.currentSnapshot.blocksUsed > 0)
        handle.cancel()
        while await iterator.next() != nil {}
        let snapshot = engine.currentSnapshot
        #expect(snapshot.blocksUsed == 0)
        #expect(engine.outstandingSequences == 0)

        var sampling = SamplingParameters(temperature: 1.0, topK: 0, topP: 1, minP: 0)
        sampling.seed = 7
        let specs = [SequenceSpec(prompt: tokens(m, prompts[1]), seed: 1), SequenceSpec(prompt: tokens(m, prompts[1]), seed: 2)]
        let two = await collect(try engine.submit(specs, options: GenerationOptions(maxTokens: 16, sampling: sampling)))
        #expect(two.count == 2)
        #expect(two[0].text != two[1].text, "different seeds, different samples")
        await engine.shutdown()
    }
}
