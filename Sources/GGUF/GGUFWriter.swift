#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes GGUF v3 files (readable by llama.cpp and the Python `gguf` package).
public struct GGUFWriter {
    public struct PendingTensor {
        public var name: String
        public var type: TensorType
        public var shape: [Int]
        public var data: [UInt8]
    }

    public private(set) var metadata: [(String, MetadataValue)] = []
    public private(set) var tensors: [PendingTensor] = []
    public var alignment = 32

    public init() {}

    public mutating func set(_ key: String, _ value: MetadataValue) {
        if key == "general.alignment", let a = value.int { alignment = a }
        if let i = metadata.firstIndex(where: { $0.0 == key }) {
            metadata[i].1 = value
        } else {
            metadata.append((key, value))
        }
    }

    /// Adds a tensor whose bytes are already encoded in `type`'s block layout.
    public mutating func addTensor(name: String, type: TensorType, shape: [Int], data: [UInt8]) {
        precondition(type.byteCount(elements: shape.reduce(1, *)) == data.count, "tensor \(name): byte count does not match shape")
        tensors.append(PendingTensor(name: name, type: type, shape: shape, data: data))
    }

    public mutating func addTensor(name: String, shape: [Int], floats: [Float]) {
        var bytes = [UInt8](repeating: 0, count: floats.count * 4)
        bytes.withUnsafeMutableBytes { dst in floats.withUnsafeBytes { dst.copyMemory(from: $0) } }
        addTensor(name: name, type: .f32, shape: shape, data: bytes)
    }

    public func serialized() -> [UInt8] {
        var out = header(for: tensors.map { ($0.name, $0.type, $0.shape) })
        for t in tensors {
            out.append(contentsOf: t.data)
            while out.count % alignment != 0 { out.append(0) }
        }
        return out
    }

    /// The file up to the start of the tensor data (magic, metadata, tensor table, padding) for
    /// `tensors` whose bytes follow in order, each padded to `alignment` — for writers that
    /// stream tensor data instead of holding it (tensors added with `addTensor` are ignored).
    public func header(for tensors: [(name: String, type: TensorType, shape: [Int])]) -> [UInt8] {
        var out: [UInt8] = []
        func put<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func putString(_ s: String) { put(UInt64(s.utf8.count)); out.append(contentsOf: s.utf8) }
        func putValue(_ v: MetadataValue) {
            switch v {
            case .uint8(let x): put(x)
            case .int8(let x): put(x)
            case .uint16(let x): put(x)
            case .int16(let x): put(x)
            case .uint32(let x): put(x)
            case .int32(let x): put(x)
            case .uint64(let x): put(x)
            case .int64(let x): put(x)
            case .float32(let x): put(x.bitPattern)
            case .float64(let x): put(x.bitPattern)
            case .bool(let x): put(UInt8(x ? 1 : 0))
            case .string(let s): putString(s)
            case .array(let t, let values):
                put(t.rawValue)
                put(UInt64(values.count))
                values.forEach(putValue)
            }
        }

        put(GGUFFile.magic)
        put(UInt32(3))
        put(UInt64(tensors.count))
        put(UInt64(metadata.count))
        for (key, value) in metadata {
            putString(key)
            put(value.type.rawValue)
            putValue(value)
        }
        var offset = 0
        for t in tensors {
            putString(t.name)
            put(UInt32(t.shape.count))
            t.shape.forEach { put(UInt64($0)) }
            put(t.type.rawValue)
            put(UInt64(offset))
            let bytes = t.type.byteCount(elements: t.shape.reduce(1, *)) ?? 0
            offset += (bytes + alignment - 1) / alignment * alignment
        }
        while out.count % alignment != 0 { out.append(0) }
        return out
    }

    /// Writes the metadata and `tensors` to `path`, each tensor's bytes copied from where they
    /// already are (another file's mapping), so nothing is held in memory.
    public func write(to path: String, tensors: [(name: String, type: TensorType, shape: [Int], bytes: UnsafeRawBufferPointer)]) throws {
        for t in tensors {
            precondition(t.type.byteCount(elements: t.shape.reduce(1, *)) == t.bytes.count, "tensor \(t.name): byte count does not match shape")
        }
        guard let file = fopen(path, "wb") else { throw GGUFError(file: path, problem: .cannotOpen(reason: String(cString: strerror(errno)))) }
        var closed = false
        defer { if !closed { fclose(file) } }
        func put(_ bytes: UnsafeRawBufferPointer) throws {
            guard bytes.isEmpty || fwrite(bytes.baseAddress, 1, bytes.count, file) == bytes.count else {
                throw GGUFError(file: path, problem: .cannotOpen(reason: "write failed: \(String(cString: strerror(errno)))"))
            }
        }
        try header(for: tensors.map { ($0.name, $0.type, $0.shape) }).withUnsafeBytes(put)
        let zeros = [UInt8](repeating: 0, count: alignment)
        for t in tensors {
            try put(t.bytes)
            try zeros.withUnsafeBytes { try put(UnsafeRawBufferPointer(rebasing: $0[..<((alignment - t.bytes.count % alignment) % alignment)])) }
        }
        closed = true
        guard fclose(file) == 0 else { throw GGUFError(file: path, problem: .cannotOpen(reason: "write failed: \(String(cString: strerror(errno)))")) }
    }

    public func write(to path: String) throws {
        let bytes = serialized()
        guard let file = fopen(path, "wb") else { throw GGUFError(file: path, problem: .cannotOpen(reason: String(cString: strerror(errno)))) }
        defer { fclose(file) }
        let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        guard written == bytes.count else { throw GGUFError(file: path, problem: .cannotOpen(reason: "short write")) }
    }
}
