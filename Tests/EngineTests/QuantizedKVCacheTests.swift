import Engine
import Foundation
import Kernels
import Models
import TestSupport
import Testing
import Tokenization

/// `--cache-type-k/v q8_0|q4_0`: the KV cache in 8 or 4 bits, through perplexity, the paged
/// generator, the prefix cache and the prompt cache.
@Suite(.serialized) struct QuantizedKVCacheTests {
    static let q8 = KVCacheTypes(key: .q8_0, value: .q8_0)
    static let q4 = KVCacheTypes(key: .q4_0, value: .q4_0)

    /// The first 20 000 bytes of the GPL-3, in the cache (as the weight-format tests use it).
    static func text() throws -> String {
        try RequantizedSmolLM2.cached("gpl3-20000.txt") { out in
            try Data(try Data(contentsOf: URL(fileURLWithPath: "/usr/share/common-licenses/GPL-3")).prefix(20_000))
                .write(to: URL(fileURLWithPath: out))
        }
    }

    /// Against each model's own F16 cache (GPL-3, ctx 256, 4 chunks). These small models are
    /// sensitive: llama.cpp's own drift on SmolLM2 here is a mean KLD of 0.0038 for Q8_0 and 0.081
    /// for Q4_0 (the same as Swiftlet's to four digits: `matchesLlamaCppWithTheSameCacheType` checks
    /// the floats), so the bounds say "a small, ordered cost", not a bound of 10⁻³.
    @Test(arguments: RealModel.allCases)
    func divergenceFromTheF16Cache(_ model: RealModel) throws {
        let text = try String(contentsOfFile: try Self.text(), encoding: .utf8)
        let dir = try TestSupport.scratchDirectory("kv-types-\(model.rawValue)")
        let base = dir.appendingPathComponent("f16.kld").path
        let pool = ThreadPool(threads: 2)
        _ = try perplexity(model: try model.load(), text: text, context: 256, maxChunks: 4, pool: pool, saveBase: base)
        var means: [Double] = []
        for types in [Self.q8, Self.q4] {
            let loaded = try LoadedModel(path: model.path, cacheTypes: types)
            let result = try klDivergence(model: loaded, basePath: base, pool: pool)
            let pplRatio = result.ppl.value / result.pplBase.value
            print("[\(model.rawValue) \(types)] mean KLD \(result.kld.mean), same top p \(result.sameTopP.value), PPL ratio \(pplRatio)")
            means.append(result.kld.mean)
            if types == Self.q8 {
                #expect(result.kld.mean <= 0.01, "\(types): mean KLD \(result.kld.mean)")
                #expect(abs(pplRatio - 1) <= 0.01, "\(types): PPL ratio \(pplRatio)")
                #expect(result.sameTopP.value >= 0.95)
            } else {
                #expect(result.kld.mean <= 0.15, "\(types): mean KLD \(result.kld.mean)")
                #expect(abs(pplRatio - 1) <= 0.2, "\(types): PPL ratio \(pplRatio)")
            }
        }
        #expect(means[0] > 1e-5, "a quantized cache that changes nothing is not quantized")
        #expect(means[1] > 2 * means[0], "4-bit rows should drift more than 8-bit ones")
    }

    /// llama.cpp's own `-ctk/-ctv` run (flash attention, its one-chunk kernel, and the
    /// Walsh–Hadamard rotation of queries, keys and values it applies before a quantized cache) on
    /// SmolLM2: Swiftlet computes the same floats (measured: mean KLD ~10⁻⁶ for both types; without
    /// the rotation Q4_0 was 0.28 and Q8_0 0.0056).
    @Test(.enabled(if: TestSupport.llamaCppTool("llama-perplexity") != nil && FileManager.default.fileExists(atPath: TestSupport.smolLM2Path),
                   "needs SmolLM2 and llama-perplexity (scripts/test builds it)"),
          arguments: [Self.q8, Self.q4])
    func matchesLlamaCppWithTheSameCacheType(_ types: KVCacheTypes) throws {
        let text = try Self.text()
        let name = "\(types.key.rawValue)-\(types.value.rawValue)"
        let base = try RequantizedSmolLM2.cached("SmolLM2-135M-Instruct.Q4_1.ctk-\(name).c256x4.kld") { out in
            try TestSupport.run(TestSupport.llamaCppTool("llama-perplexity")!, [
                "-m", TestSupport.smolLM2Path, "-f", text, "-c", "256", "--chunks", "4", "-t", "2", "-fa", "on",
                "-ctk", types.key.rawValue, "-ctv", types.value.rawValue, "--kl-divergence-base", out,
            ])
        }
        // weights summed in llama.cpp's order: this compares the caches' floats alone
        let loaded = try ProductSummation.$forTiles.withValue(.llamaCpp) {
            try LoadedModel(path: TestSupport.smolLM2Path, cacheTypes: types)
        }
        let result = try klDivergence(model: loaded, basePath: base, pool: ThreadPool(threads: 2))
        print("[llama.cpp \(types)] mean KLD \(result.kld.mean), max \(result.kld.max), PPL \(result.ppl.value) vs \(result.pplBase.value)")
        #expect(result.kld.mean <= 1e-4, "mean KLD \(result.kld.mean) against llama.cpp's \(types) cache")
        #expect(abs(result.ppl.value / result.pplBase.value - 1) <= 0.002)
    }

    /// The paged generator over a Q8_0 pool: concurrent greedy requests equal solo runs and a
    /// contiguous Q8_0 cache's greedy loop; a prefix-cache hit gives the same output; the pool
    /// is half the F16 one's bytes (34/64 per element).
    @Test func pagedGenerationOverAQuantizedPool() async throws {
        let m = try LoadedModel(path: TestSupport.smolLM2Path, cacheTypes: Self.q8)
        let prompts = ["The capital of France is", "Write a haiku about the sea.", "List three prime numbers:"]
            .map { m.tokenizer.encode($0, addSpecial: true, parseSpecial: true) }
        let options = GenerationOptions(maxTokens: 20)
        let pool = ThreadPool(threads: 2)
        var contiguous: [[TokenID]] = []
        for prompt in prompts {
            let cache = m.makeCache(capacity: 256)
            #expect((cache as? any KVStore)?.cacheTypes == Self.q8)
            var logits = try m.forward([BatchSequence(tokens: prompt, cache: cache)], pool: pool)[0]
            var out: [TokenID] = []
            while out.count < 20 {
                let token = TokenID(logits.indices.max { logits[$0] < logits[$1] }!)
                if m.tokenizer.endOfGenerationTokens.contains(token) { break }
                out.append(token)
                logits = try m.forward([BatchSequence(tokens: [token], cache: cache)], pool: pool)[0]
            }
            contiguous.append(out)
        }
        let generator = try Generator(model: m, configuration: .init(contextLength: 256, parallel: 4, maxBatchTokens: 64))
        let handles = try prompts.map { try generator.submit([SequenceSpec(prompt: $0)], options: options) }
        var together: [[TokenID]] = []
        for h in handles { together.append(await GeneratorTests.collect(h).first?.tokens ?? []) }
        #expect(together == contiguous, "batched paged Q8_0 output differs from the contiguous Q8_0 loop")
        // the same prompt again: its full blocks come from the prefix cache
        let long = m.tokenizer.encode(PromptDiskCacheTests.systemPrompt, addSpecial: true, parseSpecial: true)
        let again = await GeneratorTests.collect(try generator.submit([SequenceSpec(prompt: long)], options: options))
        let repeated = await GeneratorTests.collect(try generator.submit([SequenceSpec(prompt: long)], options: options))
        #expect(repeated.first?.tokens == again.first?.tokens)
        #expect((repeated.first?.cachedTokens ?? 0) > 0, "the second run should reuse cached blocks")
        let f16 = try Generator(model: try RealModel.smollm2.load(), configuration: .init(contextLength: 256, parallel: 4))
        #expect(generator.kvCacheBytes * 64 == f16.kvCacheBytes * 34, "Q8_0 rows: 34 bytes per 32 elements against 64")
        await f16.shutdown()
        await generator.shutdown()
    }

    /// Prompt-cache files record the cache types: a Q8_0 generator refuses (and recomputes) the
    /// blocks an F16 one wrote, and reads back its own.
    @Test func promptCacheFilesOfAnotherCacheTypeAreRefused() throws {
        let f16 = try RealModel.smollm2.load()
        let q8 = try LoadedModel(path: TestSupport.smolLM2Path, cacheTypes: Self.q8)
        let root = try TestSupport.scratchDirectory("prompt-cache-kv-types")
        let prompt = f16.tokenizer.encode(PromptDiskCacheTests.systemPrompt, addSpecial: true, parseSpecial: true)
        func generate(_ model: LoadedModel) throws -> (GenerationResult, PromptDiskCache.Statistics?) {
            var configuration = Generator.Configuration.singleSequence(contextLength: 512, threads: 2)
            configuration.promptCacheDirectory = root.path
            let generator = try Generator(model: model, configuration: configuration)
            let result = try generator.generate(prompt: prompt, options: GenerationOptions(maxTokens: 8))
            generator.shutdownAndWait()
            return (result, generator.currentSnapshot.promptCache)
        }
        _ = try generate(f16)
        let (fresh, refused) = try generate(q8)
        #expect(fresh.usage.cachedTokens == 0)
        #expect((refused?.rejectedFiles ?? 0) > 0, "the F16 blocks must be refused")
        let (reused, read) = try generate(q8)
        #expect(reused.tokens == fresh.tokens)
        #expect(reused.usage.cachedTokens == prompt.count / 16 * 16)
        #expect(read?.rejectedFiles == 0)
    }

    /// Head widths that are not whole blocks are refused by name when the model is loaded.
    @Test func headsThatAreNotWholeBlocksAreRefused() throws {
        #expect(throws: CacheTypeError.self) {
            try KVCacheTypes(key: .q8_0, value: .f16).check(keyWidth: 48, valueWidth: 48, architecture: "llama")
        }
        do {
            try KVCacheTypes(key: .f16, value: .q4_0).check(keyWidth: 64, valueWidth: 80, architecture: "llama")
            Issue.record("80-wide value heads accepted as Q4_0")
        } catch let error as CacheTypeError {
            #expect(error.description.contains("--cache-type-v q4_0") && error.description.contains("80"), "\(error)")
        }
        try KVCacheTypes(key: .q4_0, value: .q8_0).check(keyWidth: 64, valueWidth: 256, architecture: "llama")
    }
}
