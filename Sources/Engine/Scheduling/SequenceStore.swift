import Models
import Tokenization

/// What the scheduler holds for one admitted sequence: the model's state for it (a paged KV
/// store for attention models, a state of its own otherwise) and the block bookkeeping.
public protocol SequenceStore: AnyObject {
    /// What the forward pass reads and writes.
    var modelState: any SequenceState { get }
    /// Positions computed so far.
    var count: Int { get }
    /// On an empty store: takes the longest cached prefix of `tokens`; returns its length.
    func adoptCachedPrefix(_ tokens: [TokenID]) -> Int
    /// Makes room for `tokens` more positions; false when the pool is short.
    func prepareSlots(_ tokens: Int) -> Bool
    /// Pool blocks that `prepareSlots(tokens)` would take.
    func blocksNeeded(for tokens: Int) -> Int
    func truncate(to position: Int)
    /// Gives everything back; the store is empty afterwards.
    func releaseAll()
    /// After a forward pass: offers the full blocks of `tokens` to the prefix cache.
    func registerFullBlocks(_ tokens: [TokenID])
}

/// How sequences keep their state.
public enum SequenceStorage {
    /// Blocks of one shared KV pool, with prefix sharing (attention models).
    case paged(KVBlockPool)
    /// A state of its own per sequence, made on admission and freed with the store. Recurrent
    /// models: the state is a few fixed-size tensors, there is nothing to page or share. Hybrid
    /// models (LFM2): the recurrent layers' state cannot be shared by prefix or rolled back, so
    /// the attention layers' KV cache goes with it, sized for the whole context.
    case perSequence(makeState: () -> any SequenceState)
}

extension PagedKVStore: SequenceStore {
    public var modelState: any SequenceState { self }
}

/// A per-sequence state (recurrent or hybrid model) as a `SequenceStore`: no blocks, no
/// prefix cache.
final class RecurrentStore: SequenceStore {
    let state: any SequenceState

    init(_ state: any SequenceState) { self.state = state }

    var modelState: any SequenceState { state }
    var count: Int { state.count }
    func adoptCachedPrefix(_ tokens: [TokenID]) -> Int { 0 }
    func prepareSlots(_ tokens: Int) -> Bool { state.count + tokens <= state.capacity }
    func blocksNeeded(for tokens: Int) -> Int { 0 }
    func truncate(to position: Int) { state.truncate(to: position) }
    func releaseAll() { state.truncate(to: 0) }
    func registerFullBlocks(_ tokens: [TokenID]) {}
}
