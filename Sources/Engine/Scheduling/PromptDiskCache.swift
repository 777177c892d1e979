import Foundation
import GGUF
import Models
import Tokenization

/// Full KV blocks kept on disk across restarts and evictions (`serve --prompt-cache DIR`), so a
/// long system prompt that an agent sends with every request is computed once, not once per
/// server start.
///
/// Every block the prefix cache registers is written (off the generator thread) to
/// `DIR/<model fingerprint>/<prefix hash>.kv`; when a new sequence's prompt misses the in-memory
/// prefix cache, the next block is looked for on disk and, if found and valid, read into a fresh
/// pool block and registered as if it had been computed. A file is used only when everything in
/// it agrees with what is asked: the format, the model fingerprint (the file's tensor layout and
/// leading weight bytes), the pool's geometry, the prefix hash, the parent hash, the tokens and a
/// checksum over tokens and keys/values; anything else is counted as rejected and deleted, and
/// the block is computed. The directory is trimmed to `maxBytes`, oldest files first.
///
/// Threading: `load` runs on the generator thread; writes go through a serial queue; the shared
/// bookkeeping is under `lock`.
public final class PromptDiskCache: @unchecked Sendable {
    public struct Statistics: Sendable, Equatable {
        /// Prompt tokens read from disk instead of computed.
        public var hitTokens = 0
        public var bytesRead = 0
        public var bytesWritten = 0
        /// Files refused (corrupt, truncated, another model or geometry) and deleted.
        public var rejectedFiles = 0
        /// Files in the cache now, and their bytes.
        public var files = 0
        public var bytes = 0

        public init() {}
    }

    static let magic: UInt64 = 0x314B_4C42_564B_5753  // "SWKVBLK1"
    static let headerBytes = 64

    public let directory: URL
    public let fingerprint: UInt64
    let pool: KVBlockPool
    let maxBytes: Int
    private let writer = DispatchQueue(label: "swiftlet.prompt-cache")
    private let lock = NSLock()
    /// Files on disk by prefix hash (bytes), oldest first in `order`.
    private var known: [UInt64: Int] = [:]
    private var order: [UInt64] = []
    /// Hashes whose file this process wrote or read back intact. A block registered under any
    /// other hash is written, even over a file an earlier process left: that file may be one
    /// nobody has read yet, and a bad one would otherwise stay.
    private var verified: Set<UInt64> = []
    private var stats = Statistics()

    /// Bytes of one block's file.
    var fileBytes: Int { Self.headerBytes + pool.blockSize * MemoryLayout<TokenID>.size + pool.blockKeyBytes + pool.blockValueBytes }

    /// Header word 5: the row width and the cache types (2, the F16 element size, for an F16
    /// cache as before there were other types), so a file of another layout is refused.
    var layoutWord: UInt64 {
        UInt64(pool.kvDimension) | (pool.cacheTypes.isF16 ? 2 : 0x100 | pool.cacheTypes.code) << 32
    }

    /// Opens (creating) the cache for `model` under `root`; lists the files already there.
    public init(root: String, model: LoadedModel, pool: KVBlockPool, maxBytes: Int) throws {
        // LoRA adapters change the cached keys and values of sequences that use them: their
        // files are part of what the cache belongs to
        fingerprint = model.adapters.reduce(Self.fingerprint(model.file)) { Self.fingerprint(adapterAt: $1.path, after: $0) }
        directory = URL(fileURLWithPath: root).appendingPathComponent(String(format: "%016llx", fingerprint))
        self.pool = pool
        self.maxBytes = maxBytes
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let files = (try? FileManager.default.contentsOfDirectory(at: directory, includingPropertiesForKeys: [.contentModificationDateKey, .fileSizeKey])) ?? []
        let dated = files.compactMap { url -> (UInt64, Date, Int)? in
            guard url.pathExtension == "kv", let hash = UInt64(url.deletingPathExtension().lastPathComponent, radix: 16),
                  let values = try? url.resourceValues(forKeys: [.contentModificationDateKey, .fileSizeKey]) else { return nil }
            return (hash, values.contentModificationDate ?? .distantPast, values.fileSize ?? 0)
        }
        for (hash, _, size) in dated.sorted(by: { $0.1 < $1.1 }) {
            known[hash] = size
            order.append(hash)
            stats.files += 1
            stats.bytes += size
        }
    }

    public var statistics: Statistics {
        lock.lock()
        defer { lock.unlock() }
        return stats
    }

    /// Waits until every write queued so far is on disk (tests, shutdown).
    public func flush() { writer.sync {} }

    func url(_ hash: UInt64) -> URL { directory.appendingPathComponent(String(format: "%016llx.kv", hash)) }

    /// Queues `block` (registered as `hash`, after `parent`, holding `tokens`) to be written,
    /// unless this process already wrote or read its file. The keys and values are copied now:
    /// the block may be reused before the write happens.
    func save(block: Int, hash: UInt64, parent: UInt64, tokens: ArraySlice<TokenID>) {
        lock.lock()
        let done = !verified.insert(hash).inserted  // claimed: one write per hash
        lock.unlock()
        guard !done else { return }
        var data = Data(count: fileBytes)
        data.withUnsafeMutableBytes { raw in
            let header = raw.baseAddress!.assumingMemoryBound(to: UInt64.self)
            header[0] = Self.magic
            header[1] = fingerprint
            header[2] = hash
            header[3] = parent
            header[4] = UInt64(pool.blockSize) | UInt64(pool.layers) << 32
            header[5] = layoutWord
            var offset = Self.headerBytes
            let tokenBytes = tokens.count * MemoryLayout<TokenID>.size
            tokens.withContiguousStorageIfAvailable { raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: tokenBytes) }
                ?? Array(tokens).withUnsafeBytes { raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: tokenBytes) }
            offset += tokenBytes
            let keyBytes = pool.blockKeyBytes
            raw.baseAddress!.advanced(by: offset).copyMemory(from: pool.key(block: block, layer: 0, slot: 0), byteCount: keyBytes)
            raw.baseAddress!.advanced(by: offset + keyBytes).copyMemory(from: pool.value(block: block, layer: 0, slot: 0),
                                                                        byteCount: pool.blockValueBytes)
            header[6] = Self.checksum(UnsafeRawBufferPointer(rebasing: raw[Self.headerBytes...]))
        }
        let contents = data
        writer.async { [self] in
            let target = url(hash), temporary = target.appendingPathExtension("tmp")
            do {
                try contents.write(to: temporary)
                // rename(2): readers see the whole old file or the whole new one
                guard rename(temporary.path, target.path) == 0 else { throw CocoaError(.fileWriteUnknown) }
            } catch {
                try? FileManager.default.removeItem(at: temporary)
                lock.lock()
                verified.remove(hash)
                lock.unlock()
                return
            }
            lock.lock()
            if let replaced = known[hash] {
                order.removeAll { $0 == hash }
                stats.files -= 1
                stats.bytes -= replaced
            }
            known[hash] = contents.count
            order.append(hash)
            stats.files += 1
            stats.bytes += contents.count
            stats.bytesWritten += contents.count
            var evicted: [UInt64] = []
            while stats.bytes > maxBytes, !order.isEmpty {
                let oldest = order.removeFirst()
                stats.bytes -= known.removeValue(forKey: oldest) ?? 0
                stats.files -= 1
                verified.remove(oldest)
                evicted.append(oldest)
            }
            lock.unlock()
            for hash in evicted { try? FileManager.default.removeItem(at: url(hash)) }
        }
    }

    /// Reads the file of `hash` into `block` if it holds exactly `tokens` after `parent` for
    /// this model and pool; a file that does not is deleted. False when there is none or it
    /// was refused.
    func load(hash: UInt64, parent: UInt64, tokens: ArraySlice<TokenID>, into block: Int) -> Bool {
        lock.lock()
        let present = known[hash] != nil
        lock.unlock()
        guard present else { return false }
        guard let data = try? Data(contentsOf: url(hash), options: .mappedIfSafe), data.count == fileBytes,
              data.withUnsafeBytes({ valid($0, hash: hash, parent: parent, tokens: tokens) }) else {
            reject(hash)
            return false
        }
        data.withUnsafeBytes { raw in
            let keyBytes = pool.blockKeyBytes
            let offset = Self.headerBytes + pool.blockSize * MemoryLayout<TokenID>.size
            pool.key(block: block, layer: 0, slot: 0).copyMemory(from: raw.baseAddress! + offset, byteCount: keyBytes)
            pool.value(block: block, layer: 0, slot: 0).copyMemory(from: raw.baseAddress! + offset + keyBytes,
                                                                   byteCount: pool.blockValueBytes)
        }
        lock.lock()
        verified.insert(hash)
        stats.hitTokens += tokens.count
        stats.bytesRead += data.count
        lock.unlock()
        return true
    }

    private func valid(_ raw: UnsafeRawBufferPointer, hash: UInt64, parent: UInt64, tokens: ArraySlice<TokenID>) -> Bool {
        func word(_ i: Int) -> UInt64 { raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self) }
        guard word(0) == Self.magic, word(1) == fingerprint, word(2) == hash, word(3) == parent,
              word(4) == UInt64(pool.blockSize) | UInt64(pool.layers) << 32,
              word(5) == layoutWord,
              tokens.count == pool.blockSize else { return false }
        for (i, token) in tokens.enumerated()
        where raw.loadUnaligned(fromByteOffset: Self.headerBytes + i * MemoryLayout<TokenID>.size, as: TokenID.self) != token {
            return false
        }
        return word(6) == Self.checksum(UnsafeRawBufferPointer(rebasing: raw[Self.headerBytes...]))
    }

    private func reject(_ hash: UInt64) {
        lock.lock()
        verified.remove(hash)
        if let size = known.removeValue(forKey: hash) {
            order.removeAll { $0 == hash }
            stats.files -= 1
            stats.bytes -= size
        }
        stats.rejectedFiles += 1
        lock.unlock()
        try? FileManager.default.removeItem(at: url(hash))
    }

    /// FNV-1a over 8-byte words (and the tail bytes): catches torn writes and bit rot.
    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        let words = bytes.count / 8
        for i in 0..<words { h = (h ^ bytes.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) &* 0x0000_0100_0000_01B3 }
        for i in words * 8..<bytes.count { h = (h ^ UInt64(bytes[i])) &* 0x0000_0100_0000_01B3 }
        return h
    }

    /// `parent` extended by an adapter file's size and first MiB.
    static func fingerprint(adapterAt path: String, after parent: UInt64) -> UInt64 {
        let head = FileHandle(forReadingAtPath: path).flatMap { try? $0.read(upToCount: 1 << 20) } ?? Data()
        let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
        let words = head.withUnsafeBytes { raw in
            stride(from: 0, to: raw.count - 3, by: 4).map { raw.loadUnaligned(fromByteOffset: $0, as: TokenID.self) }
        }
        return BlockAllocator.hash(parent: parent, tokens: [TokenID(truncatingIfNeeded: size)] + words)
    }

    /// What identifies a model's keys and values: the tensors' names, types, shapes and places,
    /// and the first bytes of each tensor's data (a re-quantized or fine-tuned file differs there).
    static func fingerprint(_ file: GGUFFile) -> UInt64 {
        var h = BlockAllocator.hash(parent: UInt64(file.fileSize), tokens: [TokenID(truncatingIfNeeded: file.dataOffset)])
        for tensor in file.tensors {
            var fields: [TokenID] = Array(tensor.name.utf8).map { TokenID($0) }
            fields += [TokenID(tensor.type.rawValue), TokenID(truncatingIfNeeded: tensor.fileOffset)] + tensor.shape.map { TokenID(truncatingIfNeeded: $0) }
            let head = UnsafeRawBufferPointer(start: file.data(for: tensor), count: min(64, tensor.byteCount))
            fields += stride(from: 0, to: head.count - 3, by: 4).map { head.loadUnaligned(fromByteOffset: $0, as: TokenID.self) }
            h = BlockAllocator.hash(parent: h, tokens: fields)
        }
        return h
    }
}
