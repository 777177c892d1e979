import Foundation
import Synchronization
import Testing
import Kernels

@Suite struct ThreadPoolTests {
    @Test(arguments: [1, 2, 3, 8])
    func everyIndexRunsExactlyOnce(threads: Int) {
        let pool = ThreadPool(threads: threads)
        #expect(pool.threadCount == threads)
        for count in [0, 1, 2, 3, 7, 64, 1000] {
            let hits = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: max(count, 1))
            for i in 0..<max(count, 1) { (hits + i).initialize(to: Atomic(0)) }
            nonisolated(unsafe) let h = hits
            pool.parallelFor(count) { i in h[i].wrappingAdd(1, ordering: .relaxed) }
            for i in 0..<count { #expect(hits[i].load(ordering: .relaxed) == 1, "count \(count) index \(i)") }
            hits.deinitialize(count: max(count, 1))
            hits.deallocate()
        }
    }

    @Test func manyBackToBackJobs() {
        // token generation issues thousands of tiny jobs in a row
        let pool = ThreadPool(threads: 3)
        let sum = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        sum.initialize(to: Atomic(0))
        nonisolated(unsafe) let s = sum
        for round in 0..<5000 {
            pool.parallelFor(1 + round % 5) { i in s.pointee.wrappingAdd(i + 1, ordering: .relaxed) }
        }
        var expected = 0
        for round in 0..<5000 { let n = 1 + round % 5; expected += n * (n + 1) / 2 }
        #expect(sum.pointee.load(ordering: .relaxed) == expected)
        sum.deinitialize(count: 1)
        sum.deallocate()
    }

    @Test func parallelChunksCoverRangeWithoutOverlap() {
        let pool = ThreadPool(threads: 4)
        for (total, granularity) in [(0, 1), (1, 1), (5, 2), (100, 16), (1001, 8)] {
            let seen = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: max(total, 1))
            for i in 0..<max(total, 1) { (seen + i).initialize(to: Atomic(0)) }
            nonisolated(unsafe) let p = seen
            pool.parallelChunks(total, granularity: granularity) { range in
                #expect(range.lowerBound % granularity == 0)
                for i in range { p[i].wrappingAdd(1, ordering: .relaxed) }
            }
            for i in 0..<total { #expect(seen[i].load(ordering: .relaxed) == 1) }
            seen.deinitialize(count: max(total, 1))
            seen.deinitialize(count: 2)
            seen.deallocate()
        }
    }

    @Test func nestedAndConcurrentCallersStillComplete() async {
        let pool = ThreadPool(threads: 2)
        let counter = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        counter.initialize(to: Atomic(0))
        nonisolated(unsafe) let c = counter
        // nested: a job body calling parallelFor runs the inner job serially
        pool.parallelFor(4) { _ in
            pool.parallelFor(3) { _ in c.pointee.wrappingAdd(1, ordering: .relaxed) }
        }
        #expect(counter.pointee.load(ordering: .relaxed) == 12)
        // concurrent callers from several tasks
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<4 {
                group.addTask {
                    for _ in 0..<200 { pool.parallelFor(5) { _ in c.pointee.wrappingAdd(1, ordering: .relaxed) } }
                }
            }
        }
        #expect(counter.pointee.load(ordering: .relaxed) == 12 + 4 * 200 * 5)
        counter.deinitialize(count: 1)
        counter.deallocate()
    }

    /// Pools stop their workers when released (no crash, no leaked spinning threads).
    @Test func poolsCanBeReleased() {
        let counter = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        counter.initialize(to: Atomic(0))
        nonisolated(unsafe) let c = counter
        for _ in 0..<20 {
            let pool = ThreadPool(threads: 3)
            pool.parallelFor(10) { _ in c.pointee.wrappingAdd(1, ordering: .relaxed) }
        }
        #expect(counter.pointee.load(ordering: .relaxed) == 200)
        counter.deinitialize(count: 1)
        counter.deallocate()
    }

    /// A worker that has parked (idle longer than its spin budget) is woken by the next job.
    @Test func parkedWorkersWakeUp() async throws {
        let pool = ThreadPool(threads: 2)
        let counter = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 1)
        counter.initialize(to: Atomic(0))
        nonisolated(unsafe) let c = counter
        for _ in 0..<3 {
            try await Task.sleep(for: .milliseconds(5))
            let seen = UnsafeMutablePointer<Atomic<Int>>.allocate(capacity: 2)
            for i in 0..<2 { (seen + i).initialize(to: Atomic(0)) }
            nonisolated(unsafe) let s = seen
            // each share blocks until both have started, so both threads must take part
            pool.parallelFor(2) { i in
                s[i].store(1, ordering: .releasing)
                let other = 1 - i
                let deadline = ContinuousClock.now + .seconds(10)
                while s[other].load(ordering: .acquiring) == 0 && ContinuousClock.now < deadline {}
                c.pointee.wrappingAdd(1, ordering: .relaxed)
            }
            #expect(seen[0].load(ordering: .relaxed) == 1 && seen[1].load(ordering: .relaxed) == 1)
            seen.deinitialize(count: 2)
            seen.deallocate()
        }
        #expect(counter.pointee.load(ordering: .relaxed) == 6)
        counter.deinitialize(count: 1)
        counter.deallocate()
    }
}
