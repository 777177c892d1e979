import ArgumentParser
import Engine
import Foundation

struct Upscale: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Depth up-scaling: write a model whose blocks are ranges of another's blocks, in order.",
        discussion: """
        --layers 0:24,8:32 stacks blocks 0-23 and then 8-31 of a 32-block model into a 48-block one \
        (SOLAR's depth up-scaling; END is excluded). Tensors are copied as they are and renamed blk.N.*; \
        the block count and per-layer metadata arrays are rewritten.
        """)

    @Argument(help: "Input .gguf file (or a model name from the cache).")
    var input: String
    @Argument(help: "Output .gguf file.")
    var output: String
    @Option(help: ArgumentHelp("Block ranges START:END (END excluded), comma-separated, in the new order.", valueName: "RANGES"))
    var layers: String

    func validate() throws {
        do { _ = try DepthUpscaling.parseRanges(layers) } catch { throw ValidationError("--layers: \(error)") }
        try requireWritableFile(output, what: "OUTPUT")
        try ModelLocator.validate(input)
    }

    func run() throws {
        let path = try ModelLocator.resolve(input)
        let summary = try DepthUpscaling.upscale(input: path, output: output, ranges: try DepthUpscaling.parseRanges(layers))
        print("\(output): \(summary.blockSources.count) blocks from \(summary.sourceBlocks) (\(layers)), \(summary.tensors) tensors")
    }
}
