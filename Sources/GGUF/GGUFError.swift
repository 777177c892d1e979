/// Everything that can be wrong with a GGUF file, with where it was found.
public struct GGUFError: Error, CustomStringConvertible, Equatable, Sendable {
    public enum Problem: Equatable, Sendable {
        case cannotOpen(reason: String)
        case truncated(needed: Int, available: Int)
        case badMagic(found: UInt32)
        case bigEndian
        case unsupportedVersion(UInt32)
        case absurdCount(what: String, count: UInt64)
        case unknownValueType(UInt32)
        case duplicateKey(String)
        case badAlignment(Int)
        case unknownTensorType(UInt32)
        case tooManyDimensions(Int)
        case badDimension(UInt64)
        case shapeOverflow
        case rowNotWholeBlocks(rowLength: Int, blockSize: Int)
        case misalignedOffset(offset: UInt64, alignment: Int)
        case outOfBounds(end: UInt64, fileSize: Int)
        case overlaps(other: String)
        case duplicateTensor
        /// A model split across files (llama.cpp's gguf-split) whose parts do not fit together.
        case badSplit(String)
    }

    public let file: String
    /// Byte offset in the file where the problem was found, when it is about a position.
    public let offset: Int?
    /// The tensor concerned, when it is about one.
    public let tensor: String?
    public let problem: Problem

    public init(file: String, offset: Int? = nil, tensor: String? = nil, problem: Problem) {
        self.file = file
        self.offset = offset
        self.tensor = tensor
        self.problem = problem
    }

    public var description: String {
        var location = file
        if let tensor { location += ", tensor '\(tensor)'" }
        if let offset { location += " at byte \(offset)" }
        let what: String
        switch problem {
        case .cannotOpen(let reason): what = "cannot open: \(reason)"
        case .truncated(let needed, let available):
            what = "file is truncated: needed \(needed) more bytes, only \(available) left"
        case .badMagic(let found):
            what = "not a GGUF file (magic 0x\(String(found, radix: 16)), expected 0x46554747 'GGUF')"
        case .bigEndian: what = "big-endian GGUF files are not supported"
        case .unsupportedVersion(let v): what = "unsupported GGUF version \(v) (supported: 2, 3)"
        case .absurdCount(let name, let count): what = "\(name) \(count) cannot fit in the file"
        case .unknownValueType(let t): what = "unknown metadata value type \(t)"
        case .duplicateKey(let k): what = "duplicate metadata key '\(k)'"
        case .badAlignment(let a): what = "general.alignment \(a) is not a positive power of two"
        case .unknownTensorType(let t): what = "unknown or unsupported tensor type \(t)"
        case .tooManyDimensions(let n): what = "\(n) dimensions (at most 4 allowed)"
        case .badDimension(let d): what = "dimension \(d) is not positive or too large"
        case .shapeOverflow: what = "shape's element or byte count overflows"
        case .rowNotWholeBlocks(let row, let block):
            what = "row length \(row) is not a multiple of the type's block size \(block)"
        case .misalignedOffset(let off, let align): what = "data offset \(off) is not a multiple of alignment \(align)"
        case .outOfBounds(let end, let size): what = "tensor data ends at byte \(end), past the end of the file (\(size) bytes)"
        case .overlaps(let other): what = "tensor data overlaps tensor '\(other)'"
        case .duplicateTensor: what = "duplicate tensor name"
        case .badSplit(let reason): what = "split model: \(reason)"
        }
        return "\(location): \(what)"
    }
}
