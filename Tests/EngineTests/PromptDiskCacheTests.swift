import Engine
import Foundation
import TestSupport
import Testing
import Tokenization

/// `--prompt-cache`: full KV blocks written to disk are read back by a new generator (a server
/// restart) instead of being computed, give the same output, and files that are corrupt,
/// truncated or another model's are refused, deleted and recomputed.
@Suite(.serialized) struct PromptDiskCacheTests {
    static let systemPrompt = """
    <|im_start|>system
    You are a careful assistant for a harbour town's tourist office. Answer in one or two short sentences, \
    mention opening hours only when asked, never invent prices, and recommend the ferry to the island when \
    visitors ask what to do on a sunny afternoon. The office is on Quay Street next to the bakery.<|im_end|>
    <|im_start|>user
    Where is the tourist office?<|im_end|>
    <|im_start|>assistant

    """

    func generate(_ model: LoadedModel, _ prompt: [TokenID], cacheDirectory: URL?) throws -> (GenerationResult, PromptDiskCache.Statistics?) {
        var configuration = Generator.Configuration.singleSequence(contextLength: 512, threads: 2)
        configuration.promptCacheDirectory = cacheDirectory?.path
        let generator = try Generator(model: model, configuration: configuration)
        let result = try generator.generate(prompt: prompt, options: GenerationOptions(maxTokens: 12))
        generator.shutdownAndWait()  // writes the queued blocks
        return (result, generator.currentSnapshot.promptCache)
    }

    func files(_ root: URL) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: root, includingPropertiesForKeys: nil).flatMap {
            try FileManager.default.contentsOfDirectory(at: $0, includingPropertiesForKeys: nil)
        }.filter { $0.pathExtension == "kv" }.sorted { $0.path < $1.path }
    }

    @Test func blocksSurviveARestartAndGiveTheSameOutput() throws {
        let model = try RealModel.smollm2.load()
        let root = try TestSupport.scratchDirectory("prompt-cache-restart")
        let prompt = model.tokenizer.encode(Self.systemPrompt, addSpecial: true, parseSpecial: true)
        let fullBlocks = prompt.count / 16 * 16
        let (plain, _) = try generate(model, prompt, cacheDirectory: nil)

        let (first, written) = try generate(model, prompt, cacheDirectory: root)
        #expect(first.tokens == plain.tokens)
        #expect(first.usage.cachedTokens == 0)
        #expect((written?.files ?? 0) >= fullBlocks / 16)
        #expect((written?.bytesWritten ?? 0) > 0)

        let (second, read) = try generate(model, prompt, cacheDirectory: root)
        #expect(second.tokens == plain.tokens)
        #expect(second.usage.cachedTokens == fullBlocks)
        #expect(read?.hitTokens == fullBlocks)
        #expect(read?.rejectedFiles == 0)
    }

    @Test func corruptAndTruncatedFilesAreRefusedAndRecomputed() throws {
        let model = try RealModel.smollm2.load()
        let root = try TestSupport.scratchDirectory("prompt-cache-corrupt")
        let prompt = model.tokenizer.encode(Self.systemPrompt, addSpecial: true, parseSpecial: true)
        let (plain, _) = try generate(model, prompt, cacheDirectory: root)
        let stored = try files(root)
        try #require(stored.count >= 4)
        // a flipped byte in the keys of one block, and another block cut short
        var bytes = try Data(contentsOf: stored[1])
        bytes[bytes.count / 2] ^= 0x40
        try bytes.write(to: stored[1])
        try Data(try Data(contentsOf: stored[2]).prefix(100)).write(to: stored[2])

        let (again, stats) = try generate(model, prompt, cacheDirectory: root)
        #expect(again.tokens == plain.tokens)
        // the blocks are read in prompt order; the first refused one ends the disk prefix
        #expect((stats?.rejectedFiles ?? 0) >= 1)
        #expect(again.usage.cachedTokens < prompt.count / 16 * 16)
        // refused files are deleted, then written again from the recomputed blocks
        let (third, stats3) = try generate(model, prompt, cacheDirectory: root)
        #expect(third.tokens == plain.tokens)
        #expect(stats3?.rejectedFiles == 0)
        #expect(third.usage.cachedTokens == prompt.count / 16 * 16)
    }

    /// Another model's files under this model's fingerprint (same token ids, so the same
    /// prefix hashes): refused by the header, never read as keys and values.
    @Test func anotherModelsFilesAreRefused() throws {
        let smol = try RealModel.smollm2.load(), gemma = try RealModel.gemma3.load()
        let root = try TestSupport.scratchDirectory("prompt-cache-other-model")
        let prompt = smol.tokenizer.encode(Self.systemPrompt, addSpecial: true, parseSpecial: true)
        _ = try generate(smol, prompt, cacheDirectory: root)
        let smolFiles = try files(root)
        let (plainGemma, _) = try generate(gemma, prompt, cacheDirectory: nil)
        // gemma's directory: made by opening its cache once, then filled with SmolLM2's files
        let (_, _) = try generate(gemma, [2], cacheDirectory: root)
        let gemmaDirectory = try #require(try FileManager.default.contentsOfDirectory(at: root, includingPropertiesForKeys: nil)
            .first { $0.path != smolFiles[0].deletingLastPathComponent().path })
        for file in smolFiles {
            let target = gemmaDirectory.appendingPathComponent(file.lastPathComponent)
            try? FileManager.default.removeItem(at: target)
            try FileManager.default.copyItem(at: file, to: target)
        }
        let (gemmaRun, stats) = try generate(gemma, prompt, cacheDirectory: root)
        #expect(gemmaRun.tokens == plainGemma.tokens)
        #expect(gemmaRun.usage.cachedTokens == 0)
        #expect((stats?.rejectedFiles ?? 0) >= 1)
    }
}
