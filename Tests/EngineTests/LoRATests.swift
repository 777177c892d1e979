import Engine
import Foundation
import GGUF
import Kernels
import Models
import TestSupport
import Tokenization
import Testing

/// Random LoRA adapters for SmolLM2, written by `scripts/random_lora.py` once per test process.
enum LoRAFixtures {
    static let modelPresent = FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)

    /// Two adapters on every attention and feed-forward projection (rank 8, alpha 16), strong
    /// enough to move SmolLM2's perplexity by several percent.
    static let adapters: Result<(first: String, second: String), Error> = Result {
        let dir = try TestSupport.scratchDirectory("lora")
        let script = TestSupport.repositoryRoot().appendingPathComponent("scripts/random_lora.py").path
        var paths: [String] = []
        for seed in [1, 2] {
            let path = dir.appendingPathComponent("smollm2-lora-\(seed).gguf").path
            try TestSupport.python([script, TestSupport.smolLM2Path, path, "--seed", "\(seed)", "--strength", "0.3"])
            paths.append(path)
        }
        return (paths[0], paths[1])
    }
}

@Suite(.serialized) struct LoRATests {
    static let llamaPerplexity = TestSupport.llamaCppTool("llama-perplexity")
    static let text = "/usr/share/common-licenses/GPL-3"

    /// `Final estimate: PPL = X` of llama-perplexity's log (standard error, hence the shell).
    static func llamaCppPerplexity(_ arguments: [String]) throws -> Double {
        let output = try TestSupport.run("/bin/sh", ["-c", #""$0" "$@" 2>&1"#, llamaPerplexity!]
                                         + arguments + ["-f", text, "-c", "128", "--chunks", "4", "-t", "2"])
        guard let range = output.range(of: "Final estimate: PPL = ") else {
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "no PPL in llama-perplexity's output"])
        }
        return Double(output[range.upperBound...].prefix { !$0.isWhitespace })!
    }

    static func swiftletPerplexity(_ model: LoadedModel) throws -> Double {
        let text = String(decoding: FileManager.default.contents(atPath: text)!, as: UTF8.self)
        return try perplexity(model: model, text: text, context: 128, maxChunks: 4, pool: ThreadPool(threads: 2)).ppl
    }

    /// The adapter's perplexity as llama.cpp computes it on the same files (its CPU build applies
    /// adapters unmerged, as Swiftlet does); the adapter moves it well beyond the tolerance. The
    /// weights sum in llama.cpp's order, so the adapter's arithmetic is what is compared: the
    /// adapted model is more sensitive to last bits than the base (block totals move its
    /// perplexity by ~1.4 %; see the fidelity policy in the README).
    @Test(.enabled(if: LoRAFixtures.modelPresent && llamaPerplexity != nil,
                   "needs SmolLM2 (swiftlet pull smollm2) and llama-perplexity (scripts/llama_cpp.py)"))
    func perplexityWithAnAdapterMatchesLlamaCpp() throws {
        let adapter = try LoRAFixtures.adapters.get().first
        let reference = try Self.llamaCppPerplexity(["-m", TestSupport.smolLM2Path, "--lora", adapter])
        let (adapted, base) = try ProductSummation.$forTiles.withValue(.llamaCpp) {
            (try Self.swiftletPerplexity(LoadedModel(path: TestSupport.smolLM2Path, adapters: [LoRAFile(path: adapter)])),
             try Self.swiftletPerplexity(LoadedModel(path: TestSupport.smolLM2Path)))
        }
        #expect(abs(adapted / reference - 1) < 0.005, "Swiftlet \(adapted), llama.cpp \(reference)")
        #expect(abs(adapted / base - 1) > 0.03, "the adapter moves the perplexity: \(base) → \(adapted)")
    }

    /// At scale 0 an adapter leaves every logit exactly as the base model computes it.
    @Test(.enabled(if: LoRAFixtures.modelPresent, "needs SmolLM2 (swiftlet pull smollm2)"))
    func scaleZeroEqualsTheBaseModel() throws {
        let adapter = try LoRAFixtures.adapters.get().first
        let base = try LoadedModel(path: TestSupport.smolLM2Path)
        let off = try LoadedModel(path: TestSupport.smolLM2Path, adapters: [LoRAFile(path: adapter, scale: 0)])
        let on = try LoadedModel(path: TestSupport.smolLM2Path, adapters: [LoRAFile(path: adapter)])
        let prompt = base.tokenizer.encode("The capital of France is Paris, and the capital of Italy is", addSpecial: true,
                                           parseSpecial: false)
        let pool = ThreadPool(threads: 2)
        func logits(_ m: LoadedModel) throws -> [[Float]] {
            try m.forward([BatchSequence(tokens: prompt, cache: m.model.makeCache(capacity: 64), allLogits: true)], pool: pool)
        }
        let reference = try logits(base)
        #expect(try logits(off) == reference)
        let moved = try logits(on)
        let change = zip(moved.joined(), reference.joined()).map { abs($0 - $1) }.max()!
        #expect(change > 0.5, "scale 1 moves the logits (largest change \(change))")
    }

    /// Requests with different adapter mixes (one adapter, the other, both at half scale, none)
    /// in the same batches each produce what they produce alone, and the same prompt under
    /// different adapters never shares cached keys and values.
    @Test(.enabled(if: LoRAFixtures.modelPresent, "needs SmolLM2 (swiftlet pull smollm2)"))
    func mixedAdapterBatchesEqualSoloRuns() async throws {
        let (first, second) = try LoRAFixtures.adapters.get()
        let m = try LoadedModel(path: TestSupport.smolLM2Path, adapters: [LoRAFile(path: first), LoRAFile(path: second)])
        let prompt = "Once upon a time, in a small village by the sea, there lived an old fisherman who every morning"
        let cases: [(prompt: String, scales: [Float])] = [
            (prompt, [1, 0]), (prompt, [0, 1]), (prompt, [0.5, 0.5]), (prompt, [0, 0]), ("The three primary colors are", [1]),
        ]
        func options(_ scales: [Float]) -> GenerationOptions {
            var o = GenerationOptions(maxTokens: 16)
            o.loraScales = scales
            return o
        }
        func tokens(_ text: String) -> [TokenID] { m.tokenizer.encode(text, addSpecial: true, parseSpecial: true) }
        let solo = try Generator(model: m, configuration: .init(contextLength: 256, parallel: 1, maxBatchTokens: 9))
        var alone: [[TokenID]] = []
        for c in cases {
            alone.append(await GeneratorTests.collect(try solo.submit([SequenceSpec(prompt: tokens(c.prompt))],
                                                                     options: options(c.scales))).first?.tokens ?? [])
        }
        await solo.shutdown()
        #expect(Set(alone.prefix(4)).count == 4, "each adapter mix continues the prompt differently: \(alone)")

        let batched = try Generator(model: m, configuration: .init(contextLength: 256, parallel: 8, maxBatchTokens: 64))
        let handles = try cases.map { try batched.submit([SequenceSpec(prompt: tokens($0.prompt))], options: options($0.scales)) }
        var together: [[TokenID]] = []
        for h in handles { together.append(await GeneratorTests.collect(h).first?.tokens ?? []) }
        #expect(batched.currentSnapshot.steps < 40, "the requests shared steps (alone they take about 90)")
        for (i, (a, b)) in zip(alone, together).enumerated() {
            #expect(a == b, "case \(i) (scales \(cases[i].scales)): batched output differs from the solo run")
        }
        // the prompt's blocks are cached now, under each mix: a repeat reuses only its own mix's
        let repeated = await GeneratorTests.collect(try batched.submit([SequenceSpec(prompt: tokens(prompt))], options: options([0, 1])))
        #expect(repeated.first?.tokens == alone[1])
        #expect((repeated.first?.cachedTokens ?? 0) > 0)
        await batched.shutdown()
    }

    /// The generator's default scales come from the model (`--lora-scaled`) and can be changed;
    /// scales for adapters the model does not have are refused.
    @Test(.enabled(if: LoRAFixtures.modelPresent, "needs SmolLM2 (swiftlet pull smollm2)"))
    func defaultScalesAndBadScales() async throws {
        let adapter = try LoRAFixtures.adapters.get().first
        let m = try LoadedModel(path: TestSupport.smolLM2Path, adapters: [LoRAFile(path: adapter, scale: 0.25)])
        let generator = try Generator(model: m, configuration: .init(contextLength: 128, parallel: 1))
        #expect(generator.adapterScales == [0.25])
        try generator.setAdapterScales([])
        #expect(generator.adapterScales == [0])
        #expect(throws: SubmitError.self) { try generator.setAdapterScales([1, 1]) }
        #expect(throws: SubmitError.self) { try generator.setAdapterScales([.nan]) }
        var options = GenerationOptions(maxTokens: 2)
        options.loraScales = [1, 2]
        #expect(throws: SubmitError.self) { _ = try generator.submit([SequenceSpec(prompt: [1, 2, 3])], options: options) }
        await generator.shutdown()
    }

    /// `--lora` and `--lora-scaled` on the command line: at scale 0 `generate` gives the base
    /// model's tokens, at scale 1 others; malformed flags are usage errors.
    @Test(.enabled(if: LoRAFixtures.modelPresent, "needs SmolLM2 (swiftlet pull smollm2)"))
    func commandLineFlags() throws {
        let adapter = try LoRAFixtures.adapters.get().first
        func tokens(_ extra: [String]) throws -> [Int] {
            let r = try CommandLine.run(["generate", TestSupport.smolLM2Path, "The quick brown fox", "-n", "8", "--temp", "0",
                                         "-t", "2", "--json"] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
            return object?["tokens"] as? [Int] ?? []
        }
        let base = try tokens([])
        #expect(try tokens(["--lora-scaled", adapter, "0"]) == base)
        #expect(try tokens(["--lora", adapter]) != base)
        for (flags, message) in [(["--lora-scaled", adapter], "--lora-scaled takes a file and a scale"),
                                 (["--lora-scaled", adapter, "x"], "is not a number"),
                                 (["--lora", "/nonexistent.gguf"], "does not exist")] {
            let r = try CommandLine.run(["generate", TestSupport.smolLM2Path, "Hi"] + flags)
            #expect(r.status != 0 && r.stderr.contains(message), "\(flags): \(r.stderr)")
        }
        let r = try CommandLine.run(["generate", TestSupport.smolLM2Path, "Hi", "--lora", TestSupport.smolLM2Path])
        #expect(r.status != 0 && r.stderr.contains("general.type"), "a model is not an adapter: \(r.stderr)")
    }

    /// Adapters that do not fit the model are refused at load, naming the problem.
    @Test(.enabled(if: LoRAFixtures.modelPresent, "needs SmolLM2 (swiftlet pull smollm2)"))
    func badAdaptersAreTypedErrors() throws {
        let dir = try TestSupport.scratchDirectory("lora-bad")
        let base = try GGUFFile(path: TestSupport.smolLM2Path)
        let projections = Set(base.tensors.map(\.name).filter { $0.hasPrefix("blk.") && !$0.contains("norm") })
        func problem(_ name: String, metadata: [String: MetadataValue] = [:],
                     tensors: [(String, [Int])] = [("blk.0.attn_q.weight", [576, 4]), ("blk.0.attn_q.weight", [4, 576])])
            throws -> LoRAError.Problem? {
            var writer = GGUFWriter()
            let defaults: [String: MetadataValue] = ["general.architecture": .string("llama"), "general.type": .string("adapter"),
                                                     "adapter.type": .string("lora"), "adapter.lora.alpha": .float32(8)]
            for (key, value) in defaults.merging(metadata, uniquingKeysWith: { $1 }).sorted(by: { $0.key < $1.key }) {
                writer.set(key, value)
            }
            for (i, (tensor, shape)) in tensors.enumerated() {
                let suffix = tensors.count == 2 && tensors[0].0 == tensors[1].0 ? (i == 0 ? ".lora_a" : ".lora_b") : ""
                writer.addTensor(name: tensor + suffix, shape: shape, floats: [Float](repeating: 0.01, count: shape.reduce(1, *)))
            }
            let path = dir.appendingPathComponent("\(name).gguf").path
            try writer.write(to: path)
            do {
                _ = try LoRAAdapter(path: path, base: base, architecture: "llama", projections: projections)
                return nil
            } catch let error as LoRAError {
                #expect(error.description.contains(path))
                return error.problem
            }
        }
        #expect(try problem("good") == nil)
        #expect(try problem("arch", metadata: ["general.architecture": .string("qwen2")])
                == .wrongArchitecture(adapter: "qwen2", model: "llama"))
        #expect(try problem("type", metadata: ["general.type": .string("model")]) == .notAnAdapter(generalType: "model"))
        #expect(try problem("kind", metadata: ["adapter.type": .string("control_vector")]) == .notLoRA(adapterType: "control_vector"))
        func isBadAlpha(_ p: LoRAError.Problem?) -> Bool { if case .badAlpha = p { true } else { false } }
        #expect(isBadAlpha(try problem("alpha", metadata: ["adapter.lora.alpha": .float32(-1)])))
        #expect(isBadAlpha(try problem("alpha-nan", metadata: ["adapter.lora.alpha": .float32(.nan)])))
        #expect(isBadAlpha(try problem("alpha-string", metadata: ["adapter.lora.alpha": .string("16")])))
        #expect(try problem("missing", tensors: [("blk.99.attn_q.weight", [576, 4]), ("blk.99.attn_q.weight", [4, 576])])
                == .baseTensorMissing("blk.99.attn_q.weight"))
        #expect(try problem("shape", tensors: [("blk.0.attn_q.weight", [512, 4]), ("blk.0.attn_q.weight", [4, 576])])
                == .shapeMismatch(name: "blk.0.attn_q.weight", base: [576, 576], a: [512, 4], b: [4, 576]))
        #expect(try problem("rank", tensors: [("blk.0.attn_q.weight", [576, 4]), ("blk.0.attn_q.weight", [8, 576])])
                == .rankMismatch(name: "blk.0.attn_q.weight", a: [576, 4], b: [8, 576]))
        #expect(try problem("half", tensors: [("blk.0.attn_q.weight.lora_a", [576, 4])]) == .missingHalf("blk.0.attn_q.weight.lora_b"))
        #expect(try problem("suffix", tensors: [("blk.0.attn_q.weight.delta", [576, 4])]) == .unexpectedTensor("blk.0.attn_q.weight.delta"))
        #expect(try problem("embeddings", tensors: [("token_embd.weight", [576, 4]), ("token_embd.weight", [4, 49152])])
                == .notAdaptable("token_embd.weight"))
        #expect(try problem("empty", tensors: []) == .empty)
    }
}
