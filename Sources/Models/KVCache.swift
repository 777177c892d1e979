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

/// Where attention keeps the keys and values of the tokens a sequence has seen, in half
/// precision (as llama.cpp's default F16 cache: half the memory, same rounding).
/// Access is per position so that a paged store (blocks + block table) can sit behind it.
public protocol KVStore: SequenceState {
    /// Key vector (`kvDimension` floats) of `layer` at `position`.
    func key(layer: Int, position: Int) -> UnsafeMutablePointer<Float16>
    func value(layer: Int, position: Int) -> UnsafeMutablePointer<Float16>
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
    public private(set) var count = 0
    private let keys: UnsafeMutablePointer<Float16>
    private let values: UnsafeMutablePointer<Float16>

    public init(layers: Int, kvDimension: Int, capacity: Int) {
        self.layers = layers
        self.kvDimension = kvDimension
        self.capacity = capacity
        let total = layers * kvDimension * capacity
        keys = .allocate(capacity: total)
        values = .allocate(capacity: total)
    }

    public convenience init(config: ModelConfig, capacity: Int) {
        self.init(layers: config.blockCount, kvDimension: config.headCountKV * max(config.keyLength, config.valueLength), capacity: capacity)
    }

    deinit {
        keys.deallocate()
        values.deallocate()
    }

    public func key(layer: Int, position: Int) -> UnsafeMutablePointer<Float16> {
        keys + (layer * capacity + position) * kvDimension
    }

    public func value(layer: Int, position: Int) -> UnsafeMutablePointer<Float16> {
        values + (layer * capacity + position) * kvDimension
    }

    public func reserve(_ tokens: Int) throws {
        guard count + tokens <= capacity else { throw ContextFullError(needed: count + tokens, capacity: capacity) }
    }

    public func advance(by tokens: Int) { count += tokens }

    public func truncate(to position: Int) { count = min(count, max(0, position)) }

    public var bytes: Int { 2 * layers * kvDimension * capacity * MemoryLayout<Float16>.size }
}
