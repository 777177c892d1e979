import Engine
import Foundation
import GGUF
import Kernels
import Testing
import TestSupport
import Tokenization

/// The `swiftlet` binary built next to this test bundle, run as a user (and scripts) would.
struct CommandLine {
    static var binary: URL {
        URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent().appendingPathComponent("swiftlet")
    }

    struct Result {
        let status: Int32
        let stdout: String
        let stderr: String
    }

    /// `environment` adds to (or, with "", blanks out) this process's variables.
    static func run(_ arguments: [String], stdin: String? = nil, environment: [String: String] = [:]) throws -> Result {
        let p = Process()
        p.executableURL = binary
        p.arguments = arguments
        if !environment.isEmpty {
            p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let out = Pipe(), err = Pipe(), input = Pipe()
        p.standardOutput = out
        p.standardError = err
        p.standardInput = input
        try p.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try input.fileHandleForWriting.close()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// Runs python3 with `script` and returns its standard output.
    static func python(_ script: String, _ arguments: [String] = []) throws -> String {
        try TestSupport.python(["-c", script] + arguments)
    }
}

@Suite struct CommandLineTests {
    /// `swiftlet bench --json`, the contract scripts rely on: one object per test with the
    /// fields bench/compare reads; with `-d`, llama-bench's test names and the depth.
    @Test func benchJSONContract() throws {
        func rows(_ extra: [String]) throws -> [[String: Any]] {
            let r = try CommandLine.run(["bench", TestSupport.smolLM2Path, "-t", "2", "-p", "16", "-n", "4", "-r", "2",
                                         "--json"] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        }
        for (extra, suffix, depth) in [([String](), "", 0), (["-d", "40"], " @ d40", 40)] {
            let results = try rows(extra)
            #expect(results.map { $0["test"] as? String } == ["pp16" + suffix, "tg4" + suffix])
            for row in results {
                #expect((row["avg_ts"] as? Double ?? 0) > 0)
                #expect(row["stddev_ts"] is Double)
                #expect(row["n_threads"] as? Int == 2)
                #expect((row["peak_rss_bytes"] as? Int ?? 0) > 1 << 20)
                #expect(row["n_depth"] as? Int == depth)
                #expect((row["samples_ts"] as? [Double])?.count == 2)
            }
        }
        let negative = try CommandLine.run(["bench", TestSupport.smolLM2Path, "--n-depth=-5"])
        #expect(negative.status != 0)
        #expect(negative.stderr.contains("negative"))
        let tooDeep = try CommandLine.run(["bench", TestSupport.smolLM2Path, "-p", "16", "-n", "0", "-d", "100000"])
        #expect(tooDeep.status != 0)
        #expect(!tooDeep.stderr.isEmpty)
    }

    /// `bench --lookup`: a speculative row next to the plain ones, with its acceptance and the
    /// plain rate of the same prompt (the run fails if the two decodings' tokens differ), and
    /// the generation rows' share of the read bandwidth.
    @Test func benchLookupReportsAcceptanceAndBandwidth() throws {
        let r = try CommandLine.run(["bench", TestSupport.smolLM2Path, "-t", "2", "-p", "0", "-n", "48", "-r", "1",
                                     "--lookup", "8", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]])
        #expect(rows.count == 2)
        let plain = try #require(rows.first)
        #expect(plain["test"] as? String == "tg48")
        #expect((plain["weight_bytes_per_token"] as? Int ?? 0) > 50_000_000)  // SmolLM2 Q4_1 without its embeddings
        #expect((plain["read_bandwidth_gbs"] as? Double ?? 0) > 0)
        #expect((plain["bandwidth_share"] as? Double ?? 0) > 0)
        let speculative = try #require(rows.last)
        #expect((speculative["test"] as? String)?.hasSuffix("lookup 8") == true)
        #expect(speculative["speculation"] as? String == "lookup 8")
        let drafted = speculative["draft_tokens"] as? Int ?? 0
        let accepted = speculative["accepted_draft_tokens"] as? Int ?? -1
        #expect(drafted > 0 && accepted > 0 && accepted <= drafted, "\(speculative)")
        #expect((speculative["plain_avg_ts"] as? Double ?? 0) > 0)
        #expect((speculative["speedup_vs_plain"] as? Double ?? 0) > 0)
        let refused = try CommandLine.run(["bench", TestSupport.smolLM2Path, "-n", "0", "--lookup", "8"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("-n"))
    }

    @Test(arguments: [TestSupport.smolLM2Path, TestSupport.gemma3Path])
    func infoAgreesWithThePythonGGUFReader(_ path: String) throws {
        let facts = try CommandLine.python("""
            import sys, numpy as np
            from gguf import GGUFReader
            r = GGUFReader(sys.argv[1])
            f = r.fields
            arch = f['general.architecture'].contents()
            print(arch)
            print(f[arch + '.embedding_length'].contents(), f[arch + '.block_count'].contents())
            print(len(f['tokenizer.ggml.tokens'].data), len(r.tensors), sum(int(np.prod(t.shape)) for t in r.tensors))
            print('present' if 'tokenizer.chat_template' in f else 'none')
            """, [path]).split(separator: "\n").map(String.init)
        let info = try CommandLine.run(["info", path, "--tensors"])
        #expect(info.status == 0)
        func value(_ key: String) -> String? {
            info.stdout.split(separator: "\n").first { $0.hasPrefix(key + " ") }.map {
                $0.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
            }
        }
        let dims = facts[1].split(separator: " "), counts = facts[2].split(separator: " ")
        #expect(value("architecture") == facts[0])
        #expect(value("embedding_length") == String(dims[0]))
        #expect(value("block_count") == String(dims[1]))
        #expect(value("vocabulary size") == String(counts[0]))
        #expect(value("tensors") == String(counts[1]))
        #expect(value("parameters")?.hasPrefix(String(counts[2]) + " ") == true)
        #expect(value("chat template") == facts[3])
        #expect(info.stdout.contains("token_embd.weight"))
    }

    @Test func tokenizeIdsMatchesLlamaCpp() throws {
        let result = try CommandLine.run(["tokenize", TestSupport.smolLM2Path, "--stdin", "--ids", "--parse-special"],
                                         stdin: "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
        #expect(result.status == 0)
        let reference = try TestSupport.reference("smollm2-135m-instruct-q4_1")["tokenize"] as! [[String: Any]]
        let expected = reference.first { ($0["text"] as! String).hasPrefix("<|im_start|>") && $0["parse_special"] as! Bool }!["tokens"] as! [Int]
        let ids = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [Int]
        #expect(ids == expected)
        #expect(result.stdout.split(separator: "\n").count == 1)
    }

    @Test func generateJSONFollowsTheContract() throws {
        let result = try CommandLine.run(["generate", TestSupport.smolLM2Path, "The capital of France is", "-n", "8",
                                          "--temp", "0", "--ctx", "256", "-t", "2", "--json"])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as! [String: Any]
        #expect((object["text"] as? String)?.hasPrefix(" Paris") == true)
        #expect((object["tokens"] as? [Int])?.count == 8)
        #expect(object["prompt_tokens"] as? Int == 5)
        #expect(object["finish_reason"] as? String == "length")
        let timings = try #require(object["timings"] as? [String: Any])
        #expect(timings["generation_tokens_per_second"] is Double && timings["time_to_first_token_ms"] is Double)
    }

    /// `-ctk/-ctv` (and the long names) reach the model: `generate` with a Q8_0 cache gives the
    /// greedy tokens of an in-process Q8_0 cache, `bench --json` reports the types and bytes per
    /// token, and a type llama.cpp has but Swiftlet does not is refused with the choices.
    @Test func cacheTypeFlags() throws {
        let prompt = "The capital of France is"
        let r = try CommandLine.run(["generate", TestSupport.smolLM2Path, prompt, "-n", "10", "--temp", "0", "-t", "2",
                                     "-ctk", "q8_0", "--cache-type-v", "q8_0", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let loaded = try LoadedModel(path: TestSupport.smolLM2Path, cacheTypes: KVCacheTypes(key: .q8_0, value: .q8_0))
        let greedy = try GeneratorTests.contiguousGreedy(
            loaded.model, endOfGeneration: loaded.tokenizer.endOfGenerationTokens,
            prompt: loaded.tokenizer.encode(prompt, addSpecial: true, parseSpecial: true), maxTokens: 10, cacheTypes: loaded.cacheTypes)
        #expect((json["tokens"] as? [Int])?.map(TokenID.init) == greedy)

        let bench = try CommandLine.run(["bench", TestSupport.smolLM2Path, "-t", "2", "-p", "16", "-n", "4", "-r", "1",
                                         "-ctk", "q4_0", "-ctv", "q8_0", "--json"])
        #expect(bench.status == 0, "\(bench.stderr)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(bench.stdout.utf8)) as? [[String: Any]])
        for row in rows {
            #expect(row["type_k"] as? String == "q4_0" && row["type_v"] as? String == "q8_0")
            #expect(row["kv_bytes_per_token"] as? Int == 30 * (192 / 32) * (18 + 34), "SmolLM2: 30 layers of 3 × 64 keys and values")
        }

        let bad = try CommandLine.run(["generate", TestSupport.smolLM2Path, prompt, "--cache-type-k", "q5_1"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("q5_1") && bad.stderr.contains("'f16', 'q8_0' or 'q4_0'"), "\(bad.stderr)")
    }

    @Test func badInputsGiveClearErrorsAndNonZeroExit() throws {
        let notGGUF = TestSupport.scratchRoot.appendingPathComponent("not-a-model.gguf")
        try Data("hello, not a model".utf8).write(to: notGGUF)
        let bad = try CommandLine.run(["info", notGGUF.path])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("not a GGUF file"))

        let missing = try CommandLine.run(["generate", "/nonexistent/model.gguf", "hi"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("neither a file nor a known model"))

        let tooLong = try CommandLine.run(["generate", TestSupport.smolLM2Path, String(repeating: "word ", count: 100), "--ctx", "16"])
        #expect(tooLong.status != 0)
        #expect(tooLong.stderr.contains("prompt is"))

        let hugeContext = try CommandLine.run(["generate", TestSupport.smolLM2Path, "hi", "--ctx", "100000"])
        #expect(hugeContext.status != 0)
        #expect(hugeContext.stderr.contains("longer than the model allows"))
    }

    @Test func writerOutputIsReadByThePythonGGUFPackage() throws {
        let path = TestSupport.scratchRoot.appendingPathComponent("swift-written.gguf").path
        let writer = GGUFWriterFixture.make()
        try writer.write(to: path)
        let out = try CommandLine.python("""
            import sys
            from gguf import GGUFReader
            r = GGUFReader(sys.argv[1])
            print(r.fields['general.architecture'].contents(), r.fields['test.list'].contents(), r.fields['test.float'].contents())
            t = {x.name: x for x in r.tensors}
            print([float(v) for v in t['w'].data.flatten()], t['q'].tensor_type.name, [int(d) for d in t['q'].shape])
            """, [path])
        #expect(out == "llama ['a', 'bc'] 0.25\n[0.0, 1.0, 2.0, 3.0, 4.0, 5.0] Q8_0 [32, 2]\n")
    }
}
