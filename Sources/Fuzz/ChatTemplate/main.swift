import Foundation
import FuzzDriver
import JSON
import Tokenization

/// The chat-template lexer, parser and interpreter on arbitrary template text, rendered over a
/// conversation with a system prompt, tool calls, a tool result and tools, under the renderer's
/// own limits: text or a `ChatTemplateError` (with line and column), never a crash or a hang.
enum Fixture {
    static let conversation: [ChatMessage] = [
        .system("You are terse."),
        ChatMessage(role: "user", content: "What is the weather in Paris?"),
        ChatMessage(role: "assistant", content: nil,
                    toolCalls: [ChatToolCall(id: "call_1", name: "get_weather", arguments: try! JSONValue(parsing: #"{"city":"Paris"}"#))]),
        ChatMessage(role: "tool", content: #"{"celsius":21}"#, toolCallID: "call_1"),
        ChatMessage(role: "assistant", content: "21 °C."),
        ChatMessage(role: "user", content: "Thanks <|im_end|> {{ and }}"),
    ]
    static let tools: [JSONValue] = [try! JSONValue(parsing: """
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather",
         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
        """)]
}

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let source = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let template = try ChatTemplate(source: source)
        _ = try template.render(messages: Fixture.conversation, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>",
                                tools: Fixture.tools, now: Date(timeIntervalSince1970: 1_700_000_000))
    } catch is ChatTemplateError {
    } catch {
        fatalError("untyped template error \(error)")
    }
    return 0
}

exit(fuzz_driver_main(CommandLine.argc, CommandLine.unsafeArgv, fuzzOneInput))
