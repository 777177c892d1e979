import Engine
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import Models
@testable import Server
import TestSupport
import Testing

/// What a load balancer and an inference gateway read off a replica: `/ready` through loading,
/// a full queue and draining, and the model-server protocol's metrics on `/metrics`.
@Suite(.serialized) struct ScalingTests {
    static let modelPresent = FileManager.default.fileExists(atPath: TestSupport.smolLM2Path)

    /// Polls until `condition` holds (the generator publishes its state after each step).
    func waitUntil(_ what: String, timeout: Duration = .seconds(60), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            guard ContinuousClock.now < deadline else { throw TestTimeout(what: what) }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    struct TestTimeout: Error, CustomStringConvertible {
        let what: String
        var description: String { "timed out waiting for \(what)" }
    }

    @Test(.enabled(if: modelPresent, "needs SmolLM2 in the model cache (swiftlet pull smollm2)"))
    func readyFollowsLoadingQueueAndDraining() async throws {
        var config = ServerConfiguration()
        config.readyQueueLimit = 0
        let metrics = ServerMetrics()
        let server = OpenAIServer(configuration: config, state: ServerState(), metrics: metrics, logger: Logger(label: "test"))
        let app = Application(router: server.makeRouter())

        try await app.test(.router) { client in
            try await client.execute(uri: "/ready", method: .get) { r in
                #expect(r.status == .serviceUnavailable)
                #expect(String(buffer: r.body).contains("loading"))
            }
        }

        let model = try LoadedModel(path: TestSupport.smolLM2Path)
        let engine = try Generator(model: model, configuration: .init(contextLength: 512, parallel: 1, maxQueue: 4),
                                   observer: ServerObserver(metrics: metrics, logger: Logger(label: "test")))
        server.state.engine = engine
        metrics.engineLoaded(engine)
        try await app.test(.router) { client in
            try await client.execute(uri: "/ready", method: .get) { r in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body).contains(#""status":"ready""#))
            }
        }

        // One sequence runs (--parallel 1), two wait: more than the limit of 0.
        var options = GenerationOptions(maxTokens: 400)
        for t in model.tokenizer.endOfGenerationTokens { options.sampling.logitBias[t] = -.infinity }
        let prompt = model.tokenizer.encode("Tell me a long story.", addSpecial: true, parseSpecial: true)
        let handles = try (0..<3).map { _ in try engine.submit([SequenceSpec(prompt: prompt)], options: options) }
        try await waitUntil("two waiting sequences") {
            let s = engine.currentSnapshot, m = PrometheusText(metrics.render())
            return s.waiting == 2 && s.running == 1 && m.value("vllm:num_requests_waiting") == 2
                && m.value("vllm:num_requests_running") == 1
        }
        try await app.test(.router) { client in
            try await client.execute(uri: "/ready", method: .get) { r in
                #expect(r.status == .serviceUnavailable)
                let body = String(buffer: r.body)
                #expect(body.contains(#""status":"busy""#) && body.contains(#""waiting":2"#), "\(body)")
            }
            try await client.execute(uri: "/metrics", method: .get) { r in
                let samples = PrometheusText(String(buffer: r.body))
                #expect(samples.value("vllm:num_requests_waiting") == 2)
                #expect(samples.value("vllm:num_requests_running") == 1)
                let usage = try #require(samples.value("vllm:kv_cache_usage_perc"))
                #expect(usage > 0 && usage <= 1)
            }
        }
        for handle in handles { handle.cancel() }
        try await waitUntil("the queue to empty") { engine.outstandingSequences == 0 && engine.currentSnapshot.waiting == 0 }
        try await app.test(.router) { client in
            try await client.execute(uri: "/ready", method: .get) { r in #expect(r.status == .ok) }
        }

        // Draining: not ready, still alive, new work refused with Retry-After.
        server.state.draining = true
        try await app.test(.router) { client in
            try await client.execute(uri: "/ready", method: .get) { r in
                #expect(r.status == .serviceUnavailable)
                #expect(String(buffer: r.body).contains("draining"))
                #expect(r.headers[.retryAfter] == "1")
            }
            try await client.execute(uri: "/health", method: .get) { r in
                #expect(r.status == .ok)
                #expect(String(buffer: r.body).contains("draining"))
            }
            let body = ByteBuffer(string: #"{"model":"\#(model.name)","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#)
            try await client.execute(uri: "/v1/chat/completions", method: .post, body: body) { r in
                #expect(r.status == .serviceUnavailable)
                #expect(r.headers[.retryAfter] == "1")
                #expect(String(buffer: r.body).contains(#""code":"draining""#))
            }
        }
        await engine.shutdown()
    }

    /// The Gateway API Inference Extension's model-server protocol: the names its endpoint picker
    /// reads by default (vLLM's), with the protocol's types, next to Swiftlet's own.
    @Test(.enabled(if: modelPresent, "needs SmolLM2 in the model cache (swiftlet pull smollm2)"))
    func modelServerProtocolMetrics() async throws {
        let metrics = ServerMetrics()
        let server = OpenAIServer(configuration: ServerConfiguration(), state: ServerState(), metrics: metrics,
                                  logger: Logger(label: "test"))
        let model = try LoadedModel(path: TestSupport.smolLM2Path)
        let engine = try Generator(model: model, configuration: .init(contextLength: 256, parallel: 2, blockSize: 16),
                                   observer: ServerObserver(metrics: metrics, logger: Logger(label: "test")))
        server.state.engine = engine
        let loadedAt = Date()
        metrics.engineLoaded(engine, at: loadedAt)
        // the same prompt twice: the second finds its full blocks in the prefix cache
        let prompt = Array(model.tokenizer.encode(String(repeating: "The quick brown fox jumps over the lazy dog. ", count: 8),
                                                  addSpecial: true, parseSpecial: true))
        for _ in 0..<2 { _ = try engine.generate(prompt: prompt, options: GenerationOptions(maxTokens: 2)) }
        // the gauges follow at the end of the step that finished the sequence
        try await waitUntil("an idle scheduler in the metrics") {
            PrometheusText(metrics.render()).value("vllm:num_requests_running") == 0
        }

        let app = Application(router: server.makeRouter())
        try await app.test(.router) { client in
            try await client.execute(uri: "/metrics", method: .get) { r in
                #expect(r.status == .ok)
                let text = PrometheusText(String(buffer: r.body))
                for name in ["vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                             "vllm:lora_requests_info", "vllm:cache_config_info"] {
                    #expect(text.types[name] == "gauge", "\(name)")
                }
                for name in ["vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total"] {
                    #expect(text.types[name] == "counter", "\(name)")
                }
                #expect(text.value("vllm:num_requests_waiting") == 0)
                #expect(text.value("vllm:num_requests_running") == 0)
                #expect(text.value("vllm:kv_cache_usage_perc") == 0)

                // no adapters and none can be loaded; the value is when that was settled
                let lora = try #require(text.samples["vllm:lora_requests_info"]?.first)
                #expect(lora.labels == ["max_lora": "0", "running_lora_adapters": "", "waiting_lora_adapters": ""])
                #expect(abs(lora.value - loadedAt.timeIntervalSince1970) < 1)

                let cache = try #require(text.samples["vllm:cache_config_info"]?.first)
                #expect(cache.labels == ["block_size": "16", "num_gpu_blocks": String(engine.blockCount)])
                #expect(cache.value == 1)

                let queried = try #require(text.value("vllm:prefix_cache_queries_total"))
                let hits = try #require(text.value("vllm:prefix_cache_hits_total"))
                #expect(queried == Double(2 * prompt.count))
                #expect(hits >= Double((prompt.count - 1) / 16 * 16) && hits < queried, "hits \(hits) of \(queried)")
                #expect(text.value("swiftlet_prompt_tokens_cached_total") == hits)
            }
        }
        await engine.shutdown()
    }
}

/// A Prometheus text exposition read back: `# TYPE` lines and samples with their labels.
struct PrometheusText {
    struct Sample {
        var labels: [String: String]
        var value: Double
    }

    var types: [String: String] = [:]
    var samples: [String: [Sample]] = [:]

    init(_ text: String) {
        for line in text.split(separator: "\n").map(String.init) {
            if line.hasPrefix("# TYPE ") {
                let parts = line.dropFirst(7).split(separator: " ")
                if parts.count == 2 { types[String(parts[0])] = String(parts[1]) }
                continue
            }
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[space...].dropFirst()) else {
                continue
            }
            let series = line[..<space]
            var name = String(series)
            var labels: [String: String] = [:]
            if let open = series.firstIndex(of: "{"), series.hasSuffix("}") {
                name = String(series[..<open])
                // label values here hold no quotes or commas
                for pair in series[series.index(after: open)..<series.index(before: series.endIndex)].split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { labels[String(kv[0])] = String(kv[1].dropFirst().dropLast()) }
                }
            }
            samples[name, default: []].append(Sample(labels: labels, value: value))
        }
    }

    /// The value of an unlabelled series.
    func value(_ name: String) -> Double? { samples[name]?.first { $0.labels.isEmpty }?.value }
}

/// The swiftlet binary built next to the test bundle (in the build products folder).
/// Runs a script of the repository with `--bin` set to the built swiftlet binary and then
/// `arguments`; nil, with an issue recorded, when there is no binary to run.
func runScriptOnBuiltBinary(_ path: String, _ arguments: [String] = []) throws -> (status: Int32, output: String)? {
    guard let binary = TestSupport.builtSwiftletBinary else {
        Issue.record("no swiftlet binary next to the test bundle: build it first (swift build -c release --build-tests)")
        return nil
    }
    return try runScript(path, ["--bin", binary] + arguments)
}

/// Runs a Python script of the repository; its exit status and combined output.
func runScript(_ path: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let root = TestSupport.repositoryRoot()
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", root.appendingPathComponent(path).path] + arguments
    process.currentDirectoryURL = root
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: output, as: UTF8.self)
    print(text)
    return (process.terminationStatus, text)
}

/// The deployment files (`deploy/check.py`): the Kubernetes YAML parses and hangs together, and
/// the options in the manifests and the Dockerfile are ones `swiftlet serve` knows.
@Suite struct DeployFilesTests {
    @Test func manifestsDockerfileAndNginxAgree() throws {
        guard let run = try runScriptOnBuiltBinary("deploy/check.py") else { return }
        #expect(run.status == 0, "deploy/check.py found problems:\n\(run.output)")
    }
}

/// `bench/cluster --quick`: two `swiftlet serve` replicas on SmolLM2 behind nginx with
/// `deploy/nginx/swiftlet.conf`: session affinity, failover, draining on SIGTERM. nginx must be
/// installed (scripts/test installs it); without it the script fails.
@Suite(.serialized) struct ClusterTests {
    @Test func clusterBehindNginx() throws {
        guard let run = try runScriptOnBuiltBinary("bench/cluster", ["--quick"]) else { return }
        #expect(run.status == 0, "bench/cluster --quick failed:\n\(run.output)")
    }
}
