import Engine
import Foundation
import GGUF
import Kernels
import TestSupport
import Testing

/// `swiftlet quantize` against llama.cpp's llama-quantize on SmolLM2 (the F32 copy of the Q4_1
/// file WeightFormatKLDTests makes): the row quantizers give llama-quantize's bytes, each
/// mix gives every tensor llama-quantize's type (and bytes), llama.cpp's llama-perplexity runs
/// Swiftlet's files, and importance matrices from llama-imatrix (GGUF and legacy .dat) weight
/// the quantizers as llama-quantize's --imatrix does. llama.cpp's files are cached with
/// WeightFormatKLDTests' (in `$SWIFTLET_HOME/requantized/`).
enum QuantizeAgainstLlamaCpp {
    static let available = RequantizedSmolLM2.available && TestSupport.llamaCppTool("llama-imatrix") != nil
    static let reason: Comment = "needs SmolLM2 and llama.cpp's llama-quantize, llama-perplexity and llama-imatrix"

    /// llama-quantize's file for `flags + [F32 copy, out, type, 2 threads]`, cached as `name`.
    static func llamaQuantized(_ name: String, _ flags: [String], _ type: String) throws -> String {
        try RequantizedSmolLM2.cached("SmolLM2-135M-Instruct.\(name).gguf") { out in
            try TestSupport.run(TestSupport.llamaCppTool("llama-quantize")!,
                                flags + [try RequantizedSmolLM2.floatCopy.get(), out, type, "2"])
        }
    }

    static func text() throws -> String {
        try RequantizedSmolLM2.cached("gpl3-20000.txt") { out in
            try Data(try Data(contentsOf: URL(fileURLWithPath: "/usr/share/common-licenses/GPL-3")).prefix(20_000))
                .write(to: URL(fileURLWithPath: out))
        }
    }

    /// llama-imatrix's matrix for SmolLM2 over the first 20 000 bytes of the GPL-3 (4 chunks of
    /// 256 tokens), in `format` ("gguf" or "dat").
    static func importanceMatrix(_ format: String) throws -> String {
        let text = try text()
        return try RequantizedSmolLM2.cached("SmolLM2-135M-Instruct.imatrix-c256x4.\(format)") { out in
            try TestSupport.run(TestSupport.llamaCppTool("llama-imatrix")!, [
                "-m", try RequantizedSmolLM2.floatCopy.get(), "-f", text, "-c", "256", "--chunks", "4", "-t", "2",
                "--output-format", format, "-o", out, "--no-ppl",
            ])
        }
    }

    /// llama-perplexity's final estimate for `model` over the test text.
    static func perplexity(_ model: String, context: Int, chunks: Int) throws -> Double {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: TestSupport.llamaCppTool("llama-perplexity")!)
        p.arguments = ["-m", model, "-f", try text(), "-c", "\(context)", "--chunks", "\(chunks)", "-t", "2"]
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let log = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard p.terminationStatus == 0,
              let line = log.split(separator: "\n").first(where: { $0.contains("Final estimate: PPL = ") }),
              let value = Double(line.components(separatedBy: "PPL = ")[1].split(separator: " ")[0])
        else {
            throw CocoaError(.executableLoad, userInfo: [NSLocalizedDescriptionKey:
                "llama-perplexity failed on \(model) (exit \(p.terminationStatus)): \(log.suffix(1500))"])
        }
        return value
    }

    struct Comparison {
        var tensors = 0, sameType = 0, sameBytes = 0
        var differences: [String] = []
    }

    /// Tensor by tensor (by name): same type, same bytes.
    static func compare(_ mine: String, _ theirs: String) throws -> Comparison {
        let a = try GGUFFile(path: mine), b = try GGUFFile(path: theirs)
        var result = Comparison()
        #expect(Set(a.tensors.map(\.name)) == Set(b.tensors.map(\.name)))
        for t in a.tensors {
            guard let u = b.tensor(named: t.name) else { continue }
            result.tensors += 1
            guard t.type == u.type else {
                result.differences.append("\(t.name): \(t.type), llama.cpp \(u.type)")
                continue
            }
            result.sameType += 1
            if memcmp(a.data(for: t), b.data(for: u), t.byteCount) == 0 && t.byteCount == u.byteCount {
                result.sameBytes += 1
            } else {
                result.differences.append("\(t.name) (\(t.type)): bytes differ")
            }
        }
        return result
    }

    static let mixes: [ModelQuantizer.Mix] = [.q2_K, .q3_K_S, .q3_K_M, .q3_K_L, .q4_K_S, .q4_K_M, .q5_K_S, .q5_K_M,
                                               .q6_K, .iq4_NL, .iq4_XS]
}

@Suite(.serialized) struct QuantizeLlamaCppTests {
    /// llama-quantize --pure TYPE; every tensor of that type in its file must be what
    /// `quantizeRow` makes of the same F32 rows (SmolLM2's 576-wide rows do not fill 256
    /// blocks, so the K-quant and IQ4_XS cases are its 30 ffn_down tensors).
    @Test(.enabled(if: QuantizeAgainstLlamaCpp.available, QuantizeAgainstLlamaCpp.reason),
          arguments: [TensorType.q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .iq4_NL, .iq4_XS, .q4_0, .q4_1, .q5_0, .q5_1, .q8_0])
    func rowQuantizersMatchLlamaQuantize(_ type: TensorType) throws {
        let theirs = try GGUFFile(path: try QuantizeAgainstLlamaCpp.llamaQuantized("pure-\(type)", ["--pure"], "\(type)"))
        let source = try GGUFFile(path: try RequantizedSmolLM2.floatCopy.get())
        var compared = 0, differingRows = 0, rows = 0
        for t in theirs.tensors where t.type == type {
            let x = try #require(source.tensor(named: t.name))
            #expect(x.type == .f32)
            let columns = x.rowLength, rowBytes = type.byteCount(elements: columns)!
            let mine = UnsafeMutableRawPointer.allocate(byteCount: rowBytes, alignment: 64)
            defer { mine.deallocate() }
            let floats = source.data(for: x).assumingMemoryBound(to: Float.self)
            let expected = theirs.data(for: t)
            for r in 0..<x.rowCount {
                quantizeRow(type, floats + r * columns, into: mine, count: columns)
                if memcmp(mine, expected + r * rowBytes, rowBytes) != 0 { differingRows += 1 }
            }
            rows += x.rowCount
            compared += 1
        }
        print("[\(type)] \(compared) tensors, \(rows) rows, \(differingRows) differ from llama-quantize")
        #expect(compared > 0)
        #expect(differingRows == 0, "\(type): \(differingRows) of \(rows) rows differ from llama-quantize's")
    }

    /// Each mix: Swiftlet's file has llama-quantize's type for every tensor (and its bytes) and
    /// its file type, and llama-perplexity runs it.
    @Test(.enabled(if: QuantizeAgainstLlamaCpp.available, QuantizeAgainstLlamaCpp.reason),
          arguments: QuantizeAgainstLlamaCpp.mixes)
    func mixMatchesLlamaQuantize(_ mix: ModelQuantizer.Mix) throws {
        let theirs = try QuantizeAgainstLlamaCpp.llamaQuantized(mix.name, [], mix.name)
        let mine = TestSupport.scratchRoot.appendingPathComponent("smollm2-\(mix).gguf").path
        defer { try? FileManager.default.removeItem(atPath: mine) }
        _ = try ModelQuantizer.quantize(input: try RequantizedSmolLM2.floatCopy.get(), output: mine, mix: mix, threads: 2)
        #expect(try GGUFFile(path: mine)["general.file_type"] == GGUFFile(path: theirs)["general.file_type"])
        let c = try QuantizeAgainstLlamaCpp.compare(mine, theirs)
        print("[\(mix)] \(c.tensors) tensors: \(c.sameType) same type, \(c.sameBytes) same bytes; \(c.differences.prefix(5))")
        #expect(c.tensors > 200 && c.sameType == c.tensors, "\(mix): \(c.differences.prefix(10))")
        #expect(c.sameBytes == c.tensors, "\(mix): \(c.differences.prefix(10))")
        let ppl = try QuantizeAgainstLlamaCpp.perplexity(mine, context: 128, chunks: 2)
        print("[\(mix)] llama-perplexity on Swiftlet's file: \(ppl)")
        #expect(ppl.isFinite && ppl > 1)
    }

    /// llama-perplexity over 4 chunks of 256 tokens: Swiftlet's Q4_K_M file against
    /// llama-quantize's. The files are byte-identical (mixMatchesLlamaQuantize), so the
    /// measured difference is 0; the bound is 0.1 %.
    @Test(.enabled(if: QuantizeAgainstLlamaCpp.available, QuantizeAgainstLlamaCpp.reason))
    func q4KMPerplexityMatchesLlamaQuantize() throws {
        let theirs = try QuantizeAgainstLlamaCpp.llamaQuantized("Q4_K_M", [], "Q4_K_M")
        let mine = TestSupport.scratchRoot.appendingPathComponent("smollm2-ppl-Q4_K_M.gguf").path
        defer { try? FileManager.default.removeItem(atPath: mine) }
        _ = try ModelQuantizer.quantize(input: try RequantizedSmolLM2.floatCopy.get(), output: mine, mix: .q4_K_M, threads: 2)
        let a = try QuantizeAgainstLlamaCpp.perplexity(mine, context: 256, chunks: 4)
        let b = try QuantizeAgainstLlamaCpp.perplexity(theirs, context: 256, chunks: 4)
        print("Q4_K_M PPL: Swiftlet's file \(a), llama-quantize's \(b)")
        #expect(abs(a / b - 1) <= 0.001, "PPL \(a) vs llama-quantize's \(b)")
    }

    /// Both of llama-imatrix's formats read to the same weights.
    @Test(.enabled(if: QuantizeAgainstLlamaCpp.available, QuantizeAgainstLlamaCpp.reason))
    func importanceMatrixFormatsAgree() throws {
        let gguf = try ImportanceMatrix(path: try QuantizeAgainstLlamaCpp.importanceMatrix("gguf"))
        let dat = try ImportanceMatrix(path: try QuantizeAgainstLlamaCpp.importanceMatrix("dat"))
        #expect(gguf.chunkCount == 4 && dat.chunkCount == 4)
        #expect(Set(gguf.entries.keys) == Set(dat.entries.keys))
        #expect(gguf.entries["blk.0.ffn_down.weight"]?.count == 1536)
        #expect(gguf.entries["blk.29.attn_q.weight"]?.count == 576)
        var worst: Float = 0
        for (name, a) in gguf.entries {
            guard let b = dat.entries[name], a.count == b.count else { Issue.record("\(name) differs in size"); continue }
            for (x, y) in zip(a, b) { worst = max(worst, abs(x - y) / max(abs(x), 1e-30)) }
        }
        print("imatrix: \(gguf.entries.count) entries, worst relative difference GGUF vs dat \(worst)")
        #expect(worst < 1e-5)
    }

    /// llama-quantize --imatrix against Swiftlet with the same matrix: same types, same bytes.
    @Test(.enabled(if: QuantizeAgainstLlamaCpp.available, QuantizeAgainstLlamaCpp.reason),
          arguments: [(ModelQuantizer.Mix.q4_K_M, "gguf"), (.q5_K_M, "gguf"), (.q6_K, "gguf"), (.q3_K_M, "gguf"),
                      (.q2_K, "gguf"), (.iq4_XS, "gguf"), (.iq4_NL, "gguf"), (.q4_0, "gguf"), (.q4_K_M, "dat")])
    func importanceQuantizationMatchesLlamaQuantize(_ mix: ModelQuantizer.Mix, format: String) throws {
        let matrix = try QuantizeAgainstLlamaCpp.importanceMatrix(format)
        let theirs = try QuantizeAgainstLlamaCpp.llamaQuantized("\(mix.name)-imatrix-\(format)", ["--imatrix", matrix], mix.name)
        let mine = TestSupport.scratchRoot.appendingPathComponent("smollm2-\(mix)-imatrix.gguf").path
        defer { try? FileManager.default.removeItem(atPath: mine) }
        _ = try ModelQuantizer.quantize(input: try RequantizedSmolLM2.floatCopy.get(), output: mine, mix: mix,
                                        importance: try ImportanceMatrix(path: matrix), threads: 2)
        let file = try GGUFFile(path: mine), reference = try GGUFFile(path: theirs)
        for key in ["quantize.imatrix.file", "quantize.imatrix.dataset", "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count"] {
            #expect(file[key] == reference[key], "\(key): \(String(describing: file[key])) vs \(String(describing: reference[key]))")
        }
        let c = try QuantizeAgainstLlamaCpp.compare(mine, theirs)
        print("[\(mix) --imatrix \(format)] \(c.tensors) tensors: \(c.sameType) same type, \(c.sameBytes) same bytes; \(c.differences.prefix(5))")
        #expect(c.sameType == c.tensors, "\(mix): \(c.differences.prefix(10))")
        #expect(c.sameBytes == c.tensors, "\(mix): \(c.differences.prefix(10))")
        // the matrix changed something: not the bytes of the plain mix
        let plain = try QuantizeAgainstLlamaCpp.compare(mine, try QuantizeAgainstLlamaCpp.llamaQuantized(mix.name, [], mix.name))
        #expect(plain.sameBytes < plain.tensors)
    }
}
