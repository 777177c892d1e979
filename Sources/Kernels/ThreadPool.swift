import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A fixed set of worker threads that run one data-parallel job at a time.
/// `parallelFor` blocks the caller, which also takes a share of the work.
///
/// Calls are cheap: publishing a job is one atomic store, each share is claimed with one
/// atomic add, and nothing is allocated per call. Idle workers spin for a short while
/// (so back-to-back jobs, as in token generation, start immediately) and then park on a
/// condition variable (so an idle pool costs no CPU).
///
/// Safe to call from several threads at once and from inside a job: a call that finds the
/// pool busy runs its job serially on the calling thread instead of waiting.
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int
    private let backend: any PoolBackend

    /// `threads` defaults to the number of active processors.
    public init(threads: Int? = nil) {
        threadCount = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
        if #available(macOS 15.0, iOS 18.0, *) {
            backend = SpinningPool(workers: threadCount - 1)
        } else {
            backend = LockingPool(workers: threadCount - 1)
        }
    }

    deinit { backend.stop() }

    /// Runs `body(i)` for i in 0..<count across the pool and waits for all of them.
    public func parallelFor(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        if count <= 0 { return }
        if count == 1 || threadCount == 1 {
            for i in 0..<count { body(i) }
            return
        }
        backend.run(count, body)
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

protocol PoolBackend: AnyObject, Sendable {
    func run(_ count: Int, _ body: @escaping @Sendable (Int) -> Void)
    func stop()
}

/// Monotonic nanoseconds (vDSO, ~20 ns).
@inline(__always)
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

/// Spin-wait helper: true while fewer than `limit` ns have passed since the first call.
struct SpinBudget {
    private var start: UInt64 = 0
    private var iterations = 0
    let limit: UInt64

    init(nanoseconds: UInt64) { limit = nanoseconds }

    @inline(__always)
    mutating func keepSpinning() -> Bool {
        iterations &+= 1
        if iterations & 63 != 0 { return true }
        let now = monotonicNanos()
        if start == 0 { start = now; return true }
        return now &- start < limit
    }
}

/// Lock-free job hand-off. One 64-bit `ticket` holds (generation, count, next index):
/// a share is claimed by a fetch-add on it, and a claim succeeds only while the job that
/// published the ticket is unfinished, so the job closure is read only while it is stable.
@available(macOS 15.0, iOS 18.0, *)
final class SpinningPool: PoolBackend, @unchecked Sendable {
    // ticket layout: [generation: 16 bits][count: 24 bits][index: 24 bits]
    private static let indexBits = 24
    private static let maxShares = (1 << indexBits) - 1 - 4096
    private static let fieldMask = (1 << indexBits) - 1

    private let ticket = Atomic<Int>(0)
    private let pending = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let busy = Atomic<Bool>(false)
    private let parking = NSCondition()
    /// Written only while no share can be claimed (before publishing / after all finished).
    private var job: (@Sendable (Int) -> Void)?
    private var generation = 0
    /// How long an idle worker spins before it parks, and a waiting caller before it yields.
    private let spinNanos: UInt64 = 200_000

    init(workers: Int) {
        for _ in 0..<workers {
            let t = Thread { [self] in workerLoop() }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    func stop() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        parking.lock()
        parking.broadcast()
        parking.unlock()
    }

    @inline(__always)
    private static func generationOf(_ t: Int) -> Int { t >> (2 * indexBits) }

    private func workerLoop() {
        var seen = Self.generationOf(ticket.load(ordering: .acquiring))
        while true {
            // wait for a new generation: spin, then park
            var budget = SpinBudget(nanoseconds: spinNanos)
            while Self.generationOf(ticket.load(ordering: .acquiring)) == seen {
                if stopping.load(ordering: .relaxed) { return }
                if budget.keepSpinning() { continue }
                sleepers.wrappingAdd(1, ordering: .sequentiallyConsistent)
                parking.lock()
                while Self.generationOf(ticket.load(ordering: .sequentiallyConsistent)) == seen
                        && !stopping.load(ordering: .sequentiallyConsistent) {
                    parking.wait()
                }
                parking.unlock()
                sleepers.wrappingSubtract(1, ordering: .sequentiallyConsistent)
                budget = SpinBudget(nanoseconds: spinNanos)
            }
            seen = runShares()
        }
    }

    /// Claims and runs shares until the current job has none left; returns its generation.
    @inline(__always)
    private func runShares() -> Int {
        while true {
            let t = ticket.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue
            let i = t & Self.fieldMask
            let n = (t >> Self.indexBits) & Self.fieldMask
            if i >= n { return Self.generationOf(t) }
            job.unsafelyUnwrapped(i)
            pending.wrappingSubtract(1, ordering: .releasing)
        }
    }

    func run(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        // Another caller (or a nested call from a job) owns the pool: run serially.
        guard busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged else {
            for i in 0..<count { body(i) }
            return
        }
        defer { busy.store(false, ordering: .releasing) }
        if count > Self.maxShares {
            // too many shares for the ticket's index field: hand out contiguous ranges
            let shares = Self.maxShares
            publishAndRun(shares) { s in
                for i in count * s / shares ..< count * (s + 1) / shares { body(i) }
            }
        } else {
            publishAndRun(count, body)
        }
    }

    private func publishAndRun(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        job = body
        generation = (generation + 1) & 0x7FFF
        pending.store(count, ordering: .relaxed)
        ticket.store(generation << (2 * Self.indexBits) | count << Self.indexBits, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            parking.lock()
            parking.broadcast()
            parking.unlock()
        }
        _ = runShares()
        var budget = SpinBudget(nanoseconds: spinNanos)
        while pending.load(ordering: .acquiring) != 0 {
            if !budget.keepSpinning() { sched_yield() }
        }
        job = nil
    }
}

/// Fallback for older Apple OS versions without the Synchronization module: one lock per share.
final class LockingPool: PoolBackend, @unchecked Sendable {
    private let condition = NSCondition()
    private let callerLock = NSLock()
    private var job: (@Sendable (Int) -> Void)?
    private var jobCount = 0
    private var nextIndex = 0
    private var finished = 0
    private var generation = 0
    private var stopping = false

    init(workers: Int) {
        for _ in 0..<workers {
            let t = Thread { [self] in workerLoop() }
            t.stackSize = 1 << 20
            t.start()
        }
    }

    func stop() {
        condition.lock()
        stopping = true
        condition.broadcast()
        condition.unlock()
    }

    private func workerLoop() {
        var seen = 0
        while true {
            condition.lock()
            while generation == seen && !stopping { condition.wait() }
            if stopping { condition.unlock(); return }
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

    func run(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        guard callerLock.try() else {
            for i in 0..<count { body(i) }
            return
        }
        defer { callerLock.unlock() }
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
}
