import Foundation
import GGUF
import JSON
import TestSupport
import Testing
@testable import Tokenization

private func render(_ source: String, _ context: [String: JSONValue] = [:]) throws -> String {
    try ChatTemplate(source: source).render(context: context)
}

private func failure(_ source: String, _ context: [String: JSONValue] = [:]) -> ChatTemplateError? {
    #expect(throws: ChatTemplateError.self) { _ = try render(source, context) }
    do {
        _ = try render(source, context)
        return nil
    } catch let e as ChatTemplateError {
        return e
    } catch {
        return nil
    }
}

@Suite struct ChatTemplateErrorTests {
    @Test func unclosedOutputTag() throws {
        let e = try #require(failure("hello\n  {{ name"))
        #expect(e.kind == .syntax)
        #expect((e.line, e.column) == (2, 3))
        #expect(e.message.contains("'}}'"))
    }

    @Test func unclosedBlock() throws {
        let e = try #require(failure("a\n{% for x in xs %}\n{{ x }}"))
        #expect(e.kind == .syntax)
        #expect((e.line, e.column) == (2, 4))
        #expect(e.message.contains("endfor"))
    }

    @Test func strayEndTag() throws {
        let e = try #require(failure("{% if x %}{% endif %}\n  {% endif %}"))
        #expect((e.line, e.column) == (2, 6))
        #expect(e.message.contains("endif"))
    }

    @Test func unknownStatement() throws {
        let e = try #require(failure("x{% frobnicate %}"))
        #expect(e.kind == .syntax)
        #expect((e.line, e.column) == (1, 5))
        #expect(e.message.contains("frobnicate"))
    }

    @Test func badExpression() throws {
        let e = try #require(failure("{{ 1 + }}"))
        #expect(e.kind == .syntax)
        #expect((e.line, e.column) == (1, 8))
    }

    @Test func unexpectedCharacter() throws {
        let e = try #require(failure("line one\n{{ a ; b }}"))
        #expect((e.line, e.column) == (2, 6))
    }

    @Test func unterminatedStringAndComment() throws {
        let s = try #require(failure("{{ 'abc }}"))
        #expect((s.line, s.column) == (1, 4))
        let c = try #require(failure("ok {# never closed"))
        #expect((c.line, c.column) == (1, 4))
    }

    @Test func raiseExceptionKeepsMessageAndPosition() throws {
        let e = try #require(failure("{% if true %}\n    {{ raise_exception('Roles must alternate') }}\n{% endif %}"))
        #expect(e.kind == .raised)
        #expect(e.message == "Roles must alternate")
        #expect(e.line == 2)
        #expect(e.column == 23)
    }

    @Test func renderErrorsHavePositions() throws {
        let add = try #require(failure("ok\n{{ 'a' + 1 }}"))
        #expect(add.kind == .render)
        #expect(add.line == 2)
        #expect(add.message.contains("unsupported operand"))

        let filter = try #require(failure("{{ x | nosuchfilter }}", ["x": 1]))
        #expect(filter.message.contains("nosuchfilter"))
        #expect((filter.line, filter.column) == (1, 8))

        let call = try #require(failure("{{ nothing() }}"))
        #expect(call.message.contains("'nothing' is undefined"))

        let ns = try #require(failure("{% set d = {} %}{% set d.a = 1 %}"))
        #expect(ns.message.contains("namespace"))

        let json = try #require(failure("{{ missing | tojson }}"))
        #expect(json.message.contains("JSON"))
    }

    @Test func errorDescription() throws {
        let e = ChatTemplateError(kind: .syntax, message: "boom", line: 3, column: 7)
        #expect(e.description == "chat template syntax error at line 3, column 7: boom")
    }

    @Test func recursionIsBounded() throws {
        let e = try #require(failure("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"))
        #expect(e.kind == .render)
        #expect(e.message.contains("nested too deeply"))
    }

    @Test func loopsAreBounded() throws {
        // The default limit (a million iterations) is slow in debug builds; the same check
        // with a small limit.
        var limits = RenderLimits()
        limits.maxIterations = 10_000
        let nested = try ChatTemplate(source: "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% endfor %}{% endfor %}{% endfor %}")
        let e = try #require(throws: ChatTemplateError.self) { try nested.render(context: [:], now: Date(), limits: limits) }
        #expect(e.message.contains("iterations"))
        #expect((e.line, e.column) == (1, 56))  // the innermost `for`
        let r = try #require(failure("{{ range(100000000) | length }}"))
        #expect(r.message.contains("range"))
        let s = try #require(failure("{{ 'x' * 100000000 }}"))
        #expect(s.message.contains("too large"))
    }

    @Test func deepNestingIsAnErrorNotACrash() throws {
        let deep = String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000)
        let e = try #require(failure("{{ \(deep) }}"))
        #expect(e.kind == .syntax)
        let deepIf = String(repeating: "{% if true %}", count: 1000)
        #expect(failure(deepIf) != nil)
    }
}

@Suite struct ChatTemplateLanguageTests {
    @Test func undefinedIsLenient() throws {
        #expect(try render("[{{ missing.attr.deeper }}][{{ missing['k'] }}][{{ missing.a is defined }}]") == "[][][False]")
        #expect(try render("{{ x.y | default('dflt') }}") == "dflt")
        #expect(try render("{% for x in missing %}x{% else %}none{% endfor %}") == "none")
    }

    @Test func whitespaceControl() throws {
        #expect(try render("{%- if true -%}\n  x\n{%- endif %}\n") == "x")
        #expect(try render("  {%- if true %}a{% endif %}") == "a")
        #expect(try render("<{{- ' a ' -}}>") == "< a >")
    }

    @Test func strftimeNow() throws {
        var c = DateComponents()
        (c.year, c.month, c.day, c.hour) = (2024, 7, 26, 15)
        var cal = Calendar(identifier: .gregorian)
        cal.timeZone = TimeZone.current
        let date = try #require(cal.date(from: c))
        let t = try ChatTemplate(source: "{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d %H:%M %A %B %-d') }}")
        #expect(try t.render(context: [:], now: date) == "26 Jul 2024|2024-07-26 15:00 Friday July 26")
    }

    @Test func contextOverridesAndMessageShape() throws {
        let t = try ChatTemplate(source: "{% for m in messages %}{{ m.role }}{% if 'tool_calls' in m %}+calls{% endif %}{% if m.content is none %}(none){% endif %};{% endfor %}{{ tools is none }}{{ x }}")
        let call = ChatToolCall(id: "abc", name: "f", arguments: ["a": 1])
        let out = try t.render(messages: [.user("hi"), .assistant(nil, toolCalls: [call]), .tool("r", toolCallID: "abc")],
                               addGenerationPrompt: false, extraContext: ["x": "!"])
        #expect(out == "user;assistant+calls(none);tool;True!")
    }

    @Test func renderIsThreadSafe() async throws {
        let t = try #require(ChatTemplate.builtin(named: "chatml"))
        try await withThrowingTaskGroup(of: String.self) { group in
            for i in 0..<8 {
                group.addTask { try t.render(messages: [.user("m\(i)")], addGenerationPrompt: true) }
            }
            var outputs: [String] = []
            for try await o in group { outputs.append(o) }
            #expect(outputs.count == 8)
        }
    }
}

@Suite struct ChatTemplateBuiltinTests {
    private func fixtureCases(_ template: String) throws -> [TemplateFixtures.Case] {
        try TemplateFixtures.cases.map(TemplateFixtures.Case.init)
            .filter { $0.template == template && $0.expected != nil && $0.tools == nil && $0.extra.isEmpty }
    }

    @Test func allBuiltinsParse() {
        for name in ChatTemplate.builtinNames { #expect(ChatTemplate.builtin(named: name) != nil, "\(name)") }
        #expect(ChatTemplate.builtin(named: "nonsense") == nil)
    }

    /// The built-in Gemma format reproduces Gemma 3's official template, system prompt merged
    /// into the first user turn.
    @Test func gemmaMatchesGemma3Template() throws {
        let gemma = try #require(ChatTemplate.builtin(named: "gemma"))
        let cases = try fixtureCases("gemma3.jinja").filter { $0.messages.allSatisfy { $0.contentParts == nil } }
        #expect(cases.count >= 5)
        for c in cases { #expect(try c.render(with: gemma) == c.expected, "\(c.name)") }
    }

    @Test func llama3MatchesLlama3Template() throws {
        let t = try #require(ChatTemplate.builtin(named: "llama3"))
        for c in try fixtureCases("llama3.jinja") { #expect(try c.render(with: t) == c.expected, "\(c.name)") }
    }

    @Test func mistralMatchesMistralTemplate() throws {
        let t = try #require(ChatTemplate.builtin(named: "mistral"))
        let cases = try fixtureCases("mistral_v0_2.jinja")
        #expect(cases.count >= 3)
        for c in cases { #expect(try c.render(with: t) == c.expected, "\(c.name)") }
    }

    @Test func chatmlMatchesSmolLM2WithSystemPrompt() throws {
        let t = try #require(ChatTemplate.builtin(named: "chatml"))
        let cases = try fixtureCases("smollm2.jinja").filter { $0.messages.first?.role == "system" }
        #expect(cases.count >= 3)
        for c in cases { #expect(try c.render(with: t) == c.expected, "\(c.name)") }
    }

    @Test func llama2Format() throws {
        let t = try #require(ChatTemplate.builtin(named: "llama2"))
        let out = try t.render(messages: [.system("S"), .user("U1"), .assistant("A1"), .user("U2")], addGenerationPrompt: true,
                               bosToken: "<s>", eosToken: "</s>")
        #expect(out == "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]")
    }

    @Test func fallbackByArchitecture() throws {
        let gemma3 = try #require(ChatTemplate.fallback(forArchitecture: "gemma3"))
        let out = try gemma3.render(messages: [.system("Be brief."), .user("Hi")], addGenerationPrompt: true, bosToken: "<bos>")
        #expect(out == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n")
        #expect(ChatTemplate.fallback(forArchitecture: "qwen2") != nil)
        #expect(ChatTemplate.fallback(forArchitecture: "llama") == nil)
    }

    @Test func realModels() throws {
        if FileManager.default.fileExists(atPath: TestSupport.smolLM2Path) {
            let file = try GGUFFile(path: TestSupport.smolLM2Path)
            let source = try #require(file["tokenizer.chat_template"]?.string)
            #expect(source == (try TemplateFixtures.text("smollm2.jinja")))
            let t = try #require(try ChatTemplate.forModel(file))
            let out = try t.render(messages: [.user("Hi")], addGenerationPrompt: true)
            #expect(out.hasPrefix("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"))
        }
        if FileManager.default.fileExists(atPath: TestSupport.gemma3Path) {
            let file = try GGUFFile(path: TestSupport.gemma3Path)
            #expect(file["tokenizer.chat_template"] == nil)
            let t = try #require(try ChatTemplate.forModel(file))
            let out = try t.render(messages: [.user("Hi")], addGenerationPrompt: true, bosToken: "<bos>")
            #expect(out == "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n")
        }
    }
}

@Suite struct ChatTemplateRobustnessTests {
    /// Every prefix of every real template, and a few mangled variants, must either render or
    /// throw `ChatTemplateError`: never trap or hang.
    @Test func truncatedAndMangledTemplatesNeverCrash() throws {
        let files = ["llama3_1.jinja", "qwen2_5.jinja", "qwen3.jinja", "mistral_v0_3.jinja", "gemma3.jinja", "smollm2.jinja"]
        let messages: [ChatMessage] = [.system("s"), .user("u"), .assistant("a"), .user("v")]
        var outcomes = 0
        for file in files {
            let source = Array(try TemplateFixtures.text(file))
            var variants: [String] = []
            for cut in stride(from: 0, to: source.count, by: max(1, source.count / 60)) {
                variants.append(String(source[..<cut]))
                var mangled = source
                mangled.remove(at: cut)
                variants.append(String(mangled))
                mangled = source
                mangled.insert(["{", "}", "%", "(", "'", "-", "|", "["][cut % 8], at: cut)
                variants.append(String(mangled))
            }
            for v in variants {
                do {
                    let t = try ChatTemplate(source: v)
                    _ = try t.render(messages: messages, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
                } catch is ChatTemplateError {
                }
                outcomes += 1
            }
        }
        #expect(outcomes > 1000)
    }

    @Test func extremeNumbersAreErrorsOrValues() throws {
        let big = "9223372036854775807"
        #expect(try render("{{ -(-\(big) - 1) }}").hasPrefix("9.22"))  // Int.min negated: a float, not a trap
        #expect(try render("{{ 1e300 | int }}") == "0")
        #expect(try render("{{ range(0, \(big), \(big)) | list }}") == "[0]")
        #expect(try render("{{ [1, 2, 3][::\(big)] }}") == "[1]")
        #expect(throws: ChatTemplateError.self) { try render("{{ \(big) + 1 }}") }
        #expect(throws: ChatTemplateError.self) { try render("{{ 'ab' * \(big) }}") }
        #expect(throws: ChatTemplateError.self) { try render("{{ 1 // 0 }}") }
        #expect(throws: ChatTemplateError.self) { try render("{{ 123456789012345678901234567890 }}") }
    }
}
