import Foundation
import GGUF
import Kernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Keeps the resident part of a memory-mapped model under a byte budget while it runs, with
/// the OS page cache as the backing store ("LLM in a Flash" style weight streaming).
///
/// Every weight matrix a kernel is about to read is reported here first (`WeightAccess`). The
/// budget tracks which matrices it has let become resident, in least-recently-used order:
/// a matrix that is not resident is prefetched (`madvise(MADV_WILLNEED)`) and, before it is
/// admitted, the least recently used matrices are dropped (`MADV_DONTNEED`) until it fits.
/// The mapping is read-only and private, so dropped pages are simply re-read from the page
/// cache (or disk) when touched again; results never change, only speed.
///
/// Dense layers therefore stream through in order, and for a mixture of experts each expert's
/// slice of the 3-D tensors is its own entry, so only routed experts are touched and the LRU
/// keeps the hot ones resident. At the start of every forward pass whatever else of the file
/// became resident (embedding rows, norms read at load, the header) is dropped too.
public final class MemoryBudget: WeightAccessObserver, @unchecked Sendable {
    public let file: GGUFFile
    /// Bytes of weights allowed to stay resident.
    public let budget: Int

    public struct Statistics: Sendable, Codable {
        /// Forward passes and the tokens they processed.
        public var passes = 0
        public var tokens = 0
        /// Bytes of weight matrices made resident again after being dropped (or for the first
        /// time): what a flash-offloading runtime would read from storage.
        public var bytesPagedIn = 0
        /// Matrices dropped to stay under the budget.
        public var evictions = 0
        /// Accesses that found their matrix already resident, and those that did not.
        public var hits = 0
        public var misses = 0
        /// Largest total the budget's own accounting allowed resident (≤ budget, unless one
        /// operation's matrices alone exceed it).
        public var peakTrackedBytes = 0
        /// File-backed resident memory of the process (RssFile + RssShmem from
        /// /proc/self/statm), sampled before every admission: at the start and the peak.
        public var baselineFileRSS = 0
        public var peakFileRSS = 0
        /// Peak resident bytes of the file's own mapping, when `samplesMappingRSS` is set.
        public var peakMappingRSS = 0
        /// Bytes the process read from storage (/proc/self/io read_bytes) since the budget was installed.
        public var storageReadBytes = 0

        public var bytesPagedInPerToken: Double { tokens > 0 ? Double(bytesPagedIn) / Double(tokens) : 0 }
        /// Peak file-backed resident memory above what was resident when the budget started.
        public var peakResidentWeights: Int { max(0, peakFileRSS - baselineFileRSS) }
    }

    struct Region {
        var bytes: Int
        var lastUse: Int
    }

    private let lock = NSLock()
    private let base: UnsafeRawPointer
    private let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    private var token = 0
    /// Resident regions by file offset.
    private var resident: [Int: Region] = [:]
    private var residentBytes = 0
    private var clock = 0
    private var stats = Statistics()
    private var startReadBytes = 0
    /// Whether to sample /proc/self/statm at every admission (cheap, a few µs).
    public var samplesRSS = true
    /// Whether to also read this mapping's exact resident size (/proc/self/smaps) after every
    /// admission into `Statistics.peakMappingRSS` (slow: for tests and measurements).
    public var samplesMappingRSS = false

    /// Starts enforcing `budget` bytes for reads from `file`'s mapping, and drops whatever of the
    /// file is resident now. Stops when `stop()` is called or the object is released.
    public init(file: GGUFFile, budget: Int) {
        self.file = file
        self.budget = budget
        base = file.mappingBase
        dropUntracked()
        stats.baselineFileRSS = MemoryBudget.fileRSS()
        stats.peakFileRSS = stats.baselineFileRSS
        startReadBytes = MemoryBudget.storageReadBytes()
        token = WeightAccess.register(self, covering: UnsafeRawBufferPointer(start: base, count: file.fileSize))
    }

    deinit { stop() }

    public func stop() {
        lock.lock()
        defer { lock.unlock() }
        if token != 0 { WeightAccess.unregister(token); token = 0 }
    }

    public var statistics: Statistics {
        lock.lock()
        defer { lock.unlock() }
        var s = stats
        s.storageReadBytes = MemoryBudget.storageReadBytes() - startReadBytes
        return s
    }

    /// Called before each forward pass of `tokens` tokens.
    public func beginPass(tokens: Int) {
        lock.lock()
        defer { lock.unlock() }
        stats.passes += 1
        stats.tokens += tokens
        dropUntracked()

    }

    public func willRead(_ matrices: [WeightMatrix]) {
        lock.lock()
        defer { lock.unlock() }
        clock += 1
        if samplesRSS { stats.peakFileRSS = max(stats.peakFileRSS, MemoryBudget.fileRSS()) }
        // Fault-around and readahead map pages beyond the regions a kernel read (neighbouring
        // experts, embedding rows): drop them before admitting more.
        dropUntracked()
        var admitted: [Int] = []
        for m in matrices {
            let offset = m.data - base
            let bytes = m.rows * m.rowBytes
            guard offset >= 0, offset + bytes <= file.fileSize else { continue }
            if resident[offset] != nil {
                resident[offset]!.lastUse = clock
                stats.hits += 1
                continue
            }
            stats.misses += 1
            // make room: least recently used first, never what this operation reads
            while residentBytes + bytes > budget, let victim = leastRecentlyUsed(excluding: admitted) {
                let region = resident.removeValue(forKey: victim)!
                residentBytes -= region.bytes
                advise(MADV_DONTNEED, offset: victim, bytes: region.bytes)
                stats.evictions += 1
            }
            advise(MADV_WILLNEED, offset: offset, bytes: bytes)
            resident[offset] = Region(bytes: bytes, lastUse: clock)
            residentBytes += bytes
            stats.bytesPagedIn += bytes
            admitted.append(offset)
        }
        stats.peakTrackedBytes = max(stats.peakTrackedBytes, residentBytes)
        if samplesMappingRSS { stats.peakMappingRSS = max(stats.peakMappingRSS, mappingRSS()) }
    }

    private func leastRecentlyUsed(excluding: [Int]) -> Int? {
        var best: (Int, Int)?
        for (offset, r) in resident where !excluding.contains(offset) {
            if best == nil || r.lastUse < best!.1 { best = (offset, r.lastUse) }
        }
        return best?.0
    }

    /// madvise over the whole pages covering [offset, offset + bytes).
    private func advise(_ flag: Int32, offset: Int, bytes: Int) {
        let start = offset / pageSize * pageSize
        let end = min(file.fileSize, offset + bytes)
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, flag)
    }

    /// Drops every page of the file outside the tracked resident regions (pages shared with a
    /// resident region are kept).
    private func dropUntracked() {
        var cursor = 0
        for (offset, region) in resident.sorted(by: { $0.key < $1.key }) {
            dropInside(cursor, offset)
            cursor = max(cursor, offset + region.bytes)
        }
        dropInside(cursor, file.fileSize)
    }

    private func dropInside(_ from: Int, _ to: Int) {
        let start = (from + pageSize - 1) / pageSize * pageSize
        let end = to == file.fileSize ? to : to / pageSize * pageSize
        guard end > start else { return }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }

    /// Resident bytes of this file's mapping right now (its `Rss:` in /proc/self/smaps):
    /// the exact measure, unaffected by anything else in the process, but slower to read.
    public func mappingRSS() -> Int {
        let text = MemoryBudget.readProcFile("/proc/self/smaps")
        let start = String(UInt(bitPattern: base), radix: 16)
        var inside = false
        for line in text.split(separator: "\n") {
            if let dash = line.firstIndex(of: "-"), line[..<dash].allSatisfy(\.isHexDigit), line.contains(" ") {
                let first = line[..<dash].drop { $0 == "0" }
                inside = first == start.drop { $0 == "0" }
            } else if inside, line.hasPrefix("Rss:") {
                return (Int(line.filter(\.isNumber)) ?? 0) * 1024
            }
        }
        return 0
    }

    // MARK: process measurements (Linux /proc; 0 elsewhere)

    /// The whole of a /proc file (their sizes read as 0, so read until end of file).
    static func readProcFile(_ path: String) -> String {
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else { return "" }
        defer { close(fd) }
        var data: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            data.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: data, as: UTF8.self)
    }

    /// File-backed and shared resident bytes (statm's third field).
    public static func fileRSS() -> Int {
        statmField(2) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Resident set size in bytes.
    public static func residentBytes() -> Int {
        statmField(1) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    private static func statmField(_ index: Int) -> Int {
        let fd = open("/proc/self/statm", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, 127) }
        guard n > 0 else { return 0 }
        let fields = buffer[0..<n].split(separator: UInt8(ascii: " "))
        guard fields.count > index else { return 0 }
        return Int(String(decoding: fields[index], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
    }

    /// A `Key:   value kB` line of /proc/self/status, in bytes (e.g. "VmRSS", "RssFile", "VmHWM").
    public static func status(_ key: String) -> Int {
        let text = readProcFile("/proc/self/status")
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            let digits = line.dropFirst(key.count + 1).filter(\.isNumber)
            return (Int(digits) ?? 0) * 1024
        }
        return 0
    }

    /// /proc/self/io read_bytes: bytes this process caused to be fetched from storage.
    public static func storageReadBytes() -> Int {
        let text = readProcFile("/proc/self/io")
        for line in text.split(separator: "\n") where line.hasPrefix("read_bytes:") {
            return Int(line.dropFirst("read_bytes:".count).trimmingCharacters(in: .whitespaces)) ?? 0
        }
        return 0
    }
}

/// A model run under a `MemoryBudget`: each forward pass first tells the budget, then runs
/// the wrapped model unchanged.
public final class BudgetedModel: LanguageModel {
    public let inner: any LanguageModel
    public let budget: MemoryBudget

    public init(_ inner: any LanguageModel, budget: MemoryBudget) {
        self.inner = inner
        self.budget = budget
    }

    public var config: ModelConfig { inner.config }
    public var isEncoder: Bool { inner.isEncoder }
    public var classifier: SequenceClassifier? { inner.classifier }

    public func computeLogits(_ batch: [BatchSequence], pool: ThreadPool) -> [[Float]] {
        budget.beginPass(tokens: batch.reduce(0) { $0 + $1.tokens.count })
        return inner.computeLogits(batch, pool: pool)
    }

    public func makeCache(capacity: Int, types: KVCacheTypes) -> any SequenceState {
        inner.makeCache(capacity: capacity, types: types)
    }
}

extension MemoryBudget {
    /// The statistics as a JSON-ready dictionary (`swiftlet generate --json`).
    public func report() -> [String: Any] {
        let s = statistics
        return [
            "budget_bytes": budget, "passes": s.passes, "tokens": s.tokens,
            "bytes_paged_in": s.bytesPagedIn, "bytes_paged_in_per_token": s.bytesPagedInPerToken,
            "evictions": s.evictions, "hits": s.hits, "misses": s.misses,
            "peak_tracked_bytes": s.peakTrackedBytes, "baseline_file_rss_bytes": s.baselineFileRSS,
            "peak_file_rss_bytes": s.peakFileRSS, "peak_resident_weights_bytes": s.peakResidentWeights,
            "storage_read_bytes": s.storageReadBytes, "mapping_rss_bytes": mappingRSS(),
            "peak_mapping_rss_bytes": s.peakMappingRSS,
        ]
    }

    /// One line for the terminal.
    public var summary: String {
        let s = statistics
        let mib = { (b: Int) in String(format: "%.1f MiB", Double(b) / 1_048_576) }
        return "mem-budget \(mib(budget)): peak resident weights \(mib(s.peakResidentWeights)) (file RSS), "
            + "paged in \(mib(Int(s.bytesPagedInPerToken)))/token over \(s.tokens) tokens, "
            + "\(s.evictions) evictions, \(s.hits) hits / \(s.misses) misses, storage reads \(mib(s.storageReadBytes))"
    }
}
