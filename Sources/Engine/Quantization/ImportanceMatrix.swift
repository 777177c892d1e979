import Foundation
import GGUF

/// An importance matrix from llama.cpp's `llama-imatrix`: per weight tensor, the mean squared
/// activation each input column saw (one slice per expert for expert tensors). Reads both the
/// GGUF files llama-imatrix writes (`NAME.in_sum2` and `NAME.counts` tensors plus
/// `imatrix.datasets` / `imatrix.chunk_count` / `imatrix.chunk_size`) and the legacy `.dat`
/// files, normalized as llama-quantize does: GGUF sums divided by each expert's token count
/// (1 where it saw none), legacy values divided by their call count.
public struct ImportanceMatrix: Sendable {
    public let path: String
    /// Weights per tensor name, `columns × experts` floats.
    public let entries: [String: [Float]]
    public let datasets: [String]
    /// Chunks the matrix was computed on (0 when the file does not say).
    public let chunkCount: Int

    public struct ReadError: Error, CustomStringConvertible, Sendable {
        public let path: String
        public let problem: String
        public var description: String { "importance matrix '\(path)': \(problem)" }
    }

    public init(path: String) throws(ReadError) {
        func fail(_ problem: String) -> ReadError { ReadError(path: path, problem: problem) }
        guard let data = FileManager.default.contents(atPath: path) else { throw fail("cannot read the file") }
        self.path = path
        let isGGUF = data.count >= 4 && data.prefix(4).elementsEqual([0x47, 0x47, 0x55, 0x46])
        var entries: [String: [Float]] = [:]
        var datasets: [String] = []
        var chunks = 0
        if isGGUF {
            let file: GGUFFile
            do { file = try GGUFFile(path: path) } catch { throw fail("\(error)") }
            guard file["imatrix.datasets"] != nil, file["imatrix.chunk_count"] != nil, file["imatrix.chunk_size"] != nil else {
                throw fail("missing imatrix.datasets / imatrix.chunk_count / imatrix.chunk_size (not written by llama-imatrix?)")
            }
            datasets = file["imatrix.datasets"]?.stringArray ?? []
            chunks = file["imatrix.chunk_count"]?.int ?? 0
            var sums: [String: TensorInfo] = [:], counts: [String: TensorInfo] = [:]
            for t in file.tensors {
                if t.name.hasSuffix(".in_sum2") {
                    sums[String(t.name.dropLast(".in_sum2".count))] = t
                } else if t.name.hasSuffix(".counts") {
                    counts[String(t.name.dropLast(".counts".count))] = t
                }
            }
            guard !file.tensors.isEmpty else { throw fail("no tensors") }
            for name in Set(sums.keys).union(counts.keys) {
                guard let s = sums[name], let c = counts[name] else { throw fail("'\(name)' has sums without counts or counts without sums") }
                guard s.type == .f32, c.type == .f32 else { throw fail("'\(name)': sums and counts must be F32") }
                let n = s.elementCount, experts = c.elementCount
                guard experts > 0, n > 0, n % experts == 0 else {
                    throw fail("'\(name)': \(n) sums do not split into \(experts) expert slices")
                }
                let columns = n / experts
                let sum = file.data(for: s).assumingMemoryBound(to: Float.self)
                let count = file.data(for: c).assumingMemoryBound(to: Float.self)
                var values = [Float](repeating: 1, count: n)
                for e in 0..<experts {
                    let tokens = Float(Int64(count[e].rounded(.toNearestOrAwayFromZero)))
                    guard tokens > 0 else { continue }
                    for i in 0..<columns { values[e * columns + i] = sum[e * columns + i] / tokens }
                }
                entries[name] = values
            }
        } else {
            var offset = 0
            func read<T: FixedWidthInteger>(_: T.Type, _ what: String) throws(ReadError) -> T {
                guard offset + MemoryLayout<T>.size <= data.count else { throw fail("truncated in \(what) at byte \(offset)") }
                let v = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
                offset += MemoryLayout<T>.size
                return T(littleEndian: v)
            }
            let count = try read(Int32.self, "the entry count")
            guard count >= 1 else { throw fail("not a GGUF file and no entries in legacy format (count \(count))") }
            for i in 0..<Int(count) {
                let length = Int(try read(Int32.self, "the name length of entry \(i + 1)"))
                guard length > 0, offset + length <= data.count else { throw fail("bad name length \(length) for entry \(i + 1)") }
                let name = String(decoding: data[data.startIndex + offset..<data.startIndex + offset + length], as: UTF8.self)
                offset += length
                let calls = try read(Int32.self, "the call count of '\(name)'")
                let values = Int(try read(Int32.self, "the value count of '\(name)'"))
                guard values >= 1, offset + 4 * values <= data.count else {
                    throw fail("bad value count \(values) for '\(name)' (or the file is truncated)")
                }
                var v = [Float](repeating: 0, count: values)
                data.withUnsafeBytes { raw in
                    for j in 0..<values {
                        v[j] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4 * j, as: UInt32.self)))
                    }
                }
                offset += 4 * values
                if calls > 0 { for j in 0..<values { v[j] /= Float(calls) } }
                entries[name] = v
            }
            // optional trailer: chunk count and the dataset's name
            if offset + 4 <= data.count {
                chunks = Int(try read(Int32.self, "the chunk count"))
                if offset + 4 <= data.count {
                    let length = Int(try read(Int32.self, "the dataset name length"))
                    if length > 0 && offset + length <= data.count {
                        datasets = [String(decoding: data[data.startIndex + offset..<data.startIndex + offset + length], as: UTF8.self)]
                    }
                }
            }
        }
        for (name, values) in entries where !values.allSatisfy(\.isFinite) {
            throw fail("'\(name)' holds a non-finite value")
        }
        self.entries = entries
        self.datasets = datasets
        self.chunkCount = chunks
    }
}
