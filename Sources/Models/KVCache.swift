import Kernels

/// What a model remembers of one sequence between forward passes: a KV cache for
/// attention models, a recurrent state for state-space models.
public protocol SequenceState: AnyObject {
    /// Tokens seen so far; the next token goes at this position.
    var count: Int { get }
    /// Most tokens this state can hold.
    var capacity: Int { get }
    /// Makes room for `tokens` more positions; throws when the context is full.
    func reserve(_ tokens: Int) throws
    /// Marks `tokens` more positions as filled (after a forward pass wrote them).
    func advance(by tokens: Int)
    /// Forgets everything from `position` on. A state that cannot roll back (recurrent)
    /// resets to empty instead; callers read `count` afterwards.
    func truncate(to position: Int)
}

/// Where attention keeps the keys and values of the tokens a sequence has seen: rows of
/// `cacheTypes` — half precision by default (as llama.cpp's F16 cache: half the memory, same
/// rounding), or Q8_0 / Q4_0 blocks. Access is per position so that a paged store (blocks +
/// block table) can sit behind it.
public protocol KVStore: SequenceState {
    var cacheTypes: KVCacheTypes { get }
    /// First byte of the key row (`kvDimension` elements of `cacheTypes.key`) of `layer` at `position`.
    func key(layer: Int, position: Int) -> UnsafeMutableRawPointer
    func value(layer: Int, position: Int) -> UnsafeMutableRawPointer
}

public struct ContextFullError: Error, CustomStringConvertible {
    public let needed: Int
    public let capacity: Int

    public init(needed: Int, capacity: Int) {
        self.needed = needed
        self.capacity = capacity
    }

    public var description: String { "context is full: \(needed) tokens needed, the context holds \(capacity)" }
}

/// A contiguous per-sequence cache sized once for the requested context length.
public final class KVCache: KVStore, @unchecked Sendable {
    public let layers: Int
    public let kvDimension: Int
    public let capacity: Int
    public let cacheTypes: KVCacheTypes
    public private(set) var count = 0
    private let keyRowBytes: Int, valueRowBytes: Int
    private let keys: UnsafeMutableRawPointer
    private let values: UnsafeMutableRawPointer

    /// `kvDimension` must be whole blocks of both types (`KVCacheTypes.check` on the head widths ensures it).
    public init(layers: Int, kvDimension: Int, capacity: Int, types: KVCacheTypes = .f16) {
        self.layers = layers
        self.kvDimension = kvDimension
        self.capacity = capacity
        cacheTypes = types
        keyRowBytes = types.key.rowBytes(kvDimension)
        valueRowBytes = types.value.rowBytes(kvDimension)
        keys = .allocate(byteCount: max(1, layers * capacity * keyRowBytes), alignment: 64)
        values = .allocate(byteCount: max(1, layers * capacity * valueRowBytes), alignment: 64)
    }

    public convenience init(config: ModelConfig, capacity: Int, types: KVCacheTypes = .f16) {
        self.init(layers: config.blockCount, kvDimension: config.headCountKV * max(config.keyLength, config.valueLength),
                  capacity: capacity, types: types)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    public func key(layer: Int, position: Int) -> UnsafeMutableRawPointer {
        keys + (layer * capacity + position) * keyRowBytes
    }

    public func value(layer: Int, position: Int) -> UnsafeMutableRawPointer {
        values + (layer * capacity + position) * valueRowBytes
    }

    public func reserve(_ tokens: Int) throws {
        guard count + tokens <= capacity else { throw ContextFullError(needed: count + tokens, capacity: capacity) }
    }

    public func advance(by tokens: Int) { count += tokens }

    public func truncate(to position: Int) { count = min(count, max(0, position)) }

    public var bytes: Int { layers * capacity * (keyRowBytes + valueRowBytes) }
}

extension ModelConfig {
    /// Throws unless the attention heads are whole blocks of `types` (see `KVCacheTypes.check`).
    public func checkCacheTypes(_ types: KVCacheTypes) throws {
        try types.check(keyWidth: keyLength, valueWidth: valueLength, architecture: architecture)
    }
}
