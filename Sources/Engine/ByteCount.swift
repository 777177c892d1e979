/// Sizes written on the command line (`--mem-budget`, `--kv-cache`): a decimal number, then
/// optionally a unit, case-insensitive, with or without a space between them.
///
/// - no unit, or `B`: bytes
/// - SI units, powers of 1000: `K`/`KB` = 10^3, `M`/`MB` = 10^6, `G`/`GB` = 10^9, `T`/`TB` = 10^12
/// - IEC units, powers of 1024: `KiB` = 2^10, `MiB` = 2^20, `GiB` = 2^30, `TiB` = 2^40
///
/// Fractions are allowed (`1.5GiB` = 1610612736); the product is computed exactly and a
/// fraction of a byte is dropped. Signs, exponents and other units are errors.
public enum ByteCount {
    /// Text that is not a size (or a count), naming the option it was given to.
    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public enum Kind: Sendable, Equatable {
            /// No number, or a unit not in the list.
            case malformed
            /// More than `Int.max`.
            case tooLarge
            /// Read, but the option does not accept the value.
            case outOfRange
        }

        public var kind: Kind
        public var option: String
        public var text: String
        public var reason: String

        public init(_ kind: Kind, option: String, text: String, reason: String) {
            self.kind = kind
            self.option = option
            self.text = text
            self.reason = reason
        }

        public var description: String { "\(option): cannot read '\(text)': \(reason)" }
    }

    /// Lower-case unit → bytes.
    public static let units: [String: Int] = [
        "": 1, "b": 1,
        "k": 1_000, "kb": 1_000, "m": 1_000_000, "mb": 1_000_000,
        "g": 1_000_000_000, "gb": 1_000_000_000, "t": 1_000_000_000_000, "tb": 1_000_000_000_000,
        "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
    ]

    static let hint = "expected a size such as 4096, 512MB or 1.5GiB (K, M, G, T are powers of 1000; KiB, MiB, GiB, TiB powers of 1024)"

    /// Bytes in `text`; `option` (e.g. `--mem-budget`) names the flag in the error.
    public static func parse(_ text: String, option: String) throws -> Int {
        try parse(text, units: units, option: option, hint: hint)
    }

    /// `text` as a decimal number times the multiplier of its unit (a key of `units`, which
    /// must be lower-case; spaces inside the unit are ignored), rounded down; `hint` says
    /// what was expected when the text has no number or an unknown unit.
    public static func parse(_ text: String, units: [String: Int], option: String, hint: String) throws -> Int {
        func fail(_ reason: String) -> ParseError { ParseError(.malformed, option: option, text: text, reason: reason) }
        let bytes = Array(text.utf8)
        let isDigit = { (b: UInt8) in b >= 0x30 && b <= 0x39 }
        let isSpace = { (b: UInt8) in b == 0x20 || b == 0x09 }
        var i = 0
        while i < bytes.count, isSpace(bytes[i]) { i += 1 }
        let integerStart = i
        while i < bytes.count, isDigit(bytes[i]) { i += 1 }
        let integerDigits = bytes[integerStart..<i]
        var fractionDigits: ArraySlice<UInt8> = []
        if i < bytes.count, bytes[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            while i < bytes.count, isDigit(bytes[i]) { i += 1 }
            fractionDigits = bytes[start..<i]
            guard !fractionDigits.isEmpty else { throw fail(hint) }
        }
        guard !integerDigits.isEmpty else { throw fail(hint) }
        let unit = String(decoding: bytes[i...].filter { !isSpace($0) }, as: UTF8.self).lowercased()
        guard let multiplier = units[unit] else {
            throw fail(unit.allSatisfy { $0.isLetter } ? "unknown unit '\(unit)'; \(hint)" : hint)
        }

        let tooLarge = ParseError(.tooLarge, option: option, text: text, reason: "larger than \(Int.max)")
        var whole = 0
        for d in integerDigits {
            let (times10, o1) = whole.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(Int(d - 0x30))
            guard !o1, !o2 else { throw tooLarge }
            whole = sum
        }
        let (product, overflow) = whole.multipliedReportingOverflow(by: multiplier)
        guard !overflow else { throw tooLarge }
        // digits past the 18th change the result by far less than a byte
        var numerator = 0, denominator = 1
        for d in fractionDigits.prefix(18) {
            numerator = numerator * 10 + Int(d - 0x30)
            denominator *= 10
        }
        // numerator × multiplier / denominator < multiplier, so only the intermediate needs full width
        let wide = numerator.multipliedFullWidth(by: multiplier)
        let fraction = denominator.dividingFullWidth(wide).quotient
        let (total, o3) = product.addingReportingOverflow(fraction)
        guard !o3 else { throw tooLarge }
        return total
    }
}
