import Engine
import Foundation
import JSON
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Tokenization

/// Server settings from the command line.
public struct ServerConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 8080
    public var apiKey: String?
    /// Largest request body accepted (413 beyond).
    public var maxBodyBytes = 4 << 20
    public var engine = Generator.Configuration()
    /// Names the `model` field may use besides the model file's name.
    public var modelAliases: [String] = []
    /// `--pooling`: how `/v1/embeddings` pools hidden states (nil: the file's `pooling_type`, else mean).
    public var pooling: EmbeddingPooling?
    /// `--reasoning-format`: where chat replies' thinking goes (a request's `reasoning_format` overrides).
    public var reasoningFormat = ReasoningFormat.deepseek
    /// `--lookup` / `--draft`: how requests that do not say draft (nil: they do not).
    public var speculation: Speculation?
    /// `--reasoning-budget`: thinking tokens per chat reply before the engine closes the block (nil: no limit).
    public var reasoningBudget: Int?
    /// `/ready` answers 503 while more sequences than this wait for admission (nil: no limit).
    public var readyQueueLimit: Int?
    /// `--cors-origin`: origins whose pages may call the API (`*`: any); empty: no CORS headers.
    public var corsOrigins: [String] = []

    public init() {}

    /// The API key kept in a file (`--api-key-file`), so it stays out of the process list and
    /// shell history: the first line, without surrounding whitespace.
    public static func apiKey(fromFile path: String) throws -> String {
        guard let contents = FileManager.default.contents(atPath: path) else {
            throw ServerConfigurationError("cannot read the API key file '\(path)'")
        }
        let key = String(decoding: contents, as: UTF8.self).split(whereSeparator: \.isNewline).first
            .map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        guard !key.isEmpty else { throw ServerConfigurationError("the API key file '\(path)' is empty") }
        return key
    }
}

public struct ServerConfigurationError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// The engine once the model is loaded (nil before), shared by the handlers.
public final class ServerState: @unchecked Sendable {
    private let lock = NSLock()
    private var _engine: Generator?
    private var _loadError: String?
    private var _draining = false

    public init() {}

    public var engine: Generator? {
        get { lock.lock(); defer { lock.unlock() }; return _engine }
        set { lock.lock(); _engine = newValue; lock.unlock() }
    }

    /// The models served besides the first (nil: only the first).
    public var router: ModelRouter? {
        get { lock.lock(); defer { lock.unlock() }; return _router }
        set { lock.lock(); _router = newValue; lock.unlock() }
    }
    private var _router: ModelRouter?

    public var loadError: String? {
        get { lock.lock(); defer { lock.unlock() }; return _loadError }
        set { lock.lock(); _loadError = newValue; lock.unlock() }
    }

    /// Set on SIGTERM/SIGINT: `/ready` answers 503 and new requests are refused while the
    /// ones in flight finish.
    public var draining: Bool {
        get { lock.lock(); defer { lock.unlock() }; return _draining }
        set { lock.lock(); _draining = newValue; lock.unlock() }
    }
}

/// Request context that keeps the connection, so a request can be cancelled when its client
/// goes away (even while no byte of the response is being written).
public struct ServerRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let channel: (any Channel)?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        channel = source.channel
    }
}

/// The OpenAI-compatible HTTP API.
public struct OpenAIServer: Sendable {
    public let configuration: ServerConfiguration
    public let state: ServerState
    public let metrics: ServerMetrics
    let logger: Logger
    let created = Int(Date().timeIntervalSince1970)

    public init(configuration: ServerConfiguration, state: ServerState, metrics: ServerMetrics, logger: Logger) {
        self.configuration = configuration
        self.state = state
        self.metrics = metrics
        self.logger = logger
    }

    public func makeRouter() -> Router<ServerRequestContext> {
        let router = Router(context: ServerRequestContext.self)
        // before authentication: a browser's preflight carries no API key
        if !configuration.corsOrigins.isEmpty { router.add(middleware: AllowedOriginsCORS(origins: configuration.corsOrigins)) }
        router.add(middleware: APIMiddleware(server: self))
        router.get("/health") { _, _ in health() }
        router.get("/ready") { _, _ in ready() }
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: .init(byteBuffer: ByteBuffer(string: metrics.render())))
        }
        router.get("/v1/models") { _, _ in try await models() }
        router.post("/v1/chat/completions") { request, context in try await complete(request, context: context, chat: true) }
        router.post("/v1/completions") { request, context in try await complete(request, context: context, chat: false) }
        router.post("/v1/embeddings") { request, context in try await embeddings(request, context: context) }
        for path in ["/v1/rerank", "/rerank", "/v1/reranking", "/reranking"] {
            router.post(RouterPath(path)) { request, context in try await rerank(request, context: context) }
        }
        addUtilityRoutes(to: router)
        addLoRARoutes(to: router)
        router.post("/v1/messages") { request, context in try await anthropicMessages(request, context: context) }
        router.post("/v1/messages/count_tokens") { request, _ in try await anthropicCountTokens(request) }
        router.post("/v1/responses") { request, context in try await responses(request, context: context) }
        return router
    }

    public func makeApplication() -> some ApplicationProtocol {
        Application(router: makeRouter(),
                    configuration: .init(address: .hostname(configuration.host, port: configuration.port),
                                         serverName: SwiftletVersion.product),
                    logger: logger)
    }

    // MARK: Endpoints

    /// Liveness: 200 whenever the process answers; the body says how far it got.
    func health() -> Response {
        if let error = state.loadError {
            return json(.object(["status": .string("error"), "error": .string(error)]))
        }
        let status = state.engine == nil ? "loading" : state.draining ? "draining" : "ok"
        return json(.object(["status": .string(status)]))
    }

    /// Readiness: 200 only while new requests are welcome (model loaded, not draining, no
    /// more than `readyQueueLimit` sequences waiting), so a load balancer sends traffic elsewhere.
    func ready() -> Response {
        func unavailable(_ fields: JSONObject) -> Response {
            json(.object(fields), status: .serviceUnavailable, headers: [("Retry-After", "1")])
        }
        if let error = state.loadError { return unavailable(["status": "error", "error": .string(error)]) }
        guard let engine = state.engine else { return unavailable(["status": "loading"]) }
        if state.draining { return unavailable(["status": "draining"]) }
        let snapshot = engine.currentSnapshot
        var fields: JSONObject = ["status": "ready", "waiting": .number(JSONNumber(snapshot.waiting)),
                                  "running": .number(JSONNumber(snapshot.running))]
        if let limit = configuration.readyQueueLimit, snapshot.waiting > limit {
            fields["status"] = "busy"
            fields["limit"] = .number(JSONNumber(limit))
            return unavailable(fields)
        }
        return json(.object(fields))
    }

    /// Every model this server answers for: the first (loaded at start), then the others,
    /// loaded or not (`status` says which).
    func models() async throws -> Response {
        let engine = try loadedEngine()
        func entry(_ id: String, loaded: Bool) -> JSONValue {
            .object([
                "id": .string(id),
                "object": .string("model"),
                "created": .number(JSONNumber(created)),
                "owned_by": .string("swiftlet"),
                "version": .string(SwiftletVersion.current),
                "status": .object(["value": .string(loaded ? "loaded" : "unloaded")]),
            ])
        }
        var entries = [entry(engine.model.name, loaded: true)]
        if let router = state.router {
            let loaded = Set(await router.loadedNames)
            entries += router.models.filter { $0.name != engine.model.name }.map { entry($0.name, loaded: loaded.contains($0.name)) }
        }
        return json(.object(["object": .string("list"), "data": .array(entries)]))
    }

    /// The engine for a request's `model`: the first model, or another this server lists
    /// (loaded on first use). 503 while the first model loads, 404 for a name it does not serve.
    func engine(for name: String) async throws -> Generator {
        let primary = try loadedEngine()
        if knowsModel(name, engine: primary) { return primary }
        if let router = state.router {
            do {
                if let engine = try await router.engine(named: name) { return engine }
            } catch let error as ModelRouterError {
                switch error {
                case .allBusy:
                    var e = APIError(status: 503, message: error.description, type: "server_error", code: "models_busy")
                    e.headers = [("Retry-After", "1")]
                    throw e
                case .loadFailed:
                    throw APIError(status: 500, message: error.description, type: "server_error", code: "model_load_failed")
                }
            }
        }
        var served = [primary.model.name] + (state.router?.models.map(\.name) ?? [])
        served = served.reduce(into: []) { if !$0.contains($1) { $0.append($1) } }
        throw APIError(status: 404, message: "the model '\(name)' does not exist; this server runs \(served.map { "'\($0)'" }.joined(separator: ", "))",
                       param: "model", code: "model_not_found")
    }

    /// The engine for a new request; while loading or draining a 503 with `Retry-After`, so
    /// clients and load balancers try again (elsewhere).
    func loadedEngine() throws -> Generator {
        guard let engine = state.engine else {
            var e = APIError(status: 503, message: "the model is still loading", type: "server_error", code: "model_loading")
            e.headers = [("Retry-After", "1")]
            throw e
        }
        guard !state.draining else {
            var e = APIError(status: 503, message: "the server is shutting down and takes no new requests",
                             type: "server_error", code: "draining")
            e.headers = [("Retry-After", "1")]
            throw e
        }
        return engine
    }

    func knowsModel(_ name: String, engine: Generator) -> Bool {
        let n = name.lowercased()
        let known = [engine.model.name, URL(fileURLWithPath: engine.model.path).lastPathComponent] + configuration.modelAliases
        return known.contains { $0.lowercased() == n }
    }

    func complete(_ request: Request, context: ServerRequestContext, chat: Bool) async throws -> Response {
        let started = ContinuousClock.now
        _ = try loadedEngine()
        let parsed = try CompletionRequest(body: try await readBody(request), chat: chat)
        let engine = try await engine(for: parsed.model)
        let (handle, ctx) = try start(parsed, engine: engine, context: context, idPrefix: chat ? "chatcmpl-" : "cmpl-")
        if parsed.stream {
            return streamResponse(handle, ctx: ctx, includeUsage: parsed.includeUsage, started: started)
        }
        return try await collectResponse(handle, ctx: ctx, started: started)
    }

    /// The request body, at most `maxBodyBytes` (413 beyond).
    func readBody(_ request: Request) async throws -> [UInt8] {
        var request = request
        do { return Array(buffer: try await request.collectBody(upTo: configuration.maxBodyBytes)) } catch {
            throw APIError(status: 413, message: "the request body is larger than \(configuration.maxBodyBytes) bytes")
        }
    }

    /// Prepares and submits a validated request for `engine` (the one `engine(for:)` found for
    /// its model); the generation is cancelled
    /// when the client's connection closes. Shared by every API that generates (chat,
    /// completions, and the translated Anthropic Messages and Responses requests).
    func start(_ parsed: CompletionRequest, engine: Generator, context: ServerRequestContext,
               idPrefix: String) throws -> (RequestHandle, ResponseContext) {
        let job = try prepare(parsed, engine: engine)
        let handle = try submit(job.specs, options: job.options, to: engine, param: parsed.isChat ? "messages" : "prompt")
        // A client that hangs up cancels its sequences at once, streaming or not.
        context.channel?.closeFuture.whenComplete { _ in handle.cancel() }
        let id = idPrefix + randomID()
        let ctx = ResponseContext(id: id, created: Int(Date().timeIntervalSince1970), model: engine.model.name,
                                  chat: parsed.isChat, choices: job.specs.count, promptTokens: job.promptTokens,
                                  tokenizer: engine.model.tokenizer, logprobs: parsed.logprobs,
                                  toolSyntax: job.toolSyntax, toolPrefill: job.toolPrefill,
                                  parallelToolCalls: parsed.parallelToolCalls,
                                  reasoningFormat: parsed.reasoningFormat ?? configuration.reasoningFormat,
                                  startsThinking: job.startsThinking)
        logger.info("request", metadata: ["id": "\(id)", "prompt_tokens": "\(job.promptTokens)",
                                          "n": "\(job.specs.count)", "stream": "\(parsed.stream)"])
        return (handle, ctx)
    }

    /// Queues sequences on the engine; a full queue is a 429 with `Retry-After`, a stopping
    /// engine a 503, a prompt the engine refuses a 400 naming `param`.
    func submit(_ specs: [SequenceSpec], options: GenerationOptions, to engine: Generator, param: String) throws -> RequestHandle {
        do { return try engine.submit(specs, options: options) } catch let error as SubmitError {
            switch error {
            case .queueFull(let retry):
                var e = APIError(status: 429, message: error.description, type: "rate_limit_error", code: "queue_full")
                e.headers = [("Retry-After", String(retry))]
                throw e
            case .stopped:
                var e = APIError(status: 503, message: error.description, type: "server_error", code: "draining")
                e.headers = [("Retry-After", "1")]
                throw e
            case .badLoRAScales:
                throw APIError.invalid("lora", error.description)
            }
        } catch let error as EngineError {
            throw APIError.invalid(param, error.description)
        }
    }

    struct Job {
        var specs: [SequenceSpec]
        var options: GenerationOptions
        /// Usage's prompt_tokens: each distinct prompt once.
        var promptTokens: Int
        /// Set when replies are searched for function calls.
        var toolSyntax: ToolCallSyntax?
        /// Call syntax already in the prompt (a forced call's opening marker).
        var toolPrefill = ""
        /// The chat prompt ends inside a thinking block (`<think>`, or harmony's analysis message).
        var startsThinking = false
    }

    /// Tokenizes the prompts and checks them against the context.
    /// What the request's `speculative` field asks for, else the server's default — a default
    /// draft model only for the engine that has one (the first model).
    func speculation(for r: CompletionRequest, engine: Generator) throws -> Speculation? {
        switch r.speculation {
        case .lookup(let n): return PromptLookup.drafting(upTo: n).map { .lookup($0) }
        case .draftModel(let settings):
            guard engine.draftModel != nil else {
                throw APIError.invalid("speculative", "'speculative' asks for the draft model, but the server has none for this model (start it with --draft MODEL)")
            }
            return .draftModel(settings)
        case nil:
            if case .draftModel = configuration.speculation, engine.draftModel == nil { return nil }
            return configuration.speculation
        }
    }

    func prepare(_ r: CompletionRequest, engine: Generator) throws -> Job {
        let model = engine.model
        let tokenizer = model.tokenizer
        let ctx = engine.configuration.contextLength
        var prompts: [[TokenID]] = []
        let param: String
        var toolPlan: ToolCallPlan?
        var startsThinking = false
        // harmony replies are always read by their channels, with or without tools
        let harmony = r.isChat && ToolCallSyntax.detect(templateSource: model.chatTemplate?.source) == .harmony
        switch r.input {
        case .chat(let messages):
            param = "messages"
            let template: String
            (template, toolPlan) = try renderChatPrompt(messages, tools: r.tools, choice: r.toolChoice,
                                                        parallel: r.parallelToolCalls, model: model)
            let rendered = template + r.replyPrefix
            prompts = [model.promptTokens(for: rendered)]
            startsThinking = harmony ? rendered.hasSuffix(ReasoningBudget.analysisOpening)
                : ReasoningSplitter.promptOpensThinking(rendered)
        case .prompts(let inputs):
            param = "prompt"
            for input in inputs {
                switch input {
                case .text(let s): prompts.append(tokenizer.encode(s, addSpecial: true, parseSpecial: true))
                case .tokens(let t):
                    if let bad = t.first(where: { Int($0) >= tokenizer.vocabularySize }) {
                        throw APIError.invalid("prompt", "token id \(bad) is outside the vocabulary (\(tokenizer.vocabularySize) tokens)")
                    }
                    prompts.append(t)
                }
            }
        }
        for p in prompts {
            guard !p.isEmpty else { throw APIError.invalid(param, "the prompt is empty") }
            guard p.count < ctx else {
                throw APIError(status: 400,
                               message: "the prompt is \(p.count) tokens long, but the context holds \(ctx) tokens (at least one must be left to generate); shorten the prompt or start the server with a larger --ctx",
                               param: param, code: "context_length_exceeded")
            }
        }
        if let bad = r.sampling.logitBias.keys.first(where: { Int($0) >= tokenizer.vocabularySize }) {
            throw APIError.invalid("logit_bias", "'logit_bias' token id \(bad) is outside the vocabulary (\(tokenizer.vocabularySize) tokens)")
        }
        var grammar: JSONGrammar?
        var grammarTriggers: [GrammarTrigger] = []
        var triggeredDocumentEnds = false
        let lazy = !(toolPlan?.grammarTriggers.isEmpty ?? true) || toolPlan?.triggerMarker != nil
        if let plan = toolPlan, let toolGrammar = plan.grammar, !lazy || r.responseFormat == nil {
            grammar = toolGrammar
            grammarTriggers = plan.grammarTriggers
            // a harmony call ends the turn: nothing follows its arguments
            triggeredDocumentEnds = plan.syntax == .harmony
            if let marker = plan.triggerMarker {
                let ids = tokenizer.encode(marker, addSpecial: false, parseSpecial: true)
                grammarTriggers.append(ids.count == 1 ? .token(ids[0]) : .text(marker))
            }
        } else if let format = r.responseFormat {
            do { grammar = try JSONGrammar.forResponseFormat(format) } catch {
                throw APIError.invalid("response_format", "unsupported 'response_format': \(error)")
            }
        }
        let longest = prompts.map(\.count).max() ?? 0
        let maxTokens = min(r.maxTokens ?? Int.max, ctx - longest)
        var sampling = r.sampling
        if r.ignoreEOS {
            for t in tokenizer.endOfGenerationTokens { sampling.logitBias[t] = -.infinity }
        }
        var options = GenerationOptions(maxTokens: maxTokens, sampling: sampling, stop: r.stop, grammar: grammar,
                                        grammarTriggers: grammarTriggers, logprobs: r.logprobs)
        options.triggeredDocumentEnds = triggeredDocumentEnds
        options.speculation = try speculation(for: r, engine: engine)
        let parsesCalls = !r.tools.isEmpty && r.toolChoice != .none
        let toolSyntax: ToolCallSyntax? = harmony ? .harmony : parsesCalls ? toolPlan?.syntax : nil
        options.decodesSpecialTokens = toolSyntax?.marksWithControlTokens ?? false
        // as in llama-server, an empty list leaves the server's scales
        if let lora = r.lora, lora.arrayValue?.isEmpty != true {
            options.loraScales = try Self.loraScales(lora, param: "lora", adapters: model.adapters.count)
        }
        if r.isChat, let budget = configuration.reasoningBudget {
            options.reasoningBudget = harmony ? .harmony(tokens: budget, startsInside: startsThinking)
                : ReasoningBudget(tokens: budget, startsInside: startsThinking)
        }
        var specs: [SequenceSpec] = []
        for p in prompts {
            for i in 0..<r.n {
                specs.append(SequenceSpec(prompt: p, seed: r.sampling.seed.map { $0 &+ UInt64(i) }))
            }
        }
        return Job(specs: specs, options: options, promptTokens: prompts.reduce(0) { $0 + $1.count },
                   // a harmony reply prefix (Anthropic's prefill) may open a message: the parser starts after it
                   toolSyntax: toolSyntax, toolPrefill: (toolPlan?.prefill ?? "") + (harmony ? r.replyPrefix : ""),
                   startsThinking: startsThinking)
    }

    // MARK: Responses

    struct ResponseContext: Sendable {
        let id: String
        let created: Int
        let model: String
        let chat: Bool
        let choices: Int
        let promptTokens: Int
        let tokenizer: any Tokenizer
        let logprobs: Int?
        let toolSyntax: ToolCallSyntax?
        let toolPrefill: String
        let parallelToolCalls: Bool
        /// Chat only: where thinking goes, and whether the prompt already opened it.
        var reasoningFormat = ReasoningFormat.none
        var startsThinking = false

        /// The `<think>` splitter (harmony replies have their thinking read by the tool parser).
        func makeReasoningSplitter() -> ReasoningSplitter? {
            chat && reasoningFormat == .deepseek && toolSyntax != .harmony ? ReasoningSplitter(startsInside: startsThinking) : nil
        }

        /// A parser for one choice's reply, primed with the call syntax already in the prompt.
        func makeToolParser() -> ToolCallStreamParser? {
            guard let toolSyntax else { return nil }
            var parser = ToolCallStreamParser(syntax: toolSyntax, allowsSeveralCalls: parallelToolCalls,
                                              splitsReasoning: reasoningFormat == .deepseek)
            _ = parser.feed(toolPrefill)
            return parser
        }

        var object: String { chat ? "chat.completion" : "text_completion" }
        var chunkObject: String { chat ? "chat.completion.chunk" : "text_completion" }

        func envelope(object: String, choices: [JSONValue], usage: JSONValue?) -> JSONValue {
            var members: JSONObject = [
                "id": .string(id), "object": .string(object), "created": .number(JSONNumber(created)),
                "model": .string(model), "system_fingerprint": .null, "choices": .array(choices),
            ]
            if let usage { members["usage"] = usage }
            return .object(members)
        }

        func usage(completion: Int, cached: Int) -> JSONValue {
            .object([
                "prompt_tokens": .number(JSONNumber(promptTokens)),
                "completion_tokens": .number(JSONNumber(completion)),
                "total_tokens": .number(JSONNumber(promptTokens + completion)),
                "prompt_tokens_details": .object(["cached_tokens": .number(JSONNumber(cached))]),
            ])
        }

        func tokenText(_ t: TokenID) -> (String, [UInt8]) {
            let bytes = tokenizer.pieceBytes(t)
            return (String(decoding: bytes, as: UTF8.self), bytes)
        }

        /// OpenAI's logprobs object for these tokens (chat or legacy completions shape);
        /// `textOffset` is where the tokens' text starts in the choice's text.
        func logprobsJSON(_ infos: [TokenLogprobInfo], textOffset: Int) -> JSONValue {
            guard logprobs != nil else { return .null }
            if chat {
                let content: [JSONValue] = infos.map { info in
                    let (text, bytes) = tokenText(info.token)
                    return .object([
                        "token": .string(text), "logprob": number(info.logprob),
                        "bytes": .array(bytes.map { .number(JSONNumber($0)) }),
                        "top_logprobs": .array(info.top.map { alt in
                            let (t, b) = tokenText(alt.token)
                            return .object(["token": .string(t), "logprob": number(alt.logprob),
                                            "bytes": .array(b.map { .number(JSONNumber($0)) })])
                        }),
                    ])
                }
                return .object(["content": .array(content), "refusal": .null])
            }
            var offsets: [JSONValue] = []
            var offset = textOffset
            for info in infos {
                offsets.append(.number(JSONNumber(offset)))
                offset += tokenText(info.token).0.utf8.count
            }
            return .object([
                "tokens": .array(infos.map { .string(tokenText($0.token).0) }),
                "token_logprobs": .array(infos.map { number($0.logprob) }),
                "top_logprobs": .array(infos.map { info in
                    .object(JSONObject(info.top.map { (tokenText($0.token).0, number($0.logprob)) },
                                       uniquingKeysWith: { _, last in last }))
                }),
                "text_offset": .array(offsets),
            ])
        }
    }

    final class ChoiceState {
        var text = ""
        var logprobs: [TokenLogprobInfo] = []
        var finish: FinishReason?
        var completionTokens = 0
        var cachedTokens = 0
        var started = false
        var toolParser: ToolCallStreamParser?
        /// Chat replies whose thinking is split off (`reasoning_format: deepseek`).
        var reasoning: ReasoningSplitter?
        /// Logprobs of tokens whose text the reasoning splitter still holds back.
        var splitLogprobs: [TokenLogprobInfo] = []
        /// Logprobs of tokens whose text the tool parser still holds back.
        var heldLogprobs: [TokenLogprobInfo] = []
    }

    /// `message.tool_calls` / `delta.tool_calls` entries.
    static func toolCallJSON(_ call: ParsedToolCall) -> JSONValue {
        ["id": .string(call.id), "type": "function",
         "function": ["name": .string(call.name), "arguments": .string(call.arguments)]]
    }

    /// Wraps a stream iterator so the response body closure can own it.
    final class EventIterator: @unchecked Sendable {
        var iterator: AsyncStream<GenerationEvent>.Iterator
        init(_ stream: AsyncStream<GenerationEvent>) { iterator = stream.makeAsyncIterator() }
        func next() async -> GenerationEvent? { await iterator.next() }
    }

    /// A non-streaming answer. The status is settled by the first event (a failure before any
    /// token is a 500); the JSON follows when generation ends. While waiting, a space (valid
    /// leading JSON whitespace) is written about once a second, so a client that hung up is
    /// noticed by the failed write and its sequences are cancelled.
    func collectResponse(_ handle: RequestHandle, ctx: ResponseContext, started: ContinuousClock.Instant) async throws -> Response {
        let events = EventIterator(handle.events)
        let first = await withTaskCancellationHandler { await events.next() } onCancel: { handle.cancel() }
        if case .failed(_, let message)? = first {
            handle.cancel()
            throw APIError(status: 500, message: message, type: "server_error")
        }
        let metrics = self.metrics
        let body = ResponseBody { writer in
            var completed = false
            defer { if !completed { handle.cancel() } }
            let choices = (0..<ctx.choices).map { _ in ChoiceState() }
            var failure: String?
            var lastWrite = ContinuousClock.now
            var event = first
            while let e = event {
                switch e {
                case .text(let i, let text, _, let lp):
                    choices[i].text += text
                    choices[i].logprobs += lp
                case .finished(let i, let reason, let usage):
                    choices[i].finish = reason
                    choices[i].completionTokens = usage.completionTokens
                    choices[i].cachedTokens = usage.cachedTokens
                case .failed(_, let message):
                    failure = message
                case .embedding: break
                }
                if ContinuousClock.now - lastWrite > .seconds(1) {
                    try await writer.write(ByteBuffer(string: " "))
                    lastWrite = .now
                }
                event = await events.next()
            }
            metrics.requestFinished(.now - started)
            let result: JSONValue
            if let failure {
                result = APIError(status: 500, message: failure, type: "server_error").json
            } else {
                let body: [JSONValue] = choices.enumerated().map { i, c in
                    let finish: JSONValue = c.finish.map { .string($0 == .cancelled ? "stop" : $0.rawValue) } ?? .null
                    if ctx.chat {
                        var reply = c.text
                        var message: JSONObject = ["role": "assistant", "content": .string(c.text), "refusal": .null]
                        var reasoning = ""
                        if var splitter = ctx.makeReasoningSplitter() {
                            reply = ""
                            for piece in splitter.feed(c.text) + splitter.finish() {
                                switch piece {
                                case .reasoning(let text): reasoning += text
                                case .content(let text): reply += text
                                }
                            }
                            message["content"] = .string(reply)
                        }
                        var finish = finish
                        if var parser = ctx.makeToolParser() {
                            var content = ""
                            var calls: [JSONValue] = []
                            for event in parser.feed(reply) + parser.finish() {
                                switch event {
                                case .content(let text): content += text
                                case .call(_, let call): calls.append(Self.toolCallJSON(call))
                                case .reasoning(let text): reasoning += text
                                case .callStart, .callArguments: break
                                }
                            }
                            message["content"] = .string(content)
                            if !calls.isEmpty {
                                message["content"] = content.isEmpty ? .null : .string(content)
                                message["tool_calls"] = .array(calls)
                                finish = "tool_calls"
                            }
                        }
                        if !reasoning.isEmpty { message["reasoning_content"] = .string(reasoning) }
                        return .object([
                            "index": .number(JSONNumber(i)),
                            "message": .object(message),
                            "logprobs": ctx.logprobsJSON(c.logprobs, textOffset: 0),
                            "finish_reason": finish,
                        ])
                    }
                    return .object([
                        "text": .string(c.text), "index": .number(JSONNumber(i)),
                        "logprobs": ctx.logprobsJSON(c.logprobs, textOffset: 0), "finish_reason": finish,
                    ])
                }
                let completion = choices.reduce(0) { $0 + $1.completionTokens }
                let cached = choices.map(\.cachedTokens).max() ?? 0
                result = ctx.envelope(object: ctx.object, choices: body, usage: ctx.usage(completion: completion, cached: cached))
            }
            try await writer.write(ByteBuffer(string: result.compactText))
            completed = true
            try await writer.finish(nil)
        }
        return Response(status: .ok, headers: [.contentType: "application/json"], body: body)
    }

    func streamResponse(_ handle: RequestHandle, ctx: ResponseContext, includeUsage: Bool,
                        started: ContinuousClock.Instant) -> Response {
        let metrics = self.metrics
        let body = ResponseBody { writer in
            var completed = false
            defer { if !completed { handle.cancel() } }
            let choices = (0..<ctx.choices).map { _ in ChoiceState() }
            for c in choices {
                c.toolParser = ctx.makeToolParser()
                c.reasoning = ctx.makeReasoningSplitter()
            }
            let usageNull: JSONValue? = includeUsage ? .null : nil
            func send(_ value: JSONValue) async throws {
                try await writer.write(ByteBuffer(string: "data: " + value.compactText + "\n\n"))
            }
            func chunk(_ choice: JSONValue) -> JSONValue {
                ctx.envelope(object: ctx.chunkObject, choices: [choice], usage: usageNull)
            }
            func roleChunkIfNeeded(_ i: Int) async throws {
                guard ctx.chat, !choices[i].started else { return }
                choices[i].started = true
                try await send(chunk(.object([
                    "index": .number(JSONNumber(i)),
                    "delta": .object(["role": .string("assistant"), "content": .string("")]),
                    "logprobs": .null, "finish_reason": .null,
                ])))
            }
            /// Content and calls the tool parser decided; held logprobs ride on the first chunk.
            func sendToolEvents(_ events: [ToolParseEvent], choice i: Int) async throws {
                for event in events {
                    if case .call = event { continue }  // its pieces were sent already
                    let logprobs = ctx.logprobsJSON(choices[i].heldLogprobs, textOffset: 0)
                    choices[i].heldLogprobs = []
                    switch event {
                    case .content(let text):
                        choices[i].text += text
                        try await send(chunk(.object([
                            "index": .number(JSONNumber(i)), "delta": .object(["content": .string(text)]),
                            "logprobs": logprobs, "finish_reason": .null,
                        ])))
                    case .callStart(let index, let id, let name):
                        // the id and name first, then the arguments as they are written
                        try await send(chunk(.object([
                            "index": .number(JSONNumber(i)),
                            "delta": ["tool_calls": [[
                                "index": .number(JSONNumber(index)), "id": .string(id), "type": "function",
                                "function": ["name": .string(name), "arguments": ""],
                            ]]],
                            "logprobs": logprobs, "finish_reason": .null,
                        ])))
                    case .reasoning(let text):
                        try await send(chunk(.object([
                            "index": .number(JSONNumber(i)), "delta": .object(["reasoning_content": .string(text)]),
                            "logprobs": logprobs, "finish_reason": .null,
                        ])))
                    case .callArguments(let index, let piece):
                        try await send(chunk(.object([
                            "index": .number(JSONNumber(i)),
                            "delta": ["tool_calls": [["index": .number(JSONNumber(index)), "function": ["arguments": .string(piece)]]]],
                            "logprobs": logprobs, "finish_reason": .null,
                        ])))
                    case .call:
                        break
                    }
                }
            }
            /// Reply text after the thinking block: through the tool parser when there is one.
            func sendReply(_ text: String, logprobs lp: [TokenLogprobInfo], choice i: Int) async throws {
                if choices[i].toolParser != nil {
                    choices[i].heldLogprobs += lp
                    let events = choices[i].toolParser!.feed(text)
                    try await sendToolEvents(events, choice: i)
                    return
                }
                let logprobs = ctx.logprobsJSON(lp, textOffset: choices[i].text.utf8.count)
                choices[i].text += text
                if ctx.chat {
                    try await send(chunk(.object([
                        "index": .number(JSONNumber(i)), "delta": .object(["content": .string(text)]),
                        "logprobs": logprobs, "finish_reason": .null,
                    ])))
                } else {
                    try await send(chunk(.object([
                        "text": .string(text), "index": .number(JSONNumber(i)),
                        "logprobs": logprobs, "finish_reason": .null,
                    ])))
                }
            }
            /// Thinking and reply pieces in order; the tokens' logprobs ride on the first piece.
            func sendSplit(_ pieces: [ReasoningSplitter.Piece], logprobs lp: [TokenLogprobInfo], choice i: Int) async throws {
                var lp = choices[i].splitLogprobs + lp
                choices[i].splitLogprobs = []
                for piece in pieces {
                    switch piece {
                    case .reasoning(let text):
                        try await send(chunk(.object([
                            "index": .number(JSONNumber(i)), "delta": .object(["reasoning_content": .string(text)]),
                            "logprobs": ctx.logprobsJSON(lp, textOffset: 0), "finish_reason": .null,
                        ])))
                        lp = []
                    case .content(let text):
                        try await sendReply(text, logprobs: lp, choice: i)
                        lp = []
                    }
                }
                choices[i].splitLogprobs = lp
            }
            for await event in handle.events {
                switch event {
                case .text(let i, let text, _, let lp):
                    // a token whose text is held back (stop string, unfinished character) is sent with the text that completes it
                    guard !text.isEmpty || !lp.isEmpty else { continue }
                    try await roleChunkIfNeeded(i)
                    if choices[i].reasoning != nil {
                        try await sendSplit(choices[i].reasoning!.feed(text), logprobs: lp, choice: i)
                    } else {
                        try await sendReply(text, logprobs: lp, choice: i)
                    }
                case .finished(let i, let reason, let usage):
                    try await roleChunkIfNeeded(i)
                    choices[i].completionTokens = usage.completionTokens
                    choices[i].cachedTokens = usage.cachedTokens
                    var finish = JSONValue.string(reason == .cancelled ? "stop" : reason.rawValue)
                    if choices[i].reasoning != nil {
                        try await sendSplit(choices[i].reasoning!.finish(), logprobs: [], choice: i)
                    }
                    if choices[i].toolParser != nil {
                        let events = choices[i].toolParser!.finish()
                        try await sendToolEvents(events, choice: i)
                        if choices[i].toolParser!.hasCalls { finish = "tool_calls" }
                    }
                    if ctx.chat {
                        try await send(chunk(.object([
                            "index": .number(JSONNumber(i)), "delta": .object([:]),
                            "logprobs": .null, "finish_reason": finish,
                        ])))
                    } else {
                        try await send(chunk(.object([
                            "text": .string(""), "index": .number(JSONNumber(i)),
                            "logprobs": .null, "finish_reason": finish,
                        ])))
                    }
                case .failed(_, let message):
                    try await send(APIError(status: 500, message: message, type: "server_error").json)
                case .embedding: break
                }
            }
            if includeUsage {
                let completion = choices.reduce(0) { $0 + $1.completionTokens }
                let cached = choices.map(\.cachedTokens).max() ?? 0
                try await send(ctx.envelope(object: ctx.chunkObject, choices: [],
                                            usage: ctx.usage(completion: completion, cached: cached)))
            }
            try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
            completed = true
            metrics.requestFinished(.now - started)
            try await writer.finish(nil)
        }
        return Response(status: .ok,
                        headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                        body: body)
    }
}

func number(_ x: Float) -> JSONValue {
    .number(JSONNumber(x.isFinite ? x : -9999.0))
}

func randomID() -> String {
    var g = SystemRandomNumberGenerator()
    return (0..<3).map { _ in String(g.next() as UInt64, radix: 36) }.joined()
}

func json(_ value: JSONValue, status: HTTPResponse.Status = .ok, headers: [(String, String)] = []) -> Response {
    var fields: HTTPFields = [.contentType: "application/json"]
    for (k, v) in headers { if let name = HTTPField.Name(k) { fields[name] = v } }
    return Response(status: status, headers: fields, body: .init(byteBuffer: ByteBuffer(string: value.compactText)))
}

/// Bearer authentication for every route but `publicPaths`, errors as OpenAI error objects, request metrics and logs.
struct APIMiddleware: RouterMiddleware {
    typealias Context = ServerRequestContext
    let server: OpenAIServer
    /// Routes a load balancer or a scraper calls without the API key.
    static let publicPaths: Set<String> = ["/health", "/ready", "/metrics"]

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        let endpoint = ["/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/ready", "/metrics", "/v1/messages",
                        "/v1/messages/count_tokens", "/v1/responses"].contains(path)
            || OpenAIServer.utilityPaths.contains(path) ? path : "other"
        // Anthropic clients read errors in Anthropic's shape
        let anthropic = AnthropicMessages.handles(path)
        func errorJSON(_ e: APIError) -> JSONValue { anthropic ? AnthropicMessages.errorJSON(e) : e.json }
        let response: Response
        do {
            // Every route but the probes and metrics is the API: it takes the key.
            if let key = server.configuration.apiKey, !Self.publicPaths.contains(path) {
                let given = request.headers[.authorization] ?? ""
                // Anthropic clients send the key as `x-api-key`
                let givenKey = HTTPField.Name("x-api-key").flatMap { request.headers[$0] } ?? ""
                guard constantTimeEqual(given, "Bearer " + key) || constantTimeEqual(givenKey, key) else {
                    throw APIError(status: 401, message: "missing or wrong API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                                   code: "invalid_api_key")
                }
            }
            response = try await next(request, context)
        } catch let e as APIError {
            response = json(errorJSON(e), status: .init(code: e.status), headers: e.headers)
            if (e.status >= 500 && e.code != "model_loading" && e.code != "draining") || e.status == 429 {
                server.logger.warning("request failed", metadata: ["path": "\(path)", "status": "\(e.status)", "error": "\(e.message)"])
            }
        } catch let e as HTTPError {
            let status = Int(e.status.code)
            let message = e.status == .notFound ? "no route for \(request.method) \(path)" : (e.body ?? e.status.reasonPhrase)
            response = json(errorJSON(APIError(status: status, message: message)), status: e.status)
        } catch {
            server.logger.error("request failed", metadata: ["path": "\(path)", "error": "\(error)"])
            response = json(errorJSON(APIError(status: 500, message: "\(error)", type: "server_error")), status: .internalServerError)
        }
        server.metrics.request(endpoint: endpoint, status: Int(response.status.code))
        return response
    }
}

func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var diff = UInt8(x.count == y.count ? 0 : 1)
    for i in 0..<min(x.count, y.count) { diff |= x[i] ^ y[i] }
    return diff == 0
}
