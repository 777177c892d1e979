import Foundation
import FuzzDriver
import Server

/// The OpenAI request decoder (chat and text completions) on arbitrary bodies: a request or an
/// `APIError` (a 4xx naming the field), never a crash or a hang.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let body = Array(UnsafeBufferPointer(start: data, count: size))
    for chat in [true, false] {
        do {
            _ = try CompletionRequest(body: body, chat: chat)
        } catch let error as APIError {
            guard (400..<500).contains(error.status) else { fatalError("a bad body gave status \(error.status): \(error)") }
        } catch {
            fatalError("untyped request error \(error)")
        }
    }
    return 0
}

exit(fuzz_driver_main(CommandLine.argc, CommandLine.unsafeArgv, fuzzOneInput))
