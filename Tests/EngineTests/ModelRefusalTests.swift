import Engine
import Foundation
import GGUF
import Models
import Testing

/// Files Swiftlet cannot run exactly are refused at load with an error naming what is wrong,
/// and `swiftlet info` lists every missing piece.
@Suite struct ModelRefusalTests {
    /// A weight the graph never reads would otherwise be silently skipped: a wrong answer.
    @Test func aTensorTheGraphDoesNotUseIsAnError() throws {
        let path = try SyntheticGGUF(extraTensors: [("blk.0.attn_gate.weight", .f32, [256, 256])]).write(name: "unused-tensor")
        #expect(throws: ModelError.unusedTensors(architecture: "llama", names: ["blk.0.attn_gate.weight"])) {
            try LoadedModel(path: path)
        }
    }

    /// Multi-token-prediction blocks after `block_count - nextn_predict_layers` are not run,
    /// so their tensors are not an error (llama.cpp skips them too).
    @Test func predictionLayerTensorsAreNotUnused() throws {
        let path = try SyntheticGGUF(layers: 3, extraMetadata: ["llama.nextn_predict_layers": .uint32(1)])
            .write(name: "prediction-layer")
        let model = try LoadedModel(path: path)
        #expect(model.model.config.blockCount == 2)
        #expect(model.model.config.predictionLayerCount == 1)
    }

    @Test func weightTypesWithoutKernelsAreNamedBeforeAnyKernelRuns() throws {
        let path = try SyntheticGGUF(extraTensors: [("blk.0.ffn_extra.weight", .nvfp4, [256, 8])]).write(name: "nvfp4-tensor")
        let file = try GGUFFile(path: path)
        #expect(file.tensor(named: "blk.0.ffn_extra.weight")?.type == .nvfp4)
        let expected = ModelError.unsupportedTensorTypes([UnsupportedTensorType(type: .nvfp4, count: 1, example: "blk.0.ffn_extra.weight")])
        #expect(throws: expected) { try LoadedModel(path: path) }
        #expect("\(expected)".contains("tensor type NVFP4 (1 tensors, e.g. 'blk.0.ffn_extra.weight') has no kernels"))

        let info = try CommandLine.run(["info", path])
        #expect(info.status == 0)
        #expect(info.stdout.contains("runs in Swiftlet"))
        #expect(info.stdout.contains("no, missing:"))
        #expect(info.stdout.contains("tensor type NVFP4"))
    }

    @Test func infoSaysWhenAFileRuns() throws {
        let info = try CommandLine.run(["info", try SyntheticGGUF().write(name: "runs")])
        #expect(info.stdout.split(separator: "\n").contains { $0.hasPrefix("runs in Swiftlet") && $0.hasSuffix("yes") })
    }

    @Test func infoNamesAnUnknownArchitectureAndTokenizer() throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("bloom"))
        w.set("bloom.embedding_length", .uint32(8))
        w.set("bloom.block_count", .uint32(1))
        w.set("tokenizer.ggml.model", .string("rwkv"))
        w.addTensor(name: "token_embd.weight", shape: [8, 4], floats: [Float](repeating: 0, count: 32))
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bloom-\(UUID().uuidString).gguf").path
        try w.write(to: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let info = try CommandLine.run(["info", path])
        #expect(info.stdout.contains("architecture 'bloom'"))
        #expect(info.stdout.contains("rwkv"))
    }
}
