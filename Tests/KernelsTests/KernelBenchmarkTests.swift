import Foundation
import Testing
import GGUF
import Kernels

/// Not a test: prints the kernel benchmark when SWIFTLET_KERNEL_BENCH is set
/// (bench/kernels.sh runs it in a release build).
@Suite struct KernelBenchmark {
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SWIFTLET_KERNEL_BENCH"] != nil))
    func report() {
        let env = ProcessInfo.processInfo.environment
        let threads = env["SWIFTLET_BENCH_THREADS"].flatMap { Int($0) }
        let types = env["SWIFTLET_BENCH_TYPES"].map { $0.split(separator: ",").compactMap { TensorType(name: String($0)) } }
        let seconds = env["SWIFTLET_BENCH_SECONDS"].flatMap { Double($0) } ?? 0.15
        if env["SWIFTLET_KERNEL_BENCH_AB"] != nil {
            // A/B of the x86-64 kernel families, alternating to spread the machine's load over both
            for round in 0..<2 {
                for isa in KernelISA.allCases {
                    print("## \(isa) round \(round)\n")
                    print(CPUDispatch.with(isa) {
                        runKernelBenchmark(threads: threads, types: types ?? supportedWeightTypes, minSeconds: seconds)
                    })
                }
            }
            return
        }
        print(runKernelBenchmark(threads: threads, types: types ?? supportedWeightTypes, minSeconds: seconds))
    }
}
