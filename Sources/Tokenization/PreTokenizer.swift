/// Splits text into words before byte-level BPE, as the model's `tokenizer.ggml.pre` asks.
///
/// Each model's pre-tokenizer is a list of passes; each pass splits every current segment
/// further (both what a pattern matches and the text between matches become segments), which
/// is how llama.cpp applies its list of regular expressions. Every pass is a hand-written
/// scanner over code points (no regex engine), with the same matching rules as llama.cpp.
struct PreTokenizer: Sendable {
    enum Pass: Sendable {
        /// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
        case gpt2
        /// llama3's pattern; `digitsPerWord` 3 for llama3 (`\p{N}{1,3}`), 1 for qwen2 (`\p{N}`).
        /// With `marksInWords` (qwen35), words are `[\p{L}\p{M}]+` rather than `\p{L}+` and
        /// the punctuation runs `[^\s\p{L}\p{M}\p{N}]+` leave combining marks to the words.
        case llama3(digitsPerWord: Int, marksInWords: Bool = false)
        /// `[^\n]+|[\n]+`: runs of newlines and runs of everything else.
        case newlineRuns
        /// `\p{N}`: each number character alone.
        case eachNumber
        /// `\p{N}+`
        case numberRuns
        /// `[0-9][0-9][0-9]`
        case asciiDigitTriples
        /// `[\p{P}\$\+<=>\^~\|]+` (and falcon's variant that adds the backtick).
        case punctuationRuns(includeBacktick: Bool)
        /// `[\r\n]`
        case eachNewline
        /// `\s?[class]+` for a class of code-point ranges.
        case optionalSpaceThenRun(CodepointClass)
        /// `[class]+`
        case runs(CodepointClass)
        /// `\s?\p{L}+`
        case optionalSpaceThenLetters
        /// `\s?\p{P}+`
        case optionalSpaceThenPunctuation
        /// `\s+$`: the trailing whitespace of a segment.
        case trailingWhitespace
    }

    let passes: [Pass]

    /// The pre-tokenizer for a `tokenizer.ggml.pre` value, plus whether whole words that are
    /// tokens skip merging (`ignore_merges`) and whether BOS is added by default.
    struct Config: Sendable {
        var preTokenizer: PreTokenizer
        var ignoreMerges = false
        var addBOS = false
        var hasBOS = true
        /// How token texts and merges spell the text.
        var spelling: BPESpelling = .byteLevel
        /// Whether a word made only of newlines that is itself a token is taken whole (Gemma 4).
        var newlineRunsWhole = false
        /// Whether BOS is added even when `tokenizer.ggml.add_bos_token` says not to (Gemma 4).
        var forcesBOS = false
    }

    static func config(for pre: String?) throws(TokenizerError) -> Config {
        switch pre ?? "default" {
        case "default", "":
            return Config(preTokenizer: PreTokenizer(passes: [
                .punctuationRuns(includeBacktick: false), .gpt2, .numberRuns, .asciiDigitTriples,
            ]))
        case "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano":
            return Config(preTokenizer: PreTokenizer(passes: [.llama3(digitsPerWord: 3)]), ignoreMerges: true, addBOS: true)
        case "dbrx", "smaug-bpe":
            return Config(preTokenizer: PreTokenizer(passes: [.llama3(digitsPerWord: 3)]))
        case "chatglm-bpe":
            return Config(preTokenizer: PreTokenizer(passes: [.llama3(digitsPerWord: 3)]), hasBOS: false)
        case "glm4", "glm5":
            return Config(preTokenizer: PreTokenizer(passes: [.llama3(digitsPerWord: 3)]), ignoreMerges: true, hasBOS: false)
        case "qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open":
            return Config(preTokenizer: PreTokenizer(passes: [.llama3(digitsPerWord: 1)]))
        case "qwen35":
            return Config(preTokenizer: PreTokenizer(passes: [.llama3(digitsPerWord: 1, marksInWords: true)]))
        case "gemma4", "granite-embed-multi-311m":
            // SentencePiece-style BPE: merges run over whole lines of raw UTF-8 with spaces as "▁".
            return Config(preTokenizer: PreTokenizer(passes: [.newlineRuns]),
                          spelling: .sentencePiece, newlineRunsWhole: true, forcesBOS: true)
        case "starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2":
            return Config(preTokenizer: PreTokenizer(passes: [.eachNumber, .gpt2]))
        case "gpt-2", "gpt2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0",
             "mellum", "modern-bert", "mpt", "olmo", "jais", "exaone4", "trillion", "granite-docling",
             "jina-v1-en", "jina-v2-code", "roberta-bpe":
            return Config(preTokenizer: PreTokenizer(passes: [.gpt2]))
        case "falcon":
            return Config(preTokenizer: PreTokenizer(passes: [
                .punctuationRuns(includeBacktick: true), .gpt2, .asciiDigitTriples,
            ]))
        case "deepseek-llm":
            return Config(preTokenizer: PreTokenizer(passes: [
                .eachNewline,
                .optionalSpaceThenRun(.deepseekLetters),
                .optionalSpaceThenRun(.deepseekPunctuation),
                .trailingWhitespace,
                .runs(.cjk),
                .numberRuns,
            ]))
        case "deepseek-coder":
            return Config(preTokenizer: PreTokenizer(passes: [
                .eachNewline, .optionalSpaceThenLetters, .optionalSpaceThenPunctuation, .runs(.cjk), .eachNumber,
            ]))
        case let other:
            throw .unknownPreTokenizer(other)
        }
    }

    /// Splits code points `cps` into words, returned as the end index of each word.
    func split(_ cps: [UInt32]) -> [Int] {
        var ends = [cps.count]
        cps.withUnsafeBufferPointer { cps in
            for pass in passes {
                var next: [Int] = []
                next.reserveCapacity(max(ends.count * 2, cps.count / 4))
                var start = 0
                for end in ends {
                    PreTokenizer.apply(pass, cps, start, end, &next)
                    start = end
                }
                ends = next
            }
        }
        return ends
    }

    // MARK: passes

    private static func apply(_ pass: Pass, _ cps: UnsafeBufferPointer<UInt32>, _ lo: Int, _ hi: Int, _ out: inout [Int]) {
        switch pass {
        case .gpt2: gpt2(cps, lo, hi, &out)
        case .llama3(let digits, let marks): llama3(cps, lo, hi, digits, marks, &out)
        case .newlineRuns:
            var p = lo
            while p < hi {
                let newline = cps[p] == 0x0A
                while p < hi && (cps[p] == 0x0A) == newline { p += 1 }
                out.append(p)
            }
        case .eachNumber:
            isolate(cps, lo, hi, &out) { p in CodepointFlags.of(cps[p]).isNumber ? p + 1 : nil }
        case .numberRuns:
            isolate(cps, lo, hi, &out) { p in
                var q = p
                while q < hi && CodepointFlags.of(cps[q]).isNumber { q += 1 }
                return q > p ? q : nil
            }
        case .asciiDigitTriples:
            isolate(cps, lo, hi, &out) { p in
                guard p + 3 <= hi else { return nil }
                for i in p..<p + 3 where !(0x30...0x39).contains(cps[i]) { return nil }
                return p + 3
            }
        case .punctuationRuns(let backtick):
            isolate(cps, lo, hi, &out) { p in
                var q = p
                while q < hi && isDefaultPunctuation(cps[q], backtick: backtick) { q += 1 }
                return q > p ? q : nil
            }
        case .eachNewline:
            isolate(cps, lo, hi, &out) { p in cps[p] == 0x0A || cps[p] == 0x0D ? p + 1 : nil }
        case .optionalSpaceThenRun(let cls):
            optionalSpaceThenRun(cps, lo, hi, &out) { cls.contains(regexView($0)) }
        case .runs(let cls):
            isolate(cps, lo, hi, &out) { p in
                var q = p
                while q < hi && cls.contains(regexView(cps[q])) { q += 1 }
                return q > p ? q : nil
            }
        case .optionalSpaceThenLetters:
            optionalSpaceThenRun(cps, lo, hi, &out) { CodepointFlags.of($0).isLetter }
        case .optionalSpaceThenPunctuation:
            optionalSpaceThenRun(cps, lo, hi, &out) { CodepointFlags.of($0).isPunctuation }
        case .trailingWhitespace:
            var start = hi
            while start > lo && CodepointFlags.of(cps[start - 1]).isWhitespace { start -= 1 }
            if start > lo { out.append(start) }
            if hi > start { out.append(hi) }
        }
    }

    /// How a std::regex sees a code point in llama.cpp: non-ASCII whitespace becomes U+000B.
    @inline(__always)
    static func regexView(_ cp: UInt32) -> UInt32 {
        cp > 0x7F && CodepointFlags.of(cp).isWhitespace ? 0x0B : cp
    }

    @inline(__always)
    static func isRegexSpace(_ cp: UInt32) -> Bool { CodepointFlags.of(cp).isWhitespace }

    @inline(__always)
    static func isDefaultPunctuation(_ cp: UInt32, backtick: Bool) -> Bool {
        if cp < 0x80 {
            switch UInt8(cp) {
            case UInt8(ascii: "$"), UInt8(ascii: "+"), UInt8(ascii: "<"), UInt8(ascii: "="), UInt8(ascii: ">"),
                 UInt8(ascii: "^"), UInt8(ascii: "~"), UInt8(ascii: "|"):
                return true
            case UInt8(ascii: "`"):
                return backtick
            default:
                return CodepointFlags.of(cp).isPunctuation
            }
        }
        let f = CodepointFlags.of(cp)
        return f.isPunctuation && !f.isWhitespace
    }

    /// Emits the text between matches and the matches themselves as segments. `match(p)`
    /// returns the end of the match starting at `p`, or nil.
    @inline(__always)
    private static func isolate(_ cps: UnsafeBufferPointer<UInt32>, _ lo: Int, _ hi: Int, _ out: inout [Int],
                                _ match: (Int) -> Int?) {
        var p = lo
        var gapStart = lo
        while p < hi {
            if let end = match(p), end > p {
                if p > gapStart { out.append(p) }
                out.append(end)
                p = end
                gapStart = end
            } else {
                p += 1
            }
        }
        if hi > gapStart { out.append(hi) }
    }

    private static func optionalSpaceThenRun(_ cps: UnsafeBufferPointer<UInt32>, _ lo: Int, _ hi: Int, _ out: inout [Int],
                                             _ inRun: (UInt32) -> Bool) {
        isolate(cps, lo, hi, &out) { p in
            var q = p
            if isRegexSpace(cps[p]) && p + 1 < hi && inRun(cps[p + 1]) {
                q = p + 1
            } else if !inRun(cps[p]) {
                return nil
            }
            while q < hi && inRun(cps[q]) { q += 1 }
            return q
        }
    }

    /// GPT-2's pattern, with llama.cpp's reading of it: `\s+(?!\S)` leaves the last
    /// whitespace for the next word unless the run ends the segment.
    private static func gpt2(_ cps: UnsafeBufferPointer<UInt32>, _ lo: Int, _ hi: Int, _ out: inout [Int]) {
        @inline(__always) func cp(_ p: Int) -> UInt32 { p < hi ? cps[p] : 0xFFFF_FFFF }
        @inline(__always) func flags(_ p: Int) -> CodepointFlags { p < hi ? CodepointFlags.of(cps[p]) : [] }
        var p = lo
        var prevEnd = lo
        @inline(__always) func emit(_ end: Int) {
            if end > prevEnd { out.append(end) }
            prevEnd = end
        }
        while p < hi {
            let c = cps[p]
            let f = CodepointFlags.of(c)
            if c == 0x27 && p + 1 < hi {  // '
                let n1 = cps[p + 1]
                if n1 == 0x73 || n1 == 0x74 || n1 == 0x6D || n1 == 0x64 {  // s t m d
                    p += 2; emit(p); continue
                }
                if p + 2 < hi {
                    let n2 = cps[p + 2]
                    if (n1 == 0x72 && n2 == 0x65) || (n1 == 0x76 && n2 == 0x65) || (n1 == 0x6C && n2 == 0x6C) {  // re ve ll
                        p += 3; emit(p); continue
                    }
                }
            }
            var f2 = c == 0x20 ? flags(p + 1) : f
            if f2.isLetter {
                if c == 0x20 { p += 1 }
                while f2.isLetter { p += 1; f2 = flags(p) }
                emit(p); continue
            }
            if f2.isNumber {
                if c == 0x20 { p += 1 }
                while f2.isNumber { p += 1; f2 = flags(p) }
                emit(p); continue
            }
            if !f2.isWhitespace && !f2.isLetter && !f2.isNumber && f2.isSome {
                if c == 0x20 { p += 1 }
                while !f2.isWhitespace && !f2.isLetter && !f2.isNumber && f2.isSome { p += 1; f2 = flags(p) }
                emit(p); continue
            }
            var spaces = 0
            while flags(p + spaces).isWhitespace { spaces += 1 }
            if spaces > 1 && cp(p + spaces) != 0xFFFF_FFFF {
                p += spaces - 1; emit(p); continue
            }
            if spaces > 0 {
                p += spaces; emit(p); continue
            }
            p += 1; emit(p)
        }
    }

    /// llama3's pattern (qwen2's when `digitsPerWord` is 1, qwen35's with `marksInWords`), read
    /// the way llama.cpp reads it.
    private static func llama3(_ cps: UnsafeBufferPointer<UInt32>, _ lo: Int, _ hi: Int, _ digitsPerWord: Int,
                               _ marksInWords: Bool, _ out: inout [Int]) {
        @inline(__always) func cp(_ p: Int) -> UInt32 { p < hi ? cps[p] : 0xFFFF_FFFF }
        @inline(__always) func flags(_ p: Int) -> CodepointFlags { p < hi ? CodepointFlags.of(cps[p]) : [] }
        @inline(__always) func lower(_ c: UInt32) -> UInt32 { (0x41...0x5A).contains(c) ? c + 0x20 : c }
        /// What the word runs are made of: \p{L}, or [\p{L}\p{M}] with `marksInWords`.
        @inline(__always) func inWord(_ f: CodepointFlags) -> Bool { f.isLetter || (marksInWords && f.isMark) }
        var p = lo
        var prevEnd = lo
        @inline(__always) func emit(_ end: Int) {
            if end > prevEnd { out.append(end) }
            prevEnd = end
        }
        while p < hi {
            let c = cps[p]
            let f = CodepointFlags.of(c)
            if c == 0x27 && p + 1 < hi {  // (?i:'s|'t|'re|'ve|'m|'ll|'d)
                let n1 = lower(cps[p + 1])
                if n1 == 0x73 || n1 == 0x74 || n1 == 0x6D || n1 == 0x64 {
                    p += 2; emit(p); continue
                }
                if p + 2 < hi {
                    let n2 = lower(cps[p + 2])
                    if (n1 == 0x72 && n2 == 0x65) || (n1 == 0x76 && n2 == 0x65) || (n1 == 0x6C && n2 == 0x6C) {
                        p += 3; emit(p); continue
                    }
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+ (or [\p{L}\p{M}]+)
            if !(c == 0x0D || c == 0x0A || f.isNumber) {
                if inWord(f) || inWord(flags(p + 1)) {
                    p += 1
                    while inWord(flags(p)) { p += 1 }
                    emit(p); continue
                }
            }
            // \p{N}{1,3} or \p{N}
            if f.isNumber {
                if digitsPerWord == 1 {
                    p += 1; emit(p); continue
                }
                var start = p
                while flags(p).isNumber {
                    p += 1
                    if p - start >= digitsPerWord { emit(p); start = p }
                }
                emit(p); continue
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*' (or [^\s\p{L}\p{M}\p{N}]+)
            var f2 = c == 0x20 ? flags(p + 1) : f
            if !f2.isWhitespace && !inWord(f2) && !f2.isNumber && f.isSome {
                if c == 0x20 { p += 1 }
                while !f2.isWhitespace && !inWord(f2) && !f2.isNumber && f2.isSome { p += 1; f2 = flags(p) }
                var c2 = cp(p)
                while c2 == 0x0D || c2 == 0x0A { p += 1; c2 = cp(p) }
                emit(p); continue
            }
            var spaces = 0
            var lastNewlineEnd = 0
            while flags(p + spaces).isWhitespace {
                let c2 = cp(p + spaces)
                if c2 == 0x0D || c2 == 0x0A { lastNewlineEnd = p + spaces + 1 }
                spaces += 1
            }
            if lastNewlineEnd > 0 {  // \s*[\r\n]+
                p = lastNewlineEnd; emit(p); continue
            }
            if spaces > 1 && cp(p + spaces) != 0xFFFF_FFFF {  // \s+(?!\S)
                p += spaces - 1; emit(p); continue
            }
            if spaces > 0 {  // \s+
                p += spaces; emit(p); continue
            }
            p += 1; emit(p)
        }
    }
}

/// A set of code points given as inclusive ranges, for the character classes of the
/// pre-tokenizer patterns that list explicit ranges.
struct CodepointClass: Sendable {
    let ranges: [ClosedRange<UInt32>]

    init(_ ranges: [ClosedRange<UInt32>]) {
        // Merge into sorted, disjoint ranges so one binary search answers `contains`.
        var merged: [ClosedRange<UInt32>] = []
        for r in ranges.sorted(by: { $0.lowerBound < $1.lowerBound }) {
            if let last = merged.last, r.lowerBound <= last.upperBound &+ 1 {
                merged[merged.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                merged.append(r)
            }
        }
        self.ranges = merged
    }

    @inline(__always)
    func contains(_ cp: UInt32) -> Bool {
        var lo = 0, hi = ranges.count
        while lo < hi {
            let mid = (lo + hi) / 2
            if ranges[mid].lowerBound <= cp { lo = mid + 1 } else { hi = mid }
        }
        return lo > 0 && cp <= ranges[lo - 1].upperBound
    }

    // The explicit character classes of DeepSeek's pre-tokenizer patterns, as code-point ranges.

    /// DeepSeek LLM's letter class (Latin, Greek, Cyrillic, Armenian, Georgian, Cherokee, ...).
    static let deepseekLetters = CodepointClass([
        0x41...0x5A, 0x61...0x7A, 0xB5...0xB5, 0xC0...0xD6, 0xD8...0xF6, 0xF8...0x1BA, 0x1BC...0x1BF,
        0x1C4...0x293, 0x295...0x2AF, 0x370...0x373, 0x376...0x377, 0x37B...0x37D, 0x37F...0x37F,
        0x386...0x386, 0x388...0x38A, 0x38C...0x38C, 0x38E...0x3A1, 0x3A3...0x3F5, 0x3F7...0x481,
        0x48A...0x52F, 0x531...0x556, 0x10A0...0x10C5, 0x13A0...0x13F5, 0x13F8...0x13FD, 0x1C90...0x1CBA,
        0x1CBD...0x1CBF, 0x1D00...0x1D2B, 0x1D6B...0x1D77, 0x1D79...0x1D9A, 0x1E00...0x1F15, 0x1F18...0x1F1D,
        0x1F20...0x1F45, 0x1F48...0x1F4D, 0x1F50...0x1F57, 0x1F59...0x1F59, 0x1F5B...0x1F5B, 0x1F5D...0x1F5D,
        0x1F5F...0x1F7D, 0x1F80...0x1FB4, 0x1FB6...0x1FBC, 0x1FBE...0x1FBE, 0x1FC2...0x1FC4, 0x1FC6...0x1FCC,
        0x1FD0...0x1FD3, 0x1FD6...0x1FDB, 0x1FE0...0x1FEC, 0x1FF2...0x1FF4, 0x1FF6...0x1FFC, 0x2102...0x2102,
        0x2107...0x2107, 0x210A...0x2113, 0x2115...0x2115, 0x2119...0x211D, 0x2124...0x2124, 0x2126...0x2126,
        0x2128...0x2128, 0x212A...0x212D, 0x212F...0x2134, 0x2139...0x2139, 0x213C...0x213F, 0x2145...0x2149,
        0x214E...0x214E, 0x2183...0x2184, 0x2C00...0x2C7B, 0x2C7E...0x2CE4, 0x2CEB...0x2CEE, 0x2CF2...0x2CF3,
        0xA640...0xA66D, 0xA680...0xA69B, 0xA722...0xA76F, 0xA771...0xA787, 0xA78B...0xA78E, 0xAB70...0xABBF,
        0xFB00...0xFB06, 0xFB13...0xFB17, 0xFF21...0xFF3A, 0xFF41...0xFF5A, 0x10400...0x1044F, 0x104B0...0x104D3,
        0x104D8...0x104FB, 0x10C80...0x10CB2, 0x10CC0...0x10CF2, 0x118A0...0x118DF, 0x1E900...0x1E943,
    ])
    /// DeepSeek LLM's punctuation class: ASCII punctuation and symbols, their fullwidth forms,
    /// curly quotes and the first CJK punctuation marks.
    static let deepseekPunctuation = CodepointClass([
        0x21...0x2F, 0x3A...0x7E, 0xFF01...0xFF0F, 0xFF1A...0xFF5E, 0x2018...0x201F, 0x3000...0x3002,
    ])
    /// CJK ideographs, the span U+0800..U+4E00 and Hangul syllables, as in DeepSeek's patterns.
    static let cjk = CodepointClass([0x4E00...0x9FA5, 0x800...0x4E00, 0xAC00...0xD7FF])
}
