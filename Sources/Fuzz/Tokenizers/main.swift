import Foundation
import FuzzDriver
import GGUF
import TestSupport
@testable import Tokenization

/// Both tokenizer families on arbitrary text: byte-level BPE (SmolLM2's vocabulary) and
/// SentencePiece (Gemma 3's), or the vocabularies of the files in `SWIFTLET_FUZZ_BPE` /
/// `SWIFTLET_FUZZ_SPM`. Every id is in the vocabulary; without special-token parsing, decoding
/// gives the text back byte for byte (where the vocabulary can: see `fuzzOneInput`), and the streaming decoder, fed one token at a time, gives the same text.
enum Vocabularies {
    static let bpe = load(ProcessInfo.processInfo.environment["SWIFTLET_FUZZ_BPE"] ?? TestSupport.smolLM2Path)
    static let spm = load(ProcessInfo.processInfo.environment["SWIFTLET_FUZZ_SPM"] ?? TestSupport.gemma3Path)

    static func load(_ path: String) -> any Tokenizer {
        do {
            return try loadTokenizer(from: GGUFFile(path: path))
        } catch {
            fatalError("cannot load the vocabulary of \(path) (scripts/fuzz pulls the models): \(error)")
        }
    }
}

func check(_ tokenizer: any Tokenizer, _ text: String, roundTrips: Bool) {
    for parseSpecial in [false, true] {
        let tokens = tokenizer.encode(text, addSpecial: true, parseSpecial: parseSpecial)
        guard tokens.allSatisfy({ $0 >= 0 && Int($0) < tokenizer.vocabularySize }) else {
            fatalError("token id outside the vocabulary for \(String(reflecting: text)): \(tokens)")
        }
        let decoded = tokenizer.decode(tokens, special: parseSpecial)
        guard !parseSpecial && roundTrips else { continue }
        guard Array(decoded.utf8) == Array(text.utf8) else {
            fatalError("\(String(reflecting: text)) decodes to \(String(reflecting: decoded)); tokens \(tokens)")
        }
        var stream = StreamingDecoder(tokenizer: tokenizer)
        var streamed = ""
        for t in tokens { streamed += stream.push(t) }
        streamed += stream.finish()
        guard streamed == decoded else {
            fatalError("streaming decode \(String(reflecting: streamed)) differs from \(String(reflecting: decoded))")
        }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let bpe = Vocabularies.bpe
    let representable = (bpe as? BPETokenizer).map { b in text.utf8.allSatisfy { b.byteTokens[Int($0)] >= 0 } } ?? false
    check(bpe, text, roundTrips: representable)
    // SentencePiece gives the text back exactly when the vocabulary adds no space prefix and the
    // text holds no U+2581, the vocabulary's space, which decodes to a space as in llama.cpp.
    let spm = Vocabularies.spm
    check(spm, text, roundTrips: (spm as? SPMTokenizer)?.addsSpacePrefix == false && !text.unicodeScalars.contains("\u{2581}"))
    return 0
}

// loaded before the fuzzer starts its clock (Gemma 3's 262k-token vocabulary takes a while under ASan)
_ = (Vocabularies.bpe, Vocabularies.spm)
exit(fuzz_driver_main(CommandLine.argc, CommandLine.unsafeArgv, fuzzOneInput))
