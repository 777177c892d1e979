import Kernels
import Models
import Tokenization

/// The memory behind a paged KV cache: `blockCount` blocks of `blockSize` positions, each
/// position holding one key and one value row (of `cacheTypes`) per layer. Allocated once;
/// pages are touched only as blocks are first written.
public final class KVBlockPool: @unchecked Sendable {
    public let layers: Int
    public let kvDimension: Int
    public let blockSize: Int
    public let blockCount: Int
    public let cacheTypes: KVCacheTypes
    private let keys: UnsafeMutableRawPointer
    private let values: UnsafeMutableRawPointer
    private let keyRowBytes: Int, valueRowBytes: Int
    /// Bytes of one block's keys (layers × blockSize rows) and of its values.
    public let blockKeyBytes: Int, blockValueBytes: Int

    /// `kvDimension` must be whole blocks of both types (`ModelConfig.checkCacheTypes` ensures it).
    public init(layers: Int, kvDimension: Int, blockSize: Int, blockCount: Int, types: KVCacheTypes = .f16) {
        self.layers = layers
        self.kvDimension = kvDimension
        self.blockSize = blockSize
        self.blockCount = blockCount
        cacheTypes = types
        keyRowBytes = types.key.rowBytes(kvDimension)
        valueRowBytes = types.value.rowBytes(kvDimension)
        blockKeyBytes = layers * blockSize * keyRowBytes
        blockValueBytes = layers * blockSize * valueRowBytes
        keys = .allocate(byteCount: max(1, blockKeyBytes * blockCount), alignment: 64)
        values = .allocate(byteCount: max(1, blockValueBytes * blockCount), alignment: 64)
    }

    public convenience init(config: ModelConfig, blockSize: Int, blockCount: Int, types: KVCacheTypes = .f16) {
        self.init(layers: config.blockCount, kvDimension: config.headCountKV * max(config.keyLength, config.valueLength),
                  blockSize: blockSize, blockCount: blockCount, types: types)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    /// Bytes of one token position across all layers (keys and values).
    public static func bytesPerToken(config: ModelConfig, types: KVCacheTypes = .f16) -> Int {
        config.blockCount * types.bytes(width: config.headCountKV * max(config.keyLength, config.valueLength))
    }

    public var bytes: Int { (blockKeyBytes + blockValueBytes) * blockCount }

    @inline(__always)
    public func key(block: Int, layer: Int, slot: Int) -> UnsafeMutableRawPointer {
        keys + block * blockKeyBytes + (layer * blockSize + slot) * keyRowBytes
    }

    @inline(__always)
    public func value(block: Int, layer: Int, slot: Int) -> UnsafeMutableRawPointer {
        values + block * blockValueBytes + (layer * blockSize + slot) * valueRowBytes
    }

    /// Copies the first `slots` positions of every layer of block `from` into block `to`.
    public func copyBlock(from: Int, to: Int, slots: Int) {
        guard slots > 0 else { return }
        for layer in 0..<layers {
            key(block: to, layer: layer, slot: 0).copyMemory(from: key(block: from, layer: layer, slot: 0),
                                                             byteCount: slots * keyRowBytes)
            value(block: to, layer: layer, slot: 0).copyMemory(from: value(block: from, layer: layer, slot: 0),
                                                               byteCount: slots * valueRowBytes)
        }
    }
}

public struct OutOfBlocksError: Error, CustomStringConvertible {
    public var description: String { "the KV cache has no free block" }
}

/// One sequence's view of the paged KV cache: a block table mapping its positions to pool
/// blocks. Shared prefix blocks come from the prefix cache; a block that is shared or
/// registered is copied before this sequence writes into it (copy-on-write).
public final class PagedKVStore: KVStore, @unchecked Sendable {
    public let pool: KVBlockPool
    public let allocator: BlockAllocator
    /// Most positions this sequence may hold (the context length).
    public let capacity: Int
    public private(set) var count = 0
    /// Block ids, in position order.
    public private(set) var blocks: [Int] = []
    /// Prefix hashes of the leading blocks registered in (or found in) the prefix cache.
    public private(set) var blockHashes: [UInt64] = []
    private let blockSize: Int
    /// Where full blocks are also kept across restarts (`--prompt-cache`), if anywhere.
    let diskCache: PromptDiskCache?
    /// The parent hash of the first block: prefixes are shared only between stores with the same root.
    public let prefixRoot: UInt64

    public init(pool: KVBlockPool, allocator: BlockAllocator, capacity: Int, prefixRoot: UInt64 = 0,
                diskCache: PromptDiskCache? = nil) {
        precondition(pool.blockSize == allocator.blockSize && pool.blockCount == allocator.blockCount)
        precondition(diskCache.map { $0.pool === pool } ?? true, "a disk cache of another pool")
        self.pool = pool
        self.allocator = allocator
        self.capacity = capacity
        self.diskCache = diskCache
        self.prefixRoot = prefixRoot
        blockSize = allocator.blockSize
    }

    deinit { releaseAll() }

    public var cacheTypes: KVCacheTypes { pool.cacheTypes }

    @inline(__always)
    public func key(layer: Int, position: Int) -> UnsafeMutableRawPointer {
        pool.key(block: blocks[position / blockSize], layer: layer, slot: position % blockSize)
    }

    @inline(__always)
    public func value(layer: Int, position: Int) -> UnsafeMutableRawPointer {
        pool.value(block: blocks[position / blockSize], layer: layer, slot: position % blockSize)
    }

    public func reserve(_ tokens: Int) throws {
        guard count + tokens <= capacity else { throw ContextFullError(needed: count + tokens, capacity: capacity) }
        guard prepareSlots(tokens) else { throw OutOfBlocksError() }
    }

    /// Makes positions `count..<count + tokens` writable: copies shared blocks among them and
    /// appends fresh blocks. False when the pool ran out (blocks gained so far are kept).
    public func prepareSlots(_ tokens: Int) -> Bool {
        guard tokens > 0 else { return true }
        let end = count + tokens
        // Copy-on-write for existing blocks that the new positions land in.
        var index = count / blockSize
        while index < blocks.count && index * blockSize < end {
            let b = blocks[index]
            if allocator.isShared(b) {
                guard let fresh = allocator.allocate() else { return false }
                pool.copyBlock(from: b, to: fresh, slots: count - index * blockSize)
                allocator.release(b)
                blocks[index] = fresh
            }
            index += 1
        }
        while blocks.count * blockSize < end {
            guard let b = allocator.allocate() else { return false }
            blocks.append(b)
        }
        return true
    }

    /// Blocks still needed (beyond those held) to add `tokens` positions, copy-on-write included.
    public func blocksNeeded(for tokens: Int) -> Int {
        let end = count + tokens
        var n = max(0, (end + blockSize - 1) / blockSize - blocks.count)
        var index = count / blockSize
        while index < blocks.count && index * blockSize < end {
            if allocator.isShared(blocks[index]) { n += 1 }
            index += 1
        }
        return n
    }

    public func advance(by tokens: Int) {
        precondition(count + tokens <= blocks.count * blockSize, "advance past the reserved blocks")
        count += tokens
    }

    /// Forgets positions from `position` on and returns the blocks no longer needed.
    public func truncate(to position: Int) {
        count = min(count, max(0, position))
        let keep = (count + blockSize - 1) / blockSize
        while blocks.count > keep { allocator.release(blocks.removeLast()) }
        blockHashes.removeLast(max(0, blockHashes.count - count / blockSize))
    }

    /// Releases every block (the tail first, so the LRU evicts a prefix's end before its start).
    public func releaseAll() {
        for b in blocks.reversed() { allocator.release(b) }
        blocks.removeAll()
        blockHashes.removeAll()
        count = 0
    }

    /// On an empty store: shares the cached blocks that hold the longest block-aligned prefix of
    /// `tokens`, from memory or, past what memory holds, from the disk cache (read into fresh
    /// blocks and registered). Returns the number of positions now filled (a multiple of the
    /// block size).
    public func adoptCachedPrefix(_ tokens: [TokenID]) -> Int {
        precondition(count == 0 && blocks.isEmpty, "adoptCachedPrefix on a non-empty store")
        var parent = prefixRoot
        var start = 0
        while start + blockSize <= min(tokens.count, capacity) {
            let slice = tokens[start..<start + blockSize]
            guard let hit = allocator.lookup(parent: parent, tokens: slice) ?? loadFromDisk(parent: parent, tokens: slice) else { break }
            allocator.retain(hit.block)
            blocks.append(hit.block)
            blockHashes.append(hit.hash)
            parent = hit.hash
            start += blockSize
        }
        count = start
        return start
    }

    /// Registers the full blocks not yet registered (and queues them for the disk cache);
    /// `tokens` are the sequence's tokens (at least `count` of them).
    public func registerFullBlocks(_ tokens: [TokenID]) {
        precondition(tokens.count >= count)
        while blockHashes.count < count / blockSize {
            let i = blockHashes.count
            let parent = blockHashes.last ?? prefixRoot
            let slice = tokens[i * blockSize..<(i + 1) * blockSize]
            let hash = allocator.register(blocks[i], parent: parent, tokens: slice)
            diskCache?.save(block: blocks[i], hash: hash, parent: parent, tokens: slice)
            blockHashes.append(hash)
        }
    }

    /// The disk cache's block for `tokens` after `parent`, read into a fresh registered block
    /// that nobody holds yet (the caller retains it); nil when there is none or no free block.
    private func loadFromDisk(parent: UInt64, tokens: ArraySlice<TokenID>) -> (block: Int, hash: UInt64)? {
        guard let diskCache, let block = allocator.allocate() else { return nil }
        let hash = BlockAllocator.hash(parent: parent, tokens: tokens)
        guard diskCache.load(hash: hash, parent: parent, tokens: tokens, into: block) else {
            allocator.release(block)
            return nil
        }
        allocator.register(block, parent: parent, tokens: tokens)
        // registered and released: parked in the LRU until the caller retains it (unregistered
        // — another block holds this hash with other tokens — it would be free: a miss)
        let registered = allocator.isRegistered(block)
        allocator.release(block)
        return registered ? (block, hash) : nil
    }
}
