import Engine
import Foundation
import GGUF
import Kernels
import Models
import Testing
import TestSupport

/// A mixture-of-experts model (8 experts, 2 routed, Q8_0) of about 57 MB, several times
/// the budgets below.
let largeMoE = SyntheticGGUF(embedding: 512, layers: 4, heads: 8, kvHeads: 4, feedForward: 1024,
                             experts: 8, expertsUsed: 2, type: .q8_0, seed: 7)
/// A dense model of about 20 MB.
let largeDense = SyntheticGGUF(embedding: 512, layers: 6, heads: 8, kvHeads: 4, feedForward: 1536, type: .q8_0, seed: 8)

/// Greedy tokens after `prompt`, token by token through the cache.
func greedyTokens(_ model: any LanguageModel, prompt: [Int32], steps: Int, pool: ThreadPool) throws -> [Int32] {
    let cache = model.makeCache(capacity: prompt.count + steps + 1)
    var logits = try model.forward([BatchSequence(tokens: prompt, cache: cache)], pool: pool)[0]
    var out: [Int32] = []
    for _ in 0..<steps {
        let next = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
        out.append(next)
        logits = try model.forward([BatchSequence(tokens: [next], cache: cache)], pool: pool)[0]
    }
    return out
}

@Suite(.serialized) struct MemoryBudgetTests {
    /// What the budget cannot account for exactly: whole pages at region edges and what
    /// fault-around maps next to the matrix being read before the next drop.
    static let overhead = 2 << 20

    static let prompt: [Int32] = [1, 17, 42, 5, 88, 23, 9, 61, 30, 2, 77, 14]

    @Test(arguments: [("moe", 12 << 20), ("moe", 4 << 20), ("dense", 6 << 20)])
    func sameGreedyTokensWithResidentWeightsUnderBudget(kind: String, budgetBytes: Int) throws {
        let path = try (kind == "moe" ? largeMoE : largeDense).write(name: "budget-\(kind)")
        let pool = ThreadPool(threads: 2)
        let steps = 12

        let plainFile = try GGUFFile(path: path)
        // tiles summing in vec_dot's order, as the budget's GGUF-layout kernels do
        let resident = try ProductSummation.$forTiles.withValue(.vecDot) { try ModelRegistry.load(plainFile, repackWeights: true) }
        let expected = try greedyTokens(resident, prompt: Self.prompt, steps: steps, pool: pool)

        let file = try GGUFFile(path: path)
        #expect(file.tensorDataBytes > 3 * budgetBytes, "model \(file.tensorDataBytes) bytes should dwarf the budget")
        let budget = MemoryBudget(file: file, budget: budgetBytes)
        budget.samplesMappingRSS = true
        defer { budget.stop() }
        let model = BudgetedModel(try ModelRegistry.load(file, repackWeights: false), budget: budget)
        let tokens = try greedyTokens(model, prompt: Self.prompt, steps: steps, pool: pool)
        #expect(tokens == expected)

        let s = budget.statistics
        let mib = { (b: Int) in String(format: "%.2f MiB", Double(b) / 1_048_576) }
        print("\(kind): model \(mib(file.tensorDataBytes)), budget \(mib(budgetBytes)): peak mapping RSS \(mib(s.peakMappingRSS)), "
              + "tracked \(mib(s.peakTrackedBytes)), paged in \(mib(Int(s.bytesPagedInPerToken)))/token, "
              + "\(s.hits) hits / \(s.misses) misses, \(s.evictions) evictions")
        #expect(s.peakTrackedBytes <= budgetBytes)
        #expect(s.peakMappingRSS > 0, "the mapping's resident size was not measured")
        #expect(s.peakMappingRSS <= budgetBytes + Self.overhead, "peak resident weights \(mib(s.peakMappingRSS))")
        #expect(budget.mappingRSS() <= budgetBytes + Self.overhead)
        #expect(s.evictions > 0 && s.bytesPagedIn > budgetBytes)
        #expect(s.passes == steps + 1 && s.tokens == Self.prompt.count + steps)
    }

    /// With room for every expert, each is read once: nothing is evicted after warm-up.
    @Test func generousBudgetKeepsEverythingResident() throws {
        let path = try largeMoE.write(name: "budget-moe")
        let file = try GGUFFile(path: path)
        let budget = MemoryBudget(file: file, budget: 2 * file.fileSize)
        defer { budget.stop() }
        let model = BudgetedModel(try ModelRegistry.load(file, repackWeights: false), budget: budget)
        _ = try greedyTokens(model, prompt: Self.prompt, steps: 6, pool: ThreadPool(threads: 2))
        let s = budget.statistics
        #expect(s.evictions == 0)
        #expect(s.bytesPagedIn <= file.tensorDataBytes)
        #expect(s.hits > s.misses)
    }

    /// With a budget holding a few experts per layer, the LRU serves repeated routes from memory.
    @Test func expertLRUHitsWhenHotExpertsFit() throws {
        let path = try largeMoE.write(name: "budget-moe")
        let file = try GGUFFile(path: path)
        let budget = MemoryBudget(file: file, budget: 40 << 20)
        defer { budget.stop() }
        let model = BudgetedModel(try ModelRegistry.load(file, repackWeights: false), budget: budget)
        _ = try greedyTokens(model, prompt: Self.prompt, steps: 12, pool: ThreadPool(threads: 2))
        let s = budget.statistics
        #expect(s.hits > 0)
        #expect(s.bytesPagedIn < Int(Double(s.passes) * Double(file.tensorDataBytes) * 0.5))
    }

    /// The command line: identical greedy output with and without `--mem-budget`, and a lower
    /// peak resident set (VmHWM) for the whole process.
    @Test func commandLineBudgetKeepsOutputAndLowersPeakRSS() throws {
        let path = try largeMoE.write(name: "budget-moe")
        let binary = try swiftletBinary()
        func run(_ extra: [String]) throws -> [String: Any] {
            let p = Process()
            p.executableURL = binary
            p.arguments = ["generate", path, "hello world, this is", "-n", "16", "--temp", "0", "--ctx", "128",
                           "-t", "2", "--json"] + extra
            let out = Pipe()
            p.standardOutput = out
            p.standardError = FileHandle.nullDevice
            try p.run()
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
            return try JSONSerialization.jsonObject(with: data) as! [String: Any]
        }
        let plain = try run([])
        let budgeted = try run(["--mem-budget", "12MiB"])
        #expect(plain["tokens"] as! [Int] == budgeted["tokens"] as! [Int])
        let plainPeak = (plain["memory"] as! [String: Any])["peak_rss_bytes"] as! Int
        let budgetPeak = (budgeted["memory"] as! [String: Any])["peak_rss_bytes"] as! Int
        let report = budgeted["memory_budget"] as! [String: Any]
        let file = try GGUFFile(path: path)
        print("generate: peak RSS \(plainPeak >> 20) MiB without budget, \(budgetPeak >> 20) MiB with 12MiB; report \(report)")
        // the budget saves at least half of what it should (model size - budget)
        #expect(plainPeak - budgetPeak > (file.tensorDataBytes - (12 << 20)) / 2)
        #expect((report["peak_tracked_bytes"] as! Int) <= 12 << 20)
    }
}

/// The `swiftlet` executable built next to the test bundle.
func swiftletBinary() throws -> URL {
    var dir = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let candidate = dir.appendingPathComponent("swiftlet")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        dir = dir.deletingLastPathComponent()
    }
    for config in ["release", "debug"] {
        let candidate = TestSupport.repositoryRoot().appendingPathComponent(".build/\(config)/swiftlet")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
    }
    throw CocoaError(.fileNoSuchFile, userInfo: [NSLocalizedDescriptionKey: "swiftlet binary not found (swift build -c release)"])
}
