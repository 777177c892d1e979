import Kernels
import Testing

/// Where a pass's rows fall in llama.cpp's micro-batches of 512 tokens, and which of them its
/// repacked gemm kernel takes.
@Suite struct ReferenceBatchingTests {
    @Test func piecesOfALongSequence() {
        // a 1300-token prompt: micro-batches 0..<512, 512..<1024, 1024..<1300
        let n = 1300
        #expect(ReferenceBatching(from: 0, of: n) == ReferenceBatching(tokens: 512, offset: 0))
        #expect(ReferenceBatching(from: 128, of: n) == ReferenceBatching(tokens: 512, offset: 128))
        #expect(ReferenceBatching(from: 512, of: n) == ReferenceBatching(tokens: 512, offset: 0))
        #expect(ReferenceBatching(from: 1100, of: n) == ReferenceBatching(tokens: 276, offset: 76))
        #expect(ReferenceBatching(from: 0, of: 1) == ReferenceBatching(tokens: 1, offset: 0))
    }

    @Test func gemmRowsAreTheMicroBatchInWholeGroupsOfFour() {
        // 130 tokens: llama.cpp's gemm kernel takes 128 of them, its gemv kernel the last 2
        let whole = ReferenceBatching(from: 0, of: 130)
        #expect(whole.gemmRows(130) == 128)
        #expect(whole.gemmRows(64) == 64)  // a first pass of 64 rows: all gemm rows
        #expect(whole.dropping(64).gemmRows(66) == 64)  // the second pass: 64 gemm rows, then 2
        #expect(whole.dropping(128).gemmRows(2) == 0)
        #expect(ReferenceBatching(from: 0, of: 3).gemmRows(3) == 0)
        #expect(ReferenceBatching.ungrouped.gemmRows(100) == 0)
        #expect(ReferenceBatching.ungrouped.dropping(10).gemmRows(100) == 0)
    }
}
