import Foundation
import GGUF
import Testing
import Kernels

/// Raw blocks and the floats the reference decoder (`gguf.quants.dequantize`) produced,
/// written by scripts/gen_kernel_fixtures.py.
struct QuantFixture {
    let type: TensorType
    let raw: [UInt8]
    let expected: [Float]

    init(_ type: TensorType) throws {
        self.type = type
        let name = type.description.lowercased()
        guard let dir = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
            throw CocoaError(.fileNoSuchFile)
        }
        raw = [UInt8](try Data(contentsOf: dir.appendingPathComponent("\(name).bin")))
        let f = try Data(contentsOf: dir.appendingPathComponent("\(name).f32"))
        expected = f.withUnsafeBytes { buf in
            (0..<f.count / 4).map { Float(bitPattern: UInt32(littleEndian: buf.loadUnaligned(fromByteOffset: 4 * $0, as: UInt32.self))) }
        }
    }

    var count: Int { expected.count }
}

@Suite struct DequantizeTests {
    @Test(arguments: supportedWeightTypes)
    func matchesReferenceBitwise(_ type: TensorType) throws {
        let fx = try QuantFixture(type)
        #expect(type.byteCount(elements: fx.count) == fx.raw.count)
        var out = [Float](repeating: .nan, count: fx.count)
        fx.raw.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                dequantizeRow(type, src.baseAddress!, into: dst.baseAddress!, count: fx.count)
            }
        }
        var mismatches = 0
        for i in 0..<fx.count where out[i].bitPattern != fx.expected[i].bitPattern {
            if mismatches < 5 { Issue.record("\(type)[\(i)]: got \(out[i]), expected \(fx.expected[i])") }
            mismatches += 1
        }
        #expect(mismatches == 0, "\(type): \(mismatches) of \(fx.count) differ")
    }

    @Test(arguments: supportedWeightTypes)
    func rowByRowEqualsWhole(_ type: TensorType) throws {
        // decoding one block at a time (a row offset) gives the same floats
        let fx = try QuantFixture(type)
        let bs = type.blockSize, bb = type.blockBytes
        var out = [Float](repeating: .nan, count: fx.count)
        fx.raw.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                for b in 0..<fx.count / bs {
                    dequantizeRow(type, src.baseAddress! + b * bb, into: dst.baseAddress! + b * bs, count: bs)
                }
            }
        }
        #expect(out.map(\.bitPattern) == fx.expected.map(\.bitPattern))
    }
}
