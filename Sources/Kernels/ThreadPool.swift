import Foundation

/// A fixed set of worker threads that run one data-parallel job at a time.
/// `parallelFor` blocks the caller, which also takes a share of the work.
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int
    private let condition = NSCondition()
    private var job: (@Sendable (Int) -> Void)?
    private var jobCount = 0
    private var nextIndex = 0
    private var finished = 0
    private var generation = 0
    private var workers: [Thread] = []

    /// `threads` defaults to the number of active processors.
    public init(threads: Int? = nil) {
        threadCount = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
        for _ in 1..<threadCount {
            let t = Thread { [unowned self] in self.workerLoop() }
            t.stackSize = 1 << 20
            workers.append(t)
            t.start()
        }
    }

    private func workerLoop() {
        var seen = 0
        while true {
            condition.lock()
            while generation == seen { condition.wait() }
            seen = generation
            condition.unlock()
            runShares()
        }
    }

    private func runShares() {
        while true {
            condition.lock()
            guard let job, nextIndex < jobCount else { condition.unlock(); return }
            let i = nextIndex
            nextIndex += 1
            condition.unlock()
            job(i)
            condition.lock()
            finished += 1
            if finished == jobCount { condition.broadcast() }
            condition.unlock()
        }
    }

    /// Runs `body(i)` for i in 0..<count across the pool and waits for all of them.
    public func parallelFor(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threadCount == 1 {
            for i in 0..<count { body(i) }
            return
        }
        condition.lock()
        job = body
        jobCount = count
        nextIndex = 0
        finished = 0
        generation += 1
        condition.broadcast()
        condition.unlock()
        runShares()
        condition.lock()
        while finished < jobCount { condition.wait() }
        job = nil
        condition.unlock()
    }

    /// Splits 0..<total into about `threadCount` contiguous chunks (multiples of `granularity`).
    public func parallelChunks(_ total: Int, granularity: Int = 1, _ body: @escaping @Sendable (Range<Int>) -> Void) {
        let units = (total + granularity - 1) / granularity
        let chunks = min(units, threadCount)
        guard chunks > 1 else { if total > 0 { body(0..<total) }; return }
        parallelFor(chunks) { c in
            let lo = units * c / chunks * granularity
            let hi = min(total, units * (c + 1) / chunks * granularity)
            if lo < hi { body(lo..<hi) }
        }
    }
}
