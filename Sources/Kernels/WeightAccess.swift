import Foundation

/// Told which weight bytes a kernel is about to read, e.g. to keep resident memory under a
/// budget (`Models.MemoryBudget`). Called on the thread that calls `matmul`, before the
/// matrices are read.
public protocol WeightAccessObserver: AnyObject, Sendable {
    func willRead(_ matrices: [WeightMatrix])
}

/// Process-wide registry of weight-access observers, each owning an address range (a model
/// file's mapping). With none registered, `matmul` pays one relaxed load per call.
public enum WeightAccess {
    final class Registry: @unchecked Sendable {
        let lock = NSLock()
        var entries: [(id: Int, range: Range<UInt>, observer: any WeightAccessObserver)] = []
        var nextID = 0
        // read without the lock as a fast path; written under it
        nonisolated(unsafe) var count = 0
    }
    static let registry = Registry()

    /// Starts reporting reads inside `range` to `observer`; returns a token for `unregister`.
    public static func register(_ observer: any WeightAccessObserver, covering range: UnsafeRawBufferPointer) -> Int {
        let r = registry
        r.lock.lock()
        defer { r.lock.unlock() }
        let start = UInt(bitPattern: range.baseAddress)
        r.nextID += 1
        r.entries.append((r.nextID, start..<start + UInt(range.count), observer))
        r.count = r.entries.count
        return r.nextID
    }

    public static func unregister(_ token: Int) {
        let r = registry
        r.lock.lock()
        defer { r.lock.unlock() }
        r.entries.removeAll { $0.id == token }
        r.count = r.entries.count
    }

    /// Called by the kernels before reading `matrices`.
    @inline(__always)
    public static func willRead(_ matrices: [WeightMatrix]) {
        if registry.count == 0 { return }
        notify(matrices)
    }

    @inline(never)
    static func notify(_ matrices: [WeightMatrix]) {
        let r = registry
        r.lock.lock()
        let entries = r.entries
        r.lock.unlock()
        guard let first = matrices.first else { return }
        let address = UInt(bitPattern: first.data)
        for e in entries where e.range.contains(address) {
            e.observer.willRead(matrices)
            return
        }
    }
}
