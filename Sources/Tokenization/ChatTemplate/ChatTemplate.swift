import Foundation
import GGUF
import JSON

/// A Jinja chat template (the `tokenizer.chat_template` of a GGUF / Hugging Face model),
/// rendered the way transformers' `apply_chat_template` renders it: `trim_blocks` and
/// `lstrip_blocks` on, `raise_exception`, `strftime_now`, `namespace`, `range`, loop controls,
/// and a `tojson` that neither escapes HTML nor sorts keys.
///
/// Parsing happens once in `init(source:)`; `render` can then be called from any thread.
public struct ChatTemplate: Sendable {
    /// The template text.
    public let source: String
    private let nodes: [Node]

    /// Parses `source`; throws `ChatTemplateError` (kind `.syntax`) with the line and column
    /// of the problem.
    public init(source: String) throws {
        self.source = source
        var lexer = Lexer(source: source)
        var parser = Parser(tokens: try lexer.tokenize())
        nodes = try parser.parseTemplate()
    }

    /// Renders a conversation into the prompt text.
    ///
    /// - Parameters:
    ///   - addGenerationPrompt: end with the header that starts the assistant's reply.
    ///   - bosToken, eosToken: the vocabulary's BOS / EOS text (`bos_token`, `eos_token`).
    ///   - tools: tool (function) schemas, usually `{"type": "function", "function": {...}}`;
    ///     nil renders as `none`, as transformers passes it.
    ///   - extraContext: further template variables (`date_string`, `enable_thinking`,
    ///     `tools_in_user_message`, ...); they override the standard ones.
    ///   - now: the time `strftime_now` reports.
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String = "",
                       eosToken: String = "", tools: [JSONValue]? = nil,
                       extraContext: [String: JSONValue] = [:], now: Date = Date()) throws -> String
    {
        var context: [String: JSONValue] = [
            "messages": .array(messages.map(\.templateValue)),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken),
            "eos_token": .string(eosToken),
            "tools": tools.map { .array($0) } ?? .null,
            "documents": .null,
        ]
        for (k, v) in extraContext { context[k] = v }
        return try render(context: context, now: now)
    }

    /// Renders with an arbitrary set of variables.
    public func render(context: [String: JSONValue], now: Date = Date()) throws -> String {
        try render(context: context, now: now, limits: RenderLimits())
    }

    func render(context: [String: JSONValue], now: Date, limits: RenderLimits) throws -> String {
        var values: [String: Value] = [:]
        for (k, v) in context { values[k] = Value(v) }
        return try Interpreter(context: values, now: now, limits: limits).render(nodes)
    }
}

// MARK: - Built-in templates

extension ChatTemplate {
    /// Names accepted by `builtin(named:)`.
    public static let builtinNames = ["chatml", "qwen2", "llama3", "llama2", "mistral", "gemma", "phi3"]

    /// Well-known prompt formats, for models whose GGUF carries no template.
    /// Each handles string content, an optional leading system message and
    /// `add_generation_prompt`:
    /// - `chatml`: `<|im_start|>role\n...<|im_end|>\n` (SmolLM, Qwen, many fine-tunes).
    /// - `qwen2`: ChatML with Qwen2's default system prompt when none is given.
    /// - `llama3`: `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`.
    /// - `llama2`: `<s>[INST] <<SYS>>\n...\n<</SYS>>\n\n... [/INST] ... </s>`.
    /// - `mistral`: `<s>[INST] ... [/INST]...</s>`, system prompt prepended to the first user turn.
    /// - `gemma`: `<start_of_turn>user\n...<end_of_turn>\n<start_of_turn>model\n`, system prompt
    ///   merged into the first user turn (as Gemma 3's own template does).
    /// - `phi3`: `<|role|>\n...<|end|>\n`.
    public static func builtin(named name: String) -> ChatTemplate? {
        guard let source = builtinSources[name.lowercased()] else { return nil }
        return try? ChatTemplate(source: source)
    }

    /// The template to use for a model architecture (`general.architecture`) whose GGUF has no
    /// `tokenizer.chat_template`. Returns nil where the architecture does not determine the
    /// format (notably `llama`, shared by Llama 2, Llama 3, Mistral and SmolLM); callers can
    /// then choose with `builtin(named:)`.
    public static func fallback(forArchitecture architecture: String) -> ChatTemplate? {
        let arch = architecture.lowercased()
        if arch.hasPrefix("gemma") { return builtin(named: "gemma") }
        if arch.hasPrefix("qwen") { return builtin(named: "chatml") }
        if arch.hasPrefix("phi3") || arch == "phi4" { return builtin(named: "phi3") }
        return nil
    }

    /// The model's own template, or the architecture fallback when it has none.
    public static func forModel(_ file: GGUFFile) throws -> ChatTemplate? {
        if let source = file["tokenizer.chat_template"]?.string, !source.isEmpty {
            return try ChatTemplate(source: source)
        }
        return file.architecture.flatMap(fallback(forArchitecture:))
    }

    static let builtinSources: [String: String] = [
        "chatml": """
            {%- for message in messages %}
            {{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}
            {%- endfor %}
            {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\\n' }}
            {%- endif %}
            """,
        "qwen2": """
            {%- if not messages or messages[0].role != 'system' %}
            {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
            {%- endif %}
            {%- for message in messages %}
            {{- '<|im_start|>' + message.role + '\\n' + (message.content or '') + '<|im_end|>\\n' }}
            {%- endfor %}
            {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\\n' }}
            {%- endif %}
            """,
        "llama3": """
            {{- bos_token }}
            {%- for message in messages %}
            {{- '<|start_header_id|>' + message.role + '<|end_header_id|>\\n\\n' + (message.content or '') | trim + '<|eot_id|>' }}
            {%- endfor %}
            {%- if add_generation_prompt %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
            {%- endif %}
            """,
        "llama2": """
            {%- if messages and messages[0].role == 'system' %}
            {%- set system = messages[0].content | trim %}
            {%- set turns = messages[1:] %}
            {%- else %}
            {%- set system = '' %}
            {%- set turns = messages %}
            {%- endif %}
            {%- for message in turns %}
            {%- if message.role == 'user' %}
            {{- bos_token + '[INST] ' }}
            {%- if loop.first and system %}
            {{- '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' }}
            {%- endif %}
            {{- (message.content or '') | trim + ' [/INST]' }}
            {%- elif message.role == 'assistant' %}
            {{- ' ' + (message.content or '') | trim + ' ' + eos_token }}
            {%- endif %}
            {%- endfor %}
            """,
        "mistral": """
            {{- bos_token }}
            {%- if messages and messages[0].role == 'system' %}
            {%- set system = messages[0].content + '\\n\\n' %}
            {%- set turns = messages[1:] %}
            {%- else %}
            {%- set system = '' %}
            {%- set turns = messages %}
            {%- endif %}
            {%- set ns = namespace(first_user=true) %}
            {%- for message in turns %}
            {%- if message.role == 'user' %}
            {{- '[INST] ' + (system if ns.first_user else '') + (message.content or '') + ' [/INST]' }}
            {%- set ns.first_user = false %}
            {%- elif message.role == 'assistant' %}
            {{- (message.content or '') + eos_token }}
            {%- endif %}
            {%- endfor %}
            """,
        "gemma": """
            {{- bos_token }}
            {%- if messages and messages[0].role == 'system' %}
            {%- set prefix = messages[0].content + '\\n\\n' %}
            {%- set turns = messages[1:] %}
            {%- else %}
            {%- set prefix = '' %}
            {%- set turns = messages %}
            {%- endif %}
            {%- for message in turns %}
            {%- set role = 'model' if message.role == 'assistant' else message.role %}
            {{- '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') + (message.content or '') | trim + '<end_of_turn>\\n' }}
            {%- endfor %}
            {%- if add_generation_prompt %}
            {{- '<start_of_turn>model\\n' }}
            {%- endif %}
            """,
        "phi3": """
            {%- for message in messages %}
            {{- '<|' + message.role + '|>\\n' + (message.content or '') + '<|end|>\\n' }}
            {%- endfor %}
            {%- if add_generation_prompt %}
            {{- '<|assistant|>\\n' }}
            {%- endif %}
            """,
    ]
}
