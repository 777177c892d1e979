import Foundation
import JSON
import Testing
@testable import Tokenization

/// Fixtures from scripts/gen_template_fixtures.py: real chat templates and small feature
/// templates rendered by Python jinja2 exactly as transformers renders them.
enum TemplateFixtures {
    static func url(_ file: String) -> URL {
        Bundle.module.resourceURL!.appendingPathComponent("Fixtures/templates/\(file)")
    }

    static func text(_ file: String) throws -> String {
        try String(contentsOf: url(file), encoding: .utf8)
    }

    static func json(_ file: String) -> [JSONValue] {
        guard let text = try? text(file), case .array(let items)? = try? JSONValue(parsing: text) else { return [] }
        return items
    }

    static let cases = json("cases.json")
    static let features = json("features.json")

    static func named(_ list: [JSONValue], _ name: String) -> JSONValue? {
        list.first { $0["name"]?.stringValue == name }
    }

    struct Case {
        var name: String
        var template: String
        var messages: [ChatMessage]
        var tools: [JSONValue]?
        var extra: [String: JSONValue]
        var addGenerationPrompt: Bool
        var bos: String
        var eos: String
        var expected: String?
        var expectedError: String?

        init(_ v: JSONValue) throws {
            name = v["name"]?.stringValue ?? "?"
            template = v["template"]?.stringValue ?? "?"
            guard case .array(let ms)? = v["messages"] else { throw JSONParseError(offset: 0, message: "no messages") }
            messages = try ms.map(ChatMessage.init(json:))
            if case .array(let t)? = v["tools"] { tools = t }
            extra = [:]
            if case .object(let o)? = v["extra"] { for (k, x) in o { extra[k] = x } }
            addGenerationPrompt = v["add_generation_prompt"] == .bool(true)
            bos = v["bos_token"]?.stringValue ?? ""
            eos = v["eos_token"]?.stringValue ?? ""
            expected = v["expected"]?.stringValue
            expectedError = v["expected_error"]?.stringValue
        }

        func render(with t: ChatTemplate) throws -> String {
            try t.render(messages: messages, addGenerationPrompt: addGenerationPrompt, bosToken: bos, eosToken: eos,
                         tools: tools, extraContext: extra)
        }
    }
}

@Suite struct ChatTemplateFixtureTests {
    @Test func fixturesArePresent() {
        #expect(TemplateFixtures.cases.count >= 40)
        #expect(TemplateFixtures.features.count >= 60)
    }

    @Test(arguments: TemplateFixtures.cases.compactMap { $0["name"]?.stringValue })
    func realTemplate(_ name: String) throws {
        let c = try TemplateFixtures.Case(try #require(TemplateFixtures.named(TemplateFixtures.cases, name)))
        let template = try ChatTemplate(source: try TemplateFixtures.text(c.template))
        if let expected = c.expected {
            let output = try c.render(with: template)
            #expect(output == expected)
        } else {
            let error = #expect(throws: ChatTemplateError.self) { try c.render(with: template) }
            #expect(error?.kind == .raised)
            #expect(error?.message == c.expectedError)
        }
    }

    @Test(arguments: TemplateFixtures.features.compactMap { $0["name"]?.stringValue })
    func feature(_ name: String) throws {
        let f = try #require(TemplateFixtures.named(TemplateFixtures.features, name))
        let source = try #require(f["template"]?.stringValue)
        var context: [String: JSONValue] = [:]
        if case .object(let o)? = f["context"] { for (k, v) in o { context[k] = v } }
        let output = try ChatTemplate(source: source).render(context: context)
        #expect(output == f["expected"]?.stringValue, "template: \(source)")
    }
}
