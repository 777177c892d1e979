#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A zero-copy view of one tensor inside a memory-mapped GGUF file.
/// `shape[0]` is the row length (ggml's ne0), as in the file.
public struct TensorInfo: Sendable {
    public let name: String
    public let type: TensorType
    public let shape: [Int]
    /// Offset of the data from the start of the file.
    public let fileOffset: Int
    public let byteCount: Int

    public var elementCount: Int { shape.reduce(1, *) }
    public var rowLength: Int { shape.first ?? 1 }
    public var rowCount: Int { elementCount / max(rowLength, 1) }
    public var rowBytes: Int { type.byteCount(elements: rowLength) ?? 0 }
}

/// A GGUF model file, memory-mapped read-only. Tensor data is never copied: `data(for:)`
/// returns pointers into the mapping, which lives as long as this object.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: MetadataValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    public let tensors: [TensorInfo]
    public let alignment: Int
    public let dataOffset: Int
    public let fileSize: Int

    private let base: UnsafeRawPointer
    private let tensorIndex: [String: Int]
    /// Indexes of the tensors whose bytes were asked for (`data(for:)`, `bytes(for:)`): after a
    /// model is built, the ones never asked for are the tensors its graph does not use.
    private let readTensors = LockedIndexSet()

    public static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian

    public init(path: String) throws(GGUFError) {
        self.path = path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw GGUFError(file: path, problem: .cannotOpen(reason: String(cString: strerror(errno))))
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            throw GGUFError(file: path, problem: .cannotOpen(reason: String(cString: strerror(errno))))
        }
        guard (info.st_mode & S_IFMT) == S_IFREG else {
            throw GGUFError(file: path, problem: .cannotOpen(reason: "not a regular file"))
        }
        let size = Int(info.st_size)
        guard size > 0 else { throw GGUFError(file: path, offset: 0, problem: .truncated(needed: 4, available: 0)) }
        guard let mapping = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapping != MAP_FAILED else {
            throw GGUFError(file: path, problem: .cannotOpen(reason: "mmap failed: \(String(cString: strerror(errno)))"))
        }
        let parsed: Parsed
        var parser = Parser(path: path, bytes: UnsafeRawBufferPointer(start: mapping, count: size))
        do throws(GGUFError) {
            parsed = try parser.parse()
        } catch {
            munmap(mapping, size)
            throw error
        }
        self.base = UnsafeRawPointer(mapping)
        self.fileSize = size
        self.version = parsed.version
        self.metadata = parsed.metadata
        self.metadataKeys = parsed.keys
        self.tensors = parsed.tensors
        self.alignment = parsed.alignment
        self.dataOffset = parsed.dataOffset
        var index: [String: Int] = [:]
        for (i, t) in parsed.tensors.enumerated() { index[t.name] = i }
        self.tensorIndex = index
    }

    deinit {
        munmap(UnsafeMutableRawPointer(mutating: base), fileSize)
    }

    public func tensor(named name: String) -> TensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// Pointer to a tensor's bytes inside the mapping (valid while `self` lives).
    public func data(for tensor: TensorInfo) -> UnsafeRawPointer {
        markRead(tensor)
        return base + tensor.fileOffset
    }

    public func bytes(for tensor: TensorInfo) -> UnsafeRawBufferPointer {
        markRead(tensor)
        return UnsafeRawBufferPointer(start: base + tensor.fileOffset, count: tensor.byteCount)
    }

    /// The start of the mapping (tensor data lies at `mappingBase + fileOffset`).
    public var mappingBase: UnsafeRawPointer { base }

    /// Tensors whose bytes nothing has asked for yet, in file order.
    public var unreadTensors: [TensorInfo] {
        let read = readTensors.snapshot
        return tensors.indices.filter { !read.contains($0) }.map { tensors[$0] }
    }

    private func markRead(_ tensor: TensorInfo) {
        guard let index = tensorIndex[tensor.name] else { return }
        readTensors.insert(index)
    }

    /// Tell the kernel how the mapping will be read: `.willNeed` prefetches, `.dontNeed`
    /// drops resident pages (they are re-read from the page cache or disk on next touch).
    public enum Advice: Sendable { case normal, sequential, random, willNeed, dontNeed, noHugePages }

    public func advise(_ advice: Advice, tensor: TensorInfo) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = tensor.fileOffset / page * page
        advise(advice, offset: start, length: tensor.fileOffset + tensor.byteCount - start)
    }

    /// `advice` for the whole mapping.
    public func advise(_ advice: Advice) { advise(advice, offset: 0, length: fileSize) }

    /// `advice` for the whole pages inside `bytes` (a part of this file's mapping); partial
    /// pages at either end are left alone, since they hold neighbouring bytes.
    public func advise(_ advice: Advice, bytes: UnsafeRawBufferPointer) {
        guard let p = bytes.baseAddress, p >= base, p + bytes.count <= base + fileSize else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (p - base + page - 1) / page * page, end = (p - base + bytes.count) / page * page
        if first < end { advise(advice, offset: first, length: end - first) }
    }

    private func advise(_ advice: Advice, offset start: Int, length: Int) {
        let flag: Int32
        switch advice {
        case .normal: flag = Int32(MADV_NORMAL)
        case .sequential: flag = Int32(MADV_SEQUENTIAL)
        case .random: flag = Int32(MADV_RANDOM)
        case .willNeed: flag = Int32(MADV_WILLNEED)
        case .dontNeed: flag = Int32(MADV_DONTNEED)
        case .noHugePages: flag = Int32(MADV_NOHUGEPAGE)
        }
        _ = madvise(UnsafeMutableRawPointer(mutating: base + start), length, flag)
    }

    // MARK: convenience metadata access

    public subscript(key: String) -> MetadataValue? { metadata[key] }

    public var architecture: String? { metadata["general.architecture"]?.string }

    /// `ARCH.key` for the file's architecture, e.g. `arch("embedding_length")`.
    public func arch(_ key: String) -> MetadataValue? {
        guard let architecture else { return nil }
        return metadata["\(architecture).\(key)"]
    }

    public var parameterCount: Int { tensors.reduce(0) { $0 + $1.elementCount } }
    public var tensorDataBytes: Int { tensors.reduce(0) { $0 + $1.byteCount } }
}

struct Parsed {
    var version: UInt32 = 0
    var metadata: [String: MetadataValue] = [:]
    var keys: [String] = []
    var tensors: [TensorInfo] = []
    var alignment = 32
    var dataOffset = 0
}

/// Bounds-checked reader over the mapped bytes. Every count read from the file is checked
/// against the bytes left before anything is allocated from it.
struct Parser {
    let path: String
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(path: String, bytes: UnsafeRawBufferPointer) {
        self.path = path
        self.bytes = bytes
    }

    var remaining: Int { bytes.count - position }

    func error(_ problem: GGUFError.Problem, at offset: Int? = nil, tensor: String? = nil) -> GGUFError {
        GGUFError(file: path, offset: offset ?? position, tensor: tensor, problem: problem)
    }

    mutating func need(_ n: Int) throws(GGUFError) {
        guard n <= remaining else { throw error(.truncated(needed: n, available: remaining)) }
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type) throws(GGUFError) -> T {
        try need(MemoryLayout<T>.size)
        let v = bytes.loadUnaligned(fromByteOffset: position, as: T.self)
        position += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func readString() throws(GGUFError) -> String {
        let start = position
        let length = try read(UInt64.self)
        guard length <= UInt64(remaining) else {
            throw error(.truncated(needed: Int(clamping: length), available: remaining), at: start)
        }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<position + Int(length)])
        position += Int(length)
        return String(decoding: slice, as: UTF8.self)
    }

    mutating func readValue(_ type: MetadataValueType, depth: Int = 0) throws(GGUFError) -> MetadataValue {
        switch type {
        case .uint8: return .uint8(try read(UInt8.self))
        case .int8: return .int8(try read(Int8.self))
        case .uint16: return .uint16(try read(UInt16.self))
        case .int16: return .int16(try read(Int16.self))
        case .uint32: return .uint32(try read(UInt32.self))
        case .int32: return .int32(try read(Int32.self))
        case .uint64: return .uint64(try read(UInt64.self))
        case .int64: return .int64(try read(Int64.self))
        case .float32: return .float32(Float(bitPattern: try read(UInt32.self)))
        case .float64: return .float64(Double(bitPattern: try read(UInt64.self)))
        case .bool: return .bool(try read(UInt8.self) != 0)
        case .string: return .string(try readString())
        case .array:
            let typeOffset = position
            let rawType = try read(UInt32.self)
            guard let elementType = MetadataValueType(rawValue: rawType) else {
                throw error(.unknownValueType(rawType), at: typeOffset)
            }
            let countOffset = position
            let count = try read(UInt64.self)
            guard depth < 8, count <= UInt64(remaining / elementType.minimumEncodedSize) else {
                throw error(.absurdCount(what: "array length", count: count), at: countOffset)
            }
            var values: [MetadataValue] = []
            values.reserveCapacity(Int(count))
            for _ in 0..<Int(count) { values.append(try readValue(elementType, depth: depth + 1)) }
            return .array(elementType, values)
        }
    }

    mutating func parse() throws(GGUFError) -> Parsed {
        var result = Parsed()
        let magic = try read(UInt32.self)
        guard magic == GGUFFile.magic else { throw error(.badMagic(found: magic), at: 0) }
        let version = try read(UInt32.self)
        if version > 0xFFFF && version.byteSwapped <= 3 { throw error(.bigEndian, at: 4) }
        guard version == 2 || version == 3 else { throw error(.unsupportedVersion(version), at: 4) }
        result.version = version

        let tensorCount = try read(UInt64.self)
        // A tensor info takes at least 8 (name) + 4 (dims) + 8 (one dim) + 4 (type) + 8 (offset) bytes.
        guard tensorCount <= UInt64(remaining / 32) else {
            throw error(.absurdCount(what: "tensor count", count: tensorCount), at: 8)
        }
        let kvCount = try read(UInt64.self)
        guard kvCount <= UInt64(remaining / 12) else {
            throw error(.absurdCount(what: "metadata key/value count", count: kvCount), at: 16)
        }

        for _ in 0..<Int(kvCount) {
            let keyOffset = position
            let key = try readString()
            let typeOffset = position
            let rawType = try read(UInt32.self)
            guard let type = MetadataValueType(rawValue: rawType) else {
                throw error(.unknownValueType(rawType), at: typeOffset)
            }
            let value = try readValue(type)
            guard result.metadata[key] == nil else { throw error(.duplicateKey(key), at: keyOffset) }
            result.metadata[key] = value
            result.keys.append(key)
        }

        if let alignmentValue = result.metadata["general.alignment"] {
            guard let a = alignmentValue.int, a > 0, a & (a - 1) == 0, a <= 1 << 20 else {
                throw error(.badAlignment(alignmentValue.int ?? -1), at: nil)
            }
            result.alignment = a
        }

        struct RawTensor { var name: String; var type: TensorType; var shape: [Int]; var offset: UInt64; var infoOffset: Int }
        var raw: [RawTensor] = []
        raw.reserveCapacity(Int(tensorCount))
        var names = Set<String>()
        for _ in 0..<Int(tensorCount) {
            let infoOffset = position
            let name = try readString()
            let dimsOffset = position
            let nDims = Int(try read(UInt32.self))
            guard nDims >= 1 && nDims <= 4 else { throw error(.tooManyDimensions(nDims), at: dimsOffset, tensor: name) }
            var shape: [Int] = []
            var elements = 1
            for _ in 0..<nDims {
                let d = try read(UInt64.self)
                guard d > 0, d < 1 << 62 else { throw error(.badDimension(d), at: position - 8, tensor: name) }
                shape.append(Int(d))
                let (product, overflow) = elements.multipliedReportingOverflow(by: Int(d))
                guard !overflow else { throw error(.shapeOverflow, at: dimsOffset, tensor: name) }
                elements = product
            }
            let typeOffset = position
            let rawType = try read(UInt32.self)
            guard let type = TensorType(rawValue: rawType) else {
                throw error(.unknownTensorType(rawType), at: typeOffset, tensor: name)
            }
            guard shape[0] % type.blockSize == 0 else {
                throw error(.rowNotWholeBlocks(rowLength: shape[0], blockSize: type.blockSize), at: dimsOffset, tensor: name)
            }
            guard type.byteCount(elements: elements) != nil else {
                throw error(.shapeOverflow, at: dimsOffset, tensor: name)
            }
            let offset = try read(UInt64.self)
            guard names.insert(name).inserted else { throw error(.duplicateTensor, at: infoOffset, tensor: name) }
            raw.append(RawTensor(name: name, type: type, shape: shape, offset: offset, infoOffset: infoOffset))
        }

        let align = result.alignment
        let dataStart = (position + align - 1) / align * align
        result.dataOffset = dataStart

        for t in raw {
            let bytes = t.type.byteCount(elements: t.shape.reduce(1, *))!
            guard t.offset % UInt64(align) == 0 else {
                throw error(.misalignedOffset(offset: t.offset, alignment: align), at: t.infoOffset, tensor: t.name)
            }
            let (start, o1) = UInt64(dataStart).addingReportingOverflow(t.offset)
            let (end, o2) = start.addingReportingOverflow(UInt64(bytes))
            guard !o1, !o2, end <= UInt64(self.bytes.count) else {
                throw error(.outOfBounds(end: o1 || o2 ? .max : end, fileSize: self.bytes.count), at: t.infoOffset, tensor: t.name)
            }
            result.tensors.append(TensorInfo(name: t.name, type: t.type, shape: t.shape,
                                             fileOffset: Int(start), byteCount: bytes))
        }

        let byStart = result.tensors.sorted { $0.fileOffset < $1.fileOffset }
        for (a, b) in zip(byStart, byStart.dropFirst()) where a.fileOffset + a.byteCount > b.fileOffset {
            throw error(.overlaps(other: a.name), at: b.fileOffset, tensor: b.name)
        }
        return result
    }
}

/// A set of indexes behind a pthread mutex (Synchronization's `Mutex` needs macOS 15).
private final class LockedIndexSet: @unchecked Sendable {
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private var indexes = Set<Int>()

    init() { pthread_mutex_init(mutex, nil) }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    func insert(_ index: Int) {
        pthread_mutex_lock(mutex)
        indexes.insert(index)
        pthread_mutex_unlock(mutex)
    }

    var snapshot: Set<Int> {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return indexes
    }
}
