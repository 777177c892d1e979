import Foundation
import Testing
import TestSupport

/// `--chat-template-file` on the command line.
@Suite struct ChatTemplateFileTests {
    func write(_ text: String) throws -> String {
        let file = try TestSupport.scratchDirectory("template").appendingPathComponent("chat.jinja")
        try text.write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }

    /// A missing or broken file is reported, naming the option, before the model is looked at
    /// (the model path here does not exist either).
    @Test(arguments: ["generate", "run", "serve"])
    func badFilesAreUsageErrors(_ command: String) throws {
        let prompt = command == "serve" ? [] : ["hi"]
        let missing = try CommandLine.run([command, "/nonexistent/model.gguf"] + prompt
                                          + ["--chat-template-file", "/nonexistent/chat.jinja"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("--chat-template-file: cannot read '/nonexistent/chat.jinja'"), "\(missing.stderr)")

        let broken = try write("{% for m in messages %}{{ m.content }}")
        let unparsable = try CommandLine.run([command, "/nonexistent/model.gguf"] + prompt + ["--chat-template-file", broken])
        #expect(unparsable.status != 0)
        #expect(unparsable.stderr.contains("is not a valid template"), "\(unparsable.stderr)")
        #expect(unparsable.stderr.contains("line 1"), "the error points into the template: \(unparsable.stderr)")
    }

    /// `generate` with a template sends the prompt as one user message through it: the same
    /// tokens and greedy answer as the rendered text given raw.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: TestSupport.smolLM2Path), "needs SmolLM2-135M-Instruct"))
    func generateRendersThePromptWithTheTemplate() throws {
        let template = try write("<|im_start|>user\n{{ messages[0].content }}<|im_end|>\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        let common = ["-n", "6", "--temp", "0", "--ctx", "256", "-t", "2", "--json"]
        let templated = try CommandLine.run(["generate", TestSupport.smolLM2Path, "What is 2+2?", "--chat-template-file", template] + common)
        #expect(templated.status == 0, "\(templated.stderr)")
        let raw = try CommandLine.run(["generate", TestSupport.smolLM2Path,
                                       "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"] + common)
        #expect(raw.status == 0, "\(raw.stderr)")
        let a = try #require(try JSONSerialization.jsonObject(with: Data(templated.stdout.utf8)) as? [String: Any])
        let b = try #require(try JSONSerialization.jsonObject(with: Data(raw.stdout.utf8)) as? [String: Any])
        #expect(a["prompt_tokens"] as? Int == b["prompt_tokens"] as? Int)
        #expect(a["tokens"] as? [Int] == b["tokens"] as? [Int])
    }
}
