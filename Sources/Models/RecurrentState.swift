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
