/// The ggml tensor element types a GGUF file can hold, with their on-disk block layout.
/// Raw values are the ids written in the file (ggml's `enum ggml_type`).
public enum TensorType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q8_1 = 9
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case q8_K = 15
    case iq2_XXS = 16
    case iq2_XS = 17
    case iq3_XXS = 18
    case iq1_S = 19
    case iq4_NL = 20
    case iq3_S = 21
    case iq2_S = 22
    case iq4_XS = 23
    case i8 = 24
    case i16 = 25
    case i32 = 26
    case i64 = 27
    case f64 = 28
    case iq1_M = 29
    case bf16 = 30
    case tq1_0 = 34
    case tq2_0 = 35
    case mxfp4 = 39
    case nvfp4 = 40
    case q1_0 = 41

    /// Elements per block: quantized formats store weights in fixed-size blocks along a row.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .i8, .i16, .i32, .i64, .f64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_NL, .mxfp4: return 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q8_K, .iq2_XXS, .iq2_XS, .iq2_S, .iq3_XXS, .iq3_S, .iq1_S, .iq1_M,
             .iq4_XS, .tq1_0, .tq2_0: return 256
        case .nvfp4: return 64
        case .q1_0: return 128
        }
    }

    /// Bytes per block.
    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .i8: return 1
        case .i16: return 2
        case .i32: return 4
        case .i64, .f64: return 8
        case .q4_0: return 2 + 16
        case .q4_1: return 2 + 2 + 16
        case .q5_0: return 2 + 4 + 16
        case .q5_1: return 2 + 2 + 4 + 16
        case .q8_0: return 2 + 32
        case .q8_1: return 2 + 2 + 32
        case .q2_K: return 16 + 64 + 2 + 2
        case .q3_K: return 32 + 64 + 12 + 2
        case .q4_K: return 2 + 2 + 12 + 128
        case .q5_K: return 2 + 2 + 12 + 32 + 128
        case .q6_K: return 128 + 64 + 16 + 2
        case .q8_K: return 4 + 256 + 32
        // ggml's block layouts (gguf-py's GGML_QUANT_SIZES)
        case .iq2_XXS: return 66
        case .iq2_XS: return 74
        case .iq2_S: return 82
        case .iq3_XXS: return 98
        case .iq3_S: return 110
        case .iq1_S: return 50
        case .iq1_M: return 56
        case .iq4_NL: return 18
        case .iq4_XS: return 136
        case .tq1_0: return 54
        case .tq2_0: return 66
        case .mxfp4: return 17
        case .nvfp4: return 36
        case .q1_0: return 18
        }
    }

    public var isQuantized: Bool { blockSize > 1 }

    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q8_1: "Q8_1"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        case .q8_K: "Q8_K"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        case .f64: "F64"
        case .iq2_XXS: "IQ2_XXS"
        case .iq2_XS: "IQ2_XS"
        case .iq2_S: "IQ2_S"
        case .iq3_XXS: "IQ3_XXS"
        case .iq3_S: "IQ3_S"
        case .iq1_S: "IQ1_S"
        case .iq1_M: "IQ1_M"
        case .iq4_NL: "IQ4_NL"
        case .iq4_XS: "IQ4_XS"
        case .tq1_0: "TQ1_0"
        case .tq2_0: "TQ2_0"
        case .mxfp4: "MXFP4"
        case .nvfp4: "NVFP4"
        case .q1_0: "Q1_0"
        }
    }

    public init?(name: String) {
        guard let match = TensorType.allCases.first(where: { $0.description.lowercased() == name.lowercased() }) else {
            return nil
        }
        self = match
    }

    /// Bytes taken by `count` elements, or nil when `count` is not a whole number of blocks
    /// or the product overflows.
    public func byteCount(elements count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: blockBytes)
        return overflow ? nil : bytes
    }
}
