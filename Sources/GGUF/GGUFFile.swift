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
    /// Bytes mapped: the file's size, or for a split model the span of all its parts.
    public let fileSize: Int
    /// The file, or every part of a split model in order.
    public let partPaths: [String]

    private let base: UnsafeRawPointer
    private let tensorIndex: [String: Int]
    /// Indexes of the tensors whose bytes were asked for (`data(for:)`, `bytes(for:)`): after a
    /// model is built, the ones never asked for are the tensors its graph does not use.
    private let readTensors = LockedIndexSet()

    public static let magic: UInt32 = 0x4655_4747  // "GGUF" little-endian

    /// Opens `path`. A model split by llama.cpp's gguf-split (`split.count` > 1 in the first part,
    /// `NAME-00001-of-0000N.gguf`) is opened whole: every part is mapped into one contiguous address
    /// range, page-aligned, so `fileOffset` and the mapping work as for a single file.
    public init(path: String) throws(GGUFError) {
        self.path = path
        let first = try Self.map(path, at: nil)
        var parsed: Parsed
        var parser = Parser(path: path, bytes: UnsafeRawBufferPointer(start: first.base, count: first.size))
        do throws(GGUFError) {
            parsed = try parser.parse()
        } catch {
            munmap(UnsafeMutableRawPointer(mutating: first.base), first.size)
            throw error
        }
        var mapping = (base: first.base, size: first.size)
        var parts = [path]
        if let count = parsed.metadata["split.count"]?.int, count > 1 {
            munmap(UnsafeMutableRawPointer(mutating: first.base), first.size)
            (mapping, parsed, parts) = try Self.mapSplit(firstPart: path, count: count)
        }
        self.base = mapping.base
        self.fileSize = mapping.size
        self.partPaths = parts
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

    /// Maps a whole file read-only, at `address` (MAP_FIXED, inside a reservation) or anywhere.
    private static func map(_ path: String, at address: UnsafeMutableRawPointer?, size expected: Int? = nil)
        throws(GGUFError) -> (base: UnsafeRawPointer, size: Int) {
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
        if let expected, size != expected {
            throw GGUFError(file: path, problem: .badSplit("the part changed size while it was opened"))
        }
        let flags = address == nil ? MAP_PRIVATE : MAP_PRIVATE | MAP_FIXED
        guard let mapping = mmap(address, size, PROT_READ, flags, fd, 0), mapping != MAP_FAILED else {
            throw GGUFError(file: path, problem: .cannotOpen(reason: "mmap failed: \(String(cString: strerror(errno)))"))
        }
        return (UnsafeRawPointer(mapping), size)
    }

    /// `PREFIX-00001-of-0000N.gguf` → the N part paths, as llama.cpp's split naming writes them.
    public static func splitPartPaths(firstPart path: String, count: Int) -> [String]? {
        let suffix = "-00001-of-\(fiveDigits(count)).gguf"
        guard path.hasSuffix(suffix) else { return nil }
        let prefix = path.dropLast(suffix.count)
        return (1...count).map { prefix + "-\(fiveDigits($0))-of-\(fiveDigits(count)).gguf" }
    }

    private static func fiveDigits(_ n: Int) -> String {
        let digits = String(n)
        return String(repeating: "0", count: max(0, 5 - digits.count)) + digits
    }

    /// Maps every part of a split model into one reserved range and merges their tensors.
    private static func mapSplit(firstPart path: String, count: Int) throws(GGUFError)
        -> ((base: UnsafeRawPointer, size: Int), Parsed, [String]) {
        guard count <= 9999 else { throw GGUFError(file: path, problem: .badSplit("split.count \(count) is absurd")) }
        guard let paths = splitPartPaths(firstPart: path, count: count) else {
            throw GGUFError(file: path, problem: .badSplit(
                "split.count is \(count), so this must be the first part, named NAME-00001-of-\(fiveDigits(count)).gguf"))
        }
        var sizes: [Int] = []
        for part in paths {
            var info = stat()
            guard stat(part, &info) == 0 else {
                throw GGUFError(file: part, problem: .badSplit("part \(sizes.count + 1) of \(count) is missing: \(String(cString: strerror(errno)))"))
            }
            sizes.append(Int(info.st_size))
        }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        var starts: [Int] = []
        var end = 0
        for size in sizes {
            starts.append(end)
            end = (end + size + page - 1) / page * page
        }
        let total = starts.last! + sizes.last!
        guard let reservation = mmap(nil, total, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), reservation != MAP_FAILED else {
            throw GGUFError(file: path, problem: .cannotOpen(reason: "mmap failed: \(String(cString: strerror(errno)))"))
        }
        var merged = Parsed()
        do throws(GGUFError) {
            var names = Set<String>()
            for (k, part) in paths.enumerated() {
                let mapped = try map(part, at: reservation + starts[k], size: sizes[k])
                var parser = Parser(path: part, bytes: UnsafeRawBufferPointer(start: mapped.base, count: mapped.size))
                let parsed = try parser.parse()
                guard parsed.metadata["split.no"]?.int == k, parsed.metadata["split.count"]?.int == count else {
                    throw GGUFError(file: part, problem: .badSplit("split.no/split.count say it is not part \(k + 1) of \(count)"))
                }
                if k == 0 {
                    merged = parsed
                    merged.tensors = []
                }
                for tensor in parsed.tensors {
                    guard names.insert(tensor.name).inserted else {
                        throw GGUFError(file: part, tensor: tensor.name, problem: .duplicateTensor)
                    }
                    merged.tensors.append(TensorInfo(name: tensor.name, type: tensor.type, shape: tensor.shape,
                                                     fileOffset: tensor.fileOffset + starts[k], byteCount: tensor.byteCount))
                }
            }
            if let expected = merged.metadata["split.tensors.count"]?.int, expected != merged.tensors.count {
                throw GGUFError(file: path, problem: .badSplit("split.tensors.count is \(expected), the parts hold \(merged.tensors.count) tensors"))
            }
        } catch {
            munmap(reservation, total)
            throw error
        }
        return ((UnsafeRawPointer(reservation), total), merged, paths)
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
