import GGUF

/// A 2-D weight tensor viewed in place: `rows` output features, each a row of `columns`
/// inputs encoded in `type`'s blocks. Points into the memory-mapped file; never owns memory.
public struct WeightMatrix: @unchecked Sendable {
    public let type: TensorType
    public let data: UnsafeRawPointer
    public let rows: Int
    public let columns: Int
    public let rowBytes: Int

    public init(type: TensorType, data: UnsafeRawPointer, rows: Int, columns: Int) {
        self.type = type
        self.data = data
        self.rows = rows
        self.columns = columns
        self.rowBytes = type.byteCount(elements: columns)!
    }

    public init(file: GGUFFile, tensor: TensorInfo) {
        self.init(type: tensor.type, data: file.data(for: tensor), rows: tensor.rowCount, columns: tensor.rowLength)
    }

    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }
}
