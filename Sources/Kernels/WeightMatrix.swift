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
        // fatalError, not `!`: release builds use -Ounchecked, where a failed unwrap is undefined
        guard let rowBytes = type.byteCount(elements: columns) else {
            fatalError("WeightMatrix: \(columns) columns is not a whole number of \(type) blocks")
        }
        self.rowBytes = rowBytes
    }

    public init(file: GGUFFile, tensor: TensorInfo) {
        self.init(type: tensor.type, data: file.data(for: tensor), rows: tensor.rowCount, columns: tensor.rowLength)
    }

    public func row(_ r: Int) -> UnsafeRawPointer { data + r * rowBytes }
}
