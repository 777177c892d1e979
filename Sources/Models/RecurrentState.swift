import Kernels

/// The per-sequence memory of recurrent layers (Mamba's, LFM2's short convolutions): each
/// layer's convolution window (its last `kernel − 1` inputs) and state-space state. Its size
/// does not depend on the sequence length.
public final class RecurrentState: SequenceState, @unchecked Sendable {
    public let capacity: Int
    public private(set) var count = 0
    private let layers: Int
    private let convCount: Int
    private let ssmCount: Int
    private let conv: UnsafeMutablePointer<Float>
    private let ssm: UnsafeMutablePointer<Float>

    /// `convCount`, `ssmCount`: floats of one layer's window and state (0: none).
    public init(layers: Int, convCount: Int, ssmCount: Int, capacity: Int) {
        self.layers = layers
        self.capacity = capacity
        self.convCount = convCount
        self.ssmCount = ssmCount
        conv = .allocate(capacity: max(1, layers * convCount))
        ssm = .allocate(capacity: max(1, layers * ssmCount))
        reset()
    }

    deinit {
        conv.deallocate()
        ssm.deallocate()
    }

    private func reset() {
        conv.initialize(repeating: 0, count: max(1, layers * convCount))
        ssm.initialize(repeating: 0, count: max(1, layers * ssmCount))
        count = 0
    }

    public func convWindow(layer: Int) -> UnsafeMutablePointer<Float> { conv + layer * convCount }
    public func ssmState(layer: Int) -> UnsafeMutablePointer<Float> { ssm + layer * ssmCount }

    public func reserve(_ tokens: Int) throws {
        guard count + tokens <= capacity else { throw ContextFullError(needed: count + tokens, capacity: capacity) }
    }

    public func advance(by tokens: Int) { count += tokens }

    /// A recurrent state cannot forget its last tokens: anything short of keeping all of it
    /// starts over.
    public func truncate(to position: Int) {
        if position < count { reset() }
    }
}

/// A hybrid model's per-sequence memory (LFM2): a KV cache for its attention layers and a
/// recurrent state for the others, filled by the same passes. Attention reads it as any
/// `KVStore`, by model layer.
public final class HybridState: KVStore, @unchecked Sendable {
    public let recurrent: RecurrentState
    private let attention: KVCache
    /// Model layer → its layer in `attention` (only attention layers are looked up).
    private let cacheLayer: [Int]

    /// `attentionLayers`: which model layers attend; `kvDimension`: floats of one position's
    /// key (or value) in the widest of them; `convCount`: floats of a recurrent layer's window.
    public init(attentionLayers: [Bool], kvDimension: Int, convCount: Int, capacity: Int, types: KVCacheTypes = .f16) {
        var next = 0
        cacheLayer = attentionLayers.map { attends in
            defer { if attends { next += 1 } }
            return attends ? next : -1
        }
        attention = KVCache(layers: next, kvDimension: kvDimension, capacity: capacity, types: types)
        recurrent = RecurrentState(layers: attentionLayers.count, convCount: convCount, ssmCount: 0, capacity: capacity)
    }

    public var count: Int { attention.count }
    public var capacity: Int { attention.capacity }

    public var cacheTypes: KVCacheTypes { attention.cacheTypes }

    public func key(layer: Int, position: Int) -> UnsafeMutableRawPointer {
        attention.key(layer: cacheLayer[layer], position: position)
    }

    public func value(layer: Int, position: Int) -> UnsafeMutableRawPointer {
        attention.value(layer: cacheLayer[layer], position: position)
    }

    public func reserve(_ tokens: Int) throws { try attention.reserve(tokens) }

    public func advance(by tokens: Int) {
        attention.advance(by: tokens)
        recurrent.advance(by: tokens)
    }

    /// The recurrent layers cannot forget tokens, so neither part does: anything short of
    /// keeping all of it starts both over (the two always hold the same positions).
    public func truncate(to position: Int) {
        guard position < count else { return }
        attention.truncate(to: 0)
        recurrent.truncate(to: 0)
    }
}
