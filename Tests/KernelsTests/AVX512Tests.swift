import Foundation
import GGUF
import Testing
import Kernels

/// Whether this CPU can run the AVX-512 kernels. Tests that compare them with AVX2 are skipped
/// (and reported as skipped) elsewhere: `CPUDispatch.with(.avx512)` falls back to AVX2 there,
/// so the comparison would be AVX2 against itself.
let hasAVX512 = CPUDispatch.hardware == .avx512
let needsAVX512: Comment = "needs AVX-512/VNNI"

/// The AVX-512 kernels must give bitwise the same outputs as the AVX2 ones. `.serialized`:
/// the forced kernel family is process-wide (other suites' results do not depend on it).
@Suite(.serialized) struct AVX512Tests {
    static let types: [TensorType] = [.q8_0, .q4_1, .q5_0, .q4_K, .q6_K, .q4_0, .q5_1, .q5_K, .q2_K, .q3_K]

    func bitwiseSame(_ c: MatMulCase, tokens: Int, pool: ThreadPool) {
        let x = randomInput(tokens: tokens, columns: c.columns, seed: 99 &+ UInt64(tokens))
        let a = CPUDispatch.with(.avx2) { c.run(x, tokens: tokens, pool: pool) }
        let b = CPUDispatch.with(.avx512) { c.run(x, tokens: tokens, pool: pool) }
        let mismatches = zip(a, b).filter { $0.bitPattern != $1.bitPattern }.count
        #expect(mismatches == 0, "\(c.type) \(c.rows)×\(c.columns) tokens \(tokens): \(mismatches) outputs differ")
        #expect(!a.contains { $0.isNaN })
    }

    @Test(.enabled(if: hasAVX512, needsAVX512), arguments: types, [1, 7, 64])
    func bitwiseEqualToAVX2(_ type: TensorType, tokens: Int) {
        #expect(avx512Types.contains(type))
        // the comparison is only meaningful if the forced run really takes the AVX-512 kernel
        #expect(CPUDispatch.with(.avx512) { CPUDispatch.useAVX512(type, tokens: tokens) })
        #expect(!CPUDispatch.with(.avx2) { CPUDispatch.useAVX512(type, tokens: tokens) })
        bitwiseSame(MatMulCase(type, rows: tokens == 64 ? 37 : 131, columns: 768), tokens: tokens, pool: serialPool)
        bitwiseSame(MatMulCase(type, rows: 67, columns: 1536), tokens: tokens, pool: matmulPool)
    }

    /// Odd number of 32-element blocks (the tail block of the paired kernels).
    @Test(.enabled(if: hasAVX512, needsAVX512), arguments: [TensorType.q4_0, .q4_1, .q5_0, .q5_1, .q8_0], [1, 5])
    func oddBlockCount(_ type: TensorType, tokens: Int) {
        bitwiseSame(MatMulCase(type, rows: 45, columns: 800), tokens: tokens, pool: serialPool)
        bitwiseSame(MatMulCase(type, rows: 9, columns: 32), tokens: tokens, pool: serialPool)
    }

    /// The choice agrees with this CPU's flags, and forcing a family gives that family where
    /// the CPU has it and AVX2 (never an illegal instruction) where it does not.
    @Test func detection() {
        let info = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8)) ?? ""
        let flags = CPUDispatch.flags(cpuinfo: info)
        #expect(CPUDispatch.select(flags: flags, override: nil) == CPUDispatch.hardware)
        #expect(CPUDispatch.with(.avx512) { CPUDispatch.current } == CPUDispatch.hardware)
        #expect(CPUDispatch.with(.avx2) { CPUDispatch.current } == .avx2)
        let env = ProcessInfo.processInfo.environment["SWIFTLET_CPU"]
        #expect(CPUDispatch.detected == (env?.lowercased() == "avx2" ? .avx2 : CPUDispatch.hardware))
    }

    @Test func flagParsing() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\nflags\t: sse\n"
        #expect(CPUDispatch.flags(cpuinfo: text) == ["fpu", "avx2", "avx512f"])
        #expect(CPUDispatch.select(flags: ["avx2", "fma"], override: nil) == .avx2)
#if arch(x86_64) && !SWIFTLET_PORTABLE_KERNELS
        #expect(CPUDispatch.select(flags: CPUDispatch.requiredFlags, override: nil) == .avx512)
        #expect(CPUDispatch.select(flags: CPUDispatch.requiredFlags, override: "AVX2") == .avx2)
        #expect(CPUDispatch.select(flags: CPUDispatch.requiredFlags.subtracting(["avx512_vnni"]), override: nil) == .avx2)
#endif
    }
}
