import Foundation
import Testing
@testable import GGUF
import TestSupport

/// Writes `bytes` to a fresh temporary file and returns its path.
func temporaryFile(_ bytes: [UInt8], name: String = "test.gguf") throws -> String {
    let dir = try TestSupport.scratchDirectory("gguf")
    let url = dir.appendingPathComponent(name)
    try Data(bytes).write(to: url)
    return url.path
}

func sampleWriter() -> GGUFWriter {
    var w = GGUFWriter()
    w.set("general.architecture", .string("llama"))
    w.set("general.name", .string("tiny"))
    w.set("llama.block_count", .uint32(2))
    w.set("test.float", .float32(0.5))
    w.set("test.double", .float64(-2.25))
    w.set("test.bool", .bool(true))
    w.set("test.i8", .int8(-3))
    w.set("test.u16", .uint16(65535))
    w.set("test.i64", .int64(-1 << 40))
    w.set("test.strings", .array(.string, [.string("a"), .string("béta"), .string("")]))
    w.set("test.nested", .array(.array, [.array(.int32, [.int32(1), .int32(2)]), .array(.int32, [])]))
    w.addTensor(name: "a", shape: [4, 2], floats: (0..<8).map(Float.init))
    w.addTensor(name: "b", type: .q8_0, shape: [32], data: [UInt8](repeating: 1, count: 34))
    return w
}

func expectProblem(_ bytes: [UInt8], _ matches: (GGUFError.Problem) -> Bool, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let path = try temporaryFile(bytes)
    do {
        _ = try GGUFFile(path: path)
        Issue.record("expected an error for \(bytes.count) bytes", sourceLocation: sourceLocation)
    } catch {
        #expect(matches(error.problem), "unexpected problem: \(error)", sourceLocation: sourceLocation)
        #expect(error.description.contains(path), sourceLocation: sourceLocation)
    }
}

/// Byte offset just past the header and metadata of `sampleWriter()`'s file, i.e. the first tensor info.
func firstTensorInfoOffset(_ bytes: [UInt8]) throws -> Int {
    var parser = Parser(path: "x", bytes: UnsafeRawBufferPointer(start: bytes, count: bytes.count))
    _ = try parser.read(UInt32.self)
    _ = try parser.read(UInt32.self)
    _ = try parser.read(UInt64.self)
    let kv = try parser.read(UInt64.self)
    for _ in 0..<kv {
        _ = try parser.readString()
        let t = MetadataValueType(rawValue: try parser.read(UInt32.self))!
        _ = try parser.readValue(t)
    }
    return parser.position
}

func patch<T: FixedWidthInteger>(_ bytes: inout [UInt8], at offset: Int, _ value: T) {
    withUnsafeBytes(of: value.littleEndian) { for (i, b) in $0.enumerated() { bytes[offset + i] = b } }
}

@Suite struct GGUFReaderTests {
    @Test func roundTripsEveryValueType() throws {
        let path = try temporaryFile(sampleWriter().serialized())
        let f = try GGUFFile(path: path)
        #expect(f.version == 3)
        #expect(f.architecture == "llama")
        #expect(f.arch("block_count")?.int == 2)
        #expect(f["test.float"] == .float32(0.5))
        #expect(f["test.double"]?.double == -2.25)
        #expect(f["test.bool"]?.bool == true)
        #expect(f["test.i8"]?.int == -3)
        #expect(f["test.u16"]?.int == 65535)
        #expect(f["test.i64"]?.int == -(1 << 40))
        #expect(f["test.strings"]?.stringArray == ["a", "béta", ""])
        #expect(f["test.nested"] == .array(.array, [.array(.int32, [.int32(1), .int32(2)]), .array(.int32, [])]))
        #expect(f.metadataKeys.first == "general.architecture")
        let a = try #require(f.tensor(named: "a"))
        #expect(a.shape == [4, 2] && a.type == .f32 && a.byteCount == 32)
        #expect(a.fileOffset % 32 == 0)
        let floats = f.bytes(for: a).withMemoryRebound(to: Float.self) { Array($0) }
        #expect(floats == (0..<8).map(Float.init))
        let b = try #require(f.tensor(named: "b"))
        #expect(b.type == .q8_0 && b.byteCount == 34 && b.fileOffset == a.fileOffset + 32)
    }

    @Test func readsFilesWrittenByPythonGGUF() throws {
        // Written by the `gguf` package (scripts/test installs it); the reverse direction is
        // CommandLineTests.writerOutputIsReadByThePythonGGUFPackage.
        let dir = try TestSupport.scratchDirectory("py")
        let path = dir.appendingPathComponent("py.gguf").path
        let script = """
        import gguf, numpy as np, sys
        w = gguf.GGUFWriter(sys.argv[1], "llama")
        w.add_uint32("llama.block_count", 3)
        w.add_array("test.list", ["x", "yz"])
        w.add_tensor("t", np.arange(64, dtype=np.float32).reshape(2, 32))
        w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
        """
        try TestSupport.python(["-c", script, path])
        let f = try GGUFFile(path: path)
        #expect(f.arch("block_count")?.int == 3)
        #expect(f["test.list"]?.stringArray == ["x", "yz"])
        let t = try #require(f.tensor(named: "t"))
        #expect(t.shape == [32, 2])
        #expect(f.bytes(for: t).withMemoryRebound(to: Float.self) { Array($0) } == (0..<64).map(Float.init))
    }

    @Test func rejectsWrongMagic() throws {
        var bytes = sampleWriter().serialized()
        bytes[0] = UInt8(ascii: "X")
        try expectProblem(bytes) { if case .badMagic = $0 { true } else { false } }
    }

    @Test func rejectsUnsupportedVersion() throws {
        var bytes = sampleWriter().serialized()
        patch(&bytes, at: 4, UInt32(1))
        try expectProblem(bytes) { $0 == .unsupportedVersion(1) }
        patch(&bytes, at: 4, UInt32(99))
        try expectProblem(bytes) { $0 == .unsupportedVersion(99) }
        patch(&bytes, at: 4, UInt32(3).byteSwapped)
        try expectProblem(bytes) { $0 == .bigEndian }
    }

    @Test func rejectsEveryTruncation() throws {
        let bytes = sampleWriter().serialized()
        let infoEnd = try firstTensorInfoOffset(bytes)
        // Cut inside the header, the metadata and the tensor infos: always a truncation error.
        for cut in stride(from: 1, to: infoEnd, by: 7) {
            try expectProblem(Array(bytes[..<cut])) {
                if case .truncated = $0 { return true }
                if case .absurdCount = $0 { return true }  // counts checked against what is left
                return false
            }
        }
        // Cut inside the last tensor's data (the file ends with up to 31 bytes of padding).
        try expectProblem(Array(bytes[..<(bytes.count - 40)])) { if case .outOfBounds = $0 { true } else { false } }
    }

    @Test func rejectsEmptyFileAndDirectory() throws {
        try expectProblem([]) { if case .truncated = $0 { true } else { false } }
        #expect(throws: GGUFError.self) { try GGUFFile(path: FileManager.default.temporaryDirectory.path) }
        #expect(throws: GGUFError.self) { try GGUFFile(path: "/nonexistent/model.gguf") }
    }

    @Test func rejectsAbsurdCounts() throws {
        var bytes = sampleWriter().serialized()
        patch(&bytes, at: 8, UInt64.max)
        try expectProblem(bytes) { if case .absurdCount(what: "tensor count", _) = $0 { true } else { false } }
        bytes = sampleWriter().serialized()
        patch(&bytes, at: 16, UInt64(1) << 60)
        try expectProblem(bytes) { if case .absurdCount = $0 { true } else { false } }
    }

    @Test func rejectsHugeStringLength() throws {
        var bytes = sampleWriter().serialized()
        patch(&bytes, at: 24, UInt64.max - 3)  // length of the first key
        try expectProblem(bytes) { if case .truncated = $0 { true } else { false } }
    }

    @Test func rejectsHugeArrayLength() throws {
        var w = GGUFWriter()
        w.set("x", .array(.uint32, [.uint32(1)]))
        var bytes = w.serialized()
        // header(24) + key(8+1) + type(4) + element type(4) → count
        patch(&bytes, at: 24 + 9 + 4 + 4, UInt64(1) << 61)
        try expectProblem(bytes) { if case .absurdCount(what: "array length", _) = $0 { true } else { false } }
    }

    @Test func rejectsUnknownValueType() throws {
        var w = GGUFWriter()
        w.set("x", .uint32(1))
        var bytes = w.serialized()
        patch(&bytes, at: 24 + 9, UInt32(77))
        try expectProblem(bytes) { $0 == .unknownValueType(77) }
    }

    /// Offsets of the fields of tensor "a" (the first tensor info).
    func tensorFields(_ bytes: [UInt8]) throws -> (dims: Int, shape: Int, type: Int, offset: Int) {
        let info = try firstTensorInfoOffset(bytes)
        let dims = info + 8 + 1  // name "a"
        return (dims, dims + 4, dims + 4 + 16, dims + 4 + 16 + 4)
    }

    @Test func rejectsUnknownTensorType() throws {
        var bytes = sampleWriter().serialized()
        patch(&bytes, at: try tensorFields(bytes).type, UInt32(1234))
        try expectProblem(bytes) { $0 == .unknownTensorType(1234) }
    }

    @Test func rejectsTooManyDimensions() throws {
        var bytes = sampleWriter().serialized()
        patch(&bytes, at: try tensorFields(bytes).dims, UInt32(9))
        try expectProblem(bytes) { $0 == .tooManyDimensions(9) }
    }

    @Test func rejectsShapeOverflow() throws {
        var bytes = sampleWriter().serialized()
        let f = try tensorFields(bytes)
        patch(&bytes, at: f.shape, UInt64(1) << 40)
        patch(&bytes, at: f.shape + 8, UInt64(1) << 40)
        try expectProblem(bytes) { $0 == .shapeOverflow }
    }

    @Test func rejectsRowNotWholeBlocks() throws {
        var bytes = sampleWriter().serialized()
        let f = try tensorFields(bytes)
        patch(&bytes, at: f.type, TensorType.q4_0.rawValue)  // 4 is not a multiple of 32
        try expectProblem(bytes) { $0 == .rowNotWholeBlocks(rowLength: 4, blockSize: 32) }
    }

    @Test func rejectsMisalignedOffset() throws {
        var bytes = sampleWriter().serialized()
        patch(&bytes, at: try tensorFields(bytes).offset, UInt64(4))
        try expectProblem(bytes) { $0 == .misalignedOffset(offset: 4, alignment: 32) }
    }

    @Test func rejectsOutOfBoundsTensor() throws {
        var bytes = sampleWriter().serialized()
        patch(&bytes, at: try tensorFields(bytes).offset, UInt64(1) << 40)
        try expectProblem(bytes) { if case .outOfBounds = $0 { true } else { false } }
        patch(&bytes, at: try tensorFields(bytes).offset, UInt64.max - 31)  // offset + size overflows
        try expectProblem(bytes) { if case .outOfBounds = $0 { true } else { false } }
    }

    @Test func rejectsOverlappingTensors() throws {
        var bytes = sampleWriter().serialized()
        let info = try firstTensorInfoOffset(bytes)
        // Second tensor "b": after a's info (8+1 name, 4 dims, 16 shape, 4 type, 8 offset).
        let bOffset = info + 41 + 8 + 1 + 4 + 8 + 4
        patch(&bytes, at: bOffset, UInt64(0))  // b starts where a starts
        try expectProblem(bytes) { $0 == .overlaps(other: "a") || $0 == .overlaps(other: "b") }
    }

    @Test func rejectsBadAlignment() throws {
        var w = sampleWriter()
        w.set("general.alignment", .uint32(24))
        try expectProblem(w.serialized()) { $0 == .badAlignment(24) }
    }

    @Test func errorsNameTheTensor() throws {
        var bytes = sampleWriter().serialized()
        patch(&bytes, at: try tensorFields(bytes).type, UInt32(1234))
        let path = try temporaryFile(bytes)
        #expect {
            try GGUFFile(path: path)
        } throws: { error in
            let e = error as! GGUFError
            return e.tensor == "a" && e.offset != nil && e.description.contains("tensor 'a'")
        }
    }

    @Test func opensBothRealModelsWithoutCopying() throws {
        let before = residentBytes()
        let smol = try GGUFFile(path: TestSupport.smolLM2Path)
        let gemma = try GGUFFile(path: TestSupport.gemma3Path)
        let after = residentBytes()
        #expect(smol.architecture == "llama")
        #expect(smol.tensors.count == 272)
        #expect(smol.arch("embedding_length")?.int == 576)
        #expect(gemma.architecture == "gemma3")
        #expect(gemma.tensors.count == 236)
        #expect(gemma["tokenizer.ggml.tokens"]?.array?.count == 262_144)
        // Both files are ~350 MB together; opening them must not read the tensor data in.
        #expect(after - before < 80 << 20, "resident memory grew by \(after - before) bytes")
        let embd = try #require(smol.tensor(named: "token_embd.weight"))
        #expect(embd.type == .q8_0 && embd.shape == [576, 49152])
    }
}

/// Current resident set size from /proc (Linux) — 0 where unavailable.
func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kb = line.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        return kb * 1024
    }
    return 0
}
