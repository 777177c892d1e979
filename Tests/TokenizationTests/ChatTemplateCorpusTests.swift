import Foundation
import JSON
import Testing
@testable import Tokenization

/// llama.cpp's template corpus (the chat templates of many model families), each rendered for four
/// conversations and compared with what Python jinja2 renders in transformers' environment.
/// The fixture (template sources and expected renders) comes from scripts/gen_template_corpus.py.
enum TemplateCorpus {
    static let root: JSONValue? = {
        guard let text = try? TemplateFixtures.text("corpus.json") else { return nil }
        return try? JSONValue(parsing: text)
    }()

    static var templates: [JSONValue] {
        if case .array(let items)? = root?["templates"] { return items }
        return []
    }

    static let shapes = ["user", "system_user", "multi_turn", "tool_call"]

    /// "template name|shape" for every render in the fixture.
    static var caseNames: [String] {
        templates.flatMap { t in
            shapes.compactMap { shape in
                t["renders"]?[shape] == nil ? nil : "\(t["name"]?.stringValue ?? "?")|\(shape)"
            }
        }
    }

    /// The fixture's fixed `strftime_now` time (ISO 8601, UTC).
    static var now: Date {
        let formatter = ISO8601DateFormatter()
        return root?["now"]?.stringValue.flatMap(formatter.date(from:)) ?? Date(timeIntervalSince1970: 0)
    }
}

@Suite struct ChatTemplateCorpusTests {
    @Test func corpusIsPresent() {
        #expect(TemplateCorpus.templates.count >= 70)
        #expect(TemplateCorpus.caseNames.count == TemplateCorpus.templates.count * TemplateCorpus.shapes.count)
    }

    @Test(arguments: TemplateCorpus.caseNames)
    func render(_ caseName: String) throws {
        let parts = caseName.split(separator: "|").map(String.init)
        let (name, shape) = (parts[0], parts[1])
        let root = try #require(TemplateCorpus.root)
        let entry = try #require(TemplateCorpus.templates.first { $0["name"]?.stringValue == name })
        let expectation = try #require(entry["renders"]?[shape])
        let conversation = try #require(root["conversations"]?[shape])
        guard case .array(let rawMessages)? = conversation["messages"] else { Issue.record("no messages"); return }
        let messages = try rawMessages.map(ChatMessage.init(json:))
        var tools: [JSONValue]?
        if case .array(let t)? = conversation["tools"] { tools = t }

        let template = try ChatTemplate(source: try #require(entry["source"]?.stringValue))
        let render = {
            try template.render(messages: messages, addGenerationPrompt: true,
                                bosToken: root["bos_token"]?.stringValue ?? "",
                                eosToken: root["eos_token"]?.stringValue ?? "",
                                tools: tools, now: TemplateCorpus.now)
        }
        if let expected = expectation["expected"]?.stringValue {
            let output = try render()
            #expect(output == expected)
        } else {
            // jinja2 failed for this conversation, so Swiftlet must fail too; a template's own
            // raise_exception must surface with its message.
            let error = #expect(throws: ChatTemplateError.self, "jinja2: \(expectation["error"]?.stringValue ?? "")") {
                try render()
            }
            if expectation["raised"] == .bool(true) {
                #expect(error?.kind == .raised)
                #expect(error?.message == expectation["error"]?.stringValue)
            }
        }
    }
}
