import Foundation
import GGUF
import Kernels
import Testing
import TestSupport

/// matmul on rows of the real models' weight tensors (skipped when the models are absent):
/// real scale distributions, real shapes, every tensor type the models use.
@Suite struct RealModelTests {
    static let cases: [(path: String, tensor: String)] = [
        (TestSupport.smolLM2Path, "blk.0.attn_q.weight"),       // Q4_1
        (TestSupport.smolLM2Path, "blk.0.ffn_down.weight"),     // Q4_1, 1536 columns
        (TestSupport.smolLM2Path, "token_embd.weight"),         // Q8_0
        (TestSupport.gemma3Path, "blk.0.attn_k.weight"),        // Q5_0
        (TestSupport.gemma3Path, "blk.0.attn_output.weight"),   // Q4_K
        (TestSupport.gemma3Path, "blk.0.ffn_down.weight"),      // Q6_K
        (TestSupport.gemma3Path, "blk.0.attn_v.weight"),        // Q8_0
    ]

    @Test(.enabled(if: FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)
                   && FileManager.default.fileExists(atPath: TestSupport.gemma3Path)),
          arguments: 0..<cases.count)
    func realTensorRows(_ index: Int) throws {
        let (path, name) = Self.cases[index]
        let file = try GGUFFile(path: path)
        let info = try #require(file.tensor(named: name))
        let rows = min(info.rowCount, 48)
        let bytes = Array(UnsafeRawBufferPointer(start: file.data(for: info), count: rows * info.rowBytes))
        let c = MatMulCase(info.type, rows: rows, columns: info.rowLength, weights: bytes)
        MatMulTests().checkAgainstDequantized(c, tokens: 3)
    }
}
