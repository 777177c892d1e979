/// Byte-level pushdown recognizer for `JSONGrammar`.
///
/// The stack holds small fixed-size frames (root, object, array, key, string, number,
/// literal). `step(_:)` consumes one byte and returns false (leaving the state unspecified;
/// callers snapshot first) when the byte cannot continue a document the grammar accepts.
/// The design guarantees there are no dead ends: every state reached by accepted bytes has an
/// accepted continuation (or is complete).
struct JSONRecognizer: Sendable {
    struct Frame: Hashable, Sendable {
        var node: Int32
        var kind: UInt8
        var phase: UInt8 = 0
        /// String lexer: continuation bytes / hex digits still expected.
        var sub: UInt8 = 0
        /// String lexer: constraint on the next byte (see `lex`).
        var flags: UInt8 = 0
        /// Object: selected property; array: items started; string: scalars (when bounded);
        /// key/literal/name: bytes matched; number: length.
        var count: UInt32 = 0
        /// Object: properties seen; key: candidate names; literal: candidate options; name:
        /// candidate names, then candidate separators.
        var mask: UInt64 = 0
    }

    // Frame kinds.
    static let kRoot: UInt8 = 0, kObject: UInt8 = 1, kArray: UInt8 = 2, kKey: UInt8 = 3
    static let kString: UInt8 = 4, kNumber: UInt8 = 5, kLiteral: UInt8 = 6, kNamed: UInt8 = 7

    // Root phases.
    static let rootStart: UInt8 = 0, rootDone: UInt8 = 1
    // Object phases.
    static let oStart: UInt8 = 0, oBeforeKey: UInt8 = 1, oAfterKey: UInt8 = 2, oBeforeValue: UInt8 = 3, oAfterValue: UInt8 = 4
    // Array phases.
    static let aStart: UInt8 = 0, aBeforeValue: UInt8 = 1, aAfterValue: UInt8 = 2
    // String lexer phases.
    static let sNormal: UInt8 = 0, sEscape: UInt8 = 1, sHex: UInt8 = 2, sUTF8: UInt8 = 3
    // Number phases.
    static let nStart: UInt8 = 0, nMinus: UInt8 = 1, nZero: UInt8 = 2, nInt: UInt8 = 3, nDot: UInt8 = 4
    static let nFrac: UInt8 = 5, nExp: UInt8 = 6, nExpSign: UInt8 = 7, nExpDigits: UInt8 = 8
    // Named value phases (`sub` holds the chosen name once it is complete).
    static let tName: UInt8 = 0, tSeparator: UInt8 = 1, tValue: UInt8 = 2

    /// Hashable identity of a recognizer state (for mask caching).
    struct State: Hashable, Sendable {
        var frames: [Frame]
        var whitespace: UInt8
    }

    let grammar: JSONGrammar
    private let nodes: [JSONGrammar.Node]
    var state: State

    init(grammar: JSONGrammar) {
        self.grammar = grammar
        nodes = grammar.nodes
        state = State(frames: [Frame(node: grammar.root, kind: Self.kRoot)], whitespace: 0)
        state.frames.reserveCapacity(grammar.maxNestingDepth + 4)
    }

    // MARK: Queries

    /// The bytes so far form a complete document (end of generation may come now).
    var canFinish: Bool {
        let frames = state.frames
        let top = frames[frames.count - 1]
        switch top.kind {
        case Self.kRoot: return top.phase == Self.rootDone
        case Self.kNumber: return isTopLevelValue && Self.numberEndable(top.phase)
        case Self.kLiteral: return isTopLevelValue && completeOption(top) != nil
        default: return false
        }
    }

    /// The top frame is the document's value: only the root and the names before it are below.
    private var isTopLevelValue: Bool {
        let frames = state.frames
        guard frames.count >= 2 else { return false }
        for i in 1..<(frames.count - 1) where frames[i].kind != Self.kNamed { return false }
        return true
    }

    /// Complete, and no further byte can be accepted.
    var isTerminal: Bool {
        let top = state.frames[state.frames.count - 1]
        return top.kind == Self.kRoot && top.phase == Self.rootDone
    }

    /// Inside a string, between characters, where any plain string content (see
    /// `TokenVocabulary.plainStringTokens`) of at most the returned number of characters is
    /// accepted: an unbounded string value (`Int.max`), a string with `maxLength` (the
    /// characters left), or an object key that no longer tracks property names. Nil elsewhere.
    var plainStringBudget: Int? {
        let top = state.frames[state.frames.count - 1]
        guard top.phase == Self.sNormal else { return nil }
        switch top.kind {
        case Self.kString:
            guard case .string(_, let hi) = nodes[Int(top.node)] else { return nil }
            guard let hi else { return Int.max }
            return max(0, hi - Int(top.count))
        case Self.kKey:
            guard top.mask == 0, case .object(let spec) = nodes[Int(top.node)], spec.additional != nil else { return nil }
            return Int.max
        default:
            return nil
        }
    }

    // MARK: Snapshots (for walking the token trie)

    /// Enough to undo any single `step`: a step touches at most the top three frames
    /// (a number ends, its container closes, the container's parent records the value)
    /// plus frames it pushes.
    struct Snapshot {
        var count: Int
        var base: Int
        var f0: Frame, f1: Frame, f2: Frame, f3: Frame
        var whitespace: UInt8
    }

    @inline(__always)
    func snapshot() -> Snapshot {
        let frames = state.frames
        let count = frames.count
        let base = max(0, count - 4)
        let filler = frames[0]
        return Snapshot(
            count: count, base: base,
            f0: frames[base],
            f1: base + 1 < count ? frames[base + 1] : filler,
            f2: base + 2 < count ? frames[base + 2] : filler,
            f3: base + 3 < count ? frames[base + 3] : filler,
            whitespace: state.whitespace)
    }

    @inline(__always)
    mutating func restore(_ s: Snapshot) {
        state.frames.removeSubrange(s.base...)
        let n = s.count - s.base
        state.frames.append(s.f0)
        if n > 1 { state.frames.append(s.f1) }
        if n > 2 { state.frames.append(s.f2) }
        if n > 3 { state.frames.append(s.f3) }
        state.whitespace = s.whitespace
    }

    // MARK: Stepping

    @inline(__always)
    static func isWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

    @inline(__always)
    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }

    static func numberEndable(_ phase: UInt8) -> Bool {
        phase == nZero || phase == nInt || phase == nFrac || phase == nExpDigits
    }

    /// Whitespace between tokens, up to the run limit.
    @inline(__always)
    private mutating func takeWhitespace() -> Bool {
        guard Int(state.whitespace) < grammar.maxWhitespaceRun else { return false }
        state.whitespace &+= 1
        return true
    }

    /// Consumes one byte.
    mutating func step(_ b: UInt8) -> Bool {
        if !Self.isWhitespace(b) { state.whitespace = 0 }
        while true {
            let top = state.frames.count - 1
            var f = state.frames[top]
            switch f.kind {
            case Self.kRoot:
                if f.phase == Self.rootDone { return false }
                if Self.isWhitespace(b) {
                    // a named document starts with its name at once
                    if case .named = nodes[Int(f.node)] { return false }
                    return takeWhitespace()
                }
                return beginValue(node: f.node, byte: b)

            case Self.kObject:
                guard case .object(let spec) = nodes[Int(f.node)] else { return false }
                if Self.isWhitespace(b) { return takeWhitespace() }
                switch f.phase {
                case Self.oStart, Self.oBeforeKey:
                    if b == UInt8(ascii: "\"") {
                        guard spec.additional != nil || spec.allMask & ~f.mask != 0 else { return false }
                        f.phase = Self.oAfterKey  // provisional; the key frame sets the property
                        state.frames[top] = f
                        var key = Frame(node: f.node, kind: Self.kKey)
                        key.mask = spec.allMask
                        state.frames.append(key)
                        return true
                    }
                    if b == UInt8(ascii: "}") && f.phase == Self.oStart && spec.requiredMask == 0 {
                        completeValue()
                        return true
                    }
                    return false
                case Self.oAfterKey:
                    guard b == UInt8(ascii: ":") else { return false }
                    f.phase = Self.oBeforeValue
                    state.frames[top] = f
                    return true
                case Self.oBeforeValue:
                    let valueNode = Int(f.count) < spec.values.count ? spec.values[Int(f.count)] : (spec.additional ?? 0)
                    return beginValue(node: valueNode, byte: b)
                default:  // oAfterValue
                    if b == UInt8(ascii: ",") {
                        guard spec.additional != nil || spec.allMask & ~f.mask != 0 else { return false }
                        f.phase = Self.oBeforeKey
                        state.frames[top] = f
                        return true
                    }
                    if b == UInt8(ascii: "}") && spec.requiredMask & ~f.mask == 0 {
                        completeValue()
                        return true
                    }
                    return false
                }

            case Self.kArray:
                guard case .array(let items, let minItems, let maxItems) = nodes[Int(f.node)] else { return false }
                if Self.isWhitespace(b) { return takeWhitespace() }
                let counted = minItems > 0 || maxItems != nil
                switch f.phase {
                case Self.aStart, Self.aBeforeValue:
                    if b == UInt8(ascii: "]") && f.phase == Self.aStart && minItems == 0 {
                        completeValue()
                        return true
                    }
                    if f.phase == Self.aStart, let maxItems, maxItems == 0 { return false }
                    if counted { f.count += 1 }
                    f.phase = Self.aAfterValue  // recorded again when the item completes
                    state.frames[top] = f
                    return beginValue(node: items, byte: b)
                default:  // aAfterValue
                    if b == UInt8(ascii: ",") {
                        if let maxItems, Int(f.count) >= maxItems { return false }
                        f.phase = Self.aBeforeValue
                        state.frames[top] = f
                        return true
                    }
                    if b == UInt8(ascii: "]") && Int(f.count) >= minItems {
                        completeValue()
                        return true
                    }
                    return false
                }

            case Self.kKey:
                return stepKey(&f, top: top, byte: b)

            case Self.kString:
                let r = Self.lex(&f, b)
                if r == Self.lexRejected { return false }
                var minLength = 0
                var maxLength: Int? = nil
                if case .string(let lo, let hi) = nodes[Int(f.node)] { minLength = lo; maxLength = hi }
                let counted = minLength > 0 || maxLength != nil
                if r == Self.lexQuote {
                    guard Int(f.count) >= minLength else { return false }
                    completeValue()
                    return true
                }
                if r == Self.lexNewChar && counted {
                    if let maxLength, Int(f.count) >= maxLength { return false }
                    f.count += 1
                }
                state.frames[top] = f
                return true

            case Self.kNumber:
                if stepNumber(&f, b) {
                    state.frames[top] = f
                    return true
                }
                guard Self.numberEndable(f.phase) else { return false }
                completeValue()
                continue  // the byte belongs to the enclosing value

            case Self.kNamed:
                return stepNamed(&f, top: top, byte: b)

            default:  // kLiteral
                guard case .literals(let options) = nodes[Int(f.node)] else { return false }
                let pos = Int(f.count)
                var next: UInt64 = 0
                var longer = false
                var exact = false
                var m = f.mask
                while m != 0 {
                    let i = m.trailingZeroBitCount
                    m &= m - 1
                    let o = options[i]
                    if o.count > pos && o[pos] == b {
                        next |= UInt64(1) << UInt64(i)
                        if o.count == pos + 1 { exact = true } else { longer = true }
                    }
                }
                if next != 0 {
                    f.mask = next
                    f.count += 1
                    state.frames[top] = f
                    if exact && !longer { completeValue() }
                    return true
                }
                guard completeOption(f) != nil else { return false }
                completeValue()
                continue
            }
        }
    }

    /// An option of a literal frame that is fully matched, if any.
    private func completeOption(_ f: Frame) -> Int? {
        guard case .literals(let options) = nodes[Int(f.node)] else { return nil }
        var m = f.mask
        while m != 0 {
            let i = m.trailingZeroBitCount
            m &= m - 1
            if options[i].count == Int(f.count) { return i }
        }
        return nil
    }

    /// Pops the finished top frame and records the value in the frame below.
    private mutating func completeValue() {
        let finished = state.frames.removeLast()
        let top = state.frames.count - 1
        switch state.frames[top].kind {
        case Self.kObject:
            state.frames[top].phase = Self.oAfterValue
            // a tagged union's discriminator: the rest of the object follows the chosen variant
            if case .object(let spec) = nodes[Int(state.frames[top].node)], !spec.variants.isEmpty,
               let option = completeOption(finished) {
                let index = spec.variantKeyIndex[option]
                state.frames[top].node = spec.variants[option]
                state.frames[top].mask = UInt64(1) << UInt64(index)
                state.frames[top].count = UInt32(index)
            }
        case Self.kArray: state.frames[top].phase = Self.aAfterValue
        case Self.kNamed: completeValue()  // the named value is complete with its value
        default: state.frames[top].phase = Self.rootDone
        }
    }

    private var containerDepth: Int {
        var n = 0
        for f in state.frames where f.kind == Self.kObject || f.kind == Self.kArray { n += 1 }
        return n
    }

    /// Whether a value of `node` can start with `b`.
    private func canBegin(node: Int32, byte b: UInt8, depth: Int = 0) -> Bool {
        switch nodes[Int(node)] {
        case .any:
            switch b {
            case UInt8(ascii: "{"), UInt8(ascii: "["), UInt8(ascii: "\""), UInt8(ascii: "-"),
                UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
                return true
            default: return Self.isDigit(b)
            }
        case .string: return b == UInt8(ascii: "\"")
        case .number(_, let nonNegative): return (b == UInt8(ascii: "-") && !nonNegative) || Self.isDigit(b)
        case .object: return b == UInt8(ascii: "{")
        case .array: return b == UInt8(ascii: "[")
        case .literals(let options): return options.contains { $0.first == b }
        case .union(let branches):
            guard depth < 32 else { return false }
            return branches.contains { canBegin(node: $0, byte: b, depth: depth + 1) }
        case .named(let names, _, _): return names.contains { $0.first == b }
        }
    }

    /// Starts a value of `node` with its first byte `b` (pushing its frame).
    private mutating func beginValue(node: Int32, byte b: UInt8, depth: Int = 0) -> Bool {
        switch nodes[Int(node)] {
        case .any:
            switch b {
            case UInt8(ascii: "{"): return beginValue(node: JSONGrammar.anyObjectNode, byte: b)
            case UInt8(ascii: "["): return beginValue(node: JSONGrammar.anyArrayNode, byte: b)
            case UInt8(ascii: "\""): return beginValue(node: JSONGrammar.anyStringNode, byte: b)
            case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
                return beginValue(node: JSONGrammar.keywordNode, byte: b)
            default:
                return beginValue(node: JSONGrammar.anyNumberNode, byte: b)
            }
        case .string:
            guard b == UInt8(ascii: "\"") else { return false }
            state.frames.append(Frame(node: node, kind: Self.kString))
            return true
        case .number:
            var f = Frame(node: node, kind: Self.kNumber)
            guard stepNumber(&f, b) else { return false }
            state.frames.append(f)
            return true
        case .object:
            guard b == UInt8(ascii: "{"), containerDepth < grammar.maxNestingDepth else { return false }
            state.frames.append(Frame(node: node, kind: Self.kObject))
            return true
        case .array:
            guard b == UInt8(ascii: "["), containerDepth < grammar.maxNestingDepth else { return false }
            state.frames.append(Frame(node: node, kind: Self.kArray))
            return true
        case .literals(let options):
            var f = Frame(node: node, kind: Self.kLiteral)
            f.mask = options.count == 64 ? ~0 : (UInt64(1) << UInt64(options.count)) - 1
            state.frames.append(f)
            return step(b)
        case .union(let branches):
            guard depth < 32 else { return false }
            for branch in branches where canBegin(node: branch, byte: b) {
                return beginValue(node: branch, byte: b, depth: depth + 1)
            }
            return false
        case .named(let names, _, _):
            var f = Frame(node: node, kind: Self.kNamed)
            f.mask = names.count == 64 ? ~0 : (UInt64(1) << UInt64(names.count)) - 1
            state.frames.append(f)
            return step(b)
        }
    }

    /// One byte of a named value: the name (a longer name wins over a complete one while the
    /// byte continues it), the separator, then the first byte of the value the name chose.
    /// Names and separators are plain bytes, whitespace included.
    private mutating func stepNamed(_ f: inout Frame, top: Int, byte b: UInt8) -> Bool {
        guard case .named(let names, let separators, let values) = nodes[Int(f.node)] else { return false }
        let pos = Int(f.count)
        switch f.phase {
        case Self.tName:
            var next: UInt64 = 0
            var complete: Int?
            var m = f.mask
            while m != 0 {
                let i = m.trailingZeroBitCount
                m &= m - 1
                if names[i].count > pos { if names[i][pos] == b { next |= UInt64(1) << UInt64(i) } } else { complete = i }
            }
            if next != 0 {
                f.mask = next
                f.count += 1
                state.frames[top] = f
                return true
            }
            guard let complete else { return false }
            f.phase = Self.tSeparator
            f.sub = UInt8(complete)
            f.count = 0
            f.mask = separators.count == 64 ? ~0 : (UInt64(1) << UInt64(separators.count)) - 1
            state.frames[top] = f
            return stepNamed(&f, top: top, byte: b)
        case Self.tSeparator:
            var next: UInt64 = 0
            var done = false
            var m = f.mask
            while m != 0 {
                let i = m.trailingZeroBitCount
                m &= m - 1
                if separators[i].count > pos && separators[i][pos] == b {
                    next |= UInt64(1) << UInt64(i)
                    if separators[i].count == pos + 1 { done = true }
                }
            }
            guard next != 0 else { return false }
            f.mask = next
            f.count += 1
            if done { f.phase = Self.tValue }
            state.frames[top] = f
            return true
        default:  // tValue: the value follows the separator at once
            if Self.isWhitespace(b) { return false }
            return beginValue(node: values[Int(f.sub)], byte: b)
        }
    }

    /// One byte of an object key: validates it as string content and narrows the candidate
    /// property names; the closing quote selects the property.
    private mutating func stepKey(_ f: inout Frame, top: Int, byte b: UInt8) -> Bool {
        guard case .object(let spec) = nodes[Int(f.node)] else { return false }
        let parent = top - 1
        let seen = state.frames[parent].mask
        let r = Self.lex(&f, b)
        if r == Self.lexRejected { return false }
        if r == Self.lexQuote {
            var selected = spec.names.count  // additional property
            var m = f.mask
            while m != 0 {
                let i = m.trailingZeroBitCount
                m &= m - 1
                if spec.encodedNames[i].count == Int(f.count) {
                    selected = i
                    break
                }
            }
            if selected < spec.names.count {
                if seen & (UInt64(1) << UInt64(selected)) != 0 { return false }  // repeated key
                state.frames[parent].mask |= UInt64(1) << UInt64(selected)
            } else if spec.additional == nil {
                return false
            }
            state.frames[parent].count = UInt32(selected)
            state.frames.removeLast()
            return true
        }
        if f.mask != 0 {
            let pos = Int(f.count)
            var next: UInt64 = 0
            var m = f.mask
            while m != 0 {
                let i = m.trailingZeroBitCount
                m &= m - 1
                let name = spec.encodedNames[i]
                if name.count > pos && name[pos] == b { next |= UInt64(1) << UInt64(i) }
            }
            f.mask = next
            f.count = next == 0 ? 0 : f.count + 1
        }
        if spec.additional == nil {
            // Only names not used yet may continue; the lexer must be able to finish one.
            guard f.mask & ~seen != 0 else { return false }
        }
        state.frames[top] = f
        return true
    }

    // MARK: String lexer

    static let lexRejected = 0, lexQuote = 1, lexNewChar = 2, lexContinue = 3

    /// JSON string content, one byte at a time: escapes, \u with hex digits (surrogates
    /// excluded), and well-formed UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF).
    /// `flags` for the next UTF-8 continuation: 0 = 80–BF, 1 = A0–BF, 2 = 80–9F, 3 = 90–BF,
    /// 4 = 80–8F; for hex digits, 5 = "second digit of a \uD…" (must be 0–7).
    @inline(__always)
    static func lex(_ f: inout Frame, _ b: UInt8) -> Int {
        switch f.phase {
        case sNormal:
            switch b {
            case UInt8(ascii: "\""): return lexQuote
            case UInt8(ascii: "\\"):
                f.phase = sEscape
                return lexNewChar
            case 0x00..<0x20: return lexRejected
            case 0x20..<0x80: return lexNewChar
            case 0xC2...0xDF: f.phase = sUTF8; f.sub = 1; f.flags = 0
            case 0xE0: f.phase = sUTF8; f.sub = 2; f.flags = 1
            case 0xED: f.phase = sUTF8; f.sub = 2; f.flags = 2
            case 0xE1...0xEF: f.phase = sUTF8; f.sub = 2; f.flags = 0
            case 0xF0: f.phase = sUTF8; f.sub = 3; f.flags = 3
            case 0xF1...0xF3: f.phase = sUTF8; f.sub = 3; f.flags = 0
            case 0xF4: f.phase = sUTF8; f.sub = 3; f.flags = 4
            default: return lexRejected
            }
            return lexNewChar
        case sEscape:
            switch b {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"),
                UInt8(ascii: "f"), UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                f.phase = sNormal
                return lexContinue
            case UInt8(ascii: "u"):
                f.phase = sHex
                f.sub = 4
                f.flags = 0
                return lexContinue
            default: return lexRejected
            }
        case sHex:
            let isHex = isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66)
            guard isHex else { return lexRejected }
            if f.sub == 4 && (b == UInt8(ascii: "d") || b == UInt8(ascii: "D")) {
                f.flags = 5
            } else if f.sub == 3 && f.flags == 5 {
                guard b >= 0x30 && b <= 0x37 else { return lexRejected }
                f.flags = 0
            }
            f.sub -= 1
            if f.sub == 0 { f.phase = sNormal }
            return lexContinue
        default:  // sUTF8
            let lo: UInt8, hi: UInt8
            switch f.flags {
            case 1: lo = 0xA0; hi = 0xBF
            case 2: lo = 0x80; hi = 0x9F
            case 3: lo = 0x90; hi = 0xBF
            case 4: lo = 0x80; hi = 0x8F
            default: lo = 0x80; hi = 0xBF
            }
            guard b >= lo && b <= hi else { return lexRejected }
            f.flags = 0
            f.sub -= 1
            if f.sub == 0 { f.phase = sNormal }
            return lexContinue
        }
    }

    // MARK: Numbers

    /// Advances a number frame by `b` if `b` continues the number (within the length limit,
    /// always leaving room to reach an endable phase).
    private func stepNumber(_ f: inout Frame, _ b: UInt8) -> Bool {
        var integer = false
        var nonNegative = false
        if case .number(let i, let n) = nodes[Int(f.node)] { integer = i; nonNegative = n }
        let digit = Self.isDigit(b)
        let next: UInt8
        switch f.phase {
        case Self.nStart:
            if b == UInt8(ascii: "-") && !nonNegative { next = Self.nMinus } else if b == UInt8(ascii: "0") { next = Self.nZero } else if digit { next = Self.nInt } else { return false }
        case Self.nMinus:
            if b == UInt8(ascii: "0") { next = Self.nZero } else if digit { next = Self.nInt } else { return false }
        case Self.nZero, Self.nInt, Self.nFrac:
            if digit && f.phase != Self.nZero { next = f.phase }
            else if b == UInt8(ascii: "."), f.phase != Self.nFrac, !integer { next = Self.nDot }
            else if b == UInt8(ascii: "e") || b == UInt8(ascii: "E"), !integer { next = Self.nExp }
            else { return false }
        case Self.nDot:
            guard digit else { return false }
            next = Self.nFrac
        case Self.nExp:
            if b == UInt8(ascii: "+") || b == UInt8(ascii: "-") { next = Self.nExpSign } else if digit { next = Self.nExpDigits } else { return false }
        case Self.nExpSign:
            guard digit else { return false }
            next = Self.nExpDigits
        default:  // nExpDigits
            guard digit else { return false }
            next = Self.nExpDigits
        }
        let length = Int(f.count) + 1
        let limit = grammar.maxNumberLength
        guard Self.numberEndable(next) ? length <= limit : length < limit else { return false }
        f.phase = next
        f.count = UInt32(length)
        return true
    }
}
