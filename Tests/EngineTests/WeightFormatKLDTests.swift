import Engine
import Foundation
import GGUF
import Kernels
import TestSupport
import Testing

/// SmolLM2 in other weight formats, quantized by llama.cpp's own llama-quantize (from an F32
/// copy of the Q4_1 file) or, for formats it does not choose for a dense model, by the `gguf`
/// package's reference quantizer (scripts/gguf_py_quantize.py). llama-perplexity writes its
/// log-probabilities over the first 20 000 bytes of the GPL-3 (ctx 256, 4 chunks), and
/// Swiftlet's, loaded in llama.cpp's order (`ProductSummation.llamaCpp`), must match them: mean
/// KL divergence ≤ 10⁻³ and perplexity within 1 %.
///
/// llama-perplexity runs with its tiled matrix product switched off (`GGML_CPU_TILED_MM=0`,
/// which prompt batches of the K-quants, IQ4_XS and the grid types otherwise take): its plain
/// `ggml_vec_dot_<type>_q8_K` kernels, and its repacked Q4_0/IQ4_NL/Q4_K kernels, are the
/// arithmetic Swiftlet reproduces, so these files agree to ~10⁻⁶ or better. SmolLM2 on this text
/// amplifies last-bit differences: llama.cpp against itself, its repacked IQ4_NL kernel against
/// its plain one, gives 0.0040 on the IQ4_NL file.
///
/// The grid i-quants (IQ1_S … IQ3_S; llama-quantize gives them only to the ffn_down tensors,
/// whose rows are whole 256-element blocks, the others fall back to IQ4_NL) are quantized with an
/// importance matrix (llama-imatrix over the Apache-2.0 license text).
///
/// The quantized files and llama.cpp's base files are kept in `$SWIFTLET_HOME/requantized/`
/// (named by llama.cpp's version), so later runs only run Swiftlet.
enum RequantizedSmolLM2 {
    static let available = TestSupport.llamaCppTool("llama-quantize") != nil
        && TestSupport.llamaCppTool("llama-perplexity") != nil
        && TestSupport.llamaCppTool("llama-imatrix") != nil
        && FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)
    static let reason: Comment =
        "needs SmolLM2 and llama.cpp's llama-quantize, llama-imatrix and llama-perplexity (scripts/test builds them)"

    static var directory: URL {
        TestSupport.home.appendingPathComponent("requantized/llama.cpp-\(TestSupport.llamaCppVersion)")
    }

    /// The F32 copy every quantization starts from, once per test process (in the scratch folder).
    static let floatCopy: Result<String, Error> = Result {
        let path = TestSupport.scratchRoot.appendingPathComponent("smollm2-f32.gguf").path
        try TestSupport.run(TestSupport.llamaCppTool("llama-quantize")!,
                            ["--allow-requantize", TestSupport.smolLM2Path, path, "F32"])
        return path
    }

    /// Writes `name` in the cache with `make(temporaryPath)` unless it is there; a run that
    /// stops half way leaves only the temporary file.
    static func cached(_ name: String, _ make: (String) throws -> Void) throws -> String {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let path = directory.appendingPathComponent(name).path
        if FileManager.default.fileExists(atPath: path) { return path }
        let partial = path + ".partial-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: partial) }
        try make(partial)
        try FileManager.default.moveItem(atPath: partial, toPath: path)
        return path
    }

    /// SmolLM2 as a `llamaQuantize` file type (`IQ4_XS`, `Q5_K_M`, …) or, with `gguf-py`, a
    /// tensor type quantized by scripts/gguf_py_quantize.py (in the tensors `pattern` names).
    static func model(_ format: Format) throws -> String {
        try cached("SmolLM2-135M-Instruct.\(format.name).gguf") { out in
            let source = try floatCopy.get()
            switch format.quantizer {
            case .llamaQuantize:
                var imatrix: [String] = []
                if format.importanceMatrix { imatrix = ["--imatrix", try importanceMatrix()] }
                let overrides = format.tensorTypes.flatMap { ["--tensor-type", $0] }
                try TestSupport.run(TestSupport.llamaCppTool("llama-quantize")!,
                                    imatrix + overrides + [source, out, format.type, "2"])
            case .ggufPy:
                let script = TestSupport.repositoryRoot().appendingPathComponent("scripts/gguf_py_quantize.py").path
                try TestSupport.python([script, source, out, format.type] + (format.pattern.map { [$0] } ?? []))
            }
        }
    }

    /// llama-perplexity's log-probabilities for `format`'s file.
    static func base(_ format: Format) throws -> String {
        let model = try model(format)
        let text = try cached("gpl3-20000.txt") { out in
            try Data(try Data(contentsOf: URL(fileURLWithPath: "/usr/share/common-licenses/GPL-3")).prefix(20_000))
                .write(to: URL(fileURLWithPath: out))
        }
        return try cached("SmolLM2-135M-Instruct.\(format.name).c256x4.untiled-mm.kld") { out in
            try TestSupport.run(TestSupport.llamaCppTool("llama-perplexity")!, [
                "-m", model, "-f", text, "-c", "256", "--chunks", "4", "-t", "2", "--kl-divergence-base", out,
            ], environment: ["GGML_CPU_TILED_MM": "0"])
        }
    }

    /// llama-imatrix's importance matrix for SmolLM2 (from the F32 copy) over the Apache-2.0
    /// license text: llama-quantize needs one for its 1- and 2-bit grid types.
    static func importanceMatrix() throws -> String {
        let text = try cached("apache-2.0.txt") { out in
            try Data(contentsOf: URL(fileURLWithPath: "/usr/share/common-licenses/Apache-2.0")).write(to: URL(fileURLWithPath: out))
        }
        let source = try floatCopy.get()
        return try cached("SmolLM2-135M-Instruct.imatrix-apache2-c256.gguf") { out in
            try TestSupport.run(TestSupport.llamaCppTool("llama-imatrix")!, [
                "-m", source, "-f", text, "-c", "256", "-t", "2", "--output-format", "gguf", "-o", out,
            ])
        }
    }

    struct Format: Sendable, CustomTestStringConvertible {
        enum Quantizer: Sendable { case llamaQuantize, ggufPy }
        /// The file's name in the cache.
        let name: String
        /// llama-quantize's file type, or the tensor type for gguf-py.
        let type: String
        let quantizer: Quantizer
        var pattern: String? = nil
        /// Tensor types the file must hold (what the case is about).
        let types: [TensorType]
        /// llama-quantize with `importanceMatrix()`.
        var importanceMatrix = false
        /// The mean KL divergence allowed.
        var maxKLD = 1e-3
        /// llama-quantize's `--tensor-type` overrides (`ffn_down=iq1_s`).
        var tensorTypes: [String] = []
        var testDescription: String { name }
    }
}

@Suite(.serialized) struct WeightFormatKLDTests {
    static let formats: [RequantizedSmolLM2.Format] = [
        .init(name: "IQ4_NL", type: "IQ4_NL", quantizer: .llamaQuantize, types: [.iq4_NL]),
        .init(name: "IQ4_XS", type: "IQ4_XS", quantizer: .llamaQuantize, types: [.iq4_XS, .iq4_NL]),
        // llama.cpp repacks Q4_0 (as IQ4_NL) and adds block totals: Swiftlet's tiles in its order
        .init(name: "Q4_0", type: "Q4_0", quantizer: .llamaQuantize, types: [.q4_0]),
        // llama.cpp's repacked MXFP4 kernel adds block totals, Swiftlet's MXFP4 kernels vec_dot's
        // 8 lanes per block: the spread of that change of order (measured 0.005)
        .init(name: "MXFP4", type: "MXFP4", quantizer: .ggufPy, types: [.mxfp4], maxKLD: 0.01),
        // llama-quantize's TQ files make every ffn_down ternary, which leaves SmolLM2 at a perplexity
        // of 10⁶ (beyond the 16 nats llama.cpp's base file records): four ternary layers, the rest Q8_0
        .init(name: "TQ1_0-ffn_down-0-3", type: "TQ1_0", quantizer: .ggufPy, pattern: #"blk\.[0-3]\.ffn_down"#,
              types: [.tq1_0]),
        .init(name: "TQ2_0-ffn_down-0-3", type: "TQ2_0", quantizer: .ggufPy, pattern: #"blk\.[0-3]\.ffn_down"#,
              types: [.tq2_0]),
        // Q5_1, Q5_K, Q6_K and Q8_0 tensors side by side
        .init(name: "Q5_K_M", type: "Q5_K_M", quantizer: .llamaQuantize, types: [.q5_1, .q5_K, .q6_K, .q8_0]),
        // the grid i-quants (ffn_down; the other matrices fall back to IQ4_NL)
        .init(name: "IQ3_XXS", type: "IQ3_XXS", quantizer: .llamaQuantize, types: [.iq3_XXS],
              importanceMatrix: true),
        .init(name: "IQ3_S", type: "IQ3_S", quantizer: .llamaQuantize, types: [.iq3_S],
              importanceMatrix: true),
        // (the file types give three ffn_down Q2_K, which llama.cpp's AVX-512 build multiplies with
        // its repacked q2_K_8x8 kernel, an order Swiftlet does not reproduce: all 30 in the type)
        .init(name: "IQ2_XXS-ffn_down", type: "IQ2_XXS", quantizer: .llamaQuantize, types: [.iq2_XXS],
              importanceMatrix: true, tensorTypes: ["ffn_down=iq2_xxs"]),
        .init(name: "IQ2_XS-ffn_down", type: "IQ2_XS", quantizer: .llamaQuantize, types: [.iq2_XS],
              importanceMatrix: true, tensorTypes: ["ffn_down=iq2_xs"]),
        // llama-quantize's IQ2_S file type makes ffn_down IQ2_XS, and its IQ1 files leave SmolLM2 at a
        // perplexity of 40-75: these three are Q8_0 files with ffn_down in the type
        .init(name: "IQ2_S-ffn_down", type: "Q8_0", quantizer: .llamaQuantize, types: [.iq2_S],
              importanceMatrix: true, tensorTypes: ["ffn_down=iq2_s"]),
        // (IQ1_S on all 30 pushes tokens past the 16 nats the base file records: layers 0-9)
        .init(name: "IQ1_S-ffn_down-0-9", type: "Q8_0", quantizer: .llamaQuantize, types: [.iq1_S],
              importanceMatrix: true, tensorTypes: [#"blk\.[0-9]\.ffn_down=iq1_s"#]),
        .init(name: "IQ1_M-ffn_down", type: "Q8_0", quantizer: .llamaQuantize, types: [.iq1_M],
              importanceMatrix: true, tensorTypes: ["ffn_down=iq1_m"]),
    ]

    @Test(.enabled(if: RequantizedSmolLM2.available, RequantizedSmolLM2.reason), arguments: formats)
    func matchesLlamaCpp(_ format: RequantizedSmolLM2.Format) throws {
        let base = try RequantizedSmolLM2.base(format)
        // the other tensors (Q8_0, Q5_1…) summed in llama.cpp's order, so the format's own kernels
        // are what is compared: these perturbed models amplify any change of order (llama.cpp's
        // flash attention off against on: mean KLD 0.065 on the TQ1_0 file, 0.028 on IQ1_M's)
        let loaded = try ProductSummation.$forTiles.withValue(.llamaCpp) {
            try LoadedModel(path: try RequantizedSmolLM2.model(format))
        }
        let present = Set(loaded.file.tensors.map(\.type))
        for type in format.types { #expect(present.contains(type), "\(format.name): no \(type) tensor") }
        let result = try klDivergence(model: loaded, basePath: base, pool: ThreadPool(threads: 2))
        let pplRatio = result.ppl.value / result.pplBase.value
        print("[\(format.name)] mean KLD \(result.kld.mean), max \(result.kld.max), same top p \(result.sameTopP.value), "
              + "PPL \(result.ppl.value) vs llama.cpp \(result.pplBase.value)")
        #expect(result.chunks == 4 && result.context == 256)
        #expect(result.kld.mean <= format.maxKLD, "\(format.name): mean KLD \(result.kld.mean)")
        #expect(abs(pplRatio - 1) <= 0.01, "\(format.name): PPL \(result.ppl.value) vs llama.cpp \(result.pplBase.value)")
    }
}
