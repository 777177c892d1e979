import Foundation
import Testing
import GGUF
@testable import Kernels

/// The kernel benchmark (`swiftlet bench --kernels`, bench/kernels.sh) reports real rates.
@Suite struct KernelBenchmarkTests {
    /// The measurement every table cell comes from, on a small matrix of each type: a finite,
    /// positive rate for one token (the matvec tables) and for a prompt chunk (the prefill table).
    @Test(arguments: supportedWeightTypes)
    func matrixRatesAreFiniteAndPositive(_ type: TensorType) {
        let m = BenchMatrix(type: type, rows: 32, columns: 256)
        defer { m.free() }
        for tokens in [1, 4] {
            let rate = m.gigabytesPerSecond(tokens: tokens, pool: serialPool, seconds: 0)
            #expect(rate.isFinite && rate > 0, "\(type), \(tokens) tokens: \(rate) GB/s")
        }
    }

    @Test func reportChecker() {
        let good = "# Swiftlet kernel benchmark\n\n| type | 576×1536 | 256×8 |\n|---|---|---|\n| Q4_0 | 12.5 / 20.1 | – |\n"
            + "| Q4_0 | 3.0 / 5.0 | – |\n| model | x |\n|---|---|\n| M | 7 (2 threads) |\n"
        #expect(kernelReportProblems(good, types: [.q4_0]).isEmpty)
        #expect(!kernelReportProblems(good, types: [.q4_0, .q8_0]).isEmpty)
        #expect(!kernelReportProblems(good.replacingOccurrences(of: "12.5", with: "nan"), types: [.q4_0]).isEmpty)
        #expect(!kernelReportProblems(good.replacingOccurrences(of: "20.1", with: "0.0"), types: [.q4_0]).isEmpty)
        #expect(!kernelReportProblems(good.replacingOccurrences(of: " – |\n| Q4_0 | 3.0", with: " |\n| Q4_0 | 3.0"), types: [.q4_0]).isEmpty)
    }

    /// Prints the whole benchmark for bench/kernels.sh (a release build; takes minutes) and
    /// checks that every table is complete and every number in it finite and positive.
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SWIFTLET_KERNEL_BENCH"] != nil,
                   "set SWIFTLET_KERNEL_BENCH=1 (bench/kernels.sh) to run the kernel benchmark"))
    func report() {
        let env = ProcessInfo.processInfo.environment
        let threads = env["SWIFTLET_BENCH_THREADS"].flatMap { Int($0) }
        let types = env["SWIFTLET_BENCH_TYPES"].map { $0.split(separator: ",").compactMap { TensorType(name: String($0)) } }
            ?? supportedWeightTypes
        let seconds = env["SWIFTLET_BENCH_SECONDS"].flatMap { Double($0) } ?? 0.15
        func run() -> String {
            let text = runKernelBenchmark(threads: threads, types: types, minSeconds: seconds)
            print(text)
            let problems = kernelReportProblems(text, types: types)
            #expect(problems.isEmpty, "\(problems.joined(separator: "\n"))")
            return text
        }
        if env["SWIFTLET_KERNEL_BENCH_AB"] != nil {
            // A/B of the x86-64 kernel families, alternating to spread the machine's load over both
            for round in 0..<2 {
                for isa in KernelISA.allCases {
                    print("## \(isa) round \(round)\n")
                    _ = CPUDispatch.with(isa) { run() }
                }
            }
            return
        }
        _ = run()
    }
}

/// What is wrong with a `runKernelBenchmark` report: each type must have its row in both
/// per-type tables (matvec and prefill), every row as many cells as its table's header, and
/// every number in a table cell must be finite and positive (`–` marks shapes a type cannot have).
func kernelReportProblems(_ text: String, types: [TensorType]) -> [String] {
    var problems: [String] = []
    var columns = 0
    var rowsPerType: [String: Int] = [:]
    for line in text.split(separator: "\n").map(String.init) where line.hasPrefix("|") {
        let cells = line.split(separator: "|", omittingEmptySubsequences: false).dropFirst().dropLast()
            .map { $0.trimmingCharacters(in: .whitespaces) }
        if cells.first == "type" || cells.first == "model" { columns = cells.count; continue }
        if cells.allSatisfy({ $0.allSatisfy { $0 == "-" } }) { continue }
        if cells.count != columns { problems.append("\(cells.count) cells, header has \(columns): \(line)") }
        rowsPerType[cells[0], default: 0] += 1
        for cell in cells.dropFirst() where cell != "–" {
            let words = cell.split(whereSeparator: { $0 == " " || $0 == "/" || $0 == "(" || $0 == ")" })
            let numbers = words.compactMap { Double($0) }
            if numbers.isEmpty { problems.append("no number in '\(cell)': \(line)") }
            if let bad = numbers.first(where: { !$0.isFinite || $0 <= 0 }) { problems.append("\(bad) in '\(cell)': \(line)") }
        }
    }
    for type in types where rowsPerType["\(type)"] != 2 {
        problems.append("\(type): \(rowsPerType["\(type)"] ?? 0) table rows, expected 2")
    }
    return problems
}
