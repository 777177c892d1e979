import Foundation

/// Per-code-point classification used by the pre-tokenizers: the general-category group
/// (what a regex's `\p{L}`, `\p{N}`, ... would test) plus Unicode's White_Space property.
struct CodepointFlags: OptionSet, Sendable {
    let rawValue: UInt16

    static let undefined = CodepointFlags(rawValue: 1 << 0)     // Cn (unassigned)
    static let number = CodepointFlags(rawValue: 1 << 1)        // \p{N}
    static let letter = CodepointFlags(rawValue: 1 << 2)        // \p{L}
    static let separator = CodepointFlags(rawValue: 1 << 3)     // \p{Z}
    static let mark = CodepointFlags(rawValue: 1 << 4)          // \p{M}
    static let punctuation = CodepointFlags(rawValue: 1 << 5)   // \p{P}
    static let symbol = CodepointFlags(rawValue: 1 << 6)        // \p{S}
    static let control = CodepointFlags(rawValue: 1 << 7)       // \p{C} except Cn
    static let whitespace = CodepointFlags(rawValue: 1 << 8)    // \s (White_Space)

    @inline(__always) var isLetter: Bool { contains(.letter) }
    @inline(__always) var isNumber: Bool { contains(.number) }
    @inline(__always) var isWhitespace: Bool { contains(.whitespace) }
    @inline(__always) var isPunctuation: Bool { contains(.punctuation) }
    @inline(__always) var isMark: Bool { contains(.mark) }
    @inline(__always) var isSymbol: Bool { contains(.symbol) }
    @inline(__always) var isControl: Bool { contains(.control) }
    /// False only for the "outside the segment" sentinel (every real code point has a category).
    @inline(__always) var isSome: Bool { rawValue != 0 }

    /// Flags of one code point. The Basic Multilingual Plane comes from a table built once;
    /// the rest is computed from the standard library's Unicode data.
    @inline(__always)
    static func of(_ cp: UInt32) -> CodepointFlags {
        if cp < 0x10000 { return CodepointFlags(rawValue: bmpTable[Int(cp)]) }
        return compute(cp)
    }

    /// The Unicode version of llama.cpp's character tables, which token ids must agree with.
    static let unicodeVersion = (15, 1)

    static func compute(_ cp: UInt32) -> CodepointFlags {
        guard let scalar = Unicode.Scalar(cp) else {
            // Surrogate code points cannot occur in a Swift string; classify like Cs.
            return cp <= 0x10FFFF ? .control : .undefined
        }
        let props = scalar.properties
        var flags: CodepointFlags
        // llama.cpp's tables are Unicode 15.1; characters assigned later are unassigned there.
        let assignedSince = props.age.map { ($0.major, $0.minor) } ?? (Int.max, 0)
        let category = assignedSince <= unicodeVersion ? props.generalCategory : .unassigned
        switch category {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            flags = .letter
        case .decimalNumber, .letterNumber, .otherNumber:
            flags = .number
        case .spaceSeparator, .lineSeparator, .paragraphSeparator:
            flags = .separator
        case .nonspacingMark, .spacingMark, .enclosingMark:
            flags = .mark
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            flags = .punctuation
        case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            flags = .symbol
        case .control, .format, .surrogate, .privateUse:
            flags = .control
        case .unassigned:
            flags = .undefined
        @unknown default:
            flags = .undefined
        }
        if props.isWhitespace { flags.insert(.whitespace) }
        return flags
    }

    static let bmpTable: [UInt16] = {
        var table = [UInt16](repeating: 0, count: 0x10000)
        for cp in 0..<0x10000 { table[cp] = compute(UInt32(cp)).rawValue }
        return table
    }()
}

/// The code-point mappings of llama.cpp's Unicode tables that BERT's normalizer applies, each
/// one code point to one code point, limited like `CodepointFlags` to the characters of
/// llama.cpp's Unicode version. The Basic Multilingual Plane is tabulated once on first use.
enum CodepointMapping {
    /// The simple lowercase mapping (UnicodeData.txt), as llama.cpp's `unicode_tolower`.
    @inline(__always)
    static func lowercase(_ cp: UInt32) -> UInt32 {
        if cp < 0x80 { return (0x41...0x5A).contains(cp) ? cp + 0x20 : cp }
        return cp < 0x10000 ? bmpLowercase[Int(cp)] : computeLowercase(cp)
    }

    /// The first code point of the canonical decomposition (NFD), which is what llama.cpp's
    /// `unicode_cpts_normalize_nfd` keeps of each code point: "é" becomes "e", its accent gone.
    @inline(__always)
    static func decompositionBase(_ cp: UInt32) -> UInt32 {
        if cp < 0xC0 { return cp }  // nothing below À decomposes
        return cp < 0x10000 ? bmpDecompositionBase[Int(cp)] : computeDecompositionBase(cp)
    }

    /// The scalar, if it is assigned in llama.cpp's Unicode version (later characters have no
    /// mappings there).
    private static func knownScalar(_ cp: UInt32) -> Unicode.Scalar? {
        guard let scalar = Unicode.Scalar(cp), let age = scalar.properties.age,
              (age.major, age.minor) <= CodepointFlags.unicodeVersion else { return nil }
        return scalar
    }

    static func computeLowercase(_ cp: UInt32) -> UInt32 {
        // The full mapping's first scalar is the simple mapping (İ: full "i̇", simple "i").
        knownScalar(cp)?.properties.lowercaseMapping.unicodeScalars.first?.value ?? cp
    }

    static func computeDecompositionBase(_ cp: UInt32) -> UInt32 {
        guard let scalar = knownScalar(cp) else { return cp }
        return String(scalar).decomposedStringWithCanonicalMapping.unicodeScalars.first?.value ?? cp
    }

    private static let bmpLowercase: [UInt32] = (0..<0x10000).map { computeLowercase(UInt32($0)) }
    private static let bmpDecompositionBase: [UInt32] = (0..<0x10000).map { computeDecompositionBase(UInt32($0)) }
}
