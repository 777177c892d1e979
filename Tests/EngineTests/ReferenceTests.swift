import Engine
import Foundation
import Kernels
import Testing
import TestSupport
import Tokenization

/// The real models against llama.cpp's own outputs in shared/reference.
enum RealModel: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case smollm2 = "smollm2-135m-instruct-q4_1"
    case gemma3 = "gemma3-270m-q4_k_m"

    var path: String { self == .smollm2 ? TestSupport.smolLM2Path : TestSupport.gemma3Path }
    var testDescription: String { rawValue }

    /// Loaded once per test process: both files are memory-mapped, so sharing is cheap.
    static let loaded: [RealModel: Result<LoadedModel, Error>] = Dictionary(uniqueKeysWithValues: allCases.map { m in
        (m, Result { try LoadedModel(path: m.path) })
    })

    func load() throws -> LoadedModel { try RealModel.loaded[self]!.get() }
}

@Suite(.serialized) struct ReferenceTests {
    @Test(arguments: RealModel.allCases)
    func greedyCompletionsMatchLlamaCpp(_ model: RealModel) throws {
        let loaded = try model.load()
        let reference = try TestSupport.reference(model.rawValue)
        let cases = reference["greedy"] as! [[String: Any]]
        var matches = 0
        let pool = ThreadPool(threads: 2)
        for c in cases {
            let prompt = c["prompt"] as! String
            let expected = c["completion"] as! String
            let session = try GenerationSession(model: loaded, contextLength: 512, pool: pool)
            let tokens = loaded.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true)
            var greedy = SamplingParameters()
            greedy.temperature = 0
            let result = try session.generate(prompt: tokens, maxTokens: c["n_predict"] as! Int, sampling: greedy)
            if result.text == expected {
                matches += 1
            } else {
                // Locate the first token whose text leaves the reference.
                var text = ""
                var firstBad = result.tokens.count
                for (i, t) in result.tokens.enumerated() {
                    text += String(decoding: loaded.tokenizer.pieceBytes(t, special: false), as: UTF8.self)
                    if !expected.hasPrefix(text) { firstBad = i; break }
                }
                print("[\(model.rawValue)] mismatch for \(prompt.debugDescription) at generated token \(firstBad):\n  expected: \(expected.debugDescription)\n  got:      \(result.text.debugDescription)")
            }
        }
        print("[\(model.rawValue)] greedy completions matching llama.cpp: \(matches)/\(cases.count)")
        #expect(matches >= cases.count - 1, "only \(matches) of \(cases.count) greedy completions match llama.cpp")
    }

    @Test(arguments: RealModel.allCases)
    func perplexityMatchesLlamaCpp(_ model: RealModel) throws {
        let loaded = try model.load()
        let reference = try TestSupport.reference(model.rawValue)["perplexity"] as! [String: Any]
        let text = try String(contentsOfFile: "/usr/share/common-licenses/GPL-3", encoding: .utf8)
        let result = try perplexity(model: loaded, text: text, context: reference["ctx"] as! Int,
                                    maxChunks: reference["chunks"] as? Int, pool: ThreadPool(threads: 2))
        let expected = reference["ppl"] as! Double
        print("[\(model.rawValue)] perplexity \(result.ppl) ± \(result.stderr) vs llama.cpp \(expected) (\(result.seconds) s)")
        #expect(result.chunks == reference["chunks"] as! Int)
        #expect(abs(result.ppl - expected) / expected < 0.01, "PPL \(result.ppl) is not within 1% of llama.cpp's \(expected)")
        let expectedStderr = reference["stderr"] as! Double
        #expect(abs(result.stderr - expectedStderr) / expectedStderr < 0.05)
    }

    @Test func promptLongerThanContextIsAClearError() throws {
        let loaded = try RealModel.smollm2.load()
        let session = try GenerationSession(model: loaded, contextLength: 8, pool: ThreadPool(threads: 1))
        let tokens = loaded.tokenizer.encode(String(repeating: "word ", count: 20), addSpecial: true, parseSpecial: false)
        #expect(throws: EngineError.promptTooLong(tokens: tokens.count, context: 8)) {
            try session.generate(prompt: tokens, maxTokens: 4, sampling: SamplingParameters())
        }
    }

    @Test func contextLongerThanTheModelAllowsIsAClearError() throws {
        let loaded = try RealModel.smollm2.load()
        #expect(throws: (any Error).self) {
            try GenerationSession(model: loaded, contextLength: 1 << 20, pool: ThreadPool(threads: 1))
        }
    }
}
