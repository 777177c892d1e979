import GGUF

/// A 2-D weight tensor: `rows` output features, each a row of `columns` inputs encoded in
/// `type`'s blocks. Either viewed in place in the memory-mapped file (`.rows`, keeping the file
/// open when made from one), or repacked at load into 16-row tiles for the AVX-512 kernels (`.rowTiles16`,
/// see `withRowTiles`), whose memory `owner` keeps alive.
public struct WeightMatrix: @unchecked Sendable {
    public enum Layout: Sendable, Equatable {
        /// GGUF order: row r at `data + r · rowBytes`.
        case rows
        /// Groups of 16 rows, `rowTileGroupBytes` apart, rows of a group interleaved so that
        /// one vector holds the same 4 elements of all 16 (KernelsAVX512/RowTiles.swift).
        case rowTiles16(groupBytes: Int)
    }

    public let type: TensorType
    public let data: UnsafeRawPointer
    public let rows: Int
    public let columns: Int
    /// Bytes of one row in GGUF order (also for tiled matrices: the rows' total is unchanged).
    public let rowBytes: Int
    public let layout: Layout
    /// How the products add up (see `ProductSummation`): `.vecDot` for a matrix in GGUF layout.
    public let summation: ProductSummation
    let owner: AnyObject?

    public init(type: TensorType, data: UnsafeRawPointer, rows: Int, columns: Int) {
        self.init(type: type, data: data, rows: rows, columns: columns, owner: nil)
    }

    /// `owner`: what keeps `data` valid (the GGUF file for a view into its mapping).
    public init(type: TensorType, data: UnsafeRawPointer, rows: Int, columns: Int, owner: AnyObject?) {
        self.type = type
        self.data = data
        self.rows = rows
        self.columns = columns
        // fatalError, not `!`: release builds use -Ounchecked, where a failed unwrap is undefined
        guard let rowBytes = type.byteCount(elements: columns) else {
            fatalError("WeightMatrix: \(columns) columns is not a whole number of \(type) blocks")
        }
        self.rowBytes = rowBytes
        layout = .rows
        summation = .vecDot
        self.owner = owner
    }

    init(tiledFrom source: WeightMatrix, data: UnsafeRawPointer, groupBytes: Int, summation: ProductSummation,
         owner: AnyObject) {
        type = source.type
        self.data = data
        rows = source.rows
        columns = source.columns
        rowBytes = source.rowBytes
        layout = .rowTiles16(groupBytes: groupBytes)
        self.summation = summation
        self.owner = owner
    }

    /// A view into `file`'s mapping, which the matrix keeps alive.
    public init(file: GGUFFile, tensor: TensorInfo) {
        self.init(type: tensor.type, data: file.data(for: tensor), rows: tensor.rowCount, columns: tensor.rowLength,
                  owner: file)
    }

    /// Row r in GGUF order; only for `.rows` matrices.
    public func row(_ r: Int) -> UnsafeRawPointer {
        precondition(layout == .rows, "WeightMatrix.row: a tiled matrix has no contiguous rows")
        return data + r * rowBytes
    }
}
