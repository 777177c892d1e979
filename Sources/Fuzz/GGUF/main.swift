import Foundation
import FuzzDriver
import GGUF
import Models
import Tokenization

/// The GGUF reader on arbitrary bytes written to a file, then what reads its metadata at load:
/// the hyper-parameters, the tokenizer and the chat template. Each either succeeds or throws its
/// typed error; every tensor the reader accepts lies inside the file.
enum Scratch {
    static let path = FileManager.default.temporaryDirectory.appendingPathComponent("swiftlet-fuzz-gguf-\(getpid()).gguf").path
}

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    guard FileManager.default.createFile(atPath: Scratch.path, contents: Data(UnsafeBufferPointer(start: data, count: size))) else {
        fatalError("cannot write \(Scratch.path)")
    }
    defer { unlink(Scratch.path) }
    let file: GGUFFile
    do {
        file = try GGUFFile(path: Scratch.path)
    } catch {
        _ = error.description
        return 0
    }
    var checksum: UInt8 = 0
    for tensor in file.tensors {
        guard tensor.fileOffset >= file.dataOffset, tensor.byteCount >= 0, tensor.fileOffset + tensor.byteCount <= size else {
            fatalError("tensor \(tensor.name) at \(tensor.fileOffset) (+\(tensor.byteCount)) is outside the \(size)-byte file")
        }
        let bytes = file.bytes(for: tensor)
        if let first = bytes.first, let last = bytes.last { checksum ^= first ^ last }
    }
    _ = checksum
    _ = try? ModelConfig(file: file)
    _ = try? loadTokenizer(from: file)
    do { _ = try ChatTemplate.forModel(file) } catch is ChatTemplateError {} catch { fatalError("untyped template error \(error)") }
    return 0
}

exit(fuzz_driver_main(CommandLine.argc, CommandLine.unsafeArgv, fuzzOneInput))
