import Foundation
import GGUF
import TestSupport
import Testing
@testable import Tokenization

/// Throughput and load time. Bounds are tight in optimized builds (the targets from the
/// design: ~1 MB of English well under a second, the 262k Gemma vocabulary loaded quickly)
/// and loose in debug builds, which are many times slower.
@Suite("Performance", .serialized)
struct PerformanceTests {
    #if DEBUG
    static let optimized = false
    #else
    static let optimized = true
    #endif

    /// About `bytes` of English-like prose: sentences of common words with capitals,
    /// punctuation, numbers, contractions and paragraph breaks.
    static func englishText(bytes: Int, seed: UInt64 = 42) -> String {
        let words = """
            the of and to in a is that for it as was with be by on not he I this are or his from at which but have an \
            they you were her she there one all we their been has when who will more no if out so said what up its about \
            into than them can only other new some could time these two may then do first any my now such like our over \
            man me even most made after also did many before must through back years where much your way well down \
            should because each just those people how too little state good very make world still own see men work long \
            get here between both life being under never day same another know while last might us great old year off \
            come since against go came right used take three model token language inference engine memory quickly
            """.split(separator: " ").map(String.init)
        var g = SplitMix64(seed: seed)
        var out = ""
        out.reserveCapacity(bytes + 200)
        var sentenceStart = true
        while out.utf8.count < bytes {
            var w = words[Int.random(in: 0..<words.count, using: &g)]
            if sentenceStart { w = w.prefix(1).uppercased() + w.dropFirst() }
            sentenceStart = false
            out += w
            switch Int.random(in: 0..<40, using: &g) {
            case 0: out += "'s"
            case 1: out += " \(Int.random(in: 0..<100_000, using: &g))"
            case 2, 3: out += ","
            case 4, 5, 6: out += "."; sentenceStart = true
            case 7: out += ".\n\n"; sentenceStart = true
            case 8: out += "?"; sentenceStart = true
            default: break
            }
            if !out.hasSuffix("\n") { out += " " }
        }
        return out
    }

    static func time<T>(_ body: () throws -> T) rethrows -> (T, Double) {
        let start = DispatchTime.now().uptimeNanoseconds
        let result = try body()
        return (result, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
    }

    @Test("1 MB of English", arguments: ["SmolLM2", "Gemma 3"])
    func encodeOneMegabyte(model: String) throws {
        let tokenizer = model == "SmolLM2" ? try TestModels.smolLM2() : try TestModels.gemma3()
        let text = Self.englishText(bytes: 1 << 20)
        // A fresh tokenizer would start with an empty word cache; measure the first call.
        let (tokens, seconds) = Self.time { tokenizer.encode(text, addSpecial: true, parseSpecial: false) }
        print("\(model): encoded \(text.utf8.count) bytes into \(tokens.count) tokens in \(String(format: "%.3f", seconds)) s")
        #expect(tokenizer.decode(tokens) == text)
        #expect(seconds < (Self.optimized ? 1.0 : 60.0))
    }

    @Test func gemmaVocabularyLoad() throws {
        let path = TestSupport.gemma3Path
        guard FileManager.default.fileExists(atPath: path) else { throw TestModels.Missing(path: path) }
        let (file, openSeconds) = try Self.time { try GGUFFile(path: path) }
        let (tokenizer, loadSeconds) = try Self.time { try loadTokenizer(from: file) }
        print("Gemma 3: GGUF metadata parsed in \(String(format: "%.3f", openSeconds)) s, 262k-token tokenizer built in \(String(format: "%.3f", loadSeconds)) s")
        #expect(tokenizer.vocabularySize == 262_144)
        #expect(loadSeconds < (Self.optimized ? 0.5 : 20.0))
    }
}
