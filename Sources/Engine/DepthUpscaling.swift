import Foundation
import GGUF

/// Depth up-scaling (SOLAR's DUS): a model whose blocks are chosen ranges of another's, in
/// order — e.g. blocks 0..<24 then 8..<32 of a 32-block model make a 48-block one. The blocks'
/// tensors are copied unchanged and renamed `blk.N.*` in their new order; `ARCH.block_count`
/// and every per-layer metadata array (`ARCH.*` with one entry per block) are rewritten to
/// match. The result is meant to be fine-tuned further, but it runs as it is.
public enum DepthUpscaling {
    /// Ranges as written on the command line: `A:B,C:D` (blocks A..<B, then C..<D).
    public static func parseRanges(_ text: String) throws(UpscaleError) -> [Range<Int>] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        return try parts.map { part throws(UpscaleError) -> Range<Int> in
            let bounds = part.split(separator: ":", omittingEmptySubsequences: false)
            guard bounds.count == 2, let lower = Int(bounds[0].trimmingCharacters(in: .whitespaces)),
                  let upper = Int(bounds[1].trimmingCharacters(in: .whitespaces)) else {
                throw .badRange(String(part), reason: "expected START:END, block numbers with END excluded (e.g. 0:24)")
            }
            guard lower >= 0, lower < upper else {
                throw .badRange(String(part), reason: "START must be at least 0 and less than END")
            }
            return lower..<upper
        }
    }

    /// What was written: the block count and, per new block, the block it came from.
    public struct Summary: Sendable {
        public var sourceBlocks: Int
        public var blockSources: [Int]
        public var tensors: Int
    }

    public static func upscale(input: String, output: String, ranges: [Range<Int>]) throws -> Summary {
        let file = try GGUFFile(path: input)
        guard let arch = file.architecture else { throw UpscaleError.notAModel("general.architecture is missing") }
        guard let blocks = file.arch("block_count")?.int, blocks > 0 else {
            throw UpscaleError.notAModel("\(arch).block_count is missing")
        }
        // multi-token-prediction blocks sit after the others and would need their own renumbering
        if let extra = file.arch("nextn_predict_layers")?.int, extra > 0 {
            throw UpscaleError.unsupported("\(arch).nextn_predict_layers is \(extra): models with prediction layers cannot be up-scaled")
        }
        guard !ranges.isEmpty else { throw UpscaleError.badRange("", reason: "no ranges given") }
        for r in ranges where r.upperBound > blocks {
            throw UpscaleError.badRange("\(r.lowerBound):\(r.upperBound)", reason: "the model has \(blocks) blocks (0:\(blocks))")
        }
        let sources = ranges.flatMap { Array($0) }

        var writer = GGUFWriter()
        for key in file.metadataKeys where !key.hasPrefix("split.") {
            guard var value = file.metadata[key] else { continue }
            if key == "\(arch).block_count" {
                value = .uint32(UInt32(sources.count))
            } else if key.hasPrefix(arch + "."), case .array(let type, let values) = value, values.count == blocks {
                value = .array(type, sources.map { values[$0] })
            }
            writer.set(key, value)
        }

        // blocks' tensors by block, in file order; the others stay where the blocks start
        var byBlock = [[(TensorInfo, String)]](repeating: [], count: blocks)
        var others: [TensorInfo] = [], firstBlockIndex: Int?
        for tensor in file.tensors {
            if let (block, rest) = blockTensor(tensor.name) {
                guard block < blocks else {
                    throw UpscaleError.unsupported("tensor '\(tensor.name)' belongs to no block of the \(blocks)")
                }
                byBlock[block].append((tensor, rest))
                if firstBlockIndex == nil { firstBlockIndex = others.count }
            } else {
                others.append(tensor)
            }
        }
        var planned: [(name: String, type: TensorType, shape: [Int], bytes: UnsafeRawBufferPointer)] = []
        func add(_ t: TensorInfo, as name: String) { planned.append((name, t.type, t.shape, file.bytes(for: t))) }
        let split = firstBlockIndex ?? others.count
        for t in others[..<split] { add(t, as: t.name) }
        for (index, source) in sources.enumerated() {
            for (t, rest) in byBlock[source] { add(t, as: "blk.\(index).\(rest)") }
        }
        for t in others[split...] { add(t, as: t.name) }
        try writer.write(to: output, tensors: planned)
        return Summary(sourceBlocks: blocks, blockSources: sources, tensors: planned.count)
    }

    /// `blk.N.REST` → (N, REST).
    static func blockTensor(_ name: String) -> (Int, String)? {
        guard name.hasPrefix("blk.") else { return nil }
        let rest = name.dropFirst(4)
        guard let dot = rest.firstIndex(of: "."), let block = Int(rest[..<dot]) else { return nil }
        return (block, String(rest[rest.index(after: dot)...]))
    }
}

public enum UpscaleError: Error, CustomStringConvertible, Equatable {
    case badRange(String, reason: String)
    case notAModel(String)
    case unsupported(String)

    public var description: String {
        switch self {
        case .badRange(let text, let reason): "bad layer range '\(text)': \(reason)"
        case .notAModel(let m): "the input is not a model: \(m)"
        case .unsupported(let m): m
        }
    }
}
