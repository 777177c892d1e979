import GGUF

public enum KernelError: Error, CustomStringConvertible {
    case unsupportedType(TensorType)
    public var description: String {
        switch self {
        case .unsupportedType(let t): "no kernel for tensor type \(t)"
        }
    }
}

/// Expands `count` elements (a whole number of blocks) of `type` at `source` into floats.
public func dequantizeRow(_ type: TensorType, _ source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>, count: Int) {
    switch type {
    case .f32:
        destination.update(from: source.assumingMemoryBound(to: Float.self), count: count)
    case .f16:
        let h = source.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { destination[i] = Float(Float16(bitPattern: h[i])) }
    case .bf16:
        let h = source.assumingMemoryBound(to: UInt16.self)
        for i in 0..<count { destination[i] = Float(bitPattern: UInt32(h[i]) << 16) }
    default:
        fatalError("dequantizeRow: \(type) not implemented yet")
    }
}
