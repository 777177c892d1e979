import Engine
import Foundation
import GGUF
import Models
import TestSupport
import Testing
import Tokenization

/// GGUF files come from strangers and the kernels run unchecked: every metadata value that
/// sizes or steers the forward pass, set to something wrong, and every tensor dropped or
/// reshaped, must end in a typed error at load (or as a generation error) or in a run that
/// produces finite logits — never a crash, a hang, or silently meaningless output.
@Suite(.serialized) struct MetadataMutationTests {
    /// What happened to one mutated file.
    enum Outcome: CustomStringConvertible {
        case refused(String)
        case ran([TokenID])

        var description: String {
            switch self {
            case .refused(let why): "refused: \(why)"
            case .ran(let tokens): "ran: \(tokens)"
            }
        }
    }

    static let base = SyntheticGGUF(layers: 2, vocabulary: 96, context: 256,
                                    extraMetadata: ["llama.rope.freq_base": .float32(10_000)])
    static let prompt = "abc"

    /// Loads `path` and generates 4 tokens greedily, or reports the typed error on the way.
    static func run(_ path: String) -> Outcome {
        do {
            let model = try LoadedModel(path: path)
            let context = min(64, model.config.contextLength)
            try model.validateContext(context)
            let generator = try Generator(model: model, configuration: .singleSequence(contextLength: context, threads: 1))
            defer { generator.shutdownAndWait() }
            let tokens = model.tokenizer.encode(prompt, addSpecial: true, parseSpecial: false)
            let result = try generator.generate(prompt: tokens, options: GenerationOptions(maxTokens: 4)) { _ in true }
            return .ran(result.tokens)
        } catch let error as ModelError {
            return .refused("\(error)")
        } catch let error as GGUFError {
            return .refused("\(error)")
        } catch let error as TokenizerError {
            return .refused("\(error)")
        } catch let error as EngineError {
            return .refused("\(error)")
        } catch {
            return .refused("untyped \(type(of: error)): \(error)")
        }
    }

    /// A copy of the base model with metadata replaced (nil: removed) and tensors changed.
    static func mutant(_ name: String, of basePath: String? = nil, metadata: [String: MetadataValue?] = [:],
                       tensor: (TensorInfo) -> (shape: [Int], keep: Bool)? = { _ in nil }) throws -> String {
        let file = try GGUFFile(path: try basePath ?? base.write(name: "mutation-base"))
        var writer = GGUFWriter()
        for key in file.metadataKeys where key != "general.alignment" {
            if let replacement = metadata[key] {
                if let value = replacement { writer.set(key, value) }
            } else {
                writer.set(key, file[key]!)
            }
        }
        for tensorInfo in file.tensors {
            let change = tensor(tensorInfo)
            if change?.keep == false { continue }
            let shape = change?.shape ?? tensorInfo.shape
            var bytes = Array(file.bytes(for: tensorInfo))
            let size = tensorInfo.type.byteCount(elements: shape.reduce(1, *))!
            bytes = size <= bytes.count ? Array(bytes.prefix(size)) : bytes + [UInt8](repeating: 0, count: size - bytes.count)
            writer.addTensor(name: tensorInfo.name, type: tensorInfo.type, shape: shape, data: bytes)
        }
        let path = SyntheticGGUF.directory.appendingPathComponent("mutant-\(name).gguf").path
        try writer.write(to: path)
        return path
    }

    /// The values each key is set to: zero, one, the type's maximum, one off its value.
    static func integerMutations(of value: Int) -> [MetadataValue] {
        [.uint32(0), .uint32(1), .uint32(.max), .uint32(UInt32(value + 1)), .uint32(UInt32(max(0, value - 1)))]
    }

    static let integerKeys = [
        "llama.context_length", "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
        "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count", "llama.vocab_size",
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
    ]
    static let floatKeys = ["llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base"]

    @Test func integerMetadataIsValidatedOrHarmless() throws {
        let file = try GGUFFile(path: try Self.base.write(name: "mutation-base"))
        var failures: [String] = []
        for key in Self.integerKeys {
            let original = file[key]!.int!
            for (i, value) in Self.integerMutations(of: original).enumerated() {
                let outcome = Self.run(try Self.mutant("\(key)-\(i)", metadata: [key: value]))
                if case .refused(let why) = outcome, why.hasPrefix("untyped") { failures.append("\(key) = \(value): \(why)") }
            }
            let outcome = Self.run(try Self.mutant("\(key)-removed", metadata: [key: nil]))
            if case .refused(let why) = outcome, why.hasPrefix("untyped") { failures.append("\(key) removed: \(why)") }
        }
        #expect(failures.isEmpty, "\(failures)")
    }

    /// Non-finite or negative floats are refused at load: NaN spreads into every logit, and an
    /// infinite epsilon or base silently zeroes activations or angles.
    @Test(arguments: floatKeys)
    func nonFiniteFloatsAreRefused(_ key: String) throws {
        for value: Float in [.nan, .infinity, -.infinity, -1] {
            let outcome = Self.run(try Self.mutant("\(key)-\(value)", metadata: [key: .float32(value)]))
            guard case .refused(let why) = outcome else {
                Issue.record("\(key) = \(value) ran: \(outcome)")
                continue
            }
            #expect(why.contains(key.replacingOccurrences(of: "llama.", with: "")), "\(key) = \(value): \(why)")
        }
    }

    /// Every tensor dropped, and every tensor one row longer: a typed error naming it — except a
    /// dropped `output.weight`, which means tied embeddings (as llama.cpp reads it).
    @Test func droppedAndReshapedTensorsAreRefusedByName() throws {
        let file = try GGUFFile(path: try Self.base.write(name: "mutation-base"))
        var failures: [String] = []
        for (i, info) in file.tensors.enumerated() {
            let dropped = Self.run(try Self.mutant("drop-\(i)", tensor: { $0.name == info.name ? (info.shape, false) : nil }))
            switch dropped {
            case .refused(let why) where why.contains(info.name): break
            case .ran where info.name == "output.weight": break
            default: failures.append("\(info.name) dropped: \(dropped)")
            }
            var longer = info.shape
            longer[longer.count - 1] += 1
            let reshaped = Self.run(try Self.mutant("reshape-\(i)", tensor: { $0.name == info.name ? (longer, true) : nil }))
            if case .refused(let why) = reshaped, why.contains(info.name) {} else { failures.append("\(info.name) as \(longer): \(reshaped)") }
        }
        #expect(failures.isEmpty, "\(failures.joined(separator: "\n"))")
    }

    /// A dropped `output.weight` means tied embeddings only where llama.cpp reads it so: OLMo 2
    /// and gpt-oss need their own output projection, llama and EXAONE 4 do without.
    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason))
    func outputProjectionIsOptionalWhereLlamaCppSaysSo() throws {
        let dir = try LlamaArchModels.directory.get()
        for (model, required) in [("olmo2-dense", true), ("gpt-oss-moe", true), ("llama-dense", false), ("exaone4-dense", false)] {
            let path = dir.appendingPathComponent("\(model).gguf").path
            guard FileManager.default.fileExists(atPath: path) else { Issue.record("test-llama-archs wrote no \(model)"); continue }
            let outcome = Self.run(try Self.mutant("no-output-\(model)", of: path,
                                                   tensor: { $0.name == "output.weight" ? ($0.shape, false) : nil }))
            switch outcome {
            case .refused(let why): #expect(required && why.contains("output.weight"), "\(model): \(why)")
            case .ran: #expect(!required, "\(model) ran without output.weight")
            }
        }
    }

    /// gpt-oss's graph in llama.cpp adds the attention-output, router and expert biases unconditionally:
    /// a file without one is refused by name, not run as if the bias were zero.
    @Test(.enabled(if: LlamaArchModels.available, LlamaArchModels.reason))
    func gptOssRequiresItsBiases() throws {
        let path = try LlamaArchModels.directory.get().appendingPathComponent("gpt-oss-moe.gguf").path
        try #require(FileManager.default.fileExists(atPath: path), "test-llama-archs wrote no gpt-oss-moe")
        for dropped in ["blk.0.attn_output.bias", "blk.1.ffn_gate_inp.bias", "blk.0.ffn_up_exps.bias"] {
            let outcome = Self.run(try Self.mutant("gpt-oss-without-\(dropped)", of: path,
                                                   tensor: { $0.name == dropped ? ($0.shape, false) : nil }))
            guard case .refused(let why) = outcome else {
                Issue.record("gpt-oss ran without \(dropped)")
                continue
            }
            #expect(why.contains(dropped), "\(dropped): \(why)")
        }
    }

    /// The real model with the values that once crashed it or ran with garbage: a typed error each.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: TestSupport.smolLM2Path), "needs SmolLM2 (swiftlet pull smollm2)"),
          arguments: [
              ("llama.rope.dimension_count", MetadataValue.uint32(4096)), ("llama.rope.dimension_count", .uint32(7)),
              ("llama.attention.layer_norm_rms_epsilon", .float32(.nan)), ("llama.block_count", .uint32(0)),
              ("llama.block_count", .uint32(.max)), ("llama.attention.head_count", .uint32(0)),
              ("llama.context_length", .uint32(0)),
          ])
    func realModelMutationsAreRefused(_ key: String, _ value: MetadataValue) throws {
        let path = try Self.mutant("smollm2-\(key)-\(value)", of: TestSupport.smolLM2Path, metadata: [key: value])
        defer { try? FileManager.default.removeItem(atPath: path) }
        let outcome = Self.run(path)
        guard case .refused(let why) = outcome else {
            Issue.record("\(key) = \(value): \(outcome)")
            return
        }
        #expect(!why.hasPrefix("untyped"), "\(why)")
        #expect(why.contains(key.replacingOccurrences(of: "llama.", with: "")), "\(key) = \(value): \(why)")
    }

    /// Mutations that change nothing the model computes give the unmutated model's tokens.
    @Test func harmlessChangesKeepTheAnswer() throws {
        guard case .ran(let expected) = Self.run(try Self.base.write(name: "mutation-base")) else {
            Issue.record("the base model does not run")
            return
        }
        for (name, metadata) in [("longer-context", ["llama.context_length": MetadataValue.uint32(4096)]),
                                 ("no-vocab-size", ["llama.vocab_size": nil])] as [(String, [String: MetadataValue?])] {
            let outcome = Self.run(try Self.mutant(name, metadata: metadata))
            guard case .ran(let tokens) = outcome else {
                Issue.record("\(name): \(outcome)")
                continue
            }
            #expect(tokens == expected, "\(name)")
        }
    }

    /// `scripts/mutate`, the full mutation set, on both real models: a sample of 40 mutants each,
    /// spread over its list (metadata keys, then dropped and reshaped tensors), each run by the
    /// built binary. The script fails on any crash, hang, untyped error, or changed output from
    /// a key that sizes the network or a tensor change.
    @Test(.enabled(if: TestSupport.builtSwiftletBinary != nil && FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)
                   && FileManager.default.fileExists(atPath: TestSupport.gemma3Path),
                   "needs the built swiftlet binary and both real models (scripts/test provides them)"))
    func mutationScriptSampleOnRealModels() throws {
        let root = TestSupport.repositoryRoot()
        let output = try TestSupport.run("/usr/bin/env", [
            "python3", root.appendingPathComponent("scripts/mutate").path, "--models", "smollm2,gemma3", "--limit", "40",
            "--swiftlet-bin", TestSupport.builtSwiftletBinary!,
        ])
        print(output)
        #expect(output.contains("80 mutants, 0 failures"), "\(output)")
    }
}
