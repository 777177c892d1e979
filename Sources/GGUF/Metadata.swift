/// GGUF metadata value type ids as written in the file.
public enum MetadataValueType: UInt32, Sendable {
    case uint8 = 0, int8 = 1, uint16 = 2, int16 = 3, uint32 = 4, int32 = 5, float32 = 6, bool = 7
    case string = 8, array = 9, uint64 = 10, int64 = 11, float64 = 12

    /// Smallest encoded size of one value, used to reject counts the file cannot possibly hold.
    var minimumEncodedSize: Int {
        switch self {
        case .uint8, .int8, .bool: 1
        case .uint16, .int16: 2
        case .uint32, .int32, .float32: 4
        case .uint64, .int64, .float64, .string: 8
        case .array: 12
        }
    }
}

/// One metadata value. Arrays keep their declared element type so a writer can round-trip
/// empty arrays.
public indirect enum MetadataValue: Sendable, Equatable, CustomStringConvertible {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool), string(String)
    case array(MetadataValueType, [MetadataValue])

    public var type: MetadataValueType {
        switch self {
        case .uint8: .uint8
        case .int8: .int8
        case .uint16: .uint16
        case .int16: .int16
        case .uint32: .uint32
        case .int32: .int32
        case .uint64: .uint64
        case .int64: .int64
        case .float32: .float32
        case .float64: .float64
        case .bool: .bool
        case .string: .string
        case .array: .array
        }
    }

    /// Any integer type (and bool) as Int; nil for values that do not fit.
    public var int: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        case .bool(let v): v ? 1 : 0
        default: nil
        }
    }

    /// Any numeric type as Double.
    public var double: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: int.map(Double.init)
        }
    }

    public var float: Float? { double.map(Float.init) }

    public var bool: Bool? {
        if case .bool(let v) = self { return v }
        return int.map { $0 != 0 }
    }

    public var string: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    public var array: [MetadataValue]? {
        if case .array(_, let v) = self { return v }
        return nil
    }

    public var stringArray: [String]? { array?.compactMap(\.string) }
    public var intArray: [Int]? { array?.compactMap(\.int) }
    public var floatArray: [Float]? { array?.compactMap(\.float) }

    public var description: String {
        switch self {
        case .string(let s): return "\"\(s)\""
        case .array(let t, let values):
            let head = values.prefix(8).map(\.description).joined(separator: ", ")
            return values.count > 8 ? "[\(t) × \(values.count)] [\(head), …]" : "[\(head)]"
        case .float32(let v): return "\(v)"
        case .float64(let v): return "\(v)"
        case .bool(let v): return "\(v)"
        default: return int.map(String.init) ?? "?"
        }
    }
}
