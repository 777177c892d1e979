import Engine
import Foundation
import GGUF
import TestSupport
import Testing

/// `swiftlet upscale`: SOLAR-style depth up-scaling of a GGUF model.
@Suite(.serialized) struct DepthUpscalingTests {
    @Test func rangesParseAndBadOnesAreNamed() throws {
        #expect(try DepthUpscaling.parseRanges("0:24,6:30") == [0..<24, 6..<30])
        #expect(try DepthUpscaling.parseRanges(" 2 : 3") == [2..<3])
        for bad in ["", "5:3", "3:3", "a:b", "4", "-1:3", "0:4,", "0:4:8"] {
            #expect(throws: UpscaleError.self, "'\(bad)'") { try DepthUpscaling.parseRanges(bad) }
        }
    }

    /// SmolLM2's 30 blocks as 0..<24 then 6..<30: 48 blocks that llama.cpp loads and runs, with
    /// the same perplexity in both engines.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: TestSupport.smolLM2Path) && LoRATests.llamaPerplexity != nil,
                   "needs SmolLM2 (swiftlet pull smollm2) and llama-perplexity (scripts/llama_cpp.py)"))
    func upscaledSmolLM2RunsInBothEngines() throws {
        let output = try TestSupport.scratchDirectory("upscale").appendingPathComponent("smollm2-48.gguf").path
        let source = try GGUFFile(path: TestSupport.smolLM2Path)
        #expect(source.arch("block_count")?.int == 30)
        #expect(throws: UpscaleError.badRange("20:31", reason: "the model has 30 blocks (0:30)")) {
            try DepthUpscaling.upscale(input: TestSupport.smolLM2Path, output: output, ranges: [0..<10, 20..<31])
        }
        let summary = try DepthUpscaling.upscale(input: TestSupport.smolLM2Path, output: output, ranges: [0..<24, 6..<30])
        #expect(summary.blockSources == Array(0..<24) + Array(6..<30))
        let file = try GGUFFile(path: output)
        #expect(file.arch("block_count")?.int == 48)
        #expect(file.tensors.count == source.tensors.count + 18 * 9, "18 more blocks of 9 tensors")
        for (new, old) in [(24, 6), (47, 29), (0, 0)] {
            for stem in ["attn_q.weight", "ffn_down.weight", "attn_norm.weight"] {
                let a = file.tensor(named: "blk.\(new).\(stem)")!, b = source.tensor(named: "blk.\(old).\(stem)")!
                #expect(a.shape == b.shape && a.type == b.type)
                #expect(file.bytes(for: a).elementsEqual(source.bytes(for: b)), "blk.\(new) is blk.\(old)")
            }
        }
        for (layers, message) in [("0:31", "the model has 30 blocks"), ("5:3", "bad layer range '5:3'")] {
            let r = try CommandLine.run(["upscale", TestSupport.smolLM2Path, output + ".bad", "--layers", layers])
            #expect(r.status != 0 && r.stderr.contains(message), "\(layers): \(r.stderr)")
        }
        let reference = try LoRATests.llamaCppPerplexity(["-m", output])
        let ours = try LoRATests.swiftletPerplexity(LoadedModel(path: output))
        #expect(abs(ours / reference - 1) < 0.01, "Swiftlet \(ours), llama.cpp \(reference)")
    }
}
